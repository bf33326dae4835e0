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

/// README's operator commands, as an operator types them in the directory holding site.yaml
/// and its store `secrets/`: `mailbake build site.yaml`, the disk image made from a signed
/// SHA256SUMS (the stand-in for Ubuntu's disk), then `mailbake boot site.yaml --host mx1
/// --image mail.qcow2`. The seed comes from the store; the ports it prints answer: SMTP greets
/// with mx1's FQDN and offers STARTTLS. On QEMU's user network the host gets its own IPv4
/// address (the boot report on the console says so), so nothing waits for an address that
/// never comes.
#[test]
fn readme_boot_answers_smtp_on_the_forwards_it_prints() {
    let dir = tempfile::tempdir().unwrap();
    let site_dir = dir.path();
    std::fs::copy(testkit::example_site(), site_dir.join("site.yaml")).unwrap();
    testkit::example_secrets(site_dir);
    testkit::run(
        Command::new(env!("CARGO_BIN_EXE_mailbake"))
            .current_dir(site_dir)
            .args(["build", "site.yaml", "--out", "out"]),
    );
    testkit::guest::build_image(
        &site_dir.join("out/overlay.tar"),
        &site_dir.join("mail.qcow2"),
    );

    let serial = site_dir.join("serial.log");
    let mut boot = Stopped(
        Command::new(env!("CARGO_BIN_EXE_mailbake"))
            .current_dir(site_dir)
            .args([
                "boot",
                "site.yaml",
                "--host",
                "mx1",
                "--image",
                "mail.qcow2",
            ])
            // Not README's: where the console goes, for the evidence; and a bound on the guest.
            .arg("--serial-log")
            .arg(&serial)
            .args(["--timeout", "1200"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let said = BootOutput::follow(boot.0.stderr.take().unwrap());
    let console = || std::fs::read_to_string(&serial).unwrap_or_default();
    let ready = wait_until(1200, || said.text().contains("SMTP ready after"));
    assert!(
        ready,
        "mailbake boot never said SMTP was ready:\n{}\n--- console ---\n{}",
        said.text(),
        console()
    );
    let text = said.text();
    assert!(text.contains("seed: host mx1 (smtp.example.com)"), "{text}");
    let smtp = forward_of(&text, 25);
    let (banner, ehlo) = greet(smtp);
    assert!(
        banner.starts_with("220 smtp.example.com "),
        "banner on {smtp}: {banner}\n{text}"
    );
    assert!(
        ehlo.lines().any(|l| l.get(4..) == Some("STARTTLS")),
        "EHLO on {smtp} offers no STARTTLS:\n{ehlo}"
    );
    // Every mail port it printed is open.
    for port in [465, 587] {
        let addr = forward_of(&text, port);
        assert!(
            std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(10)).is_ok(),
            "guest port {port} on {addr} does not answer"
        );
    }
    // The console's boot report comes after chasquid: its IPv4 line, `ok` or `FAIL`.
    let report = || {
        console()
            .lines()
            .filter(|l| l.contains("mailbake-report:") || l.contains("network-ready"))
            .map(str::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert!(
        wait_until(300, || report().contains(" IPv4 address (DHCP): ")),
        "no boot report on the console:\n{}",
        console()
    );
    assert!(
        report().contains("mailbake-report: ok   IPv4 address (DHCP): 203.0.113.10"),
        "the guest does not have the site's IPv4 address:\n{}",
        report()
    );

    // SAFETY: kill(2) on our own child's pid, not yet reaped.
    unsafe {
        libc::kill(i32::try_from(boot.0.id()).unwrap(), libc::SIGTERM);
    }
    let mut status = None;
    assert!(
        wait_until(120, || {
            status = boot.0.try_wait().unwrap();
            status.is_some()
        }),
        "mailbake boot did not stop on SIGTERM"
    );
    assert!(status.unwrap().success(), "{}", said.text());
}

/// A `mailbake boot` that a failing assertion must not leave running: killed on drop (its
/// QEMU dies with it).
struct Stopped(std::process::Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// What a running `mailbake boot` wrote to its stderr so far, read by a thread.
struct BootOutput(std::sync::Arc<std::sync::Mutex<String>>);

impl BootOutput {
    fn follow(stderr: std::process::ChildStderr) -> BootOutput {
        use std::io::BufRead;
        let text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = text.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut text = sink.lock().unwrap();
                text.push_str(&line);
                text.push('\n');
            }
        });
        BootOutput(text)
    }

    fn text(&self) -> String {
        self.0.lock().unwrap().clone()
    }
}

/// The loopback address `mailbake boot` printed for `guest_port` (`forward: guest port 25 ->
/// 127.0.0.1:PORT`).
fn forward_of(said: &str, guest_port: u16) -> std::net::SocketAddr {
    said.lines()
        .filter_map(|l| l.strip_prefix("forward: guest port "))
        .filter_map(|l| l.split_once(" -> "))
        .find(|(port, _)| port.trim() == guest_port.to_string())
        .and_then(|(_, addr)| addr.trim().parse().ok())
        .unwrap_or_else(|| panic!("no forward of guest port {guest_port} printed:\n{said}"))
}

/// The SMTP greeting on `addr` and the reply to `EHLO`, then `QUIT`.
fn greet(addr: std::net::SocketAddr) -> (String, String) {
    use std::io::{BufRead, Write};
    let stream =
        std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(10)).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
    let reply = |reader: &mut std::io::BufReader<std::net::TcpStream>| {
        let mut all = String::new();
        for _ in 0..50 {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                break;
            }
            all.push_str(&line.replace('\r', ""));
            if line.as_bytes().get(3) != Some(&b'-') {
                break;
            }
        }
        all
    };
    let banner = reply(&mut reader);
    let mut writer = stream;
    writer.write_all(b"EHLO client.example.org\r\n").unwrap();
    let ehlo = reply(&mut reader);
    let _ = writer.write_all(b"QUIT\r\n");
    (banner.trim_end().to_string(), ehlo)
}
