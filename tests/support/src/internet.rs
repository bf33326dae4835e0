//! The internet of the test network: its DNS (the site's zones and PTRs, the Gmail stand-ins,
//! `sender.test`, the reverse zones), the receiver, and the third-party sender's key and
//! verdict helpers. One place, so every boot test and the receiver's own test see the same
//! world.

use std::fs;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::certs::{Ca, San};
use crate::dns::{Dns, Zone, zone_text};
use crate::netns::Netns;
use crate::receiver::{Delivered, Receiver, ReceiverOptions};
use crate::topology::*;
use crate::{ok, run, verifier};

/// The DKIM selector of `sender.test`.
pub const SENDER_SELECTOR: &str = "s1";

/// `sender.test`'s DKIM key (RSA 2048, PKCS#1 for dkimpy) and its published record.
pub struct SenderKey {
    pub key: PathBuf,
    pub record: String,
}

impl SenderKey {
    pub fn generate(dir: &Path) -> SenderKey {
        let key = dir.join("sender-dkim.pem");
        run(Command::new("openssl")
            .args(["genrsa", "-traditional", "-out"])
            .arg(&key)
            .arg("2048"));
        let der = dir.join("sender-dkim.pub.der");
        run(Command::new("openssl")
            .args(["rsa", "-pubout", "-outform", "DER", "-in"])
            .arg(&key)
            .arg("-out")
            .arg(&der));
        use base64::Engine as _;
        let public = base64::engine::general_purpose::STANDARD
            .encode(fs::read(&der).expect("the public key"));
        SenderKey {
            key,
            record: format!("v=DKIM1; k=rsa; p={public}"),
        }
    }
}

