//! `mailbake cert` against a real ACME server, with no guest: pebble and BIND (open to
//! RFC 2136 updates) in a test network namespace, `mailbake cert` and `mailbake build` run in
//! it as an operator would run them.
//!
//! - `cert` twice in a row is one issuance (pebble's own count), and the store keeps lego's
//!   account and the certificate, private;
//! - two builds put the same stored certificate (and account) into the seed, issuing nothing;
//! - a certificate near expiry is renewed by `cert` with the default 30-day window. Near
//!   expiry is real, not faked by a changed window: the test has the pinned lego ask pebble
//!   for a certificate that expires in 10 days (lego's `--not-after`, which pebble honours),
//!   with the store's own account, exactly as a certificate looks 80 days into its life;
//! - with pebble down, `cert` fails with lego's reason, non-zero, and the stored certificate
//!   stays byte for byte (and keeps going into seeds while it is valid).
//!
//! Needs root (a network namespace) and pebble. It never skips.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use mailbake::cert::StoredCertificate;
use mailbake::secrets::{LegoAccount, LegoCertificate};
use testkit::acme::{AcmeSite, acme_env};
use testkit::pebble::Pebble;
use testkit::site::FQDN;
use testkit::{Phases, TestNet, ok, run};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Every file of the store's lego state, by path.
fn lego_state(site: &AcmeSite) -> BTreeMap<String, Vec<u8>> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for entry in fs::read_dir(dir).expect("read the lego state") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                walk(&path, root, out);
            } else {
                let rel = path
                    .strip_prefix(root)
                    .expect("inside")
                    .display()
                    .to_string();
                out.insert(rel, fs::read(&path).expect("read"));
            }
        }
    }
    let mut files = BTreeMap::new();
    walk(
        &site.site.secrets().join("acme"),
        &site.site.secrets().join("acme"),
        &mut files,
    );
    files
}

fn stored_certificate(site: &AcmeSite) -> StoredCertificate {
    let fqdn = FQDN.try_into().expect("a domain");
    let chain = fs::read(
        site.site
            .secrets()
            .join("acme")
            .join(LegoCertificate::of(&fqdn).chain),
    )
    .expect("the stored certificate");
    StoredCertificate::parse(&chain).expect("it parses")
}

/// user-data's staged files, decoded: destination path on the host → bytes.
fn seed_files(out: &Path) -> BTreeMap<String, Vec<u8>> {
    let user_data = fs::read(out.join("hosts/mx1/seed/user-data")).expect("user-data");
    let doc: serde_json::Value = serde_norway::from_slice(&user_data).expect("user-data is YAML");
    let stage = format!("{}/files", mailbake::template::SEED_STAGE_DIR);
    doc["write_files"]
        .as_array()
        .expect("write_files")
        .iter()
        .filter_map(|e| {
            let path = e["path"].as_str()?.strip_prefix(&stage)?.to_string();
            let content = e["content"].as_str().unwrap_or("");
            let bytes = if e["encoding"] == "b64" {
                base64::engine::general_purpose::STANDARD
                    .decode(content)
                    .expect("base64")
            } else {
                content.as_bytes().to_vec()
            };
            Some((path, bytes))
        })
        .collect()
}

/// `mailbake build` into `out`; returns its progress output (stderr).
fn build(site: &AcmeSite, out: &Path) -> String {
    let o = testkit::output(
        Command::new(testkit::mailbake_bin())
            .arg("build")
            .arg(site.site.path())
            .arg("--secrets")
            .arg(site.site.secrets())
            .arg("--out")
            .arg(out),
    );
    assert!(o.status.success(), "build failed:\n{}", text(&o.stderr));
    text(&o.stderr)
}

/// The pinned lego, from the overlay `mailbake build` made.
fn overlay_lego(out: &Path, dir: &Path) -> PathBuf {
    let file = fs::File::open(out.join("overlay.tar")).expect("overlay.tar");
    let mut archive = tar::Archive::new(file);
    for entry in archive.entries().expect("entries") {
        let mut entry = entry.expect("entry");
        if entry.path().expect("path").ends_with("usr/bin/lego") {
            let bin = dir.join("lego");
            entry.unpack(&bin).expect("unpack lego");
            return bin;
        }
    }
    panic!("the overlay has no usr/bin/lego");
}

