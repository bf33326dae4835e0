//! `mailbake build`: the overlay is byte-for-byte reproducible, and sensitive to its inputs.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

/// Runs `mailbake build` from `cwd` under a shell with `umask` and `TZ`, returning SHA256SUMS.
/// One secrets store for every build in this file: builds compared with each other must get
/// the same secrets (seeds and DKIM records are made from them).
fn shared_secrets() -> &'static Path {
    static STORE: OnceLock<tempfile::TempDir> = OnceLock::new();
    STORE
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            testkit::example_secrets(dir.path());
            dir
        })
        .path()
}

fn build_in(cwd: &Path, umask: &str, tz: &str, out: &Path, extra: &[&str]) -> String {
    let mut args = vec![
        "build".to_string(),
        testkit::example_site().display().to_string(),
        "--secrets".to_string(),
        shared_secrets().join("secrets").display().to_string(),
        "--out".to_string(),
        out.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("umask {umask} && exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_mailbake"))
        .args(&args)
        .current_dir(cwd)
        .env("TZ", tz)
        .env_remove("SOURCE_DATE_EPOCH")
        .output()
        .expect("mailbake runs");
    assert!(
        status.status.success(),
        "build failed:\n{}",
        String::from_utf8_lossy(&status.stderr)
    );
    fs::read_to_string(out.join("SHA256SUMS")).expect("SHA256SUMS written")
}

#[test]
fn two_builds_in_different_places_umasks_zones_and_times_are_identical() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let first = build_in(a.path(), "022", "UTC", &a.path().join("out"), &[]);
    // A different second of wall-clock time, for any timestamp that might leak in.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let second = build_in(
        b.path(),
        "077",
        "Pacific/Kiritimati",
        &b.path().join("nested/out"),
        &[],
    );
    assert_eq!(first, second, "SHA256SUMS differ between the two builds");
    assert!(first.contains("  overlay.tar.zst\n") && first.contains("  MANIFEST\n"));

    // The archive itself says what we promise: fixed mtimes, numeric root owners.
    let listing = Command::new("tar")
        .arg("-tvf")
        .arg(a.path().join("out/overlay.tar"))
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(
        listing
            .lines()
            .all(|l| l.contains(" 0/0 ") && l.contains("2026-01-01 00:00")),
        "{listing}"
    );
    // The compressed copy is zstd and holds exactly overlay.tar.
    let zst = fs::read(a.path().join("out/overlay.tar.zst")).unwrap();
    assert_eq!(&zst[..4], &[0x28, 0xb5, 0x2f, 0xfd], "zstd magic");
    let unpacked = zstd::stream::decode_all(&zst[..]).unwrap();
    assert!(unpacked == fs::read(a.path().join("out/overlay.tar")).unwrap());
}

#[test]
fn source_date_epoch_sets_every_mtime() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    build_in(
        dir.path(),
        "022",
        "UTC",
        &out,
        &["--source-date-epoch", "1000000000"],
    );
    let file = fs::File::open(out.join("overlay.tar")).unwrap();
    let mut archive = tar::Archive::new(file);
    for entry in archive.entries().unwrap() {
        let entry = entry.unwrap();
        assert_eq!(
            entry.header().mtime().unwrap(),
            1_000_000_000,
            "{:?}",
            entry.path()
        );
    }
}

#[test]
fn changing_one_byte_of_one_template_changes_the_overlay_and_only_that_file() {
    let dir = tempfile::tempdir().unwrap();
    let layers = dir.path().join("layers");
    testkit::copy_of_layers(&layers);
    let base = build_in(
        dir.path(),
        "022",
        "UTC",
        &dir.path().join("a"),
        &["--layers", layers.to_str().unwrap()],
    );

    let template = layers.join("chasquid/etc/chasquid/chasquid.conf.j2");
    let mut bytes = fs::read(&template).unwrap();
    let at = bytes
        .iter()
        .position(|b| *b == b'E')
        .expect("a capital E to change");
    bytes[at] = b'e';
    fs::write(&template, bytes).unwrap();
    let changed = build_in(
        dir.path(),
        "022",
        "UTC",
        &dir.path().join("b"),
        &["--layers", layers.to_str().unwrap()],
    );

    let digest = |sums: &str, name: &str| {
        sums.lines()
            .find(|l| l.ends_with(&format!("  {name}")))
            .map(|l| l[..64].to_string())
            .unwrap()
    };
    assert_ne!(
        digest(&base, "overlay.tar.zst"),
        digest(&changed, "overlay.tar.zst")
    );
    let manifest_a = fs::read_to_string(dir.path().join("a/MANIFEST")).unwrap();
    let manifest_b = fs::read_to_string(dir.path().join("b/MANIFEST")).unwrap();
    let differing: Vec<&str> = manifest_a
        .lines()
        .zip(manifest_b.lines())
        .filter(|(x, y)| x != y)
        .map(|(x, _)| x.split('\t').next().unwrap())
        .collect();
    assert_eq!(differing, ["/etc/chasquid/chasquid.conf"]);
}

