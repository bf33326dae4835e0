//! `mailbake dns` against its real consumers: `named-checkzone` (bind9-utils) for the zone
//! files, and exact snapshots for the registrar table and the JSON, with DKIM values taken
//! from keys the test generates in a secrets store of its own.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mailbake::secrets::SecretStore;
use mailbake::site::DkimAlgorithm;

fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{e}"),
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A store holding a fresh key for every selector of every domain of `site`; returns the
/// DNS TXT value of each key by record name (`<selector>._domainkey.<domain>`).
fn store_for(site: &Path, root: &Path) -> BTreeMap<String, String> {
    let loaded = ok(mailbake::site::load(site));
    let store = ok(SecretStore::create(root));
    let mut values = BTreeMap::new();
    for (domain, d) in loaded.site.domains.iter() {
        for (selector, algorithm) in d.dkim.selectors.iter() {
            let key = ok(store.dkim_keygen(domain, selector, *algorithm, false));
            values.insert(
                format!("{selector}._domainkey.{domain}"),
                key.dns_txt_value(),
            );
        }
    }
    values
}

fn mailbake_dns(site: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mailbake"));
    cmd.arg("dns").arg(site).args(args);
    ok(cmd.output())
}

fn dns_ok(site: &Path, args: &[&str]) -> String {
    let out = mailbake_dns(site, args);
    assert!(
        out.status.success(),
        "mailbake dns {args:?}:\n{}",
        text(&out)
    );
    ok(String::from_utf8(out.stdout))
}

/// The zone output split into its fragments, by the zone named in each `$ORIGIN`.
fn fragments(zone_text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for fragment in zone_text.split("\n\n") {
        let origin = fragment
            .lines()
            .find_map(|l| l.strip_prefix("$ORIGIN "))
            .unwrap_or_else(|| panic!("fragment without $ORIGIN:\n{fragment}"));
        let zone = origin.trim_end_matches('.').to_string();
        assert!(
            out.insert(zone.clone(), fragment.to_string()).is_none(),
            "zone {zone} printed twice"
        );
    }
    out
}

/// Runs `named-checkzone` on `fragment` behind a minimal SOA and NS: the fragment leaves those
/// to the zone's DNS host on purpose. `-i local` keeps the integrity checks (an MX or NS
/// target inside the zone must have an address) without resolving names outside it: the
/// tests have no network.
fn checkzone(zone: &str, fragment: &str) -> Output {
    let dir = ok(tempfile::tempdir());
    let file = dir.path().join("zone");
    let header = format!(
        "$ORIGIN {zone}.\n$TTL 300\n@ IN SOA ns1.nameserver.invalid. hostmaster.nameserver.invalid. 1 7200 900 1209600 300\n@ IN NS ns1.nameserver.invalid.\n"
    );
    ok(fs::write(&file, format!("{header}{fragment}")));
    ok(Command::new("named-checkzone")
        .args([
            "-i", "local", "-k", "fail", "-n", "fail", "-m", "fail", "-M", "fail",
        ])
        .arg(zone)
        .arg(&file)
        .output())
}

fn assert_checkzone_accepts(zone: &str, fragment: &str) {
    let out = checkzone(zone, fragment);
    assert!(
        out.status.success() && text(&out).contains("OK"),
        "named-checkzone refused {zone}:\n{}\n--- fragment ---\n{fragment}",
        text(&out)
    );
}

fn write_site(dir: &Path, yaml: &str) -> PathBuf {
    let path = dir.join("site.yaml");
    ok(fs::write(&path, yaml));
    path
}

const TWO_DOMAINS: &str = r#"
site: two
domains:
  example.com:
    users: [i]
    dkim: { selectors: { s1: ed25519 } }
    spf: { include: [_spf.google.com], policy: "-all" }
    dmarc: { p: reject, rua: mailto:dmarc@example.com }
    mta_sts: { mode: enforce, max_age: 86400 }
    tls_rpt: { rua: mailto:tls@example.com }
  example.org:
    dkim: { selectors: { s1: ed25519 } }
    dmarc: { p: none }
