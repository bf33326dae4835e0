//! Every check against an in-memory zone that starts as exactly what `mailbake dns` prints for
//! the site (plus the DKIM keys of a real secrets store), then has one fault injected at a time.
//! The SMTP checks run against the tiny SMTP/TLS server of [`super::test_server`].

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::dns::{LookupError, MemoryZone, Record, RecordType};
use super::test_server::{Behaviour, RouteDialer, TestServer, https_server, pki};
use super::{Check, Context, Section, Status, Trust, dkim_keys, run};
use crate::secrets::SecretStore;
use crate::site::{DkimAlgorithm, DomainName, Selector};
use crate::site::{HostName, Site};

const SITE: &str = r#"
site: t
domains:
  example.com:
    users: [i]
    dkim:
      selectors: { 2026b-ed: ed25519 }
      retired: { 2026a-ed: ed25519 }
    spf: { include: [_spf.example.net], policy: "~all" }
    dmarc: { p: quarantine, fo: "1", rua: "mailto:rua@reports.example.net" }
    tls_rpt: { rua: mailto:tls@example.com }
    mta_sts: { mode: enforce, max_age: 604800 }
hosts:
  mx1:
    fqdn: smtp.example.com
    ipv4: 203.0.113.10
    ipv6: { address: "2001:db8:1::10/64", gateway: "fe80::1" }
"#;

const V6: &str = "2001:db8:1::10";
const V6_PTR: &str = "0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa";

fn domain() -> DomainName {
    DomainName::try_from("example.com").expect("a domain")
}

fn selector_name(s: &str) -> Selector {
    Selector::try_from(s).expect("a selector")
}

struct Fixture {
    site: Site,
    store: SecretStore,
    _dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let site = crate::site::parse(std::path::Path::new("t.yaml"), SITE)
            .unwrap_or_else(|e| panic!("{}", e.render(false)));
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SecretStore::create(dir.path().join("secrets")).expect("store");
        for selector in ["2026b-ed", "2026a-ed"] {
            store
                .dkim_keygen(
                    &domain(),
                    &selector_name(selector),
                    DkimAlgorithm::Ed25519,
                    false,
                )
                .expect("keygen");
        }
        Fixture {
            site,
            store,
            _dir: dir,
        }
    }

    /// The zone a correct deployment publishes.
    fn zone(&self) -> MemoryZone {
        let set = crate::dns::records(
            &self.site,
            &crate::dns::Options {
                host: None,
                dkim: crate::dns::DkimLookup::Require(&self.store),
            },
        )
        .expect("records");
        let mut zone = MemoryZone::from_records(&set);
        for (name, text) in [
            ("_spf.example.net", "v=spf1 ip4:198.51.100.0/24 -all"),
            ("example.com._report._dmarc.reports.example.net", "v=DMARC1"),
        ] {
            zone.add(name, Record::Txt(text.into()));
        }
        zone
    }

    fn context(
        &self,
        zone: MemoryZone,
        dialer: RouteDialer,
        trust: Trust,
    ) -> Arc<Context<MemoryZone, RouteDialer>> {
        let keys = dkim_keys(&self.site, Ok(&self.store));
        Arc::new(
            Context::new(
                self.site.clone(),
                keys,
                None,
                vec!["zen.example.org".into()],
                zone,
                dialer,
                trust,
            )
            .expect("context"),
        )
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// The DNS sections (no connection is made: the dialer routes nothing).
const DNS_SECTIONS: [Section; 8] = [
    Section::Mx,
    Section::Addresses,
    Section::ReverseDns,
    Section::Spf,
    Section::Dkim,
    Section::Dmarc,
    Section::TlsRpt,
    Section::Dnsbl,
];

fn checks(f: &Fixture, zone: MemoryZone, sections: &[Section]) -> Vec<Check> {
    let ctx = f.context(zone, RouteDialer::default(), Trust::system());
    runtime().block_on(run(ctx, sections)).checks
}

fn find<'a>(checks: &'a [Check], subject: &str) -> &'a Check {
    checks
        .iter()
        .find(|c| c.subject == subject)
        .unwrap_or_else(|| panic!("no check `{subject}` in:\n{checks:#?}"))
}

