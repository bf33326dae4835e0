//! `mailbake send-test` against the real shipped chasquid on loopback: AUTH over implicit TLS
//! (465) and STARTTLS (587) is accepted and the message lands in chasquid's queue; a wrong
//! password is refused with a clear error and exit 1; the password never appears in the output.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use base64::Engine as _;
use mailbake::secrets::SecretStore;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

/// A CA, and a certificate it issued for `name`, installed in chasquid's layout; returns the
/// CA's PEM file.
fn install_certificate(config_dir: &Path, name: &str, dir: &Path) -> PathBuf {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "send-test CA");
    let ca =
        CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key")).expect("CA");
    let mut params = CertificateParams::new(vec![name.to_string()]).expect("params");
    params.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().expect("key");
    let leaf = params.signed_by(&key, &ca).expect("leaf");
    let certs = config_dir.join("certs").join(name);
    std::fs::create_dir_all(&certs).expect("mkdir certs");
    std::fs::write(certs.join("fullchain.pem"), leaf.pem() + &ca.pem()).expect("fullchain");
    std::fs::write(certs.join("privkey.pem"), key.serialize_pem()).expect("privkey");
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).expect("ca.pem");
    ca_file
}

struct Server {
    chasquid: testkit::Chasquid,
    ca: PathBuf,
    state: PathBuf,
    _dir: tempfile::TempDir,
}

fn server() -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let testkit::BuiltOverlay { secrets, root, .. } =
        testkit::built_overlay(dir.path(), &testkit::example_site());
    let config_dir = root.join("etc/chasquid");
    let ca = install_certificate(&config_dir, "smtp.example.com", dir.path());
    let users = SecretStore::open(&secrets)
        .expect("store")
        .user_db_bytes(&mailbake::site::DomainName::try_from("example.com").expect("a domain"))
        .expect("users")
        .expect("users file");
    std::fs::write(config_dir.join("domains/example.com/users"), users).expect("users");
    let state = dir.path().join("state");
    let chasquid = testkit::Chasquid::start(&root, &state, "smtp.example.com");
    Server {
        chasquid,
        ca,
        state,
        _dir: dir,
    }
}

