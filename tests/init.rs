//! `mailbake init`: a new site that the other commands work on as written, and a command that
//! never overwrites anything.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;

fn mailbake(dir: &Path, args: &[&str], stdin: &str) -> Output {
    testkit::mailbake_in(dir, args, stdin)
}

fn assert_ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).expect("exists").permissions().mode() & 0o777
}

#[test]
fn a_new_site_takes_users_keys_and_builds() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let said = assert_ok(
        &mailbake(dir, &["init", "example.org", "--dir", "site"], ""),
        "init",
    );
    assert!(said.contains("REPLACE"), "{said}");
    let site = dir.join("site/site.yaml");
    let text = fs::read_to_string(&site).unwrap();
    assert!(
        text.contains("fqdn: \"smtp.example.org\"") && text.contains("203.0.113.10"),
        "{text}"
    );
    assert_eq!(mode(&dir.join("site/secrets")), 0o700);
    assert_eq!(
        fs::read_dir(dir.join("site/secrets")).unwrap().count(),
        0,
        "the store starts empty"
    );

    let check = assert_ok(&mailbake(dir, &["check", "site/site.yaml"], ""), "check");
    assert!(
        check.contains("ok: site `mail`, 1 domain(s), 1 host(s)"),
        "{check}"
    );
    assert_ok(
        &mailbake(
            dir,
            &[
                "user",
                "add",
                "site/site.yaml",
                "me@example.org",
                "--password-stdin",
            ],
            "a long enough password\n",
        ),
        "user add",
    );
    assert_ok(
        &mailbake(
            dir,
            &["dkim", "keygen", "site/site.yaml", "example.org"],
            "",
        ),
        "dkim keygen",
    );
    assert_ok(
        &mailbake(dir, &["build", "site/site.yaml", "--out", "out"], ""),
        "build",
    );
    assert!(dir.join("out/hosts/mx1/seed.img").is_file());
    let zone = fs::read_to_string(dir.join("out/dns/example.org.zone")).unwrap();
    assert!(
        zone.contains("sel1-rsa._domainkey.example.org.") && zone.contains("sel1-ed._domainkey"),
        "{zone}"
    );
}

#[test]
fn init_never_overwrites_and_writes_nothing_when_it_refuses() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    fs::write(dir.join("site.yaml"), "mine\n").unwrap();
    let refused = mailbake(dir, &["init", "example.org"], "");
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("site.yaml already exists"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert_eq!(fs::read_to_string(dir.join("site.yaml")).unwrap(), "mine\n");
    assert!(!dir.join("secrets").exists(), "no store made on refusal");

    fs::remove_file(dir.join("site.yaml")).unwrap();
    fs::create_dir(dir.join("secrets")).unwrap();
    let refused = mailbake(dir, &["init", "example.org"], "");
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("secrets already exists"));
    assert!(!dir.join("site.yaml").exists(), "no site file on refusal");

    let bad = mailbake(dir, &["init", "exa_mple.org", "--dir", "new"], "");
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("`_`"));
    assert!(!dir.join("new").exists());

    let help = assert_ok(&mailbake(dir, &["init", "--help"], ""), "init --help");
    assert!(
        help.contains("Never overwrites anything") && help.contains("--dir"),
        "{help}"
    );
}

/// The site file names the SSH keys that become root on every host: what init creates is the
/// operator's alone even under `umask 000`, and a `--dir` that is not a directory is named.
#[test]
fn init_makes_the_site_private_whatever_the_umask() {
    let tmp = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("sh")
        .args(["-c", "umask 000 && exec \"$0\" \"$@\""])
        .arg(testkit::mailbake_bin())
        .args(["init", "example.org", "--dir", "new/site"])
        .current_dir(tmp.path())
        .output()
        .expect("sh runs mailbake init");
    assert_ok(&out, "init under umask 000");
    let site = tmp.path().join("new/site");
    let modes = [
        ("new", mode(&tmp.path().join("new"))),
        ("new/site", mode(&site)),
        ("new/site/site.yaml", mode(&site.join("site.yaml"))),
        ("new/site/secrets", mode(&site.join("secrets"))),
    ];
    assert_eq!(
        modes,
        [
            ("new", 0o700),
            ("new/site", 0o700),
            ("new/site/site.yaml", 0o600),
            ("new/site/secrets", 0o700)
        ],
        "modes (octal {:o} {:o} {:o} {:o})",
        modes[0].1,
        modes[1].1,
        modes[2].1,
        modes[3].1
    );

    let not_a_dir = mailbake(
        tmp.path(),
        &["init", "example.org", "--dir", "/dev/null"],
        "",
    );
    let said = String::from_utf8_lossy(&not_a_dir.stderr);
    assert_eq!(not_a_dir.status.code(), Some(1), "{said}");
    assert!(
        said.contains("--dir /dev/null is not a directory") && said.contains("fix:"),
        "{said}"
    );
}
