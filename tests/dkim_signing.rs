//! DKIM end to end: the overlay's chasquid configuration, the secrets store's keys and users,
//! the shipped chasquid, and the records `mailbake dns` prints must fit together so that a
//! verifier (dkimpy) that knows only those records accepts both signatures (RSA and Ed25519).
//!
//! All traffic is on 127.0.0.1. The recipient's domain does not resolve, so chasquid keeps
//! the signed message in its queue (temporary failure), where the test reads it; its single
//! attempt to look that domain up goes to the system resolver and fails.

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mailbake::secrets::{Password, SecretStore};

mod common;

const DOMAIN: &str = "example.com";
const USER: &str = "i";
const PASSWORD: &str = "correct horse battery staple";

fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{e}"),
    }
}

/// Kills chasquid when the test ends, however it ends, and shows its log on failure.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- chasquid log ---\n{}",
                fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

/// A port that was free a moment ago (the kernel picks it; chasquid binds it next).
fn free_port() -> u16 {
    let listener = ok(TcpListener::bind("127.0.0.1:0"));
    ok(listener.local_addr()).port()
}

fn wait_for_port(port: u16, daemon: &mut Daemon) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = daemon.child.try_wait() {
            panic!("chasquid exited early with {status}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("chasquid did not listen on 127.0.0.1:{port} within 30 s");
}

fn write(path: &Path, bytes: &[u8]) {
    if let Some(parent) = path.parent() {
        ok(fs::create_dir_all(parent));
    }
    ok(fs::write(path, bytes));
}

/// Submits one message with smtplib, reads it back from chasquid's queue and verifies every
/// DKIM-Signature with dkimpy, answering its DNS queries from `mailbake dns --format json`.
const VERIFY_PY: &str = r#"
import codecs, glob, json, smtplib, ssl, sys, time
import dkim

port, user, password, records_path, queue_dir = sys.argv[1:6]
port = int(port)
records = json.load(open(records_path))
txt = {r["name"]: r["value"] for r in records if r["type"] == "TXT"}

ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE  # the throw-away certificate; TLS is only needed for AUTH
msg = (
    "From: I <i@example.com>\r\n"
    "To: someone@gmail.invalid\r\n"
    "Subject: DKIM end to end\r\n"
    "Date: Sat, 28 Nov 2026 06:00:00 +0000\r\n"
    "Message-ID: <dkim-e2e@example.com>\r\n"
    "\r\n"
    "Signed by chasquid, checked against mailbake's records.\r\n"
)
with smtplib.SMTP("127.0.0.1", port, local_hostname="client.invalid", timeout=30) as s:
    s.starttls(context=ctx)
    s.login(user, password)
    refused = s.sendmail("i@example.com", ["someone@gmail.invalid"], msg)
    assert not refused, refused

deadline = time.time() + 20
files = []
while time.time() < deadline and not files:
    files = glob.glob(queue_dir + "/m:*")
    time.sleep(0.1)
assert len(files) == 1, "expected one queued message, found %r" % files

# chasquid's queue item is a text protobuf; `data` holds the message as an escaped string.
data = None
for line in open(files[0], "rb").read().split(b"\n"):
    if line.startswith(b"data:"):
        literal = line.split(b":", 1)[1].strip()
        assert literal.startswith(b'"') and literal.endswith(b'"'), literal[:40]
        data = codecs.escape_decode(literal[1:-1])[0]
assert data is not None, "no data field in the queue item"
message = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")

asked = []
def dnsfunc(name, timeout=5):
    key = name.decode().rstrip(".")
    asked.append(key)
    value = txt.get(key)
    return value.encode() if value is not None else None

d = dkim.DKIM(message)
headers = [v for (k, v) in d.headers if k.lower() == b"dkim-signature"]
results = []
for idx, sig in enumerate(headers):
    tags = dict(
        t.strip().split(b"=", 1) for t in sig.replace(b"\r\n", b"").split(b";") if b"=" in t
    )
    verified = dkim.DKIM(message).verify(idx=idx, dnsfunc=dnsfunc)
    # A tampered body must fail with the same records: the check is not vacuous.
    tampered = message.replace(b"checked against", b"CHECKED AGAINST")
    try:
        forged = dkim.DKIM(tampered).verify(idx=idx, dnsfunc=dnsfunc)
    except dkim.ValidationError:
        forged = False
    results.append({
        "s": tags[b"s"].strip().decode(),
        "a": tags[b"a"].strip().decode(),
        "d": tags[b"d"].strip().decode(),
        "verified": bool(verified),
        "tampered_verified": bool(forged),
    })
print(json.dumps({"signatures": results, "asked": sorted(set(asked))}))
"#;

#[test]
fn chasquid_signatures_verify_against_published_records() {
    let tmp = ok(tempfile::tempdir());
    let site = common::example_site();
    let loaded = ok(mailbake::site::load(&site));
    let Some((_, domain)) = loaded
        .site
        .domains
        .iter()
        .find(|(d, _)| d.as_str() == DOMAIN)
    else {
        panic!("the example site has no {DOMAIN}");
    };
    let selectors: Vec<String> = domain
        .dkim
        .selectors
        .keys()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(selectors.len(), 2, "the example signs with RSA and Ed25519");

    // The test's own secrets: a user to authenticate as and a key per selector.
    let store = ok(SecretStore::create(tmp.path().join("secrets")));
    ok(store.add_user(DOMAIN, USER, &ok(Password::new(PASSWORD.to_string()))));
    for (selector, algorithm) in domain.dkim.selectors.iter() {
        ok(store.dkim_keygen(DOMAIN, selector.as_str(), *algorithm, false));
    }

    // The overlay as built for the example, unpacked as the image would have it.
    let out = tmp.path().join("out");
    common::mailbake_build(&site, &out);
    assert!(
        out.join("dns/example.com.zone").is_file() && out.join("dns/records.json").is_file(),
        "the build writes the DNS records too"
    );
    let root = tmp.path().join("root");
    ok(fs::create_dir_all(&root));
    let mut archive = tar::Archive::new(ok(fs::File::open(out.join("overlay.tar"))));
    ok(archive.unpack(&root));
    let config = root.join("etc/chasquid");
    assert!(
        config.join("chasquid.conf").is_file(),
        "overlay has chasquid.conf"
    );

    // What the seed adds on a real host: users, DKIM keys, a certificate.
    let domain_dir = config.join("domains").join(DOMAIN);
    let users = ok(store.user_db_bytes(DOMAIN)).unwrap_or_default();
    write(&domain_dir.join("users"), &users);
    for selector in &selectors {
        let key = ok(store.dkim_key(DOMAIN, selector));
        write(
            &domain_dir.join(format!("dkim:{selector}.pem")),
            key.pem().as_bytes(),
        );
    }
    let certs = config.join("certs/localhost");
    ok(fs::create_dir_all(&certs));
    let openssl = ok(Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=localhost"])
        .arg("-keyout")
        .arg(certs.join("privkey.pem"))
        .arg("-out")
        .arg(certs.join("fullchain.pem"))
        .output());
    assert!(
        openssl.status.success(),
        "{}",
        String::from_utf8_lossy(&openssl.stderr)
    );

    // The records a verifier will see, exactly as `mailbake dns` prints them.
    let dns = ok(Command::new(env!("CARGO_BIN_EXE_mailbake"))
        .arg("dns")
        .arg(&site)
        .args(["--format", "json", "--secrets"])
        .arg(store.root())
        .output());
    assert!(
        dns.status.success(),
        "{}",
        String::from_utf8_lossy(&dns.stderr)
    );
    let records_path = tmp.path().join("records.json");
    write(&records_path, &dns.stdout);

    let data_dir = tmp.path().join("data");
    ok(fs::create_dir_all(&data_dir));
    let (smtp, submission, submission_tls) = (free_port(), free_port(), free_port());
    let overrides = format!(
        "smtp_address: \"127.0.0.1:{smtp}\" \
         submission_address: \"127.0.0.1:{submission}\" \
         submission_over_tls_address: \"127.0.0.1:{submission_tls}\" \
         data_dir: \"{}\" mail_log_path: \"<stderr>\" hostname: \"smtp.example.com\"",
        data_dir.display()
    );
    let log = tmp.path().join("chasquid.log");
    let log_file = ok(fs::File::create(&log));
    let child = ok(Command::new(common::chasquid())
        .arg("-config_dir")
        .arg(&config)
        .arg("-config_overrides")
        .arg(&overrides)
        .stdin(Stdio::null())
        .stdout(ok(log_file.try_clone()))
        .stderr(log_file)
        .spawn());
    let mut daemon = Daemon { child, log };
    wait_for_port(submission, &mut daemon);

    let script = tmp.path().join("verify.py");
    write(&script, VERIFY_PY.as_bytes());
    // dkimpy is installed for the system Python, not for whatever `python3` is first in PATH.
    let verify = ok(Command::new("/usr/bin/python3")
        .arg(&script)
        .arg(submission.to_string())
        .arg(format!("{USER}@{DOMAIN}"))
        .arg(PASSWORD)
        .arg(&records_path)
        .arg(data_dir.join("queue"))
        .output());
    assert!(
        verify.status.success(),
        "verifier failed:\n{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    let report: serde_json::Value = ok(serde_json::from_slice(&verify.stdout));
    let mut seen: Vec<(String, String)> = report["signatures"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|sig| {
            assert_eq!(sig["d"], DOMAIN, "{sig}");
            assert_eq!(sig["verified"], true, "signature does not verify: {sig}");
            assert_eq!(
                sig["tampered_verified"], false,
                "tampered message verified: {sig}"
            );
            (
                sig["s"].as_str().unwrap_or("").to_string(),
                sig["a"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            ("2026a-ed".to_string(), "ed25519-sha256".to_string()),
            ("2026a-rsa".to_string(), "rsa-sha256".to_string()),
        ],
        "{report}"
    );
    assert_eq!(
        report["asked"],
        serde_json::json!([
            "2026a-ed._domainkey.example.com",
            "2026a-rsa._domainkey.example.com"
        ]),
        "{report}"
    );
    drop(daemon);
}
