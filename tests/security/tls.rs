//! Posture: TLS 1.2 or newer with forward secrecy on 25 (STARTTLS), 587 (STARTTLS) and 465
//! (implicit TLS). chasquid has no setting for it; the image's chasquid.service drop-in sets
//! GODEBUG for the Go runtime. The test reads the `Environment=` settings from the rendered
//! drop-in, starts the shipped chasquid with them, and probes each port with openssl: TLS 1.0
//! and 1.1 and RSA key exchange must fail, TLS 1.2 and 1.3 must work. A control against a
//! server that allows them shows the same probes do connect with TLS 1.1 and RSA key
//! exchange, so the refusals come from chasquid and not from the client.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::common::{self, Chasquid, ChasquidOptions};
use crate::fixture;

const SITE: &str = "\
site: tls
domains:
  example.com:
    users: [i]
hosts:
  mx1: {fqdn: smtp.example.com, ipv4: 203.0.113.10}
";

const DROP_IN: &str = "etc/systemd/system/chasquid.service.d/mailbake.conf";

/// The `Environment=` assignments of a unit file, for the simple form the drop-in uses
/// (space-separated `NAME=value`, no quotes: a quote would need systemd's own parser).
fn unit_environment(unit: &str) -> Vec<(String, String)> {
    unit.lines()
        .filter_map(|l| l.trim().strip_prefix("Environment="))
        .flat_map(|assignments| {
            assert!(
                !assignments.contains(['"', '\'', '\\']),
                "quoted Environment= lines need systemd's parser: {assignments}"
            );
            assignments.split_whitespace().map(|a| {
                let (name, value) = a.split_once('=').expect("NAME=value");
                (name.to_string(), value.to_string())
            })
        })
        .collect()
}

/// An RSA certificate, so that RSA key exchange is possible at all and its refusal means
/// something (the bootstrap certificate is ECDSA, which never allows it).
fn rsa_certificate(config: &Path) {
    let dir = config.join("certs/smtp.example.com");
    fs::create_dir_all(&dir).expect("mkdir certs");
    common::run(
        Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args(["-subj", "/CN=smtp.example.com"])
            .args(["-addext", "subjectAltName=DNS:smtp.example.com"])
            .arg("-keyout")
            .arg(dir.join("privkey.pem"))
            .arg("-out")
            .arg(dir.join("fullchain.pem")),
    );
}

/// A handshake with the server on loopback `port` (see [`testkit::tls_scan::handshake`]).
fn handshake(
    port: u16,
    starttls: bool,
    version: &str,
    cipher: Option<&str>,
) -> Result<String, String> {
    testkit::tls_scan::handshake(
        None,
        &format!("127.0.0.1:{port}"),
        starttls,
        version,
        cipher,
    )
}

fn start(dir: &Path, env: Vec<(String, String)>) -> Chasquid {
    let root = fixture::chasquid_root(SITE, dir, &[]);
    rsa_certificate(&root.join("etc/chasquid"));
    fixture::start_chasquid(
        &root,
        dir,
        ChasquidOptions {
            env,
            ..ChasquidOptions::default()
        },
    )
}

#[test]
fn chasquid_accepts_only_tls_1_2_and_newer_with_forward_secrecy_on_every_port() {
    let dir = tempfile::tempdir().expect("temp dir");
    let tree = fixture::render(SITE, dir.path());
    let env = unit_environment(&String::from_utf8_lossy(fixture::file(&tree, DROP_IN)));
    assert!(
        env.iter().any(|(name, _)| name == "GODEBUG"),
        "the chasquid drop-in sets GODEBUG: {env:?}"
    );
    let chasquid = start(dir.path(), env);
    let ports = [
        ("25 STARTTLS", chasquid.smtp, true),
        ("587 STARTTLS", chasquid.submission, true),
        ("465 TLS", chasquid.submission_tls, false),
    ];
    let mut wrong = Vec::new();
    for (name, port, starttls) in ports {
        for (version, wanted) in [
            ("-tls1", None),
            ("-tls1_1", None),
            ("-tls1_2", Some("TLSv1.2")),
            ("-tls1_3", Some("TLSv1.3")),
        ] {
            let got = handshake(port, starttls, version, None);
            if got.as_deref().ok() != wanted {
                wrong.push(format!("{name} {version}: wanted {wanted:?}, got {got:?}"));
            }
        }
        // RSA key exchange (no forward secrecy) is refused; ECDHE with the same key works.
        if let Ok(p) = handshake(port, starttls, "-tls1_2", Some("AES128-SHA")) {
            wrong.push(format!("{name}: RSA key exchange accepted ({p})"));
        }
        if let Err(e) = handshake(
            port,
            starttls,
            "-tls1_2",
            Some("ECDHE-RSA-AES128-GCM-SHA256"),
        ) {
            wrong.push(format!("{name}: ECDHE refused: {e}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{}\n--- chasquid log ---\n{}",
        wrong.join("\n"),
        chasquid.log_text()
    );
}

/// openssl's own test server on loopback, with the RSA certificate and every protocol and
/// cipher openssl has (security level 0); killed on drop.
struct PermissiveServer {
    child: std::process::Child,
    port: u16,
}

impl PermissiveServer {
    fn start(dir: &Path) -> PermissiveServer {
        rsa_certificate(dir);
        let certs = dir.join("certs/smtp.example.com");
        let reserved = common::reserve_port();
        let port = reserved.number();
        let child = common::process::dies_with_test(&mut Command::new("openssl"))
            .args(["s_server", "-quiet", "-accept"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("-cert")
            .arg(certs.join("fullchain.pem"))
            .arg("-key")
            .arg(certs.join("privkey.pem"))
            .args(["-cipher", "DEFAULT@SECLEVEL=0"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("openssl s_server starts");
        let server = PermissiveServer { child, port };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "s_server did not listen"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        server
    }
}

impl Drop for PermissiveServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The control: the probes do report TLS 1.1 and RSA key exchange where a server allows
/// them. (The server is openssl's: Go 1.27, which builds chasquid 1.19, no longer lets a
/// program be told to accept TLS 1.0/1.1 at all, so the shipped chasquid cannot be it.)
#[test]
fn the_probes_see_tls_1_1_and_rsa_key_exchange_where_the_server_allows_them() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = PermissiveServer::start(dir.path());
    assert_eq!(
        handshake(server.port, false, "-tls1_1", None),
        Ok("TLSv1.1".to_string())
    );
    assert_eq!(
        handshake(server.port, false, "-tls1_2", Some("AES128-SHA")),
        Ok("TLSv1.2".to_string())
    );
}
