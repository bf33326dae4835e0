//! Errors quote bytes from their input (a path inside an archive, a value); what reaches the
//! terminal is escaped and bounded, whatever the input holds.

use std::process::Command;
// Linked for its watchdog, which bounds every test (tests/support/src/watchdog.rs).
use testkit as _;

#[test]
fn a_garbage_archive_never_sends_raw_control_bytes_to_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let evil = dir.path().join("evil.tar");
    // An archive whose member name holds terminal escape sequences (and climbs out).
    let made = Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(
            "import io, sys, tarfile\n\
             t = tarfile.open(sys.argv[1], 'w', format=tarfile.GNU_FORMAT)\n\
             i = tarfile.TarInfo('\\x1b[31mred\\x07\\x1b]0;title\\x07/../../etc/x'); i.size = 3\n\
             t.addfile(i, io.BytesIO(b'abc')); t.close()\n",
        )
        .arg(&evil)
        .status()
        .unwrap();
    assert!(made.success());
    let digest = Command::new("sha256sum").arg(&evil).output().unwrap();
    let digest = String::from_utf8_lossy(&digest.stdout)[..64].to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_mailbake"))
        .arg("image")
        .arg("--base")
        .arg(&evil)
        .args(["--base-sha256", &digest, "--overlay"])
        .arg(&evil)
        .arg("--out")
        .arg(dir.path().join("x.qcow2"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        !out.stderr.iter().any(|b| *b == 0x1b || *b == 0x07),
        "raw control bytes on stderr: {:?}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("\\u{1b}[31mred\\u{7}"), "{stderr}");
}
