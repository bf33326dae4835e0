//! `mailbake verify` and `mailbake send-test` against the booted guest, as an operator runs
//! them once the site is deployed (issue 10, end to end). Both run inside the test network,
//! so none of their lookups or connections can leave it: verify asks only the test network's
//! BIND (`--resolver`), trusts only the site's test CA (`--ca`) and looks the guest up in a
//! block list that BIND serves (`--dnsbl dnsbl.test`), so the DNSBL check really asks one.
//!
//! First the deployment as built is all green (passes, and the one warning that cannot be
//! anything else from outside the host: outbound port 25). Then one fault at a time, each
//! undone before the next: the guest listed in the block list, a wrong IPv6 PTR, SPF without
//! the IPv6 address (`ip6:` and `mx` both gone: `mx` alone authorises it, which is checked
//! too), a stale DKIM key in the zone, the DMARC record removed, a certificate for another
//! name and an expired one (installed on the guest over SSH as the operator, chasquid
//! restarted). Each must fail exactly the checks it breaks, with a fix that says what to do;
//! since every run asserts the whole set of failures, each run also proves the previous
//! fault was undone. Last, send-test on 465 and on 587 reaches the receiver, whose verdicts
//! on the message are all pass.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use serde_json::Value;
use testkit::dns::{Zone, zone_text};
use testkit::internet::{SenderKey, Verdicts, ip6_arpa, txt};
use testkit::site::FQDN;
use testkit::topology::*;
use testkit::{Phases, fingerprint, mailbake_bin};

use super::{MailFlow, PASSWORD, SELECTORS, TO4, TO6};

/// The test network's block list (served by its BIND).
pub const DNSBL: &str = "dnsbl.test";
/// Where the guest's certificate lives (chasquid's layout).
const CERT_DIR: &str = "/etc/chasquid/certs/smtp.example.com";

/// A certificate chain (leaf first, then the CA) and its key, as PEM files.
pub struct CertFiles {
    pub chain: PathBuf,
    pub key: PathBuf,
    /// SHA-256 of the leaf, as `openssl x509 -fingerprint` prints it.
    pub fingerprint: String,
}

/// The site's test CA and the certificates it issued: the one the seed carries, one for
/// another name and one that expired yesterday.
pub struct SitePki {
    pub ca: PathBuf,
    pub good: CertFiles,
    pub wrong_name: CertFiles,
    pub expired: CertFiles,
}

impl SitePki {
    pub fn create(dir: &Path) -> SitePki {
        fs::create_dir_all(dir).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "mailbake mail_flow site CA");
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let ca_file = dir.join("ca.pem");
        fs::write(&ca_file, ca.pem()).unwrap();
        let day = Duration::from_secs(86_400);
        let now = rcgen::date_time_ymd(1970, 1, 1)
            + SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let issue = |stem: &str, names: &[&str], from, until| {
            let mut params =
                CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                    .unwrap();
            params.distinguished_name.push(DnType::CommonName, names[0]);
            params.not_before = from;
            params.not_after = until;
            let key = KeyPair::generate().unwrap();
            let leaf = params.signed_by(&key, &ca).unwrap();
            let chain = dir.join(format!("{stem}.pem"));
            fs::write(&chain, leaf.pem() + &ca.pem()).unwrap();
            let key_file = dir.join(format!("{stem}.key"));
            fs::write(&key_file, key.serialize_pem()).unwrap();
            CertFiles {
                fingerprint: fingerprint(&chain),
                chain,
                key: key_file,
            }
        };
        SitePki {
            good: issue("good", &[FQDN, "example.com"], now - day, now + 90 * day),
            wrong_name: issue(
                "wrong-name",
                &["mail.example.net"],
                now - day,
                now + 90 * day,
            ),
            expired: issue("expired", &[FQDN, "example.com"], now - 60 * day, now - day),
            ca: ca_file,
        }
    }
}

/// The block list zone, listing `listed` (IPv4 addresses) with RFC 5782's usual answers: an
/// `A` of 127.0.0.2 and a `TXT` saying why.
pub fn dnsbl_zone(listed: &[&str]) -> Zone {
    let mut records = Vec::new();
    for ip in listed {
        let reversed: Vec<&str> = ip.split('.').rev().collect();
        let name = reversed.join(".");
        records.push(format!("{name} IN A 127.0.0.2"));
        records.push(format!(
            "{name} IN TXT \"listed by the mail_flow test: spam seen from {ip}\""
        ));
    }
    Zone::new(DNSBL, zone_text(DNSBL, &records))
}

