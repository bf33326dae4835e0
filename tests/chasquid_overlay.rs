//! The real chasquid accepts the overlay: it starts from the generated configuration, answers
//! on its ports, and resolves the site's aliases (catch-all included) as the site file says.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use mailbake::secrets::SecretStore;

/// Reads one (possibly multi-line) SMTP reply.
fn reply(reader: &mut BufReader<TcpStream>) -> String {
    let mut text = String::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("reply line");
        text.push_str(&line);
        if line.len() < 4 || line.as_bytes()[3] != b'-' {
            return text;
        }
    }
}

#[test]
fn chasquid_starts_from_the_overlay_and_resolves_the_site_aliases() {
    let dir = tempfile::tempdir().unwrap();
    let testkit::BuiltOverlay { secrets, root, .. } =
        testkit::built_overlay(dir.path(), &testkit::example_site());
    let config_dir = root.join("etc/chasquid");
    testkit::throwaway_certificate(&config_dir, "smtp.example.com");

    // The seed would bring the users database: the one for the site's user `i`.
    let store = SecretStore::open(&secrets).unwrap();
    let users = store
        .user_db_bytes(&"example.com".try_into().unwrap())
        .unwrap()
        .expect("users file");
    std::fs::write(config_dir.join("domains/example.com/users"), users).unwrap();

    let state = dir.path().join("state");
    let chasquid = testkit::Chasquid::start(&root, &state, "smtp.example.com");
    let log = chasquid.log_text();
    assert!(
        log.contains("example.com (1 users, 2 aliases"),
        "domain loaded as generated:\n{log}"
    );

    // A client's view: greeting, EHLO offering STARTTLS.
    let stream = TcpStream::connect(("127.0.0.1", chasquid.smtp)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let greeting = reply(&mut reader);
    assert!(greeting.starts_with("220 smtp.example.com "), "{greeting}");
    writer.write_all(b"EHLO client.example.net\r\n").unwrap();
    let ehlo = reply(&mut reader);
    assert!(ehlo.starts_with("250-smtp.example.com"), "{ehlo}");
    assert!(ehlo.contains("STARTTLS"), "{ehlo}");
    writer.write_all(b"QUIT\r\n").unwrap();

    // Aliases as the site says: postmaster -> i (a user), anything else -> the catch-all.
    let resolve = |address: &str| {
        let result = chasquid.util(&["aliases-resolve", address]);
        assert!(
            result.status.success(),
            "aliases-resolve {address}: {}",
            String::from_utf8_lossy(&result.stderr)
        );
        String::from_utf8_lossy(&result.stdout).trim().to_string()
    };
    assert_eq!(resolve("postmaster@example.com"), "(email)  i@example.com");
    assert_eq!(resolve("i@example.com"), "(email)  i@example.com");
    assert_eq!(
        resolve("anything-at-all@example.com"),
        "(email)  i.example.com@gmail.com"
    );
    assert_eq!(
        resolve("someone@elsewhere.example"),
        "(email)  someone@elsewhere.example"
    );
}