/// Has the pinned lego, with the store's own account, replace the stored certificate by one
/// pebble makes expire in `days` days: what the store holds late in a certificate's life.
fn age_stored_certificate(site: &AcmeSite, net: &TestNet, lego: &Path, days: u32) {
    let not_after = run(Command::new("date").args([
        "-u",
        "-d",
        &format!("+{days} days"),
        "+%Y-%m-%dT%H:%M:%SZ",
    ]))
    .trim()
    .to_string();
    let mut cmd = net.command(lego);
    cmd.env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("LEGO_CA_CERTIFICATES", site.pebble.ca_cert());
    for line in acme_env(&site.tsig).lines() {
        let (k, v) = line.split_once('=').expect("NAME=value");
        cmd.env(k, v);
    }
    cmd.args(["--accept-tos", "--path"])
        .arg(site.site.secrets().join("acme"))
        .args([
            "--server",
            &Pebble::directory(),
            "--email",
            "ops@example.com",
        ])
        .args(["--dns", "rfc2136", "--key-type", "ec256"])
        .args([
            "--dns.resolvers",
            &format!("{}:53", testkit::topology::DNS4),
        ])
        .args([
            "--domains",
            FQDN,
            "--domains",
            "example.com",
            "--domains",
            "*.example.com",
        ])
        .args(["run", "--not-after", &not_after]);
    run(&mut cmd);
    let left = stored_certificate(site).days_left(now());
    assert!(
        (days as i64 - 1..=days as i64).contains(&left),
        "the aged certificate has {left} days left"
    );
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64
}

#[test]
fn cert_issues_once_renews_near_expiry_and_keeps_its_certificate_through_an_outage() {
    assert!(
        testkit::is_root(),
        "this test needs root: a network namespace"
    );
    let mut phases = Phases::new("cert");
    let tmp = tempfile::tempdir().expect("tempdir");
    let net = phases.run("test network", || ok(TestNet::create()));
    let (mut site, out0) = phases.run("site, and a build for the DNS zones", || {
        let site = AcmeSite::create(&net, tmp.path());
        let out0 = tmp.path().join("out0");
        let progress = build(&site, &out0);
        assert!(
            progress.contains("seeds: mx1: no certificate in the secrets store: the host obtains one after it boots"),
            "the build says the seed has no stored certificate:\n{progress}"
        );
        (site, out0)
    });
    let _dns = phases.run("DNS open to signed updates, and pebble", || {
        site.start_internet(&net, &out0, Vec::new())
    });

    phases.run("cert twice in a row is one issuance", || {
        twice_is_once(&site, &net)
    });
    phases.run(
        "two builds carry the stored certificate and issue nothing",
        || builds_carry_it(&site, tmp.path()),
    );
    let lego = overlay_lego(&out0, tmp.path());
    phases.run("a certificate near expiry is renewed by cert", || {
        age_stored_certificate(&site, &net, &lego, 10);
        assert_eq!(site.pebble.issued(), 2, "{}", site.pebble.log());
        let aged = stored_certificate(&site);
        let o = site.cert(&net, &[]);
        let said = text(&o.stdout);
        assert!(o.status.success(), "{said}\n{}", text(&o.stderr));
        assert!(said.contains("days left: renewing"), "{said}");
        assert!(said.contains("renewed: serial"), "{said}");
        assert_eq!(
            site.pebble.issued(),
            3,
            "one renewal:\n{}",
            site.pebble.log()
        );
        let renewed = stored_certificate(&site);
        assert_ne!(renewed.serial, aged.serial);
        assert!(renewed.days_left(now()) > 30, "{renewed:?}");
    });
    phases.run("a CA outage leaves the stored certificate in place", || {
        ca_outage(&mut site, &net, &lego, tmp.path())
    });
    phases.summary();
}

