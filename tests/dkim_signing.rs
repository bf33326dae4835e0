//! DKIM end to end: the overlay's chasquid configuration, the secrets store's keys and users,
//! the shipped chasquid, and the records `mailbake dns` prints must fit together so that a
//! verifier (dkimpy) that knows only those records accepts both signatures (RSA and Ed25519).
//!
//! All traffic is on 127.0.0.1. The recipient's domain does not resolve, so chasquid keeps
//! the signed message in its queue (temporary failure), where the test reads it; its single
//! attempt to look that domain up goes to the system resolver and fails.

use std::fs;
use std::path::Path;
use std::process::Command;

use mailbake::secrets::{Password, SecretStore};

const DOMAIN: &str = "example.com";
const USER: &str = "i";
const PASSWORD: &str = "correct horse battery staple";

fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{e}"),
    }
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
    "To: i@example.com\r\n"
    "Subject: DKIM end to end\r\n"
    "Date: Sat, 28 Nov 2026 06:00:00 +0000\r\n"
    "Message-ID: <dkim-e2e@example.com>\r\n"
    "\r\n"
    "Signed by chasquid, checked against mailbake's records.\r\n"
)
with smtplib.SMTP("127.0.0.1", port, local_hostname="client.invalid", timeout=30) as s:
    s.starttls(context=ctx)
    s.login(user, password)
    refused = s.sendmail("i@example.com", ["i@example.com"], msg)
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

/// Unpacks the overlay of the build in `out`, installs what a seed would (the users database
/// of `store`, the keys of `selectors`, a throw-away certificate), starts the shipped
/// chasquid, submits one message and verifies its signatures with dkimpy against the records
/// in `records_path` (`mailbake dns --format json` or a build's `dns/records.json`).
fn sign_and_verify(
    tmp: &Path,
    out: &Path,
    store: &SecretStore,
    selectors: &[&str],
    records_path: &Path,
) -> serde_json::Value {
    let root = tmp.join("root");
    testkit::unpack_overlay(out, &root);
    let config = root.join("etc/chasquid");
    assert!(
        config.join("chasquid.conf").is_file(),
        "overlay has chasquid.conf"
    );
    let domain_dir = config.join("domains").join(DOMAIN);
    let domain: mailbake::site::DomainName = ok(DOMAIN.try_into());
    let users = ok(store.user_db_bytes(&domain)).unwrap_or_default();
    write(&domain_dir.join("users"), &users);
    for selector in selectors {
        let key = ok(store.dkim_key(&domain, &ok((*selector).try_into())));
        write(
            &domain_dir.join(format!("dkim:{selector}.pem")),
            key.pem().as_bytes(),
        );
    }
    testkit::throwaway_certificate(&config, "localhost");

    // Loopback ports, data_dir in the temp dir, killed when `daemon` is dropped.
    let data_dir = tmp.join("data");
    ok(fs::create_dir_all(&data_dir));
    let daemon = testkit::Chasquid::start(&root, &data_dir, "smtp.example.com");
    let script = tmp.join("verify.py");
    write(&script, VERIFY_PY.as_bytes());
    // dkimpy is installed for the system Python, not for whatever `python3` is first in PATH.
    let verify = ok(Command::new("/usr/bin/python3")
        .arg(&script)
        .arg(daemon.submission.to_string())
        .arg(format!("{USER}@{DOMAIN}"))
        .arg(PASSWORD)
        .arg(records_path)
        .arg(data_dir.join("queue"))
        .output());
    assert!(
        verify.status.success(),
        "verifier failed:\n{}{}\n--- chasquid log ---\n{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr),
        daemon.log_text()
    );
    ok(serde_json::from_slice(&verify.stdout))
}

/// The (selector, algorithm) of every signature in `report`, each checked to verify and to
/// fail on a tampered body.
fn verified_signatures(report: &serde_json::Value) -> Vec<(String, String)> {
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
    seen
}