hosts:
  mx1:
    fqdn: smtp.example.com
    ipv4: 203.0.113.10
    ipv6: { address: "2001:db8:1::10/64", gateway: "fe80::1" }
  mx2:
    fqdn: mx2.example.org
    ipv4: 198.51.100.7
    ipv6: { address: "2001:db8:2::7/64", gateway: "fe80::1" }
"#;

#[test]
fn example_zones_pass_named_checkzone() {
    let tmp = ok(tempfile::tempdir());
    let secrets = tmp.path().join("secrets");
    let site = testkit::example_site();
    store_for(&site, &secrets);
    let zones = fragments(&dns_ok(
        &site,
        &["--format", "zone", "--secrets", &secrets.to_string_lossy()],
    ));
    assert_eq!(
        zones.keys().collect::<Vec<_>>(),
        [
            "0.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa",
            "113.0.203.in-addr.arpa",
            "example.com"
        ]
    );
    for (zone, fragment) in &zones {
        assert_checkzone_accepts(zone, fragment);
    }

    // The checker really checks: the MX target without its address records is refused.
    let without_addresses: String = zones["example.com"]
        .lines()
        .filter(|l| !l.starts_with("smtp.example.com."))
        .map(|l| format!("{l}\n"))
        .collect();
    let refused = checkzone("example.com", &without_addresses);
    assert!(
        !refused.status.success(),
        "named-checkzone accepted an MX without address:\n{}",
        text(&refused)
    );
}

#[test]
fn two_domain_two_host_zones_pass_named_checkzone() {
    let tmp = ok(tempfile::tempdir());
    let site = write_site(tmp.path(), TWO_DOMAINS);
    store_for(&site, &tmp.path().join("secrets"));
    // Default store: secrets/ beside the site file.
    let zones = fragments(&dns_ok(&site, &["--format", "zone"]));
    assert_eq!(
        zones.keys().collect::<Vec<_>>(),
        [
            "0.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa",
            "0.0.0.0.2.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa",
            "100.51.198.in-addr.arpa",
            "113.0.203.in-addr.arpa",
            "example.com",
            "example.org",
        ]
    );
    for (zone, fragment) in &zones {
        assert_checkzone_accepts(zone, fragment);
    }
    // Each host's addresses are published once, in the zone its name belongs to; both
    // domains send mail to both hosts.
    let com = &zones["example.com"];
    let org = &zones["example.org"];
    assert!(com.contains("smtp.example.com.") && !com.contains("mx2.example.org. "));
    assert!(org.contains("mx2.example.org.") && !org.contains("\nsmtp.example.com."));
    for zone in [com, org] {
        assert!(zone.contains("IN MX   10 smtp.example.com."), "{zone}");
        assert!(zone.contains("IN MX   20 mx2.example.org."), "{zone}");
    }
    assert!(com.contains("_mta-sts.example.com."), "{com}");
    assert!(com.contains("; policy https://mta-sts.example.com/.well-known/mta-sts.txt:"));
    assert!(com.contains("_smtp._tls.example.com."));
    assert!(!org.contains("_mta-sts") && !org.contains("_smtp._tls"));
}