fn assert_status(check: &Check, status: Status, words: &str) {
    assert_eq!(check.status, status, "{check:#?}");
    let text = format!("{} {}", check.summary, check.fix.as_deref().unwrap_or(""));
    assert!(text.contains(words), "`{words}` not in {check:#?}");
}

#[test]
fn a_correct_deployment_passes_every_dns_check() {
    let f = Fixture::new();
    let checks = checks(&f, f.zone(), &DNS_SECTIONS);
    let bad: Vec<&Check> = checks.iter().filter(|c| c.status != Status::Pass).collect();
    assert!(bad.is_empty(), "not passing: {bad:#?}");
    // Every section produced something, both address families included.
    for s in DNS_SECTIONS {
        assert!(checks.iter().any(|c| c.section == s), "nothing for {s:?}");
    }
    for subject in [
        "203.0.113.10",
        V6,
        "example.com from 203.0.113.10",
        "example.com from 2001:db8:1::10",
        "2026b-ed._domainkey.example.com",
        "2026a-ed._domainkey.example.com",
        "example.com._report._dmarc.reports.example.net",
    ] {
        find(&checks, subject);
    }
}

#[test]
fn a_wrong_ipv6_ptr_fails_naming_the_fix() {
    let f = Fixture::new();
    let mut zone = f.zone();
    zone.replace(
        V6_PTR,
        RecordType::Ptr,
        vec![Record::Ptr("vps123.provider.example".into())],
    );
    let checks = checks(&f, zone, &[Section::ReverseDns]);
    assert_status(
        find(&checks, V6),
        Status::Fail,
        "set the reverse DNS (PTR) of 2001:db8:1::10 to smtp.example.com",
    );
    assert_eq!(find(&checks, "203.0.113.10").status, Status::Pass);
}

#[test]
fn a_ptr_that_is_not_forward_confirmed_fails() {
    let f = Fixture::new();
    let mut zone = f.zone();
    zone.remove("smtp.example.com", RecordType::Aaaa);
    let checks = checks(
        &f,
        zone,
        &[Section::ReverseDns, Section::Addresses, Section::Mx],
    );
    assert_status(find(&checks, V6), Status::Fail, "not forward-confirmed");
    assert_status(
        find(&checks, "smtp.example.com"),
        Status::Fail,
        "does not resolve to 2001:db8:1::10",
    );
    assert_status(
        find(&checks, "example.com"),
        Status::Fail,
        "does not resolve to 2001:db8:1::10",
    );
}

#[test]
fn spf_without_ip6_fails_for_the_ipv6_address_only() {
    let f = Fixture::new();
    let mut zone = f.zone();
    zone.replace(
        "example.com",
        RecordType::Txt,
        vec![Record::Txt(
            "v=spf1 ip4:203.0.113.10 include:_spf.example.net ~all".into(),
        )],
    );
    let checks = checks(&f, zone, &[Section::Spf]);
    assert_eq!(
        find(&checks, "example.com from 203.0.113.10").status,
        Status::Pass
    );
    let v6 = find(&checks, "example.com from 2001:db8:1::10");
    assert_status(v6, Status::Fail, "`softfail`");
    assert!(v6.summary.contains("`ip6:`"), "{v6:#?}");
    assert!(
        v6.fix
            .as_deref()
            .unwrap_or("")
            .contains("ip6:2001:db8:1::10"),
        "{v6:#?}"
    );
    // The evaluation went through the include, and says so.
    assert!(
        v6.evidence.iter().any(|l| l.contains("_spf.example.net")),
        "{v6:#?}"
    );
}

