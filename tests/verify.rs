//! `mailbake verify` as a user runs it, on the live path: hickory asking the real BIND
//! (authoritative for the zones `mailbake build` wrote, on a loopback port reserved for the
//! test), SPF evaluated through it, DKIM compared with the store. The SMTP section is left
//! out here: the site's addresses are documentation addresses that must never be dialled from
//! this machine (the SMTP checks have their own tests against a local server, and the boot
//! tests' network).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

/// Every section that needs no connection to the site's hosts.
const DNS_ONLY: [&str; 8] = [
    "mx",
    "addresses",
    "reverse-dns",
    "spf",
    "dkim",
    "dmarc",
    "dnsbl",
    "outbound",
];

fn mailbake(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mailbake"))
        .args(args)
        .output()
        .expect("mailbake runs")
}

/// The zones a build wrote (`dns/<zone>.zone`), each wrapped with a SOA and NS, plus the one
/// outside zone the example's SPF includes.
fn zones(out: &Path, skip: &dyn Fn(&str) -> bool) -> Vec<testkit::Zone> {
    let mut zones = Vec::new();
    for entry in std::fs::read_dir(out.join("dns")).expect("dns/") {
        let path = entry.expect("entry").path();
        let Some(origin) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".zone"))
        else {
            continue;
        };
        let text = std::fs::read_to_string(&path).expect("zone fragment");
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('$') && !skip(l))
            .collect();
        zones.push(testkit::Zone::from_records(origin, &lines));
    }
    zones.push(testkit::Zone::from_records(
        "google.com",
        &["_spf IN TXT \"v=spf1 ip4:192.0.2.0/24 -all\""],
    ));
    zones
}

struct Deployment {
    _dir: tempfile::TempDir,
    out: std::path::PathBuf,
    secrets: std::path::PathBuf,
}

fn deployment() -> Deployment {
    let dir = tempfile::tempdir().expect("tempdir");
    let secrets = testkit::example_secrets(dir.path());
    let out = dir.path().join("out");
    testkit::mailbake_build(&testkit::example_site(), &secrets, &out);
    Deployment {
        out,
        secrets,
        _dir: dir,
    }
}

fn verify_json(dns: &testkit::Dns, secrets: &Path) -> (Output, Value) {
    let resolver = dns.addr().to_string();
    let site = testkit::example_site();
    let mut args = vec![
        "verify",
        site.to_str().expect("utf-8 path"),
        "--resolver",
        &resolver,
        "--format",
        "json",
        "--secrets",
        secrets.to_str().expect("utf-8 path"),
        "--dnsbl",
        "zen.spamhaus.org",
    ];
    for s in DNS_ONLY {
        args.extend(["--only", s]);
    }
    let out = mailbake(&args);
    let json: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "verify printed no JSON ({e}):\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out, json)
}

fn check<'a>(json: &'a Value, subject: &str) -> &'a Value {
    json["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["subject"] == subject))
        .unwrap_or_else(|| panic!("no check `{subject}` in {json:#}"))
}

