//! `build --out`, `drain --export` and `terraform --out` each replace only their own kind of
//! output, and refuse a destination they cannot use before they do anything: before the
//! build, and before `drain` touches the host.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;

use testkit::{example_site, mailbake_bin, names, text};

/// A directory as `drain --export` leaves it: a queued message, its digest list and its kind.
fn drain_export(dir: &Path) {
    fs::create_dir(dir).expect("mkdir export");
    fs::write(dir.join("m:4f2a"), "the only copy of undelivered mail").expect("queue item");
    fs::write(dir.join("SHA256SUMS"), "").expect("sums");
    fs::write(dir.join("MAILBAKE-OUTPUT"), "mailbake drain --export\n").expect("marker");
}

#[test]
fn build_refuses_a_drain_export_and_a_symlink_before_building() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let site = example_site().display().to_string();
    let export = tmp.path().join("export");
    drain_export(&export);
    let build = |out: &Path| {
        Command::new(mailbake_bin())
            .args(["build", &site, "--out"])
            .arg(out)
            .output()
            .expect("mailbake build runs")
    };

    let refused = build(&export);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(
        text(&refused)
            .contains("holds the output of `mailbake drain --export`, which `mailbake build --out` must not replace"),
        "{}",
        text(&refused)
    );
    assert_eq!(
        fs::read_to_string(export.join("m:4f2a")).expect("the export stays"),
        "the only copy of undelivered mail"
    );

    let earlier = tmp.path().join("earlier");
    fs::create_dir(&earlier).expect("mkdir");
    fs::write(earlier.join("MAILBAKE-OUTPUT"), "mailbake build --out\n").expect("marker");
    let link = tmp.path().join("out");
    std::os::unix::fs::symlink(&earlier, &link).expect("symlink");
    let refused = build(&link);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(
        text(&refused).contains("is a symbolic link to"),
        "{}",
        text(&refused)
    );
    assert!(
        !text(&refused).contains("site "),
        "the build started before the refusal:\n{}",
        text(&refused)
    );
    assert_eq!(names(tmp.path()), ["earlier", "export", "out"]);
}

#[test]
fn drain_refuses_an_export_or_key_it_cannot_use_before_it_connects() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // A stand-in ssh that records being run: the host must not be touched.
    let bin = tmp.path().join("bin");
    fs::create_dir(&bin).expect("mkdir bin");
    let ssh = bin.join("ssh");
    fs::write(
        &ssh,
        format!(
            "#!/bin/sh\ntouch '{}'\nexit 255\n",
            tmp.path().join("ssh-ran").display()
        ),
    )
    .expect("write ssh");
    fs::set_permissions(&ssh, fs::Permissions::from_mode(0o755)).expect("chmod ssh");
    fs::write(tmp.path().join("a-file"), "").expect("a file");
    let build_output = tmp.path().join("out");
    fs::create_dir(&build_output).expect("mkdir");
    fs::write(build_output.join("overlay.tar"), "overlay").expect("overlay");
    fs::write(build_output.join("SHA256SUMS"), "").expect("sums");
    fs::write(
        build_output.join("MAILBAKE-OUTPUT"),
        "mailbake build --out\n",
    )
    .expect("marker");

    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for (option, export, expect) in [
        ("--export", "a-file/export", "cannot write into"),
        (
            "--export",
            "out",
            "holds the output of `mailbake build --out`, which `mailbake drain --export` must not replace",
        ),
        (
            "--ssh-key",
            "no-such-key",
            "--ssh-key no-such-key: No such file or directory",
        ),
    ] {
        let out = Command::new(mailbake_bin())
            .args(["drain"])
            .arg(example_site())
            .args(["--host", "mx1", "--connect", "192.0.2.1", option, export])
            .current_dir(tmp.path())
            .env("PATH", &path)
            .output()
            .expect("mailbake drain runs");
        assert_eq!(out.status.code(), Some(1), "{export}: {}", text(&out));
        assert!(text(&out).contains(expect), "{export}: {}", text(&out));
        assert!(
            !tmp.path().join("ssh-ran").exists(),
            "drain connected to the host before refusing --export {export}:\n{}",
            text(&out)
        );
    }
    assert_eq!(
        fs::read_to_string(build_output.join("overlay.tar")).expect("the build output stays"),
        "overlay"
    );
}