/// A TXT record's value as zone-file strings of at most 255 bytes each.
pub fn txt(value: &str) -> String {
    value
        .as_bytes()
        .chunks(255)
        .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The nibble-form reverse name of an IPv6 address, with the trailing dot.
pub fn ip6_arpa(addr: &str) -> String {
    let ip: std::net::Ipv6Addr = addr.parse().expect("an IPv6 address");
    let hex: String = ip.octets().iter().map(|b| format!("{b:02x}")).collect();
    let mut name: Vec<String> = hex.chars().rev().map(|c| c.to_string()).collect();
    name.push("ip6.arpa.".into());
    name.join(".")
}

/// The zones of the internet around the site's own `site_zones` and PTR records
/// (`(name, target)` from `mailbake dns`): the Gmail stand-ins (one reachable over IPv4 only,
/// one over IPv6 only), `sender.test` (SPF `-all`, DKIM, DMARC `p=reject; np=reject`), and reverse zones
/// holding every host's PTR, the site's included.
pub fn zones(
    site_zones: Vec<Zone>,
    site_ptrs: &[(String, String)],
    sender: &SenderKey,
) -> Vec<Zone> {
    let mut v4_reverse = vec![
        format!("25 IN PTR {MX4_NAME}."),
        format!("80 IN PTR {SENDER_NAME}."),
        format!("66 IN PTR stranger.{SENDER_DOMAIN}."),
        // Its name does not lead back to it: forward-confirmed reverse DNS must fail.
        format!("67 IN PTR liar.{SENDER_DOMAIN}."),
    ];
    let mut site_v4_reverse = Vec::new();
    let mut v6_reverse = vec![
        format!("{} IN PTR {MX6_NAME}.", ip6_arpa(MX6)),
        format!("{} IN PTR {SENDER_NAME}.", ip6_arpa(SENDER6)),
        format!("{} IN PTR stranger.{SENDER_DOMAIN}.", ip6_arpa(STRANGER6)),
    ];
    for (name, target) in site_ptrs {
        let line = format!("{name}. IN PTR {}.", target.trim_end_matches('.'));
        if name.ends_with(".ip6.arpa") {
            v6_reverse.push(line);
        } else if name.ends_with(".113.0.203.in-addr.arpa") {
            site_v4_reverse.push(line);
        } else {
            v4_reverse.push(line);
        }
    }
    let mut all = site_zones;
    all.extend([
        Zone::from_records(
            GMAIL4,
            &[format!("@ IN MX 10 {MX4_NAME}."), format!("mx IN A {MX4}")],
        ),
        Zone::from_records(
            GMAIL6,
            &[
                format!("@ IN MX 10 {MX6_NAME}."),
                format!("mx IN AAAA {MX6}"),
            ],
        ),
        Zone::from_records(
            SENDER_DOMAIN,
            &[
                format!("@ IN TXT \"v=spf1 ip4:{SENDER4} ip6:{SENDER6} -all\""),
                // RFC 9989's np beside p: both verifiers must take the record as it is.
                "_dmarc IN TXT \"v=DMARC1; p=reject; np=reject\"".to_string(),
                format!(
                    "{SENDER_SELECTOR}._domainkey IN TXT {}",
                    txt(&sender.record)
                ),
                format!("mta IN A {SENDER4}"),
                format!("mta IN AAAA {SENDER6}"),
                format!("stranger IN A {STRANGER4}"),
                format!("stranger IN AAAA {STRANGER6}"),
                format!("liar IN A {SENDER4}"),
            ],
        ),
        // A domain whose MX answers nowhere: mail for it waits in the queue.
        Zone::from_records(
            "deferred.test",
            &["@ IN MX 10 mx.deferred.test.", "mx IN A 198.51.100.99"],
        ),
        Zone::new(
            "100.51.198.in-addr.arpa",
            zone_text("100.51.198.in-addr.arpa", &v4_reverse),
        ),
        Zone::new(
            "113.0.203.in-addr.arpa",
            zone_text("113.0.203.in-addr.arpa", &site_v4_reverse),
        ),
        Zone::new(
            "8.b.d.0.1.0.0.2.ip6.arpa",
            zone_text("8.b.d.0.1.0.0.2.ip6.arpa", &v6_reverse),
        ),
    ]);
    all
}

/// The site's zones and PTRs from a `mailbake build` output directory: every
/// `dns/<domain>.zone` wrapped with SOA/NS, and the PTR records of `dns/records.json`.
pub fn site_dns(out: &Path) -> (Vec<Zone>, Vec<(String, String)>) {
    let records: Value = serde_json::from_str(
        &fs::read_to_string(out.join("dns/records.json")).expect("dns/records.json"),
    )
    .expect("records.json is JSON");
    let records = records.as_array().expect("records.json is an array");
    let ptrs = records
        .iter()
        .filter(|r| r["type"] == "PTR")
        .map(|r| {
            (
                r["name"].as_str().unwrap_or_default().to_string(),
                r["value"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let mut domains: Vec<String> = records
        .iter()
        .filter(|r| r["type"] != "PTR")
        .filter_map(|r| r["domain"].as_str().map(str::to_string))
        .collect();
    domains.sort();
    domains.dedup();
    let zones = domains
        .iter()
        .map(|d| {
            let lines: Vec<String> = fs::read_to_string(out.join(format!("dns/{d}.zone")))
                .unwrap_or_else(|e| panic!("dns/{d}.zone: {e}"))
                .lines()
                .map(str::to_string)
                .collect();
            Zone::new(d, zone_text(d, &lines))
        })
        .collect();
    (zones, ptrs)
}

/// The DNS server's addresses in the test network.
pub fn dns_addrs() -> [SocketAddr; 2] {
    [
        SocketAddr::new(DNS4.parse::<IpAddr>().expect("DNS4"), 53),
        SocketAddr::new(DNS6.parse::<IpAddr>().expect("DNS6"), 53),
    ]
}

/// DNS and the receiver, running in the test network.
pub struct Internet {
    pub receiver: Receiver,
    pub dns: Dns,
    pub sender: SenderKey,
}

impl Internet {
    /// Starts BIND with [`zones`] and the receiver (STARTTLS with a certificate of a test CA)
    /// for both Gmail stand-ins, in `net`; keys and certificates go into `dir`.
    pub fn start(
        net: &Netns,
        dir: &Path,
        site_zones: Vec<Zone>,
        site_ptrs: &[(String, String)],
    ) -> Internet {
        fs::create_dir_all(dir).expect("mkdir for the internet");
        let sender = SenderKey::generate(dir);
        let dns = ok(Dns::start_in(
            net,
            &dns_addrs(),
            &zones(site_zones, site_ptrs, &sender),
        ));
        let ca = Ca::create(&dir.join("ca"), "mailbake test receiver CA");
        let tls = ca.issue("receiver", &[San::Dns(MX4_NAME), San::Dns(MX6_NAME)]);
        let receiver = ok(Receiver::start(
            net,
            &ReceiverOptions {
                hostname: MX4_NAME.into(),
                domains: vec![GMAIL4.into(), GMAIL6.into()],
                addresses: vec![MX4.into(), MX6.into()],
                resolver: DNS4.into(),
                tls: Some(tls),
            },
        ));
        Internet {
            receiver,
            dns,
            sender,
        }
    }

    /// Waits for the message for `rcpt` with `subject`, up to three minutes.
    pub fn delivered(&self, rcpt: &str, subject: &str) -> Delivered {
        ok(self.receiver.wait_for_message(
            |m| m.rcpt_to() == rcpt && m.header("Subject").as_deref() == Some(subject),
            Duration::from_secs(180),
        ))
    }
}

/// The verdicts of one delivered message, from the receiver and from the second verifier.
#[derive(Debug)]
pub struct Verdicts {
    /// rspamd's `Authentication-Results`.
    pub authentication_results: String,
    /// Postfix's `Received`.
    pub received: String,
    pub spf: String,
    pub dkim: Vec<String>,
    pub dmarc: String,
    pub arc: Option<String>,
    pub iprev: String,
    /// The second verifier's answer.
    pub second: Value,
}

impl Verdicts {
    /// Judges `m`: the receiver's own headers, then the second verifier over the same
    /// client address, HELO and envelope sender.
    pub fn of(net: &Netns, m: &Delivered) -> Verdicts {
        let (_, ip) = m.client();
        let helo = m
            .received()
            .strip_prefix("from ")
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_default()
            .to_string();
        let second = ok(verifier(
            net,
            &[
                "--dns",
                DNS4,
                "--ip",
                &ip,
                "--helo",
                &helo,
                "--mail-from",
                &m.mail_from(),
            ],
            &m.data,
        ));
        let first = |method: &str| m.verdicts(method).into_iter().next();
        Verdicts {
            authentication_results: m.authentication_results(),
            received: m.received(),
            spf: first("spf").unwrap_or_default(),
            dkim: m.verdicts("dkim"),
            dmarc: first("dmarc").unwrap_or_default(),
            arc: first("arc"),
            iprev: m.iprev(),
            second,
        }
    }

    /// Asserts both verifiers say `pass` for SPF, DMARC and iprev and for the DKIM
    /// signatures of `dkim_selectors` (`(domain, selector)`), and agree with each other.
    pub fn assert_all_pass(&self, dkim_selectors: &[(&str, &str)]) {
        let word = |v: &str| v.split_whitespace().next().unwrap_or_default().to_string();
        assert_eq!(word(&self.spf), "pass", "rspamd's SPF: {self:#?}");
        assert_eq!(word(&self.dmarc), "pass", "rspamd's DMARC: {self:#?}");
        assert_eq!(word(&self.iprev), "pass", "Postfix's iprev: {self:#?}");
        for (d, s) in dkim_selectors {
            assert!(
                self.dkim.iter().any(|v| word(v) == "pass"
                    && v.contains(&format!("header.d={d}"))
                    && v.contains(&format!("header.s={s}"))),
                "rspamd's DKIM for {d}/{s}: {self:#?}"
            );
            assert!(
                self.second["dkim"].as_array().is_some_and(|sigs| sigs
                    .iter()
                    .any(|x| x["d"] == *d && x["s"] == *s && x["result"] == "pass")),
                "the second verifier's DKIM for {d}/{s}: {self:#?}"
            );
        }
        self.assert_agree();
    }

    /// Asserts the second verifier reaches rspamd's and Postfix's verdicts on SPF, every
    /// DKIM signature, DMARC and iprev.
    pub fn assert_agree(&self) {
        let word = |v: &str| v.split_whitespace().next().unwrap_or_default().to_string();
        let s = &self.second;
        assert_eq!(word(&self.spf), s["spf"], "SPF verdicts differ: {self:#?}");
        assert_eq!(
            word(&self.dmarc),
            s["dmarc"],
            "DMARC verdicts differ: {self:#?}"
        );
        assert_eq!(
            word(&self.iprev),
            s["iprev"],
            "iprev verdicts differ: {self:#?}"
        );
        // rspamd writes `dkim=none` for a message without signatures; the verifier lists none.
        let mut first: Vec<String> = self
            .dkim
            .iter()
            .map(|v| word(v))
            .filter(|w| w != "none")
            .collect();
        let mut second: Vec<String> = s["dkim"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|x| x["result"].as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default();
        first.sort();
        second.sort();
        assert_eq!(first, second, "DKIM verdicts differ: {self:#?}");
    }
}
