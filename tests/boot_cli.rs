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
