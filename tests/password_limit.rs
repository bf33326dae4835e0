//! The longest password `mailbake user add` accepts is the longest the shipped chasquid can
//! authenticate: AUTH PLAIN carries address and password base64-encoded on one SMTP line of
//! at most 1000 bytes. Checked with a real client (Python's smtplib, which sends the initial
//! response on the AUTH line) against the real chasquid on loopback.

use std::fs;
use std::process::Command;

use mailbake::secrets::{Password, SecretStore, SecretsError, max_password_bytes};
use mailbake::site::{DomainName, LocalPart};

/// Logs in over STARTTLS on `port` as each (user, password) given on standard input (one
/// JSON list), prints one JSON list of booleans / error texts.
const LOGIN_PY: &str = r#"
import json, smtplib, ssl, sys
port = int(sys.argv[1])
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE  # the throw-away certificate
results = []
for user, password in json.load(sys.stdin):
    try:
        with smtplib.SMTP("127.0.0.1", port, local_hostname="client.invalid", timeout=30) as s:
            s.starttls(context=ctx)
            s.login(user, password)
        results.append(True)
    except (smtplib.SMTPException, OSError) as e:
        results.append(repr(e))
print(json.dumps(results))
"#;

#[test]
fn the_longest_accepted_password_authenticates_and_one_more_byte_cannot() {
    let dir = tempfile::tempdir().unwrap();
    let max = max_password_bytes("i@example.com");
    assert_eq!(max, max_password_bytes("j@example.com"), "same length");
    let longest = "p".repeat(max);
    let too_long = "q".repeat(max + 1);

    // mailbake stores the longest and refuses one byte more.
    let store = SecretStore::create(dir.path().join("secrets")).unwrap();
    let domain = DomainName::try_from("example.com").unwrap();
    let local = |l: &str| LocalPart::try_from(l).unwrap();
    store
        .add_user(
            &domain,
            &local("i"),
            &Password::new(longest.clone()).unwrap(),
        )
        .expect("the longest password is stored");
    let refused = store.add_user(
        &domain,
        &local("j"),
        &Password::new(too_long.clone()).unwrap(),
    );
    assert!(
        matches!(refused, Err(SecretsError::PasswordTooLong { .. })),
        "{refused:?}"
    );

    // A configuration with mailbake's users database, plus `j` with the over-long password
    // added by chasquid-util itself, so only the password's length differs.
    let root = dir.path().join("root");
    let config = root.join("etc/chasquid");
    let domain_dir = config.join("domains/example.com");
    fs::create_dir_all(&domain_dir).unwrap();
    fs::write(
        config.join("chasquid.conf"),
        "# relocated by the test\ndata_dir: \"/nonexistent\"\n",
    )
    .unwrap();
    fs::write(
        domain_dir.join("users"),
        store.user_db_bytes(&domain).unwrap().unwrap(),
    )
    .unwrap();
    let util = |args: &[&str]| {
        testkit::run(
            Command::new(testkit::chasquid_util())
                .arg(format!("-C={}", config.display()))
                .args(args),
        )
    };
    util(&[
        "user-add",
        "j@example.com",
        &format!("--password={too_long}"),
    ]);
    // Both hashes are right: offline, each password checks out.
    util(&[
        "authenticate",
        "i@example.com",
        &format!("--password={longest}"),
    ]);
    util(&[
        "authenticate",
        "j@example.com",
        &format!("--password={too_long}"),
    ]);
    testkit::throwaway_certificate(&config, "smtp.example.com");

    let state = dir.path().join("state");
    let chasquid = testkit::Chasquid::start(&root, &state, "smtp.example.com");
    let script = dir.path().join("login.py");
    fs::write(&script, LOGIN_PY).unwrap();
    let logins = serde_json::json!([
        ["i@example.com", longest],
        ["j@example.com", too_long],
        ["i@example.com", "wrong password"],
    ]);
    let mut child = Command::new("/usr/bin/python3")
        .arg(&script)
        .arg(chasquid.submission.to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        &mut child.stdin.take().unwrap(),
        logins.to_string().as_bytes(),
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    let results: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n--- chasquid log ---\n{}",
            String::from_utf8_lossy(&out.stdout),
            chasquid.log_text()
        )
    });
    assert_eq!(results[0], true, "the longest password logs in: {results}");
    assert!(
        results[1].as_str().is_some_and(|e| e.contains("too long")),
        "one byte more is refused by chasquid (line too long): {results}\n{}",
        chasquid.log_text()
    );
    assert!(
        results[2].as_str().is_some_and(|e| e.contains("535")),
        "a wrong password is refused, so the first login was not vacuous: {results}"
    );
}