#[test]
fn spf_records_that_are_missing_doubled_or_broken_fail() {
    let f = Fixture::new();
    let mut zone = f.zone();
    zone.remove("example.com", RecordType::Txt);
    assert_status(
        find(&checks(&f, zone, &[Section::Spf]), "example.com record"),
        Status::Fail,
        "no SPF record",
    );
    let mut zone = f.zone();
    zone.add("example.com", Record::Txt("v=spf1 -all".into()));
    assert_status(
        find(&checks(&f, zone, &[Section::Spf]), "example.com record"),
        Status::Fail,
        "permerror",
    );
}

#[test]
fn spf_policy_is_compared_with_the_site() {
    let f = Fixture::new();
    let checks_for = |text: &str| {
        let mut zone = f.zone();
        zone.replace(
            "example.com",
            RecordType::Txt,
            vec![Record::Txt(text.into())],
        );
        checks(&f, zone, &[Section::Spf])
    };
    assert_eq!(
        find(&checks(&f, f.zone(), &[Section::Spf]), "example.com policy").status,
        Status::Pass
    );
    let strict = checks_for("v=spf1 ip4:203.0.113.10 ip6:2001:db8:1::10 -all");
    assert_status(
        find(&strict, "example.com policy"),
        Status::Warn,
        "the site asks for ~all",
    );
    let open = checks_for("v=spf1 ip4:203.0.113.10 ip6:2001:db8:1::10 +all");
    assert_status(
        find(&open, "example.com policy"),
        Status::Fail,
        "anyone can send",
    );
}

#[test]
fn an_spf_lookup_that_times_out_is_a_temperror() {
    let f = Fixture::new();
    let mut zone = f.zone();
    zone.fail(
        "smtp.example.com",
        RecordType::Aaaa,
        LookupError::Timeout(Duration::from_secs(10)),
    );
    zone.replace(
        "example.com",
        RecordType::Txt,
        vec![Record::Txt("v=spf1 mx ~all".into())],
    );
    let checks = checks(&f, zone, &[Section::Spf]);
    assert_status(
        find(&checks, "example.com from 2001:db8:1::10"),
        Status::Fail,
        "`temperror`",
    );
    assert_eq!(
        find(&checks, "example.com from 203.0.113.10").status,
        Status::Pass
    );
}

#[test]
fn a_stale_dkim_key_fails() {
    let f = Fixture::new();
    let mut zone = f.zone();
    let other = crate::secrets::generate(DkimAlgorithm::Ed25519).expect("key");
    let stale = crate::secrets::dns_txt_value(&other).expect("record");
    zone.replace(
        "2026b-ed._domainkey.example.com",
        RecordType::Txt,
        vec![Record::Txt(stale)],
    );
    let checks = checks(&f, zone, &[Section::Dkim]);
    assert_status(
        find(&checks, "2026b-ed._domainkey.example.com"),
        Status::Fail,
        "stale paste",
    );
    assert_eq!(
        find(&checks, "2026a-ed._domainkey.example.com").status,
        Status::Pass
    );
}

#[test]
fn a_retired_selector_that_is_no_longer_published_fails() {
    let f = Fixture::new();
    let mut zone = f.zone();
    zone.remove("2026a-ed._domainkey.example.com", RecordType::Txt);
    let checks = checks(&f, zone, &[Section::Dkim]);
    let c = find(&checks, "2026a-ed._domainkey.example.com");
    assert_status(c, Status::Fail, "retired selector not published");
    let key = f
        .store
        .dkim_key(&domain(), &selector_name("2026a-ed"))
        .expect("key");
    assert!(
        c.fix
            .as_deref()
            .unwrap_or("")
            .contains(&key.dns_txt_value()),
        "{c:#?}"
    );
}

#[test]
fn a_dkim_record_that_does_not_parse_fails() {
    let f = Fixture::new();
    let mut zone = f.zone();
    zone.replace(
        "2026b-ed._domainkey.example.com",
        RecordType::Txt,
        vec![Record::Txt("v=DKIM1; k=ed25519; p=".into())],
    );
    let checks = checks(&f, zone, &[Section::Dkim]);
    assert_status(
        find(&checks, "2026b-ed._domainkey.example.com"),
        Status::Fail,
        "revoked",
    );
}