#[test]
fn chasquid_signatures_verify_against_published_records() {
    let tmp = ok(tempfile::tempdir());
    let site = testkit::example_site();
    let loaded = ok(mailbake::site::load(&site));
    let Some((_, domain)) = loaded
        .site
        .domains
        .iter()
        .find(|(d, _)| d.as_str() == DOMAIN)
    else {
        panic!("the example site has no {DOMAIN}");
    };
    let selectors: Vec<_> = domain.dkim.selectors.keys().cloned().collect();
    assert_eq!(selectors.len(), 2, "the example signs with RSA and Ed25519");

    // The test's own secrets: a user to authenticate as and a key per selector.
    let store = ok(SecretStore::create(tmp.path().join("secrets")));
    ok(store.add_user(
        &DOMAIN.try_into().unwrap(),
        &USER.try_into().unwrap(),
        &ok(Password::new(PASSWORD.to_string())),
    ));
    for (selector, algorithm) in domain.dkim.selectors.iter() {
        ok(store.dkim_keygen(&DOMAIN.try_into().unwrap(), selector, *algorithm, false));
    }

    // The overlay as built for the example.
    let out = tmp.path().join("out");
    testkit::mailbake_build(&site, &tmp.path().join("secrets"), &out);
    assert!(
        out.join("dns/example.com.zone").is_file() && out.join("dns/records.json").is_file(),
        "the build writes the DNS records too"
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

    let selectors: Vec<&str> = selectors.iter().map(|s| s.as_str()).collect();
    let report = sign_and_verify(tmp.path(), &out, &store, &selectors, &records_path);
    assert_eq!(
        verified_signatures(&report),
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
}

/// Runs mailbake in `dir`, panics with its output if it fails, returns its stdout.
fn mailbake_in(dir: &Path, args: &[&str]) -> String {
    testkit::run(
        Command::new(env!("CARGO_BIN_EXE_mailbake"))
            .args(args)
            .current_dir(dir),
    )
}

#[test]
fn after_a_rotation_mail_signed_with_the_retired_keys_still_verifies() {
    let tmp = ok(tempfile::tempdir());
    let dir = tmp.path();
    ok(fs::copy(testkit::example_site(), dir.join("site.yaml")));
    mailbake_in(dir, &["dkim", "keygen", "site.yaml", DOMAIN]);
    let store = ok(SecretStore::open(dir.join("secrets")));
    let domain: mailbake::site::DomainName = ok(DOMAIN.try_into());
    ok(store.add_user(
        &domain,
        &ok(USER.try_into()),
        &ok(Password::new(PASSWORD.to_string())),
    ));

    // Rotate, and change the site file exactly as `dkim rotate` says.
    let advice = mailbake_in(
        dir,
        &["dkim", "rotate", "site.yaml", DOMAIN, "--to", "2026b"],
    );
    let start = advice
        .find("    dkim:\n")
        .expect("the advice shows the new dkim block");
    let end = advice
        .find("publish the new records")
        .expect("then what to do");
    let block = &advice[start..end];
    let old_block =
        "    dkim:\n      selectors:\n        2026a-rsa: rsa-2048\n        2026a-ed: ed25519\n";
    let text = ok(fs::read_to_string(dir.join("site.yaml")));
    assert_eq!(text.matches(old_block).count(), 1, "{text}");
    ok(fs::write(
        dir.join("site.yaml"),
        text.replace(old_block, block),
    ));

    let out = dir.join("out");
    mailbake_in(dir, &["build", "site.yaml", "--out", "out"]);

    // The seed carries only the signing keys; the retired ones stay in the store.
    let user_data = ok(fs::read_to_string(out.join("hosts/mx1/seed/user-data")));
    for (selector, in_seed) in [
        ("2026a-rsa", false),
        ("2026a-ed", false),
        ("2026b-rsa", true),
        ("2026b-ed", true),
    ] {
        let pem = ok(store.dkim_key(&domain, &ok(selector.try_into())))
            .pem()
            .to_string();
        let body = pem.lines().nth(1).expect("a PEM body line");
        assert_eq!(
            user_data.contains(body),
            in_seed,
            "{selector}'s key in the seed: expected {in_seed}"
        );
    }

    // Mail signed before the rotation (chasquid with the old keys) verifies against the
    // records the rotated build publishes.
    let report = sign_and_verify(
        dir,
        &out,
        &store,
        &["2026a-rsa", "2026a-ed"],
        &out.join("dns/records.json"),
    );
    assert_eq!(
        verified_signatures(&report),
        [
            ("2026a-ed".to_string(), "ed25519-sha256".to_string()),
            ("2026a-rsa".to_string(), "rsa-sha256".to_string()),
        ],
        "{report}"
    );
    let zone = ok(fs::read_to_string(out.join("dns/example.com.zone")));
    for selector in ["2026a-rsa", "2026a-ed", "2026b-rsa", "2026b-ed"] {
        assert!(
            zone.contains(&format!("{selector}._domainkey.example.com.")),
            "{selector} is in the zone:\n{zone}"
        );
    }
}
