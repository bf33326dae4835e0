//! `mailbake boot SITE --host H`: the seed comes from the site and its store; mistakes in the
//! choice of host are reported before any guest starts.

use std::process::Command;

fn boot(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_mailbake"))
        .arg("boot")
        .args(args)
        .output()
        .expect("mailbake runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn an_unknown_host_is_named_with_the_site_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = testkit::example_secrets(dir.path());
    let site = testkit::example_site();
    let (code, stderr) = boot(&[
        site.to_str().unwrap(),
        "--host",
        "mx9",
        "--secrets",
        secrets.to_str().unwrap(),
        "--image",
        dir.path().join("absent.qcow2").to_str().unwrap(),
    ]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("has no host `mx9`; its hosts: mx1"),
        "{stderr}"
    );
}

#[test]
fn a_site_without_its_secrets_cannot_make_a_seed() {
    let dir = tempfile::tempdir().unwrap();
    let site = testkit::example_site();
    let (code, stderr) = boot(&[
        site.to_str().unwrap(),
        "--secrets",
        dir.path().join("no-store").to_str().unwrap(),
        "--image",
        dir.path().join("absent.qcow2").to_str().unwrap(),
    ]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("no-store"),
        "the missing store is named: {stderr}"
    );
}

#[test]
fn site_and_seed_are_alternatives() {
    let (code, stderr) = boot(&["site.yaml", "--seed", "seed.img", "--image", "x.qcow2"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("cannot be used with"), "{stderr}");
}

#[test]
fn absurd_memory_and_cpu_counts_never_reach_qemu() {
    for (flag, value) in [
        ("--memory", "0"),
        ("--memory", "100"),
        ("--memory", "10000000"),
        ("--cpus", "0"),
        ("--cpus", "1000"),
    ] {
        let (code, stderr) = boot(&["site.yaml", "--image", "x.qcow2", flag, value]);
        assert_eq!(code, Some(2), "{flag} {value}: {stderr}");
        assert!(
            stderr.contains(&format!("invalid value '{value}' for '{flag}")),
            "{stderr}"
        );
    }
}

/// The pids of `parent`'s children whose command name starts with `name`.
fn children_named(parent: u32, name: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...; comm may hold spaces, so split at the last ')'.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = &stat[open + 1..close];
        let mut rest = stat[close + 1..].split_whitespace();
        let (state, ppid) = (rest.next(), rest.next().and_then(|p| p.parse::<u32>().ok()));
        if ppid == Some(parent) && comm.starts_with(name) && state != Some("Z") {
            found.extend(stat[..open].trim().parse::<u32>().ok());
        }
    }
    found
}

/// Whether `pid` is a running (not zombie) process.
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rfind(')')
            .and_then(|c| stat[c + 1..].split_whitespace().next())
            .is_some_and(|state| state != "Z")
    })
}

/// mailbake's private directories in `tmp`.
fn private_dirs(tmp: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(tmp)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("mailbake-"))
        .collect()
}

/// Polls `done` every 100 ms for at most `secs` seconds.
fn wait_until(secs: u64, mut done: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    done()
}

/// Starts `mailbake boot` of the example's mx1 on a blank disk (SeaBIOS finds nothing to
/// boot and keeps QEMU running) with `tmp` as its temp directory; returns it and its QEMU.
fn boot_blank_disk(dir: &std::path::Path, tmp: &std::path::Path) -> (std::process::Child, u32) {
    let secrets = dir.join("secrets");
    if !secrets.exists() {
        testkit::example_secrets(dir);
    }
    let disk = dir.join("blank.img");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_mailbake"))
        .arg("boot")
        .arg(testkit::example_site())
        .arg("--secrets")
        .arg(&secrets)
        .arg("--image")
        .arg(&disk)
        .args(["--memory", "256", "--cpus", "1"])
        .env("TMPDIR", tmp)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("boot.log")).unwrap())
        .spawn()
        .unwrap();
    let mut qemu = Vec::new();
    let started = wait_until(60, || {
        qemu = children_named(child.id(), "qemu-system");
        !qemu.is_empty()
    });
    let log = std::fs::read_to_string(dir.join("boot.log")).unwrap_or_default();
    assert!(started, "QEMU did not start:\n{log}");
    (child, qemu[0])
}

#[test]
fn a_killed_boot_leaves_no_guest_running_and_its_seed_is_removed_next_time() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();

    let (mut mailbake, qemu) = boot_blank_disk(dir.path(), &tmp);
    let seed_dirs: Vec<String> = private_dirs(&tmp)
        .into_iter()
        .filter(|n| n.starts_with("mailbake-boot-"))
        .collect();
    assert_eq!(seed_dirs.len(), 1, "{:?}", private_dirs(&tmp));
    let seed_dir = tmp.join(&seed_dirs[0]);
    let mode = std::fs::metadata(&seed_dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "the seed's directory is private");
    assert!(seed_dir.join("seed.img").is_file());

    mailbake.kill().unwrap(); // SIGKILL: no handler, no cleanup
    mailbake.wait().unwrap();
    assert!(
        wait_until(10, || !running(qemu)),
        "QEMU {qemu} outlived a kill -9 of mailbake"
    );
    assert!(seed_dir.exists(), "a killed process cannot clean up");

    // The next boot removes what the killed one left, even one that fails at once.
    let (code, stderr) = {
        let out = Command::new(env!("CARGO_BIN_EXE_mailbake"))
            .arg("boot")
            .arg(testkit::example_site())
            .args(["--host", "mx9", "--image", "absent.img"])
            .env("TMPDIR", &tmp)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert_eq!(code, Some(1), "{stderr}");
    assert!(private_dirs(&tmp).is_empty(), "{:?}", private_dirs(&tmp));
}

#[test]
fn a_stopped_boot_stops_its_guest_and_removes_its_seed() {
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let (mut mailbake, qemu) = boot_blank_disk(dir.path(), &tmp);
    // SAFETY: kill(2) on our own child's pid, not yet reaped.
    unsafe {
        libc::kill(i32::try_from(mailbake.id()).unwrap(), libc::SIGTERM);
    }
    let mut status = None;
    assert!(
        wait_until(60, || {
            status = mailbake.try_wait().unwrap();
            status.is_some()
        }),
        "mailbake did not stop on SIGTERM"
    );
    assert!(!running(qemu), "QEMU {qemu} still runs");
    assert!(private_dirs(&tmp).is_empty(), "{:?}", private_dirs(&tmp));
}
