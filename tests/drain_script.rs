//! drain's host script (src/drain/remote.sh, the bytes `mailbake drain` sends) refuses a
//! wrong host, a bad timeout and an unknown mode before it changes anything. Run for real,
//! with the arguments `mailbake drain` passes, without a guest: in private UTS and mount
//! namespaces (a hostname of the test's choosing, a tmpfs over /run), with `systemctl` and
//! `journalctl` replaced by stubs that only record their calls, so even a script that went on
//! could not touch this machine's services.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use mailbake::drain::REMOTE_SCRIPT;

const FQDN: &str = "mx1.example.com";

/// Sets the hostname, hides /run, runs the script as `sudo sh -c SCRIPT mailbake-drain ARGS`
/// does, then prints its exit status and everything it left under /run.
const HARNESS: &str = r#"set -u
hostname "$1"
shift
mount -t tmpfs drain-test /run
status=0
sh -c "$DRAIN_SCRIPT" mailbake-drain "$@" || status=$?
echo "exit=$status"
find /run -mindepth 1 | sort
if [ -f /run/calls ]; then cat /run/calls; fi
"#;

const STUB: &str = "#!/bin/sh\necho \"called: ${0##*/} $*\" >> /run/calls\nexit 1\n";

struct Ran {
    status: i32,
    left: Vec<String>,
    stderr: String,
}

/// The script on a machine named `hostname` with drain's three arguments.
fn drain_on(hostname: &str, mode: &str, timeout: &str, fqdn: &str) -> Ran {
    assert!(
        testkit::is_root(),
        "private UTS and mount namespaces need root"
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let bin = dir.path().join("bin");
    fs::create_dir(&bin).expect("mkdir bin");
    for stub in ["systemctl", "journalctl"] {
        let path = bin.join(stub);
        fs::write(&path, STUB).expect("write stub");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod stub");
    }
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = testkit::output(
        Command::new("unshare")
            .args(["--uts", "--mount", "--net", "--propagation", "private"])
            .args([
                "sh",
                "-c",
                HARNESS,
                "drain-test",
                hostname,
                mode,
                timeout,
                fqdn,
            ])
            .env("DRAIN_SCRIPT", REMOTE_SCRIPT)
            .env("PATH", path),
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "the harness itself failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let mut lines = stdout.lines();
    let status = lines
        .next()
        .and_then(|l| l.strip_prefix("exit="))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no exit status in:\n{stdout}\n{stderr}"));
    Ran {
        status,
        left: lines.map(str::to_string).collect(),
        stderr,
    }
}

/// `ran` is a refusal: exit `status`, `message` on stderr, nothing written, nothing called.
fn assert_refused(ran: &Ran, status: i32, message: &str) {
    let shown = format!(
        "exit {}\nstderr:\n{}left under /run: {:?}",
        ran.status, ran.stderr, ran.left
    );
    assert_eq!(ran.status, status, "{shown}");
    assert_eq!(ran.stderr.trim_end(), message, "{shown}");
    assert!(
        ran.left.is_empty(),
        "the refusal changed something:\n{shown}"
    );
}

#[test]
fn the_script_refuses_another_host_and_changes_nothing() {
    for mode in ["smtp", "all"] {
        let ran = drain_on("mx2.example.com", mode, "60", FQDN);
        assert_refused(
            &ran,
            3,
            "drain: this host is mx2.example.com, not mx1.example.com; nothing changed",
        );
    }
}

#[test]
fn the_script_refuses_a_timeout_that_is_not_whole_seconds_and_changes_nothing() {
    for timeout in ["", "60s", "-1", "1e3", " 60", "6 0", "0x10", "$(reboot)"] {
        let ran = drain_on(FQDN, "smtp", timeout, FQDN);
        assert_refused(
            &ran,
            2,
            &format!("drain: the timeout '{timeout}' is not a number of seconds; nothing changed"),
        );
    }
}

#[test]
fn the_script_refuses_an_unknown_mode_and_changes_nothing() {
    for mode in ["", "SMTP", "everything", "smtp all", "all;reboot"] {
        let ran = drain_on(FQDN, mode, "60", FQDN);
        assert_refused(
            &ran,
            2,
            &format!("drain: unknown mode '{mode}'; nothing changed"),
        );
    }
}

/// The control: with the right host, a good timeout and a known mode, the same harness sees
/// the script go on and change things (its runtime unit, the stubbed systemctl).
#[test]
fn the_script_goes_on_when_host_timeout_and_mode_are_right() {
    for mode in ["smtp", "all"] {
        let ran = drain_on(FQDN, mode, "60", FQDN);
        assert!(
            ran.left
                .iter()
                .any(|l| Path::new(l) == Path::new("/run/systemd/system/chasquid.service")),
            "mode {mode}: {:?}\n{}",
            ran.left,
            ran.stderr
        );
        assert!(
            ran.left
                .iter()
                .any(|l| l == "called: systemctl daemon-reload"),
            "mode {mode}: {:?}\n{}",
            ran.left,
            ran.stderr
        );
        assert_ne!(
            ran.status, 0,
            "the stubbed systemctl fails, so must the script"
        );
    }
}