fn twice_is_once(site: &AcmeSite, net: &TestNet) {
    let first = site.cert(net, &[]);
    let said = text(&first.stdout);
    assert!(first.status.success(), "{said}\n{}", text(&first.stderr));
    assert!(
        said.contains("mx1 (smtp.example.com): the store has no ACME account"),
        "{said}"
    );
    assert!(said.contains("obtained: serial"), "{said}");
    assert_eq!(site.pebble.issued(), 1, "{}", site.pebble.log());

    let second = site.cert(net, &["--host", "mx1"]);
    let said = text(&second.stdout);
    assert!(second.status.success(), "{said}\n{}", text(&second.stderr));
    assert!(said.contains("nothing to do"), "{said}");
    assert_eq!(
        site.pebble.issued(),
        1,
        "a valid stored certificate is reused:\n{}",
        site.pebble.log()
    );

    // lego's account and certificate are in the store, which still opens (private modes).
    mailbake::secrets::SecretStore::open(site.site.secrets()).expect("the store stays private");
    let state = lego_state(site);
    let account = LegoAccount::new(&Pebble::directory(), "ops@example.com").expect("account");
    let fqdn = FQDN.try_into().expect("a domain");
    for file in [account.registration(), account.key()]
        .into_iter()
        .chain(LegoCertificate::of(&fqdn).files().map(str::to_string))
    {
        assert!(
            state.contains_key(&file),
            "{file} missing: {:?}",
            state.keys()
        );
    }
    let cert = stored_certificate(site);
    assert!(cert.names_match(&[FQDN.into(), "example.com".into(), "*.example.com".into()]));

    let unknown = site.cert(net, &["--host", "mx9"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(text(&unknown.stderr).contains("has no host `mx9`; its hosts: mx1"));
}

fn builds_carry_it(site: &AcmeSite, tmp: &Path) {
    let (out1, out2) = (tmp.join("out1"), tmp.join("out2"));
    let progress = build(site, &out1);
    assert!(
        progress.contains("seeds: mx1: certificate from the secrets store"),
        "{progress}"
    );
    build(site, &out2);
    assert_eq!(site.pebble.issued(), 1, "builds issue nothing");
    let seed = seed_files(&out1);
    assert_eq!(
        seed,
        seed_files(&out2),
        "a rebuild makes the same seed: nothing was re-issued"
    );
    let state = lego_state(site);
    let fqdn = FQDN.try_into().expect("a domain");
    let lego = LegoCertificate::of(&fqdn);
    let served = |name: &str| {
        seed.get(&format!("/etc/chasquid/certs/{FQDN}/{name}"))
            .unwrap_or_else(|| panic!("the seed has no {name}: {:?}", seed.keys()))
    };
    assert_eq!(served("fullchain.pem"), &state[&lego.chain]);
    assert_eq!(served("privkey.pem"), &state[&lego.key]);
    // lego's state on the host starts from the store's: account and certificate.
    for (rel, bytes) in &state {
        let on_host = format!("{}/{rel}", mailbake::seed::HOST_ACME_STATE);
        assert_eq!(seed.get(&on_host), Some(bytes), "{on_host} in the seed");
    }
}

fn ca_outage(site: &mut AcmeSite, net: &TestNet, lego: &Path, tmp: &Path) {
    age_stored_certificate(site, net, lego, 10);
    assert_eq!(site.pebble.issued(), 4, "{}", site.pebble.log());
    let before = lego_state(site);
    site.pebble.stop();
    let o = site.cert(net, &[]);
    let (said, err) = (text(&o.stdout), text(&o.stderr));
    assert_eq!(o.status.code(), Some(1), "{said}\n{err}");
    for part in [
        "mx1 (smtp.example.com): lego renew failed",
        "the stored certificate (serial",
        ") stays in the store",
        "lego said:",
        "fix: check that the CA (https://198.51.100.14:14000/dir) and the DNS provider answer",
        "1 of 1 host(s) have no fresh certificate",
    ] {
        assert!(err.contains(part), "`{part}` missing from:\n{err}");
    }
    assert_eq!(lego_state(site), before, "the stored state is unchanged");
    let leftovers: Vec<_> = fs::read_dir(site.site.secrets())
        .expect("store")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // Still valid for 10 days: seeds keep carrying it.
    let out = tmp.join("out3");
    assert!(build(site, &out).contains("seeds: mx1: certificate from the secrets store"));
    assert_eq!(
        seed_files(&out)[&format!("/etc/chasquid/certs/{FQDN}/fullchain.pem")],
        before[&LegoCertificate::of(&FQDN.try_into().expect("a domain")).chain]
    );
}