#[test]
fn verify_passes_a_correct_deployment_and_fails_a_wrong_ipv6_ptr() {
    let d = deployment();
    let reserved = testkit::reserve_port();
    let port = reserved.number();
    let dns = testkit::Dns::start(testkit::loopback(port), &zones(&d.out, &|_| false))
        .unwrap_or_else(|e| panic!("{e}"));
    let (out, json) = verify_json(&dns, &d.secrets);
    assert!(out.status.success(), "exit {:?}: {json:#}", out.status);
    assert_eq!(json["resolver"], format!("127.0.0.1:{port} (--resolver)"));
    let failing: Vec<&Value> = json["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter(|c| c["status"] == "fail")
        .collect();
    assert!(failing.is_empty(), "{failing:#?}");
    for subject in [
        "2001:db8:1::10",
        "example.com from 2001:db8:1::10",
        "2026a-rsa._domainkey.example.com",
        "2026a-ed._domainkey.example.com",
        "_dmarc.example.com",
    ] {
        assert_eq!(check(&json, subject)["status"], "pass", "{json:#}");
    }
    // BIND is authoritative only: the DNSBL question is refused, which is "not asked", a
    // warning, never "listed".
    assert_eq!(
        check(&json, "203.0.113.10 in zen.spamhaus.org")["status"],
        "warn"
    );
    drop(dns);

    // The same deployment with its IPv6 PTR missing from the reverse zone.
    let reserved = testkit::reserve_port();
    let dns = testkit::Dns::start(
        testkit::loopback(reserved.number()),
        &zones(&d.out, &|line| {
            line.contains("ip6.arpa") && line.contains("PTR")
        }),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let (out, json) = verify_json(&dns, &d.secrets);
    assert_eq!(out.status.code(), Some(1), "{json:#}");
    let ptr = check(&json, "2001:db8:1::10");
    assert_eq!(ptr["status"], "fail", "{ptr:#}");
    assert!(
        ptr["fix"].as_str().is_some_and(
            |f| f.contains("set the reverse DNS (PTR) of 2001:db8:1::10 to smtp.example.com")
        ),
        "{ptr:#}"
    );
    assert_eq!(check(&json, "203.0.113.10")["status"], "pass");
}

/// The field names of the table that follows `heading` in docs/verify.md.
fn documented_fields(doc: &str, heading: &str) -> BTreeSet<String> {
    let start = doc
        .find(heading)
        .unwrap_or_else(|| panic!("docs/verify.md has no `{heading}`"));
    doc[start..]
        .lines()
        .skip(1)
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .filter_map(|l| {
            let cell = l.split('|').nth(1)?.trim();
            Some(cell.strip_prefix('`')?.strip_suffix('`')?.to_string())
        })
        .collect()
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

#[test]
fn the_json_report_has_exactly_the_documented_fields() {
    let doc =
        std::fs::read_to_string(testkit::repo().join("docs/verify.md")).expect("docs/verify.md");
    // The outbound section needs no DNS: the report is complete without a resolver's answer.
    let dir = tempfile::tempdir().expect("tempdir");
    let out = mailbake(&[
        "verify",
        testkit::example_site().to_str().expect("utf-8"),
        "--only",
        "outbound",
        "--format",
        "json",
        "--resolver",
        "127.0.0.1:9",
        "--secrets",
        dir.path().join("none").to_str().expect("utf-8"),
    ]);
    let json: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(out.status.code(), Some(0), "only warnings: {json:#}");
    assert_eq!(keys(&json), documented_fields(&doc, "Top level:"));
    assert_eq!(keys(&json["counts"]), documented_fields(&doc, "`counts`:"));
    let checks = json["checks"].as_array().expect("checks");
    assert!(!checks.is_empty());
    for c in checks {
        assert_eq!(
            keys(c),
            documented_fields(&doc, "Each element of `checks`:")
        );
        assert_eq!(c["status"], "warn");
        assert!(
            c["fix"]
                .as_str()
                .is_some_and(|f| f.contains("/dev/tcp/gmail-smtp-in.l.google.com/25"))
        );
    }
    assert_eq!(json["schema"], 1);
    assert_eq!(json["status"], "warn");
    assert_eq!(json["counts"]["warn"], checks.len());
}

#[test]
fn bad_usage_exits_2_and_names_the_option() {
    let site = testkit::example_site();
    let site = site.to_str().expect("utf-8");
    for (args, words) in [
        (vec!["verify", site, "--only", "everything"], "everything"),
        (
            vec!["verify", site, "--resolver", "ns.example.com"],
            "not a DNS server address",
        ),
        (vec!["verify", site, "--host", "MX1"], "uppercase"),
        (vec!["verify", site, "--format", "yaml"], "yaml"),
    ] {
        let out = mailbake(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(words), "{args:?}: {err}");
    }
    // An unknown host of a valid name is a failure of the step, with the list of hosts.
    let out = mailbake(&[
        "verify",
        site,
        "--host",
        "mx9",
        "--resolver",
        "127.0.0.1:9",
        "--only",
        "outbound",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("mx1"),
        "{out:?}"
    );
}

/// The zones of `d`, its DMARC record replaced by `dmarc` (none: removed), plus `extra`
/// zones.
fn zones_with_dmarc(
    d: &Deployment,
    dmarc: Option<&str>,
    extra: Vec<testkit::Zone>,
) -> Vec<testkit::Zone> {
    let is_dmarc = |l: &str| l.starts_with("_dmarc") && l.contains("v=DMARC1");
    let mut zones = zones(&d.out, &is_dmarc);
    let site = zones
        .iter_mut()
        .find(|z| z.origin.trim_end_matches('.') == "example.com")
        .expect("the example.com zone");
    if let Some(record) = dmarc {
        site.text.push_str(&format!("_dmarc IN TXT \"{record}\"\n"));
    }
    zones.extend(extra);
    zones
}

fn dmarc_check(d: &Deployment, dmarc: Option<&str>, extra: Vec<testkit::Zone>) -> Value {
    let reserved = testkit::reserve_port();
    let dns = testkit::Dns::start(
        testkit::loopback(reserved.number()),
        &zones_with_dmarc(d, dmarc, extra),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let (_, json) = verify_json(&dns, &d.secrets);
    check(&json, "_dmarc.example.com").clone()
}

#[test]
fn verify_judges_dmarc_as_rfc_9989_does() {
    let d = deployment();
    let site =
        "v=DMARC1; p=quarantine; fo=1; rua=mailto:rua@example.com; ruf=mailto:ruf@example.com";

    // The tags RFC 9989 removed: ignored by receivers, so a warning, not a mismatch.
    let removed = dmarc_check(&d, Some(&format!("{site}; pct=100; ri=86400")), vec![]);
    assert_eq!(removed["status"], "warn", "{removed:#}");
    assert!(
        removed["summary"]
            .as_str()
            .is_some_and(|s| s.contains("`pct`, `ri`") && s.contains("RFC 9989 removed")),
        "{removed:#}"
    );

    // A tag the site does not set (np, t) is a different policy.
    let np = dmarc_check(&d, Some(&format!("{site}; np=none")), vec![]);
    assert_eq!(np["status"], "fail", "{np:#}");

    // No record at _dmarc.example.com: the tree walk finds the parent's, and says so.
    let parent = testkit::Zone::from_records("com", &["_dmarc IN TXT \"v=DMARC1; p=none\""]);
    let walked = dmarc_check(&d, None, vec![parent]);
    assert_eq!(walked["status"], "fail", "{walked:#}");
    let summary = walked["summary"].as_str().unwrap_or_default();
    assert!(
        summary
            .contains("receivers walk up the DNS tree and apply _dmarc.com's `v=DMARC1; p=none`"),
        "{walked:#}"
    );
    assert!(
        walked["evidence"].to_string().contains("_dmarc.com"),
        "the walk's query is in the evidence: {walked:#}"
    );
    let nowhere = dmarc_check(&d, None, vec![]);
    assert!(
        nowhere["summary"]
            .as_str()
            .is_some_and(|s| s.contains("finds none either")),
        "{nowhere:#}"
    );
}

/// A hostile DNS server's TXT records (an included SPF record, the DMARC record) carry escape
/// sequences that would retitle and clear the terminal and print a forged verdict: the text
/// report and the JSON show them escaped, and hold no control character.
#[test]
fn hostile_txt_records_never_reach_the_terminal_raw() {
    const HOSTILE: &str = r"\027]0;owned\007\027[2J\013\010 PASS  ALL CHECKS PASSED";
    let d = deployment();
    // The built zone with its DMARC record replaced by the hostile one.
    let zone_file = d.out.join("dns/example.com.zone");
    let zone = std::fs::read_to_string(&zone_file).expect("the built zone");
    let hostile_zone: String = zone
        .lines()
        .map(|l| match l.starts_with("_dmarc") {
            true => format!("_dmarc IN TXT \"v=DMARC1; p=reject; {HOSTILE}\"\n"),
            false => format!("{l}\n"),
        })
        .collect();
    assert_ne!(zone, hostile_zone, "the zone has a _dmarc record:\n{zone}");
    std::fs::write(&zone_file, hostile_zone).expect("write the hostile zone");
    let mut zones = zones(&d.out, &|_| false);
    zones.pop(); // the benign google.com
    zones.push(testkit::Zone::from_records(
        "google.com",
        &[format!("_spf IN TXT \"v=spf1 {HOSTILE} -all\"")],
    ));
    let reserved = testkit::reserve_port();
    let dns = testkit::Dns::start(testkit::loopback(reserved.number()), &zones)
        .unwrap_or_else(|e| panic!("{e}"));
    let site = testkit::example_site();
    let resolver = dns.addr().to_string();
    for format in ["text", "json"] {
        let out = mailbake(&[
            "verify",
            site.to_str().expect("utf-8 path"),
            "--resolver",
            &resolver,
            "--secrets",
            d.secrets.to_str().expect("utf-8 path"),
            "--only",
            "spf",
            "--only",
            "dmarc",
            "--format",
            format,
        ]);
        let text = String::from_utf8_lossy(&out.stdout);
        let raw: Vec<char> = text
            .chars()
            .filter(|c| c.is_control() && *c != '\n')
            .collect();
        assert!(raw.is_empty(), "{format}: raw {raw:?} in:\n{text}");
        assert!(
            text.contains("owned"),
            "{format}: the hostile record is not shown at all:\n{text}"
        );
    }
}
