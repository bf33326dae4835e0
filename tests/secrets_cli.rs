//! `mailbake user` and `mailbake dkim` against a site and a store in a temporary directory.

use std::process::{Command, Output};

fn mailbake(dir: &std::path::Path, args: &[&str], stdin: &str) -> Output {
    testkit::mailbake_in(dir, args, stdin)
}

/// `mailbake dkim rotate site.yaml example.com --to PREFIX` in `dir`.
fn rotate_to(dir: &std::path::Path, prefix: &str) -> Output {
    mailbake(
        dir,
        &["dkim", "rotate", "site.yaml", "example.com", "--to", prefix],
        "",
    )
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn users_are_added_listed_checked_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(testkit::example_site(), dir.path().join("site.yaml")).unwrap();
    let add = |addr: &str, pw: &str| {
        mailbake(
            dir.path(),
            &["user", "add", "site.yaml", addr, "--password-stdin"],
            pw,
        )
    };

    let short = add("i@example.com", "too short\n");
    assert!(!short.status.success());
    assert!(text(&short).contains("at least 12"), "{}", text(&short));
    assert!(
        !dir.path().join("secrets/users/example.com").exists(),
        "nothing stored on refusal"
    );

    let unknown = add("bob@example.com", "a long enough password\n");
    assert!(!unknown.status.success());
    assert!(
        text(&unknown).contains("add `bob` to `domains.example.com.users`"),
        "{}",
        text(&unknown)
    );

    assert!(
        add("i@example.com", "a long enough password\n")
            .status
            .success()
    );
    let again = add("i@example.com", "another long password\n");
    assert!(
        !again.status.success(),
        "an existing user is not overwritten"
    );

    let stored = std::fs::read_to_string(dir.path().join("secrets/users/example.com")).unwrap();
    assert!(
        !stored.contains("a long enough password"),
        "plaintext never stored"
    );
    let authenticate = || {
        Command::new(testkit::chasquid_util())
            .arg(format!("-C={}", dir.path().join("cfg").display()))
            .args([
                "authenticate",
                "i@example.com",
                "--password=a long enough password",
            ])
            .output()
            .unwrap()
    };
    let auth = authenticate();
    // chasquid-util reads domains/<d>/users under its config dir.
    assert!(!auth.status.success(), "no config dir yet: must fail");
    std::fs::create_dir_all(dir.path().join("cfg/domains/example.com")).unwrap();
    std::fs::write(dir.path().join("cfg/domains/example.com/users"), &stored).unwrap();
    let auth = authenticate();
    assert!(auth.status.success(), "{}", text(&auth));

    let list = mailbake(dir.path(), &["user", "list", "site.yaml"], "");
    assert_eq!(String::from_utf8_lossy(&list.stdout), "i@example.com\tok\n");

    assert!(
        mailbake(
            dir.path(),
            &["user", "remove", "site.yaml", "i@example.com"],
            ""
        )
        .status
        .success()
    );
    let list = mailbake(dir.path(), &["user", "list", "site.yaml"], "");
    assert!(String::from_utf8_lossy(&list.stdout).contains("no password"));
}

#[test]
fn dkim_keys_are_generated_once_and_rotation_keeps_the_old_selectors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(testkit::example_site(), dir.path().join("site.yaml")).unwrap();
    let keygen = mailbake(
        dir.path(),
        &["dkim", "keygen", "site.yaml", "example.com"],
        "",
    );
    assert!(keygen.status.success(), "{}", text(&keygen));
    let rsa = dir.path().join("secrets/dkim/example.com/2026a-rsa.pem");
    let first = std::fs::read(&rsa).unwrap();
    assert!(String::from_utf8_lossy(&first).starts_with("-----BEGIN PRIVATE KEY-----"));
    assert!(
        dir.path()
            .join("secrets/dkim/example.com/2026a-ed.pem")
            .is_file()
    );

    let again = mailbake(
        dir.path(),
        &["dkim", "keygen", "site.yaml", "example.com"],
        "",
    );
    assert!(text(&again).contains("key exists, kept"));
    assert_eq!(
        std::fs::read(&rsa).unwrap(),
        first,
        "keygen never replaces a key without --force"
    );

    let rotate = rotate_to(dir.path(), "2026b");
    assert!(rotate.status.success(), "{}", text(&rotate));
    let advice = String::from_utf8_lossy(&rotate.stdout);
    assert!(
        advice.contains("2026b-rsa: rsa-2048")
            && advice.contains("retired:")
            && advice.contains("2026a-ed: ed25519"),
        "{advice}"
    );
    assert!(
        dir.path()
            .join("secrets/dkim/example.com/2026b-ed.pem")
            .is_file()
    );
    assert_eq!(
        std::fs::read(&rsa).unwrap(),
        first,
        "rotation keeps the old key"
    );

    // The advice is a valid site: apply it and check it.
    let site = std::fs::read_to_string(dir.path().join("site.yaml")).unwrap().replace(
        "      selectors:\n        2026a-rsa: rsa-2048\n        2026a-ed: ed25519\n",
        "      selectors:\n        2026b-rsa: rsa-2048\n        2026b-ed: ed25519\n      retired:\n        2026a-rsa: rsa-2048\n        2026a-ed: ed25519\n",
    );
    std::fs::write(dir.path().join("site.yaml"), site).unwrap();
    let check = mailbake(dir.path(), &["check", "site.yaml"], "");
    assert!(check.status.success(), "{}", text(&check));
}

#[test]
fn rotating_a_domain_without_selectors_fails_and_says_what_to_add() {
    let dir = tempfile::tempdir().unwrap();
    let site = std::fs::read_to_string(testkit::example_site())
        .unwrap()
        .replace(
            "    dkim:\n      selectors:\n        2026a-rsa: rsa-2048\n        2026a-ed: ed25519\n",
            "",
        );
    std::fs::write(dir.path().join("site.yaml"), site).unwrap();
    let rotate = rotate_to(dir.path(), "2026b");
    assert_eq!(rotate.status.code(), Some(1), "{}", text(&rotate));
    assert!(
        text(&rotate).contains("example.com has no DKIM selectors")
            && text(&rotate).contains("mailbake dkim keygen"),
        "{}",
        text(&rotate)
    );
    assert!(
        !dir.path().join("secrets").exists(),
        "nothing is created when there is nothing to rotate"
    );
}

#[test]
fn a_password_too_long_for_one_auth_plain_line_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(testkit::example_site(), dir.path().join("site.yaml")).unwrap();
    let max = mailbake::secrets::max_password_bytes("i@example.com");
    let add = mailbake(
        dir.path(),
        &[
            "user",
            "add",
            "site.yaml",
            "i@example.com",
            "--password-stdin",
        ],
        &format!("{}\n", "p".repeat(max + 1)),
    );
    assert_eq!(add.status.code(), Some(1), "{}", text(&add));
    assert!(
        text(&add).contains(&format!(
            "password too long: {} bytes, but i@example.com can log in with at most {max}",
            max + 1
        )),
        "{}",
        text(&add)
    );
    assert!(!dir.path().join("secrets/users/example.com").exists());
}