#[test]
fn a_removed_or_changed_dmarc_record_fails() {
    let f = Fixture::new();
    let mut zone = f.zone();
    zone.remove("_dmarc.example.com", RecordType::Txt);
    let removed = checks(&f, zone, &[Section::Dmarc]);
    let c = find(&removed, "_dmarc.example.com");
    assert_status(c, Status::Fail, "no DMARC record");
    assert!(
        c.fix
            .as_deref()
            .unwrap_or("")
            .contains("v=DMARC1; p=quarantine; fo=1"),
        "{c:#?}"
    );
    let mut zone = f.zone();
    zone.replace(
        "_dmarc.example.com",
        RecordType::Txt,
        vec![Record::Txt("v=DMARC1; p=none".into())],
    );
    assert_status(
        find(&checks(&f, zone, &[Section::Dmarc]), "_dmarc.example.com"),
        Status::Fail,
        "does not match the site's policy",
    );
}

#[test]
fn reports_to_another_domain_need_its_authorization() {
    let f = Fixture::new();
    let mut zone = f.zone();
    zone.remove(
        "example.com._report._dmarc.reports.example.net",
        RecordType::Txt,
    );
    let checks = checks(&f, zone, &[Section::Dmarc]);
    assert_status(
        find(&checks, "example.com._report._dmarc.reports.example.net"),
        Status::Fail,
        "example.com._report._dmarc.reports.example.net. IN TXT \"v=DMARC1\"",
    );
}

#[test]
fn mx_records_must_name_exactly_the_site_hosts() {
    let f = Fixture::new();
    let mut zone = f.zone();
    zone.add(
        "example.com",
        Record::Mx {
            preference: 20,
            exchange: "backup.example.org".into(),
        },
    );
    assert_status(
        find(&checks(&f, zone, &[Section::Mx]), "example.com"),
        Status::Fail,
        "backup.example.org is an MX but not a host of the site",
    );
    let mut zone = f.zone();
    zone.replace(
        "example.com",
        RecordType::Mx,
        vec![Record::Mx {
            preference: 0,
            exchange: "".into(),
        }],
    );
    assert_status(
        find(&checks(&f, zone, &[Section::Mx]), "example.com"),
        Status::Fail,
        "null MX",
    );
}

#[test]
fn an_extra_address_fails() {
    let f = Fixture::new();
    let mut zone = f.zone();
    zone.add("smtp.example.com", Record::A("192.0.2.99".parse().unwrap()));
    assert_status(
        find(&checks(&f, zone, &[Section::Addresses]), "smtp.example.com"),
        Status::Fail,
        "192.0.2.99, which is not the site's",
    );
}

#[test]
fn dnsbl_listings_fail_but_refusals_are_not_listings() {
    let f = Fixture::new();
    let v4 = "10.113.0.203.zen.example.org";
    let mut zone = f.zone();
    zone.add(v4, Record::A("127.0.0.2".parse().unwrap()));
    zone.add(
        v4,
        Record::Txt("listed: see https://zen.example.org/lookup".into()),
    );
    let listed = checks(&f, zone, &[Section::Dnsbl]);
    let c = find(&listed, "203.0.113.10 in zen.example.org");
    assert_status(c, Status::Fail, "listed in zen.example.org (127.0.0.2)");
    assert!(
        c.evidence.iter().any(|l| l.contains("listed: see")),
        "{c:#?}"
    );
    let mut zone = f.zone();
    zone.add(v4, Record::A("127.255.255.254".parse().unwrap()));
    assert_status(
        find(
            &checks(&f, zone, &[Section::Dnsbl]),
            "203.0.113.10 in zen.example.org",
        ),
        Status::Warn,
        "public or open resolvers",
    );
    let mut zone = f.zone();
    zone.fail(
        v4,
        RecordType::A,
        LookupError::Failed("the server answered SERVFAIL".into()),
    );
    assert_status(
        find(
            &checks(&f, zone, &[Section::Dnsbl]),
            "203.0.113.10 in zen.example.org",
        ),
        Status::Warn,
        "could not ask",
    );
    // IPv6 is asked too, by nibbles.
    assert_eq!(
        find(
            &checks(&f, f.zone(), &[Section::Dnsbl]),
            "2001:db8:1::10 in zen.example.org"
        )
        .status,
        Status::Pass
    );
}