#[test]
fn the_overlay_ships_chasquid_1_19_or_newer_from_the_pinned_package() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    testkit::mailbake_build(
        &testkit::example_site(),
        &shared_secrets().join("secrets"),
        &out,
    );
    let root = dir.path().join("root");
    fs::create_dir(&root).unwrap();
    let unpack = Command::new("tar")
        .arg("-xf")
        .arg(out.join("overlay.tar"))
        .arg("-C")
        .arg(&root)
        .status()
        .unwrap();
    assert!(unpack.success());
    let version = Command::new(root.join("usr/bin/chasquid"))
        .arg("-version")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&version.stdout).to_string()
        + &String::from_utf8_lossy(&version.stderr);
    let number = text.split_whitespace().nth(1).expect("chasquid <version>");
    let mut parts = number
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (parts.next().unwrap(), parts.next().unwrap());
    // 1.17 fsyncs queue writes (a 250 survives a power cut), 1.19 fixes remote crashes.
    assert!(
        (major, minor) >= (1, 19),
        "chasquid {number} is older than 1.19: {text}"
    );
    assert!(
        root.join("usr/bin/lego").is_file(),
        "lego is in the overlay"
    );
}

#[test]
fn a_bad_site_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("site.yaml");
    fs::write(
        &site,
        fs::read_to_string(testkit::example_site())
            .unwrap()
            .replace("users: [i]", "users: [I]"),
    )
    .unwrap();
    let out = dir.path().join("out");
    let result = Command::new(env!("CARGO_BIN_EXE_mailbake"))
        .arg("build")
        .arg(&site)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(result.status.code(), Some(3));
    assert!(!out.exists());
    let leftovers: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, [std::ffi::OsString::from("site.yaml")]);
}

/// Every path below `root` with its permission bits, sorted.
fn modes(root: &Path) -> Vec<(String, u32)> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            out.push((rel, meta.permissions().mode() & 0o7777));
            if meta.is_dir() {
                todo.push(path);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn output_modes_are_the_same_under_any_umask_and_killed_runs_are_cleaned_up() {
    use std::os::unix::fs::PermissionsExt;
    let a = tempfile::tempdir().unwrap();
    // What a `kill -9` of an earlier build leaves: its staging directory, named after its
    // pid, with a seed inside. One of a live process stays.
    let mut gone = Command::new("true").spawn().unwrap();
    let dead_pid = gone.id();
    gone.wait().unwrap();
    let stale = a.path().join(format!(".mailbake-out-{dead_pid}-AbCd12"));
    fs::create_dir_all(stale.join("hosts/mx1/seed")).unwrap();
    fs::write(stale.join("hosts/mx1/seed/user-data"), "secret").unwrap();
    let live = a
        .path()
        .join(format!(".mailbake-out-{}-XyZ987", std::process::id()));
    fs::create_dir(&live).unwrap();

    build_in(a.path(), "000", "UTC", &a.path().join("out"), &[]);
    assert!(
        !stale.exists(),
        "the killed run's staging directory is removed"
    );
    assert!(live.exists(), "a live process's directory is left alone");
    let leftovers: Vec<String> = fs::read_dir(a.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".mailbake-") && !live.ends_with(n))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let b = tempfile::tempdir().unwrap();
    build_in(b.path(), "077", "UTC", &b.path().join("out"), &[]);
    let (loose, tight) = (modes(&a.path().join("out")), modes(&b.path().join("out")));
    assert_eq!(loose, tight, "umask 000 and 077 give different modes");
    let mode_of = |p: &str| {
        loose
            .iter()
            .find(|(path, _)| path == p)
            .map(|(_, m)| *m)
            .unwrap_or_else(|| panic!("{p} missing: {loose:?}"))
    };
    for (path, mode) in [
        ("hosts", 0o755),
        ("dns", 0o755),
        ("dns/example.com.zone", 0o644),
        ("overlay.tar", 0o644),
        ("hosts/mx1", 0o700),
        ("hosts/mx1/seed", 0o700),
        ("hosts/mx1/seed/user-data", 0o600),
        ("hosts/mx1/seed.img", 0o600),
    ] {
        assert_eq!(mode_of(path), mode, "{path}: {:o}", mode_of(path));
    }
    assert_eq!(
        fs::metadata(a.path().join("out"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o755
    );
}