/// `mailbake send-test` from i@example.com to i@example.com (a local user: chasquid queues
/// it for its test MDA, which defers, so nothing is delivered anywhere), trusting `ca`.
fn send_test(port: &str, connect: u16, ca: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mailbake"));
    cmd.arg("send-test")
        .arg(testkit::example_site())
        .args([
            "--from",
            "i@example.com",
            "--to",
            "i@example.com",
            "--port",
            port,
        ])
        .arg("--connect")
        .arg(format!("127.0.0.1:{connect}"))
        .arg("--ca")
        .arg(ca)
        .env_remove("MAILBAKE_SMTP_PASSWORD")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// send-test with `password` on standard input.
fn send(server: &Server, port: &str, connect: u16, password: &str) -> Output {
    let mut child = send_test(port, connect, &server.ca)
        .arg("--password-stdin")
        .stdin(Stdio::piped())
        .spawn()
        .expect("mailbake runs");
    let mut stdin = child.stdin.take().expect("stdin");
    // send-test may fail before reading (a bad argument); a closed pipe is not our failure.
    let _ = stdin.write_all(format!("{password}\n").as_bytes());
    drop(stdin);
    child.wait_with_output().expect("mailbake finishes")
}

/// Every file of chasquid's queue, as text.
fn queue_text(state: &Path) -> String {
    let mut text = String::new();
    for entry in walk(&state.join("queue")) {
        text.push_str(&String::from_utf8_lossy(
            &std::fs::read(entry).unwrap_or_default(),
        ));
    }
    text
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn message_id(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("Message-ID: <"))
        .and_then(|rest| rest.strip_suffix('>'))
        .unwrap_or_else(|| panic!("no Message-ID line in:\n{stdout}"))
        .to_string()
}

fn assert_no_secret(text: &str) {
    let blob = base64::engine::general_purpose::STANDARD
        .encode(format!("\0i@example.com\0{}", testkit::EXAMPLE_PASSWORD));
    assert!(
        !text.contains(testkit::EXAMPLE_PASSWORD),
        "the password leaked:\n{text}"
    );
    assert!(!text.contains(&blob), "the AUTH blob leaked:\n{text}");
}

#[test]
fn send_test_submits_over_465_and_587_and_the_message_is_queued() {
    let server = server();
    for (port, connect) in [
        ("465", server.chasquid.submission_tls),
        ("587", server.chasquid.submission),
    ] {
        let out = send(&server, port, connect, testkit::EXAMPLE_PASSWORD);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "port {port}: {stdout}\n{stderr}\nchasquid:\n{}",
            server.chasquid.log_text()
        );
        assert!(stdout.contains("subject: CN=smtp.example.com"), "{stdout}");
        assert!(stdout.contains("names (SAN): smtp.example.com"), "{stdout}");
        assert!(stdout.contains("sha256: "), "{stdout}");
        assert!(
            stdout.contains("S: 235 2.7.0 Authentication successful"),
            "{stdout}"
        );
        assert!(
            stdout.contains("C: AUTH PLAIN <credentials not shown>"),
            "{stdout}"
        );
        assert!(stdout.contains("\nAccepted: 250 "), "{stdout}");
        assert!(stdout.contains("carries no queue id"), "{stdout}");
        if port == "587" {
            assert!(stdout.contains("C: STARTTLS"), "{stdout}");
        }
        assert_no_secret(&stdout);
        assert_no_secret(&stderr);
        let id = message_id(&stdout);
        assert!(stdout.contains(&format!("rfc822msgid:{id}")), "{stdout}");
        // The proof that it was really accepted: chasquid holds it in its queue.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !queue_text(&server.state).contains(&id) {
            assert!(
                std::time::Instant::now() < deadline,
                "port {port}: {id} not in chasquid's queue; log:\n{}",
                server.chasquid.log_text()
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

#[test]
fn a_wrong_password_is_refused_with_a_clear_error_and_nothing_is_sent() {
    let server = server();
    let out = send(
        &server,
        "465",
        server.chasquid.submission_tls,
        "not the right password at all",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("the server refused the login for i@example.com: 535"),
        "{stderr}"
    );
    assert!(stderr.contains("mailbake user add"), "{stderr}");
    assert!(!stderr.contains("not the right password"), "{stderr}");
    assert!(
        !queue_text(&server.state).contains("mailbake-send-test"),
        "a message was queued"
    );
}

#[test]
fn an_unverifiable_certificate_stops_before_the_password_is_sent() {
    let server = server();
    // Trust a CA that did not issue the server's certificate.
    let dir = tempfile::tempdir().expect("tempdir");
    let other = install_certificate(&dir.path().join("x"), "smtp.example.com", dir.path());
    let out = send_test("465", server.chasquid.submission_tls, &other)
        .env("MAILBAKE_SMTP_PASSWORD", testkit::EXAMPLE_PASSWORD)
        .stdin(Stdio::null())
        .output()
        .expect("mailbake runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("the password was not sent"), "{stderr}");
    assert!(
        !server.chasquid.log_text().contains("AUTH"),
        "chasquid saw an AUTH: {}",
        server.chasquid.log_text()
    );
}

#[test]
fn the_password_never_comes_from_the_command_line() {
    let out = Command::new(env!("CARGO_BIN_EXE_mailbake"))
        .args([
            "send-test",
            "site.yaml",
            "--from",
            "i@example.com",
            "--to",
            "x@example.net",
            "--password",
            "secret",
        ])
        .output()
        .expect("mailbake runs");
    assert_eq!(out.status.code(), Some(2));
    // Without a terminal, stdin or the variable, it says where a password can come from.
    let out = Command::new(env!("CARGO_BIN_EXE_mailbake"))
        .arg("send-test")
        .arg(testkit::example_site())
        .args([
            "--from",
            "i@example.com",
            "--to",
            "x@example.net",
            "--connect",
            "127.0.0.1:9",
        ])
        .env_remove("MAILBAKE_SMTP_PASSWORD")
        .stdin(Stdio::null())
        .output()
        .expect("mailbake runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("--password-stdin") && stderr.contains("MAILBAKE_SMTP_PASSWORD"),
        "{stderr}"
    );
}