#[test]
fn host_option_restricts_per_host_records() {
    let tmp = ok(tempfile::tempdir());
    let site = write_site(tmp.path(), TWO_DOMAINS);
    store_for(&site, &tmp.path().join("secrets"));
    let json: serde_json::Value = ok(serde_json::from_str(&dns_ok(
        &site,
        &["--format", "json", "--host", "mx2"],
    )));
    let records = json.as_array().cloned().unwrap_or_default();
    let per_host: Vec<(&str, &str)> = records
        .iter()
        .filter(|r| matches!(r["type"].as_str(), Some("A" | "AAAA" | "PTR")))
        .map(|r| {
            (
                r["type"].as_str().unwrap_or(""),
                r["value"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        per_host,
        [
            ("A", "198.51.100.7"),
            ("AAAA", "2001:db8:2::7"),
            ("PTR", "mx2.example.org"),
            ("PTR", "mx2.example.org"),
        ]
    );
    // MX stays complete: publishing half of it would take mx1 out of service.
    let mx = records.iter().filter(|r| r["type"] == "MX").count();
    assert_eq!(mx, 4);

    let out = mailbake_dns(&site, &["--host", "mx9"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("no host `mx9`"), "{}", text(&out));
    assert!(text(&out).contains("mx1, mx2"), "{}", text(&out));
}

#[test]
fn example_table_snapshot() {
    let tmp = ok(tempfile::tempdir());
    let secrets = tmp.path().join("secrets");
    let site = testkit::example_site();
    let keys = store_for(&site, &secrets);
    let table = dns_ok(
        &site,
        &["--format", "table", "--secrets", &secrets.to_string_lossy()],
    );
    let ed = &keys["2026a-ed._domainkey.example.com"];
    let rsa = &keys["2026a-rsa._domainkey.example.com"];
    let expected = format!(
        "\
example.com
Host                  Type  Value                TTL
@                     MX    10 smtp.example.com  3600
smtp                  A     203.0.113.10         3600
smtp                  AAAA  2001:db8:1::10       3600
@                     TXT   v=spf1 ip4:203.0.113.10 ip6:2001:db8:1::10 mx include:_spf.google.com ~all  3600
2026a-ed._domainkey   TXT   {ed}  3600
2026a-rsa._domainkey  TXT   {rsa}  3600
_dmarc                TXT   v=DMARC1; p=quarantine; fo=1; rua=mailto:rua@example.com; ruf=mailto:ruf@example.com  3600

Reverse DNS (PTR): set it in your VPS provider's panel
- set the reverse DNS of 2001:db8:1::10 to smtp.example.com in your provider's panel
- set the reverse DNS of 203.0.113.10 to smtp.example.com in your provider's panel
"
    );
    assert_eq!(table, expected);
    // What a form needs: no trailing dots, no quotes.
    assert!(!table.contains("com.") && !table.contains('"'));
    assert!(ed.starts_with("v=DKIM1; k=ed25519; p=") && rsa.starts_with("v=DKIM1; k=rsa; p="));
}

#[test]
fn example_json_snapshot() {
    let tmp = ok(tempfile::tempdir());
    let secrets = tmp.path().join("secrets");
    let site = testkit::example_site();
    let keys = store_for(&site, &secrets);
    let printed = dns_ok(
        &site,
        &["--format", "json", "--secrets", &secrets.to_string_lossy()],
    );
    let got: serde_json::Value = ok(serde_json::from_str(&printed));
    let rec = |name: &str, kind: &str, value: &str, domain: &str| serde_json::json!({"name": name, "type": kind, "value": value, "ttl": 3600, "domain": domain});
    let with = |mut v: serde_json::Value, key: &str, value: &str| {
        v[key] = serde_json::Value::from(value);
        v
    };
    let v6_rev = "0.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa";
    let expected = serde_json::json!([
        with(
            rec("example.com", "MX", "10 smtp.example.com", "example.com"),
            "host",
            "mx1"
        ),
        with(
            rec("smtp.example.com", "A", "203.0.113.10", "example.com"),
            "host",
            "mx1"
        ),
        with(
            rec("smtp.example.com", "AAAA", "2001:db8:1::10", "example.com"),
            "host",
            "mx1"
        ),
        rec(
            "example.com",
            "TXT",
            "v=spf1 ip4:203.0.113.10 ip6:2001:db8:1::10 mx include:_spf.google.com ~all",
            "example.com"
        ),
        rec(
            "2026a-ed._domainkey.example.com",
            "TXT",
            &keys["2026a-ed._domainkey.example.com"],
            "example.com"
        ),
        rec(
            "2026a-rsa._domainkey.example.com",
            "TXT",
            &keys["2026a-rsa._domainkey.example.com"],
            "example.com"
        ),
        rec(
            "_dmarc.example.com",
            "TXT",
            "v=DMARC1; p=quarantine; fo=1; rua=mailto:rua@example.com; ruf=mailto:ruf@example.com",
            "example.com"
        ),
        with(
            with(
                rec(
                    &format!("0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.{v6_rev}"),
                    "PTR",
                    "smtp.example.com",
                    v6_rev
                ),
                "host",
                "mx1"
            ),
            "note",
            "set the reverse DNS of 2001:db8:1::10 to smtp.example.com in your provider's panel"
        ),
        with(
            with(
                rec(
                    "10.113.0.203.in-addr.arpa",
                    "PTR",
                    "smtp.example.com",
                    "113.0.203.in-addr.arpa"
                ),
                "host",
                "mx1"
            ),
            "note",
            "set the reverse DNS of 203.0.113.10 to smtp.example.com in your provider's panel"
        ),
    ]);
    assert_eq!(got, expected, "{printed}");
    // Stable text, not just stable data: keys in a fixed order, same bytes every run.
    assert!(printed.starts_with(
        "[\n  {\n    \"name\": \"example.com\",\n    \"type\": \"MX\",\n    \"value\": \"10 smtp.example.com\",\n    \"ttl\": 3600,\n    \"domain\": \"example.com\",\n    \"host\": \"mx1\"\n  },"
    ), "{printed}");
    let again = dns_ok(
        &site,
        &["--format", "json", "--secrets", &secrets.to_string_lossy()],
    );
    assert_eq!(printed, again);
}

/// The character-strings of a zone-file TXT line, unescaped (our values have no escapes).
fn quoted_strings(line: &str) -> Vec<String> {
    line.split('"')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

#[test]
fn rsa_4096_record_is_split_into_255_byte_strings() {
    let tmp = ok(tempfile::tempdir());
    let site = write_site(
        tmp.path(),
        r#"
site: big
domains:
  example.net:
    dkim: { selectors: { big: rsa-4096 } }
hosts:
  mx1: { fqdn: mx1.example.net, ipv4: 192.0.2.1 }
"#,
    );
    let keys = store_for(&site, &tmp.path().join("secrets"));
    let value = &keys["big._domainkey.example.net"];
    assert!(value.len() > 700, "an RSA-4096 record is ~740 bytes");
    let zones = fragments(&dns_ok(&site, &[]));
    let fragment = &zones["example.net"];
    let line = fragment
        .lines()
        .find(|l| l.starts_with("big._domainkey.example.net."))
        .unwrap_or_else(|| panic!("no DKIM line:\n{fragment}"));
    let parts = quoted_strings(line);
    assert_eq!(parts.len(), value.len().div_ceil(255), "{line}");
    for part in &parts[..parts.len() - 1] {
        assert_eq!(part.len(), 255, "{line}");
    }
    assert_eq!(parts.concat(), *value);
    assert_checkzone_accepts("example.net", fragment);

    // The table and JSON keep the value whole.
    let json: serde_json::Value = ok(serde_json::from_str(&dns_ok(&site, &["--format", "json"])));
    let dkim = json
        .as_array()
        .and_then(|a| a.iter().find(|r| r["name"] == "big._domainkey.example.net"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(dkim["value"].as_str(), Some(value.as_str()));
}

#[test]
fn missing_dkim_material_is_an_error_naming_the_fix() {
    let tmp = ok(tempfile::tempdir());
    let site = write_site(tmp.path(), TWO_DOMAINS);

    // No store at all.
    let out = mailbake_dns(&site, &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let msg = text(&out);
    assert!(msg.contains("secrets store"), "{msg}");
    assert!(
        msg.contains("mailbake dkim keygen SITE example.com"),
        "{msg}"
    );
    assert!(out.stdout.is_empty(), "nothing printed on failure");

    // A store with one domain's key but not the other's.
    let store = ok(SecretStore::create(tmp.path().join("secrets")));
    ok(store.dkim_keygen(
        &"example.com".try_into().unwrap(),
        &"s1".try_into().unwrap(),
        DkimAlgorithm::Ed25519,
        false,
    ));
    let out = mailbake_dns(&site, &["--format", "table"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let msg = text(&out);
    assert!(msg.contains("selector `s1` of example.org"), "{msg}");
    assert!(
        msg.contains("mailbake dkim keygen SITE example.org"),
        "{msg}"
    );
    assert!(out.stdout.is_empty(), "nothing printed on failure");
}
