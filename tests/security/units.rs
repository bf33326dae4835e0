//! Posture: the image's own systemd units are valid for systemd itself, and the ACME service
//! and the auth guard are sandboxed. `systemd-analyze verify` checks each unit of a real
//! `mailbake build` (pinned packages included, so chasquid.service and its drop-in too)
//! against the host's systemd units; `systemd-analyze security` scores the exposure of the
//! services that hold secrets or privileges. (That lego still renews under the sandbox is
//! qemu-tests/acme.rs's job: it boots the image and renews against pebble.)

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::fixture;

const UNITS: [&str; 9] = [
    "chasquid.service",
    "mailbake-acme.service",
    "mailbake-acme.timer",
    "mailbake-acme-boot.timer",
    "mailbake-apply-seed.service",
    "mailbake-bootstrap-cert.service",
    "mailbake-auth-guard.service",
    "mailbake-network-ready.service",
    "mailbake-boot-report.service",
];

/// The built overlay plus the host's own system units (targets, sockets the image's units
/// name), which is what the units meet on a booted base image. Built once per test run, in
/// cargo's scratch directory for integration tests, and only read by the tests.
fn root_with_units() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("security-units");
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("mkdir scratch");
        let root = fixture::built_example_with_acme(
            &dir,
            "    provider: rfc2136\n    email: ops@example.com\n",
        );
        let host_units = Path::new("/usr/lib/systemd/system");
        let copy = Command::new("cp")
            .arg("-a")
            .arg(host_units)
            .arg(root.join("usr/lib/systemd/"))
            .status()
            .expect("cp runs");
        assert!(copy.success(), "copying {} failed", host_units.display());
        root
    })
}

fn analyze(root: &Path, args: &[&str]) -> std::process::Output {
    Command::new("systemd-analyze")
        .args(args)
        .arg(format!("--root={}", root.display()))
        .output()
        .expect("systemd-analyze runs (package systemd, version 250 or later for --root)")
}

#[test]
fn every_unit_of_the_image_passes_systemd_analyze_verify_without_a_warning() {
    let root = root_with_units();
    let mut problems = Vec::new();
    for unit in UNITS {
        assert!(
            root.join("etc/systemd/system").join(unit).exists()
                || root.join("usr/lib/systemd/system").join(unit).exists(),
            "{unit} is not in the image"
        );
        // --man=no: the package's Documentation= man page is not installed on the test host.
        let out = analyze(root, &["verify", "--man=no", unit]);
        let said = String::from_utf8_lossy(&out.stderr).to_string()
            + &String::from_utf8_lossy(&out.stdout);
        // verify only warns about unknown keys and bad values: a warning is a failure here.
        if !out.status.success() || !said.trim().is_empty() {
            problems.push(format!("{unit} ({}):\n{said}", out.status));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The exposure score `systemd-analyze security` gives `unit` (0 safest, 10 unsafe).
fn exposure(root: &Path, unit: &str) -> f64 {
    let out = analyze(root, &["security", "--offline=true", "--no-pager", unit]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let marker = format!("Overall exposure level for {unit}: ");
    text.lines()
        .find_map(|l| l.split(&marker).nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "no score for {unit}:\n{text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

#[test]
fn the_acme_service_and_the_auth_guard_are_sandboxed() {
    let root = root_with_units();
    // systemd's own scale: below 4 is "OK", 9 and above "UNSAFE" (the ACME service with only
    // PrivateTmp scored 9.4). Both must stay in the "OK" band.
    for unit in ["mailbake-acme.service", "mailbake-auth-guard.service"] {
        let score = exposure(root, unit);
        assert!(
            score < 4.0,
            "{unit} exposure {score} (systemd-analyze security)"
        );
    }
    let acme = fs::read_to_string(root.join("etc/systemd/system/mailbake-acme.service"))
        .expect("the ACME unit");
    for setting in [
        "ProtectSystem=strict",
        "ReadWritePaths=/etc/chasquid/certs",
        "StateDirectory=mailbake/acme",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=CAP_CHOWN",
    ] {
        assert!(acme.lines().any(|l| l == setting), "{setting} missing");
    }
}