#[test]
fn tls_rpt_must_report_to_the_site_address() {
    let f = Fixture::new();
    let mut zone = f.zone();
    zone.replace(
        "_smtp._tls.example.com",
        RecordType::Txt,
        vec![Record::Txt("v=TLSRPTv1; rua=mailto:old@example.com".into())],
    );
    assert_status(
        find(
            &checks(&f, zone, &[Section::TlsRpt]),
            "_smtp._tls.example.com",
        ),
        Status::Fail,
        "the site says tls@example.com",
    );
}

#[test]
fn outbound_is_a_note_with_the_command_to_run_on_the_host() {
    let f = Fixture::new();
    let c = checks(&f, f.zone(), &[Section::Outbound]);
    assert_status(&c[0], Status::Warn, "ssh admin@smtp.example.com");
}

// ---- SMTP against a real (tiny) SMTP server with real TLS ---------------------------------

fn unix(y: i32, m: u8, d: u8) -> SystemTime {
    let t = rcgen::date_time_ymd(y, m, d).unix_timestamp();
    UNIX_EPOCH + Duration::from_secs(t as u64)
}

/// Runs the SMTP section against a test server for mx1's IPv4 address (IPv6 is not routed:
/// its checks must report the refusal, not hang or pass).
fn smtp_checks(
    behaviour: Behaviour,
    names: &[&str],
    now: SystemTime,
    trusted: bool,
) -> (Vec<Check>, Vec<String>) {
    let f = Fixture::new();
    let test = pki(names, (2026, 1, 1), (2027, 1, 1), false);
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = dir.path().join("ca.pem");
    let other_ca = pki(&["x.invalid"], (2026, 1, 1), (2027, 1, 1), false);
    std::fs::write(
        &ca,
        if trusted {
            &test.ca_pem
        } else {
            &other_ca.ca_pem
        },
    )
    .expect("write CA");
    let trust = Trust::from_pem_file(&ca).expect("trust");
    let rt = runtime();
    let (report, received) = rt.block_on(async {
        let server = TestServer::start(behaviour, &test).await;
        let ip: IpAddr = "203.0.113.10".parse().unwrap();
        let mut dialer = RouteDialer::default();
        dialer.routes.insert(SocketAddr::new(ip, 25), server.smtp);
        dialer
            .routes
            .insert(SocketAddr::new(ip, 587), server.submission);
        dialer
            .routes
            .insert(SocketAddr::new(ip, 465), server.submissions);
        let keys = dkim_keys(&f.site, Ok(&f.store));
        let mut ctx = Context::new(
            f.site.clone(),
            keys,
            Some(&HostName::try_from("mx1").unwrap()),
            vec![],
            f.zone(),
            dialer,
            trust,
        )
        .expect("context");
        ctx.now = now;
        let report = run(Arc::new(ctx), &[Section::Smtp]).await;
        (report, server.received())
    });
    (report.checks, received)
}

#[test]
fn a_good_smtp_server_passes_and_the_relay_test_sends_no_message() {
    let (checks, received) = smtp_checks(
        Behaviour::good("smtp.example.com"),
        &["smtp.example.com"],
        unix(2026, 6, 1),
        true,
    );
    for subject in [
        "203.0.113.10:25 banner",
        "203.0.113.10:25 STARTTLS",
        "203.0.113.10:25 certificate name",
        "203.0.113.10:25 certificate chain",
        "203.0.113.10:25 certificate expiry",
        "203.0.113.10:25 AUTH before TLS",
        "203.0.113.10:25 open relay",
        "203.0.113.10:587 AUTH before TLS",
        "203.0.113.10:587 STARTTLS",
        "203.0.113.10:465 TLS",
    ] {
        assert_eq!(
            find(&checks, subject).status,
            Status::Pass,
            "{:#?}",
            find(&checks, subject)
        );
    }
    assert!(
        received
            .iter()
            .any(|c| c.starts_with("RCPT TO:<relay-test@relay-test.invalid>")),
        "{received:?}"
    );
    assert!(
        !received.iter().any(|c| c.eq_ignore_ascii_case("DATA")),
        "DATA was sent: {received:?}"
    );
    // IPv6 is not routed here: reported as a connection failure, never as a pass.
    let v6 = find(&checks, "[2001:db8:1::10]:25 connection");
    assert_eq!(v6.status, Status::Fail, "{v6:#?}");
}