pub fn phases(phases: &mut Phases, t: &MailFlow) {
    phases.check("verify: all green from inside the test network", || {
        all_green(t)
    });
    phases.check("verify: listed in the block list", || dnsbl_listing(t));
    phases.check("verify: a wrong IPv6 PTR", || wrong_ipv6_ptr(t));
    phases.check(
        "verify: SPF that does not authorise the IPv6 address",
        || spf_without_ipv6(t),
    );
    phases.check("verify: a stale DKIM key in the zone", || stale_dkim_key(t));
    phases.check("verify: the DMARC record removed", || dmarc_removed(t));
    phases.check("verify: a certificate for another name", || {
        wrong_certificate_name(t)
    });
    phases.check("verify: an expired certificate", || expired_certificate(t));
    phases.check("send-test on 465 and 587, judged pass", || send_test(t));
}

/// One run of `mailbake verify --format json`.
struct Report {
    json: Value,
    exit: Option<i32>,
}

impl Report {
    fn checks(&self) -> &[Value] {
        self.json["checks"].as_array().map_or(&[], Vec::as_slice)
    }

    fn with_status(&self, status: &str) -> Vec<&Value> {
        self.checks()
            .iter()
            .filter(|c| c["status"] == status)
            .collect()
    }

    /// `(section, subject)` of every failing check.
    fn failures(&self) -> BTreeSet<(String, String)> {
        self.with_status("fail")
            .into_iter()
            .map(|c| (text(&c["section"]), text(&c["subject"])))
            .collect()
    }

    fn check(&self, section: &str, subject: &str) -> &Value {
        self.checks()
            .iter()
            .find(|c| c["section"] == section && c["subject"] == subject)
            .unwrap_or_else(|| panic!("no {section} check of {subject}:\n{:#}", self.json))
    }

