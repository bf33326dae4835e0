//! `mailbake build` checks its inputs before its expensive work, by one rule for when a site
//! needs a secrets store: a site that keeps no secret builds without one, and a bad `--out`
//! or a broken store fails with nothing written, before any package is fetched.
//!
//! "Before any package is fetched" is checked on disk, not on a clock: each failing build is
//! pointed at a package cache that does not exist yet, and opening the cache (the first step
//! of fetching) would create it.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
// Linked for its watchdog, which bounds every test (tests/support/src/watchdog.rs).
use testkit as _;

use testkit::{names, text};

/// A site that forwards everything and has no users, no DKIM and no TLS material.
const FORWARDING_ONLY: &str = r#"
site: forwarder
domains:
  example.com:
    aliases:
      postmaster: someone@example.net
      "*": someone@example.net
hosts:
  mx1:
    fqdn: mx1.example.com
    ipv4: 203.0.113.10
"#;

fn write_site(dir: &Path, yaml: &str) -> PathBuf {
    let site = dir.join("site.yaml");
    fs::write(&site, yaml).expect("write site.yaml");
    site
}

fn build(site: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mailbake"))
        .arg("build")
        .arg(site)
        .args(args)
        .output()
        .expect("mailbake runs")
}

/// Runs a build of `site` that must fail naming `expect`, with `out` and a fresh package
/// cache under `dir`; checks that it wrote nothing, not even the cache.
fn assert_fails_before_any_work(dir: &Path, site: &Path, out: &Path, expect: &[&str]) {
    let before = names(dir);
    let cache = dir.join("cache");
    let result = build(
        site,
        &[
            "--out",
            &out.display().to_string(),
            "--cache",
            &cache.display().to_string(),
        ],
    );
    let said = text(&result);
    assert_eq!(result.status.code(), Some(1), "{said}");
    for e in expect {
        assert!(said.contains(e), "expected `{e}` in:\n{said}");
    }
    assert!(
        !cache.exists(),
        "the build reached the package cache before failing:\n{said}"
    );
    assert_eq!(
        names(dir),
        before,
        "a failed build leaves the directory as it was"
    );
}

#[test]
fn a_site_that_keeps_no_secret_builds_without_a_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let site = write_site(dir.path(), FORWARDING_ONLY);
    let out = dir.path().join("out");
    let result = build(&site, &["--out", &out.display().to_string()]);
    assert!(result.status.success(), "{}", text(&result));
    assert!(
        !dir.path().join("secrets").exists(),
        "no store is made for it"
    );
    for file in [
        "overlay.tar",
        "hosts/mx1/seed/user-data",
        "hosts/mx1/seed.img",
        "dns/example.com.zone",
        "SHA256SUMS",
    ] {
        assert!(out.join(file).is_file(), "{file} missing");
    }
    // The report on stdout and SHA256SUMS carry the same digests.
    let sums = fs::read_to_string(out.join("SHA256SUMS")).expect("SHA256SUMS");
    let stdout = String::from_utf8_lossy(&result.stdout);
    for line in sums.lines() {
        let (digest, path) = line.split_once("  ").expect("digest  path");
        let reported = stdout
            .lines()
            .find(|l| l.ends_with(&format!("/{path}")))
            .unwrap_or_else(|| panic!("{path} not reported:\n{stdout}"));
        assert!(reported.starts_with(digest), "{reported} vs {line}");
    }
}

#[test]
fn a_foreign_out_directory_fails_before_any_work() {
    let dir = tempfile::tempdir().expect("tempdir");
    let site = write_site(dir.path(), FORWARDING_ONLY);
    let out = dir.path().join("out");
    fs::create_dir(&out).expect("mkdir out");
    fs::write(out.join("precious"), b"mine").expect("write");
    assert_fails_before_any_work(
        dir.path(),
        &site,
        &out,
        &[
            "is not an output of `mailbake build --out`",
            "fix: choose another directory",
        ],
    );
    assert_eq!(fs::read(out.join("precious")).expect("kept"), b"mine");
}

#[test]
fn a_missing_store_that_the_site_needs_fails_before_any_work() {
    let dir = tempfile::tempdir().expect("tempdir");
    let yaml = FORWARDING_ONLY.replace("    aliases:", "    users: [i]\n    aliases:");
    let site = write_site(dir.path(), &yaml);
    assert_fails_before_any_work(
        dir.path(),
        &site,
        &dir.path().join("out"),
        &[
            "needs a secrets store",
            "mailbake user add SITE USER@example.com",
        ],
    );
}

#[test]
fn an_insecure_store_fails_before_any_work_even_when_nothing_in_it_is_needed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let site = write_site(dir.path(), FORWARDING_ONLY);
    let store = dir.path().join("secrets");
    fs::create_dir(&store).expect("mkdir secrets");
    fs::set_permissions(&store, fs::Permissions::from_mode(0o755)).expect("chmod");
    assert_fails_before_any_work(
        dir.path(),
        &site,
        &dir.path().join("out"),
        &["secrets", "chmod 700"],
    );
}