#[test]
fn a_certificate_for_another_name_fails_the_name_check_only() {
    let (checks, _) = smtp_checks(
        Behaviour::good("smtp.example.com"),
        &["other.example.net"],
        unix(2026, 6, 1),
        true,
    );
    assert_status(
        find(&checks, "203.0.113.10:25 certificate name"),
        Status::Fail,
        "not valid for smtp.example.com",
    );
    assert_eq!(
        find(&checks, "203.0.113.10:25 certificate chain").status,
        Status::Pass
    );
    assert_status(
        find(&checks, "203.0.113.10:465 TLS"),
        Status::Fail,
        "not valid for smtp.example.com",
    );
}

#[test]
fn an_expired_or_expiring_certificate_fails_or_warns() {
    let (expired, _) = smtp_checks(
        Behaviour::good("smtp.example.com"),
        &["smtp.example.com"],
        unix(2027, 2, 1),
        true,
    );
    assert_status(
        find(&expired, "203.0.113.10:25 certificate expiry"),
        Status::Fail,
        "expired 31 day(s) ago",
    );
    // Judged inside its validity period, the chain itself is still fine.
    assert_eq!(
        find(&expired, "203.0.113.10:25 certificate chain").status,
        Status::Pass
    );
    let (soon, _) = smtp_checks(
        Behaviour::good("smtp.example.com"),
        &["smtp.example.com"],
        unix(2026, 12, 25),
        true,
    );
    assert_status(
        find(&soon, "203.0.113.10:25 certificate expiry"),
        Status::Warn,
        "expires in 7 day(s)",
    );
}

#[test]
fn a_certificate_from_an_untrusted_ca_fails_the_chain_check() {
    let (checks, _) = smtp_checks(
        Behaviour::good("smtp.example.com"),
        &["smtp.example.com"],
        unix(2026, 6, 1),
        false,
    );
    assert_status(
        find(&checks, "203.0.113.10:25 certificate chain"),
        Status::Fail,
        "not trusted here",
    );
}

#[test]
fn a_wrong_banner_auth_in_plain_text_and_an_open_relay_fail() {
    let behaviour = Behaviour {
        name: "localhost.localdomain".into(),
        auth_before_tls: true,
        open_relay: true,
        starttls: true,
    };
    let (checks, received) = smtp_checks(behaviour, &["smtp.example.com"], unix(2026, 6, 1), true);
    assert_status(
        find(&checks, "203.0.113.10:25 banner"),
        Status::Fail,
        "greets as `localhost.localdomain`",
    );
    assert_status(
        find(&checks, "203.0.113.10:25 AUTH before TLS"),
        Status::Fail,
        "plain text",
    );
    assert_status(
        find(&checks, "203.0.113.10:587 AUTH before TLS"),
        Status::Fail,
        "plain text",
    );
    assert_status(
        find(&checks, "203.0.113.10:25 open relay"),
        Status::Fail,
        "OPEN RELAY",
    );
    // Even an open relay gets no message from us.
    assert!(
        !received.iter().any(|c| c.eq_ignore_ascii_case("DATA")),
        "{received:?}"
    );
}