    fn summary(&self) -> String {
        self.checks()
            .iter()
            .map(|c| {
                format!(
                    "  {:<4} {:<11} {}: {}",
                    text(&c["status"]),
                    text(&c["section"]),
                    text(&c["subject"]),
                    text(&c["summary"])
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

/// `mailbake verify SITE --resolver <the test DNS> --ca <the site's CA> --dnsbl dnsbl.test
/// --format json`, run inside the test network.
fn verify(t: &MailFlow) -> Report {
    let out = testkit::output(
        t.net
            .command(mailbake_bin())
            .arg("verify")
            .arg(t.site.path())
            .arg("--secrets")
            .arg(t.site.secrets())
            .args(["--resolver", DNS4, "--dnsbl", DNSBL, "--format", "json"])
            .arg("--ca")
            .arg(&t.pki.ca),
    );
    let json: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "verify printed no JSON ({e}; {}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let report = Report {
        json,
        exit: out.status.code(),
    };
    eprintln!(
        "mail_flow: verify exited {:?}:\n{}",
        report.exit,
        report.summary()
    );
    report
}

/// The endpoints verify names for a port of the guest, IPv4 and IPv6.
fn endpoints(port: u16) -> [String; 2] {
    [format!("{GUEST4}:{port}"), format!("[{GUEST6}]:{port}")]
}

fn all_green(t: &MailFlow) {
    let r = verify(t);
    assert_eq!(
        r.exit,
        Some(0),
        "verify exits 0 when nothing fails:\n{:#}",
        r.json
    );
    assert_eq!(
        r.failures(),
        BTreeSet::new(),
        "nothing fails:\n{:#}",
        r.json
    );
    for warning in r.with_status("warn") {
        assert_eq!(
            warning["section"], "outbound",
            "the only warning is the outbound note (it can only be seen from the host): {warning:#}"
        );
    }
    let sections: BTreeSet<String> = r.checks().iter().map(|c| text(&c["section"])).collect();
    for section in [
        "mx",
        "addresses",
        "reverse-dns",
        "spf",
        "dkim",
        "dmarc",
        "smtp",
        "dnsbl",
        "outbound",
    ] {
        assert!(
            sections.contains(section),
            "verify ran {section}: {sections:?}"
        );
    }
    for ip in [GUEST4, GUEST6] {
        let listed = r.check("dnsbl", &format!("{ip} in {DNSBL}"));
        assert_eq!(
            listed["status"], "pass",
            "the block list was asked: {listed:#}"
        );
        assert_eq!(r.check("reverse-dns", ip)["status"], "pass");
        assert_eq!(
            r.check("spf", &format!("example.com from {ip}"))["status"],
            "pass"
        );
    }
    // Every port of both addresses was really probed, TLS and certificate included.
    for subject in [
        endpoints(25).map(|e| format!("{e} certificate chain")),
        endpoints(587).map(|e| format!("{e} STARTTLS")),
        endpoints(465).map(|e| format!("{e} TLS")),
        endpoints(25).map(|e| format!("{e} open relay")),
    ]
    .concat()
    {
        assert_eq!(r.check("smtp", &subject)["status"], "pass", "{subject}");
    }
}

/// Runs verify with a fault in place: it must exit 1 and fail exactly `expected`
/// (`(section, subject)`), each with a fix containing `fix`.
fn assert_fails(t: &MailFlow, fault: &str, expected: &[(&str, String)], fix: &str) -> Report {
    let r = verify(t);
    let want: BTreeSet<(String, String)> = expected
        .iter()
        .map(|(s, subject)| (s.to_string(), subject.clone()))
        .collect();
    assert_eq!(
        r.failures(),
        want,
        "with {fault}, verify fails exactly these checks:\n{:#}",
        r.json
    );
    assert_eq!(r.exit, Some(1), "with {fault}, verify exits 1");
    for c in r.with_status("fail") {
        let got = text(&c["fix"]);
        assert!(
            got.contains(fix),
            "with {fault}, the fix names what to do ({fix:?}): {c:#}"
        );
    }
    r
}

/// The zone `origin` as served, with every `rtype` record of `owner` (a name as written in
/// the zone file) replaced by `records` (none: removed).
fn edited(t: &MailFlow, origin: &str, owner: &str, rtype: &str, records: &[String]) -> Zone {
    let zone = testkit::ok(t.internet.dns.zone(origin));
    let is_target = |line: &str| {
        let mut words = line.split_whitespace();
        words.next() == Some(owner) && words.any(|w| w == rtype)
    };
    let mut removed = 0;
    let mut lines = Vec::new();
    for line in zone.text.lines() {
        if is_target(line) {
            removed += 1;
        } else {
            lines.push(line.to_string());
        }
    }
    assert!(
        removed > 0,
        "no {rtype} of {owner} in zone {origin}:\n{}",
        zone.text
    );
    lines.extend(records.iter().map(|r| format!("{owner} IN {rtype} {r}")));
    Zone::new(origin, lines.join("\n") + "\n")
}

/// Serves `faulty` instead of its zone while `check` runs, then the zone as it was.
fn with_zone<T>(t: &MailFlow, faulty: Zone, check: impl FnOnce() -> T) -> T {
    let original = testkit::ok(t.internet.dns.zone(&faulty.origin));
    testkit::ok(t.internet.dns.replace_zone(faulty));
    // Restored whether the check passes or fails: the next phase must see the real zone.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(check));
    testkit::ok(t.internet.dns.replace_zone(original));
    result.unwrap_or_else(|failure| std::panic::resume_unwind(failure))
}

fn dnsbl_listing(t: &MailFlow) {
    with_zone(t, dnsbl_zone(&[GUEST4]), || {
        let r = assert_fails(
            t,
            "the guest listed",
            &[("dnsbl", format!("{GUEST4} in {DNSBL}"))],
            "request removal",
        );
        let c = r.check("dnsbl", &format!("{GUEST4} in {DNSBL}"));
        assert!(
            c["evidence"].to_string().contains("spam seen from"),
            "the list's reason is in the evidence: {c:#}"
        );
        assert_eq!(
            r.check("dnsbl", &format!("{GUEST6} in {DNSBL}"))["status"],
            "pass"
        );
    });
}

const REVERSE6: &str = "8.b.d.0.1.0.0.2.ip6.arpa";

fn wrong_ipv6_ptr(t: &MailFlow) {
    let faulty = edited(
        t,
        REVERSE6,
        &ip6_arpa(GUEST6),
        "PTR",
        &["vps-2001-db8-1--10.provider.test.".to_string()],
    );
    with_zone(t, faulty, || {
        let r = assert_fails(
            t,
            "a wrong IPv6 PTR",
            &[("reverse-dns", GUEST6.to_string())],
            &format!("set the reverse DNS (PTR) of {GUEST6} to {FQDN}"),
        );
        assert!(
            text(&r.check("reverse-dns", GUEST6)["summary"])
                .contains("vps-2001-db8-1--10.provider.test"),
            "the summary names the wrong PTR"
        );
        assert_eq!(r.check("reverse-dns", GUEST4)["status"], "pass");
    });
}

/// The SPF record with its terms filtered by `keep`.
fn spf_zone(t: &MailFlow, keep: impl Fn(&str) -> bool) -> Zone {
    let zone = testkit::ok(t.internet.dns.zone("example.com"));
    let record = zone
        .text
        .lines()
        .find_map(|l| {
            let start = l.find("\"v=spf1 ")?;
            Some(l[start + 1..].trim_end().trim_end_matches('"').to_string())
        })
        .unwrap_or_else(|| panic!("no SPF record in the site's zone:\n{}", zone.text));
    let terms: Vec<&str> = record.split_whitespace().filter(|w| keep(w)).collect();
    edited(
        t,
        "example.com",
        "example.com.",
        "TXT",
        &[format!("\"{}\"", terms.join(" "))],
    )
}

fn spf_without_ipv6(t: &MailFlow) {
    // Without `ip6:` the address is still authorised through `mx` (smtp.example.com has
    // that AAAA): evaluated, not pattern-matched, so this is no fault.
    with_zone(t, spf_zone(t, |w| !w.starts_with("ip6:")), || {
        let r = verify(t);
        let c = r.check("spf", &format!("example.com from {GUEST6}"));
        assert_eq!(
            c["status"], "pass",
            "`mx` still authorises the IPv6 address: {c:#}"
        );
        assert!(
            c["evidence"].to_string().contains("MX"),
            "the mx lookup was made: {c:#}"
        );
    });
    // Neither `ip6:` nor `mx`: nothing authorises it.
    with_zone(
        t,
        spf_zone(t, |w| !w.starts_with("ip6:") && w != "mx"),
        || {
            assert_fails(
                t,
                "SPF without ip6: and mx",
                &[("spf", format!("example.com from {GUEST6}"))],
                &format!("ip6:{GUEST6}"),
            );
        },
    );
}

fn stale_dkim_key(t: &MailFlow) {
    let dir = t.tmp.join("stale-dkim");
    fs::create_dir_all(&dir).unwrap();
    let stale = SenderKey::generate(&dir);
    let owner = "2026a-rsa._domainkey.example.com.";
    let faulty = edited(t, "example.com", owner, "TXT", &[txt(&stale.record)]);
    let published = published_dkim(t, "2026a-rsa._domainkey.example.com");
    with_zone(t, faulty, || {
        let r = assert_fails(
            t,
            "a stale DKIM key",
            &[("dkim", "2026a-rsa._domainkey.example.com".to_string())],
            // The fix is the store's own record: the key the host signs with.
            &published[..60],
        );
        let c = r.check("dkim", "2026a-rsa._domainkey.example.com");
        assert!(
            text(&c["summary"]).contains("not the key in the secrets store"),
            "{c:#}"
        );
    });
}

/// The value `mailbake dns` gave the TXT record `name` (records.json), from `p=` on.
fn published_dkim(t: &MailFlow, name: &str) -> String {
    let records: Value =
        serde_json::from_str(&fs::read_to_string(t.out.join("dns/records.json")).unwrap()).unwrap();
    let value = records
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name && r["type"] == "TXT")
        .and_then(|r| r["value"].as_str())
        .unwrap_or_else(|| panic!("no TXT {name} in records.json"));
    value[value.find("p=").unwrap()..].to_string()
}

fn dmarc_removed(t: &MailFlow) {
    let faulty = edited(t, "example.com", "_dmarc.example.com.", "TXT", &[]);
    with_zone(t, faulty, || {
        assert_fails(
            t,
            "the DMARC record removed",
            &[("dmarc", "_dmarc.example.com".to_string())],
            "v=DMARC1; p=quarantine",
        );
    });
}

/// Installs `cert` as the guest's certificate, as the operator does (root-owned, readable
/// by chasquid's group, swapped in by rename), restarts chasquid (it reads certificates
/// only at start) and waits until port 25 serves it.
fn install_certificate(t: &MailFlow, cert: &CertFiles) {
    for (local, name) in [(&cert.chain, "fullchain.pem"), (&cert.key, "privkey.pem")] {
        t.guest.ssh_with_stdin(
            &format!(
                "sudo install -m 640 -o root -g chasquid /dev/stdin {CERT_DIR}/{name}.new && sudo mv -f {CERT_DIR}/{name}.new {CERT_DIR}/{name}"
            ),
            &fs::read(local).unwrap(),
        );
    }
    t.guest.ssh("sudo systemctl restart chasquid.service");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let served = testkit::probe_in(&t.net, &["cert", GUEST4, "25", "--mode", "starttls"]);
        if let Ok(c) = &served
            && c["sha256"] == cert.fingerprint.as_str()
        {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "chasquid does not serve {} after the restart: {served:?}\n{}",
            cert.chain.display(),
            t.guest.evidence()
        );
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// Serves `cert` while `check` runs, then the seed's certificate again.
fn with_certificate(t: &MailFlow, cert: &CertFiles, check: impl FnOnce()) {
    install_certificate(t, cert);
    // Restored whether the check passes or fails: the next phase must see the real one.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(check));
    install_certificate(t, &t.pki.good);
    result.unwrap_or_else(|failure| std::panic::resume_unwind(failure))
}

/// What a bad certificate fails on every address: the named port-25 check, and the
/// combined TLS checks of 587 and 465.
fn certificate_failures(check_on_25: &str) -> Vec<(&'static str, String)> {
    [
        endpoints(25).map(|e| format!("{e} {check_on_25}")),
        endpoints(587).map(|e| format!("{e} STARTTLS")),
        endpoints(465).map(|e| format!("{e} TLS")),
    ]
    .concat()
    .into_iter()
    .map(|subject| ("smtp", subject))
    .collect()
}

fn wrong_certificate_name(t: &MailFlow) {
    with_certificate(t, &t.pki.wrong_name, || {
        let r = assert_fails(
            t,
            "a certificate for mail.example.net",
            &certificate_failures("certificate name"),
            "install a certificate for the host's fqdn",
        );
        for e in endpoints(25) {
            assert_eq!(
                r.check("smtp", &format!("{e} certificate chain"))["status"],
                "pass",
                "only the name is wrong: the chain is the site CA's"
            );
        }
    });
}

fn expired_certificate(t: &MailFlow) {
    with_certificate(t, &t.pki.expired, || {
        let r = assert_fails(
            t,
            "an expired certificate",
            &certificate_failures("certificate expiry"),
            "mailbake-acme.service",
        );
        for e in endpoints(25) {
            let expiry = r.check("smtp", &format!("{e} certificate expiry"));
            assert!(text(&expiry["summary"]).contains("expired"), "{expiry:#}");
            assert_eq!(
                r.check("smtp", &format!("{e} certificate name"))["status"],
                "pass"
            );
        }
    });
}

/// `mailbake send-test` on `port` to `to`, inside the test network, trusting the site's CA;
/// returns the Message-ID it printed.
fn run_send_test(t: &MailFlow, port: &str, to: &str) -> String {
    let mut child = t
        .net
        .command(mailbake_bin())
        .arg("send-test")
        .arg(t.site.path())
        .args(["--from", "i@example.com", "--to", to, "--port", port])
        .arg("--ca")
        .arg(&t.pki.ca)
        .arg("--password-stdin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mailbake send-test runs");
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(format!("{PASSWORD}\n").as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "send-test on {port} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!stdout.contains(PASSWORD), "the password is never printed");
    eprintln!("mail_flow: send-test on {port}:\n{stdout}");
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("Message-ID: "))
        .unwrap_or_else(|| panic!("send-test printed no Message-ID:\n{stdout}"))
        .trim()
        .to_string()
}

fn send_test(t: &MailFlow) {
    for (port, to) in [("465", TO4), ("587", TO6)] {
        let message_id = run_send_test(t, port, to);
        let arrived = testkit::ok(t.internet.receiver.wait_for_message(
            |m| m.header("Message-ID").as_deref() == Some(message_id.as_str()),
            Duration::from_secs(180),
        ));
        assert_eq!(arrived.rcpt_to(), to);
        let v = Verdicts::of(&t.net, &arrived);
        eprintln!(
            "mail_flow: send-test {port} -> {to}:\n  Authentication-Results: {}\n  Received: {}\n  iprev: {}",
            v.authentication_results, v.received, v.iprev
        );
        v.assert_all_pass(&SELECTORS);
    }
}