#[test]
fn no_starttls_fails() {
    let behaviour = Behaviour {
        starttls: false,
        ..Behaviour::good("smtp.example.com")
    };
    let (checks, _) = smtp_checks(behaviour, &["smtp.example.com"], unix(2026, 6, 1), true);
    assert_status(
        find(&checks, "203.0.113.10:25 STARTTLS"),
        Status::Fail,
        "not offered",
    );
    assert_status(
        find(&checks, "203.0.113.10:587 STARTTLS"),
        Status::Fail,
        "not offered",
    );
}

// ---- MTA-STS: the policy fetched over real HTTPS from a local server ---------------------

/// Runs the MTA-STS section with `mta-sts.example.com` served by a local HTTPS server that
/// answers `status` and `body`; `zone_edit` changes the zone first.
fn mta_sts_checks(
    status: &'static str,
    body: &str,
    zone_edit: impl FnOnce(&mut MemoryZone),
) -> Vec<Check> {
    let f = Fixture::new();
    let test = pki(&["mta-sts.example.com"], (2026, 1, 1), (2027, 1, 1), false);
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &test.ca_pem).expect("write CA");
    let trust = Trust::from_pem_file(&ca).expect("trust");
    let rt = runtime();
    rt.block_on(async {
        let server = https_server(&test, status, body.to_string()).await;
        let policy_ip: IpAddr = "192.0.2.80".parse().unwrap();
        let mut dialer = RouteDialer::default();
        dialer
            .routes
            .insert(SocketAddr::new(policy_ip, 443), server);
        let mut zone = f.zone();
        zone.add(
            "mta-sts.example.com",
            Record::A("192.0.2.80".parse().unwrap()),
        );
        zone_edit(&mut zone);
        let keys = dkim_keys(&f.site, Ok(&f.store));
        let mut ctx =
            Context::new(f.site.clone(), keys, None, vec![], zone, dialer, trust).expect("context");
        ctx.now = unix(2026, 6, 1);
        run(Arc::new(ctx), &[Section::MtaSts]).await.checks
    })
}

const POLICY_URL: &str = "https://mta-sts.example.com/.well-known/mta-sts.txt";

fn site_policy() -> String {
    let f = Fixture::new();
    let set = crate::dns::records(
        &f.site,
        &crate::dns::Options {
            host: None,
            dkim: crate::dns::DkimLookup::SkipMissing(None),
        },
    )
    .expect("records");
    set.mta_sts[0].text.clone()
}

#[test]
fn a_served_mta_sts_policy_that_matches_the_site_passes() {
    let checks = mta_sts_checks("200 OK", &site_policy(), |_| {});
    assert_eq!(
        find(&checks, "_mta-sts.example.com").status,
        Status::Pass,
        "{checks:#?}"
    );
    let served = find(&checks, POLICY_URL);
    assert_eq!(served.status, Status::Pass, "{served:#?}");
    assert!(
        served
            .evidence
            .iter()
            .any(|l| l.contains("mx: smtp.example.com")),
        "{served:#?}"
    );
}

#[test]
fn an_mta_sts_policy_without_our_mx_or_not_served_fails() {
    let other = site_policy().replace("mx: smtp.example.com", "mx: old.example.com");
    let checks = mta_sts_checks("200 OK", &other, |_| {});
    assert_status(
        find(&checks, POLICY_URL),
        Status::Fail,
        "does not list smtp.example.com",
    );
    let checks = mta_sts_checks("404 Not Found", "", |_| {});
    assert_status(find(&checks, POLICY_URL), Status::Fail, "HTTP 404");
    let checks = mta_sts_checks("200 OK", &site_policy(), |zone| {
        zone.remove("mta-sts.example.com", RecordType::A);
    });
    assert_status(find(&checks, POLICY_URL), Status::Fail, "has no address");
}

#[test]
fn an_mta_sts_record_with_a_stale_id_warns() {
    let checks = mta_sts_checks("200 OK", &site_policy(), |zone| {
        zone.replace(
            "_mta-sts.example.com",
            RecordType::Txt,
            vec![Record::Txt("v=STSv1; id=20240101".into())],
        );
    });
    assert_status(
        find(&checks, "_mta-sts.example.com"),
        Status::Warn,
        "id=20240101",
    );
}
