//! From a site to the list of records it needs, independent of any output format.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use sha2::{Digest, Sha256};

use super::DnsError;
use crate::secrets::{SecretStore, SecretsError};
use crate::site::{Dmarc, Domain, DomainName, Host, HostName, MtaSts, Selector, Site, TlsRpt};

/// One resource record. `name` is absolute without the trailing dot (`_dmarc.example.com`);
/// renderers add the dot or make it relative as their format wants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub name: String,
    pub data: RecordData,
    pub ttl: u32,
    /// The zone the record is published in: a mail domain, the parent zone of a host outside
    /// every mail domain, or a reverse zone (`113.0.203.in-addr.arpa`).
    pub zone: String,
    pub zone_kind: ZoneKind,
    /// The host the record is about (A, AAAA, PTR, and each MX).
    pub host: Option<HostName>,
    /// What a person has to do beyond publishing the record, if anything.
    pub note: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum ZoneKind {
    Forward,
    Reverse,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordData {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Mx {
        preference: u16,
        exchange: String,
    },
    /// The whole text, unsplit; the zone renderer splits it into 255-byte strings.
    Txt(String),
    Ptr(String),
}

impl RecordData {
    pub fn type_name(&self) -> &'static str {
        match self {
            RecordData::A(_) => "A",
            RecordData::Aaaa(_) => "AAAA",
            RecordData::Mx { .. } => "MX",
            RecordData::Txt(_) => "TXT",
            RecordData::Ptr(_) => "PTR",
        }
    }
}

/// The value the way people and registrar forms write it: names without a trailing dot, TXT
/// unquoted and whole, MX as `<preference> <exchange>`.
impl fmt::Display for RecordData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordData::A(ip) => write!(f, "{ip}"),
            RecordData::Aaaa(ip) => write!(f, "{ip}"),
            RecordData::Mx {
                preference,
                exchange,
            } => write!(f, "{preference} {exchange}"),
            RecordData::Txt(text) => f.write_str(text),
            RecordData::Ptr(name) => f.write_str(name),
        }
    }
}

/// The MTA-STS policy file of a domain, which must be served over HTTPS; DNS only announces it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MtaStsPolicy {
    pub domain: DomainName,
    /// `https://mta-sts.<domain>/.well-known/mta-sts.txt`
    pub url: String,
    pub text: String,
    /// The `id=` published in `_mta-sts.<domain>`: a digest of `text`, so the id changes
    /// exactly when the policy does and senders refetch it.
    pub id: String,
}

/// Every record of a site, in publishing order: forward zones by name, then reverse zones by
/// name; within a zone MX, A/AAAA, SPF, DKIM, DMARC, MTA-STS, TLS-RPT, PTR.
#[derive(Clone, Debug, Default)]
pub struct RecordSet {
    pub records: Vec<Record>,
    pub mta_sts: Vec<MtaStsPolicy>,
    /// Records left out and why (only with [`DkimLookup::SkipMissing`]).
    pub warnings: Vec<Warning>,
}

/// A record that could not be produced, and the zone it belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    pub zone: String,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl RecordSet {
    /// The zones in order, each with its records.
    pub fn zones(&self) -> Vec<(&str, ZoneKind, Vec<&Record>)> {
        let mut out: Vec<(&str, ZoneKind, Vec<&Record>)> = Vec::new();
        for r in &self.records {
            match out.last_mut() {
                Some((zone, _, list)) if *zone == r.zone => list.push(r),
                _ => out.push((&r.zone, r.zone_kind, vec![r])),
            }
        }
        out
    }
}

/// Where DKIM public keys come from.
#[derive(Clone, Copy, Debug)]
pub enum DkimLookup<'a> {
    /// Every selector of the site must have a key in this store (`mailbake dns` and
    /// `mailbake build`: a record is derived from its key, never invented).
    Require(&'a SecretStore),
    /// Selectors without a key (or without a store) are left out with a warning: for looking
    /// at a site's records before its keys exist.
    SkipMissing(Option<&'a SecretStore>),
}

impl<'a> DkimLookup<'a> {
    /// Keys from the site's store, as [`crate::secrets::open_for_site`] opened it. Without a
    /// store the site has no DKIM selectors (that is the rule), so nothing is left out.
    pub fn from_store(store: Option<&'a SecretStore>) -> DkimLookup<'a> {
        match store {
            Some(store) => DkimLookup::Require(store),
            None => DkimLookup::SkipMissing(None),
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Options<'a> {
    /// Keep per-host records (A, AAAA, PTR) of this host only. Domain-wide records (MX, SPF,
    /// DKIM, DMARC, MTA-STS, TLS-RPT) always list every host: publishing a partial MX or SPF
    /// would take the other hosts out of service.
    pub host: Option<&'a HostName>,
    pub dkim: DkimLookup<'a>,
}

impl Options<'_> {
    /// Whether the per-host records of host `name` are wanted.
    fn selects(&self, name: &HostName) -> bool {
        self.host.is_none_or(|h| h == name)
    }
}

/// The records `site` needs.
pub fn records(site: &Site, opts: &Options) -> Result<RecordSet, DnsError> {
    if let Some(wanted) = opts.host
        && !site.hosts.contains_key(wanted)
    {
        return Err(DnsError::UnknownHost {
            host: wanted.to_string(),
            known: site
                .hosts
                .keys()
                .map(|h| h.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    let mut collector = Collector {
        site,
        opts,
        set: RecordSet::default(),
    };
    for (domain, d) in site.domains.iter() {
        collector.domain(domain, d)?;
    }
    collector.foreign_hosts();
    collector.reverse();
    let mut set = collector.set;
    // Stable sort: zone order first, generation order (the documented record order) within.
    set.records
        .sort_by(|a, b| (a.zone_kind, &a.zone).cmp(&(b.zone_kind, &b.zone)));
    Ok(set)
}

/// Gathers a site's records in generation order (see [`RecordSet`] for the order).
struct Collector<'a> {
    site: &'a Site,
    opts: &'a Options<'a>,
    set: RecordSet,
}

impl Collector<'_> {
    fn push(&mut self, name: String, data: RecordData, zone: &str, host: Option<&HostName>) {
        self.set.records.push(Record {
            name,
            data,
            ttl: self.site.dns.ttl,
            zone: zone.to_string(),
            zone_kind: ZoneKind::Forward,
            host: host.cloned(),
            note: None,
        });
    }

    /// Everything published in the zone of mail domain `domain`.
    fn domain(&mut self, domain: &DomainName, d: &Domain) -> Result<(), DnsError> {
        let site = self.site;
        let zone = domain.as_str();
        // MX: one per host, preferences 10, 20, ... in host order, so the first host is
        // tried first and the gaps leave room for hand-added servers.
        for (i, (name, host)) in site.hosts.iter().enumerate() {
            let preference = u16::try_from((i + 1) * 10).unwrap_or(u16::MAX);
            let exchange = host.fqdn.to_string();
            let data = RecordData::Mx {
                preference,
                exchange,
            };
            self.push(zone.to_string(), data, zone, Some(name));
        }
        let addresses = address_records(site, zone, &|n| self.opts.selects(n));
        self.set.records.extend(addresses);
        self.push(
            zone.to_string(),
            RecordData::Txt(spf_value(site, d)),
            zone,
            None,
        );
        self.dkim(domain, d)?;
        if let Some(dmarc) = &d.dmarc {
            let data = RecordData::Txt(dmarc_value(dmarc));
            self.push(format!("_dmarc.{domain}"), data, zone, None);
        }
        if let Some(sts) = &d.mta_sts {
            self.mta_sts(domain, sts);
        }
        if let Some(rpt) = &d.tls_rpt {
            let data = RecordData::Txt(tls_rpt_value(rpt));
            self.push(format!("_smtp._tls.{domain}"), data, zone, None);
        }
        Ok(())
    }

    /// One TXT record per DKIM selector, from its key in the store; a selector without a key
    /// is an error or a warning, as [`DkimLookup`] says.
    fn dkim(&mut self, domain: &DomainName, d: &Domain) -> Result<(), DnsError> {
        let zone = domain.as_str();
        // Retired selectors stay published (docs/site.md): mail signed with them before a
        // rotation must still verify.
        for selector in d.dkim.selectors.keys().chain(d.dkim.retired.keys()) {
            let name = format!("{selector}._domainkey.{domain}");
            let retired = d.dkim.retired.contains_key(selector);
            let value = dkim_value(self.opts.dkim, domain, selector).map_err(|e| match e {
                DnsError::DkimKey { source, .. }
                    if retired && matches!(*source, SecretsError::MissingKey { .. }) =>
                {
                    DnsError::RetiredKeyMissing {
                        domain: domain.to_string(),
                        selector: selector.to_string(),
                    }
                }
                e => e,
            })?;
            match value {
                Some(value) => self.push(name, RecordData::Txt(value), zone, None),
                None => self.set.warnings.push(Warning {
                    zone: zone.to_string(),
                    message: format!(
                    "{name}: left out, no DKIM key for selector `{selector}` of {domain} in the secrets store; generate it with `mailbake dkim keygen SITE {domain}`"
                    ),
                }),
            }
        }
        Ok(())
    }

    /// `_mta-sts.<domain>` announcing the policy, which is kept with the set: it has to be
    /// served over HTTPS, DNS only carries its id.
    fn mta_sts(&mut self, domain: &DomainName, sts: &MtaSts) {
        let policy = mta_sts_policy(self.site, domain, sts);
        let data = RecordData::Txt(format!("v=STSv1; id={}", policy.id));
        self.push(format!("_mta-sts.{domain}"), data, domain.as_str(), None);
        if let Some(r) = self.set.records.last_mut() {
            r.note = Some(format!(
                "serve the policy at {} (HTTPS, with a certificate valid for mta-sts.{domain}); changing the policy changes this id",
                policy.url
            ));
        }
        self.set.mta_sts.push(policy);
    }

    /// Hosts whose names lie outside every mail domain still need A/AAAA records; they go to
    /// the zone of the name's parent, which the operator has to find at its own DNS host.
    fn foreign_hosts(&mut self) {
        let site = self.site;
        let foreign: BTreeSet<String> = site
            .hosts
            .values()
            .filter(|h| mail_domain_of(site, &h.fqdn).is_none())
            .map(|h| parent_zone(&h.fqdn))
            .collect();
        for zone in &foreign {
            let addresses = address_records(site, zone, &|n| self.opts.selects(n));
            self.set.records.extend(addresses);
        }
    }

    /// PTR records of the selected hosts' addresses, in their reverse zones.
    fn reverse(&mut self) {
        let site = self.site;
        let opts = self.opts;
        for (name, host) in site.hosts.iter().filter(|(n, _)| opts.selects(n)) {
            for ip in host_addresses(host) {
                let (rname, rzone) = reverse_name(ip, host);
                self.set.records.push(Record {
                    name: rname,
                    data: RecordData::Ptr(host.fqdn.to_string()),
                    ttl: site.dns.ttl,
                    zone: rzone,
                    zone_kind: ZoneKind::Reverse,
                    host: Some(name.clone()),
                    note: Some(format!(
                        "set the reverse DNS of {ip} to {} in your provider's panel",
                        host.fqdn
                    )),
                });
            }
        }
    }
}

/// A and AAAA records of the selected hosts whose names belong in `zone`.
fn address_records(site: &Site, zone: &str, selected: &dyn Fn(&HostName) -> bool) -> Vec<Record> {
    let mut out = Vec::new();
    for (name, host) in site.hosts.iter() {
        let home = mail_domain_of(site, &host.fqdn)
            .map(|d| d.to_string())
            .unwrap_or_else(|| parent_zone(&host.fqdn));
        if home != zone || !selected(name) {
            continue;
        }
        for ip in host_addresses(host) {
            let data = match ip {
                IpAddr::V4(v4) => RecordData::A(v4),
                IpAddr::V6(v6) => RecordData::Aaaa(v6),
            };
            out.push(Record {
                name: host.fqdn.to_string(),
                data,
                ttl: site.dns.ttl,
                zone: zone.to_string(),
                zone_kind: ZoneKind::Forward,
                host: Some(name.clone()),
                note: None,
            });
        }
    }
    out
}

/// The host's public addresses: IPv4, then the IPv6 interface address without its prefix.
fn host_addresses(host: &Host) -> Vec<IpAddr> {
    let mut ips = vec![IpAddr::V4(host.ipv4.address)];
    if let Some(v6) = &host.ipv6 {
        ips.push(IpAddr::V6(v6.address.addr()));
    }
    ips
}

/// The most specific mail domain of the site that contains `name`, if any.
fn mail_domain_of<'s>(site: &'s Site, name: &DomainName) -> Option<&'s DomainName> {
    let name = name.as_str();
    site.domains
        .keys()
        .filter(|d| name == d.as_str() || name.ends_with(&format!(".{d}")))
        .max_by_key(|d| d.as_str().len())
}

fn parent_zone(fqdn: &DomainName) -> String {
    fqdn.as_str()
        .split_once('.')
        .map_or_else(|| fqdn.to_string(), |(_, parent)| parent.to_string())
}

/// The PTR owner name of `ip` and the reverse zone it is published in. IPv4 uses the
/// classic /24 zone; IPv6 the zone of the host's prefix, rounded down to a nibble boundary
/// (a /64 gives a 16-nibble zone), which is what providers delegate when they delegate at all.
pub fn reverse_name(ip: IpAddr, host: &Host) -> (String, String) {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            (
                format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0]),
                format!("{}.{}.{}.in-addr.arpa", o[2], o[1], o[0]),
            )
        }
        IpAddr::V6(v6) => {
            let nibbles: Vec<char> = v6
                .octets()
                .iter()
                .flat_map(|b| [b >> 4, b & 0xf])
                .map(|n| char::from_digit(u32::from(n), 16).unwrap_or('0'))
                .collect();
            let reversed = |n: &[char]| {
                n.iter()
                    .rev()
                    .map(|c| c.to_string())
                    .collect::<Vec<_>>()
                    .join(".")
            };
            let prefix_len = host.ipv6.as_ref().map_or(64, |c| c.address.prefix_len());
            let zone_nibbles = usize::from(prefix_len / 4).clamp(1, 31);
            (
                format!("{}.ip6.arpa", reversed(&nibbles)),
                format!("{}.ip6.arpa", reversed(&nibbles[..zone_nibbles])),
            )
        }
    }
}

/// `v=spf1 ip4:… ip6:… mx include:… <policy>`. The hosts' addresses are listed explicitly so
/// the record holds even while MX changes propagate, and they cost no DNS lookup; `mx` keeps
/// hand-added MX hosts authorized (walkthrough step 12).
fn spf_value(site: &Site, d: &Domain) -> String {
    let mut terms = vec!["v=spf1".to_string()];
    let mut seen = BTreeSet::new();
    let hosts: Vec<&Host> = site.hosts.values().collect();
    for ip in hosts.iter().map(|h| IpAddr::V4(h.ipv4.address)).chain(
        hosts
            .iter()
            .filter_map(|h| h.ipv6.as_ref().map(|v6| IpAddr::V6(v6.address.addr()))),
    ) {
        if seen.insert(ip) {
            terms.push(match ip {
                IpAddr::V4(v4) => format!("ip4:{v4}"),
                IpAddr::V6(v6) => format!("ip6:{v6}"),
            });
        }
    }
    terms.push("mx".into());
    terms.extend(d.spf.include.iter().map(|i| format!("include:{i}")));
    terms.push(d.spf.policy.as_str().into());
    terms.join(" ")
}

/// `v=DMARC1; p=…` with the optional tags in a fixed order (`p`, `sp`, `np`, `t`, then the
/// reporting and alignment tags as before), so the record only changes when the policy does.
/// None of the tags RFC 9989 removed (`pct`, `rf`, `ri`): the site file cannot hold them.
fn dmarc_value(dmarc: &Dmarc) -> String {
    let mut tags = vec!["v=DMARC1".to_string(), format!("p={}", dmarc.p.as_str())];
    if let Some(sp) = dmarc.sp {
        tags.push(format!("sp={}", sp.as_str()));
    }
    if let Some(np) = dmarc.np {
        tags.push(format!("np={}", np.as_str()));
    }
    if dmarc.t == Some(true) {
        tags.push("t=y".to_string());
    }
    if let Some(fo) = &dmarc.fo {
        tags.push(format!("fo={}", fo.0));
    }
    if let Some(adkim) = dmarc.adkim {
        tags.push(format!("adkim={}", adkim.as_str()));
    }
    if let Some(aspf) = dmarc.aspf {
        tags.push(format!("aspf={}", aspf.as_str()));
    }
    if let Some(rua) = &dmarc.rua {
        tags.push(format!("rua={}", rua.to_tag_value()));
    }
    if let Some(ruf) = &dmarc.ruf {
        tags.push(format!("ruf={}", ruf.to_tag_value()));
    }
    tags.join("; ")
}

fn tls_rpt_value(rpt: &TlsRpt) -> String {
    format!("v=TLSRPTv1; rua={}", rpt.rua.to_tag_value())
}

fn mta_sts_policy(site: &Site, domain: &DomainName, sts: &MtaSts) -> MtaStsPolicy {
    // RFC 8461 policy: `key: value` lines. CRLF is what the RFC's examples use and what every
    // parser accepts.
    let mut text = format!("version: STSv1\r\nmode: {}\r\n", sts.mode.as_str());
    let mut seen = BTreeSet::new();
    for host in site.hosts.values() {
        if seen.insert(host.fqdn.as_str()) {
            text.push_str(&format!("mx: {}\r\n", host.fqdn));
        }
    }
    text.push_str(&format!("max_age: {}\r\n", sts.max_age));
    // 32 hex digits: the most the id's 1*32 alphanumeric syntax allows, so collisions between
    // two policies of one domain are out of the question.
    let id = hex::encode(Sha256::digest(text.as_bytes()))[..32].to_string();
    MtaStsPolicy {
        domain: domain.clone(),
        url: format!("https://mta-sts.{domain}/.well-known/mta-sts.txt"),
        text,
        id,
    }
}

fn dkim_value(
    lookup: DkimLookup,
    domain: &DomainName,
    selector: &Selector,
) -> Result<Option<String>, DnsError> {
    let (store, required) = match lookup {
        DkimLookup::Require(store) => (Some(store), true),
        DkimLookup::SkipMissing(store) => (store, false),
    };
    let wrap = |source: SecretsError| DnsError::DkimKey {
        domain: domain.to_string(),
        selector: selector.to_string(),
        source: Box::new(source),
    };
    let Some(store) = store else {
        return Ok(None);
    };
    match store.dkim_key(domain, selector) {
        Ok(key) => Ok(Some(key.dns_txt_value())),
        Err(SecretsError::MissingKey { .. }) if !required => Ok(None),
        Err(e) => Err(wrap(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(yaml: &str) -> Site {
        match crate::site::parse(std::path::Path::new("t.yaml"), yaml) {
            Ok(s) => s,
            Err(e) => panic!("{}", e.render(false)),
        }
    }

    const TWO: &str = r#"
site: two
domains:
  example.com:
    spf: { include: [_spf.google.com], policy: "-all" }
    dmarc: { p: reject, sp: none, np: reject, t: true, fo: "d:s", adkim: s, aspf: r, rua: [mailto:a@example.com, mailto:b@example.net], ruf: mailto:f@example.com }
    mta_sts: { mode: enforce, max_age: 86400 }
    tls_rpt: { rua: mailto:tls@example.com }
  example.org: {}
hosts:
  mx2:
    fqdn: mx2.example.org
    ipv4: 198.51.100.7
  mx1:
    fqdn: smtp.example.com
    ipv4: 203.0.113.10
    ipv6: { address: "2001:db8:1::10/64", gateway: "fe80::1" }
"#;

    fn txt_of<'a>(set: &'a RecordSet, name: &str) -> &'a str {
        set.records
            .iter()
            .find_map(|r| match &r.data {
                RecordData::Txt(t) if r.name == name => Some(t.as_str()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("no TXT at {name}"))
    }

    fn all(site: &Site) -> RecordSet {
        records(
            site,
            &Options {
                host: None,
                dkim: DkimLookup::SkipMissing(None),
            },
        )
        .unwrap()
    }

    #[test]
    fn spf_lists_every_host_then_mx_includes_and_policy() {
        let set = all(&site(TWO));
        assert_eq!(
            txt_of(&set, "example.com"),
            "v=spf1 ip4:203.0.113.10 ip4:198.51.100.7 ip6:2001:db8:1::10 mx include:_spf.google.com -all"
        );
        assert_eq!(
            txt_of(&set, "example.org"),
            "v=spf1 ip4:203.0.113.10 ip4:198.51.100.7 ip6:2001:db8:1::10 mx ~all"
        );
    }

    #[test]
    fn dmarc_tags_come_in_a_fixed_order() {
        let set = all(&site(TWO));
        assert_eq!(
            txt_of(&set, "_dmarc.example.com"),
            "v=DMARC1; p=reject; sp=none; np=reject; t=y; fo=d:s; adkim=s; aspf=r; rua=mailto:a@example.com,mailto:b@example.net; ruf=mailto:f@example.com"
        );
    }

    #[test]
    fn mx_preferences_follow_host_order_and_hosts_land_in_their_own_zone() {
        let set = all(&site(TWO));
        let mx: Vec<String> = set
            .records
            .iter()
            .filter(|r| r.zone == "example.org" && r.data.type_name() == "MX")
            .map(|r| r.data.to_string())
            .collect();
        assert_eq!(mx, ["10 smtp.example.com", "20 mx2.example.org"]);
        let a_zone = |fqdn: &str| {
            set.records
                .iter()
                .find(|r| r.name == fqdn && r.data.type_name() == "A")
                .map(|r| r.zone.clone())
        };
        assert_eq!(a_zone("smtp.example.com").as_deref(), Some("example.com"));
        assert_eq!(a_zone("mx2.example.org").as_deref(), Some("example.org"));
    }

    #[test]
    fn mta_sts_id_is_a_digest_of_the_policy_and_lists_every_mx() {
        let set = all(&site(TWO));
        let policy = &set.mta_sts[0];
        assert_eq!(
            policy.text,
            "version: STSv1\r\nmode: enforce\r\nmx: smtp.example.com\r\nmx: mx2.example.org\r\nmax_age: 86400\r\n"
        );
        assert_eq!(policy.id.len(), 32);
        assert_eq!(
            txt_of(&set, "_mta-sts.example.com"),
            format!("v=STSv1; id={}", policy.id)
        );
        assert_eq!(
            txt_of(&set, "_smtp._tls.example.com"),
            "v=TLSRPTv1; rua=mailto:tls@example.com"
        );
        assert!(set.records.iter().all(|r| r.name != "_mta-sts.example.org"));
    }

    #[test]
    fn reverse_names_use_octets_and_nibbles() {
        let s = site(TWO);
        let host = &s.hosts.values().find(|h| h.ipv6.is_some()).unwrap();
        assert_eq!(
            reverse_name("203.0.113.10".parse().unwrap(), host),
            (
                "10.113.0.203.in-addr.arpa".to_string(),
                "113.0.203.in-addr.arpa".to_string()
            )
        );
        let (name, zone) = reverse_name("2001:db8:1::10".parse().unwrap(), host);
        assert_eq!(
            name,
            "0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"
        );
        // The /64 of the host's address: 16 nibbles.
        assert_eq!(zone, "0.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa");
    }

    #[test]
    fn host_filter_keeps_domain_wide_records_whole() {
        let s = site(TWO);
        let mx1 = HostName::try_from("mx1").unwrap();
        let set = records(
            &s,
            &Options {
                host: Some(&mx1),
                dkim: DkimLookup::SkipMissing(None),
            },
        )
        .unwrap();
        assert!(set.records.iter().all(|r| match r.data {
            RecordData::A(_) | RecordData::Aaaa(_) | RecordData::Ptr(_) =>
                r.host.as_ref() == Some(&mx1),
            _ => true,
        }));
        assert_eq!(
            set.records
                .iter()
                .filter(|r| r.data.type_name() == "MX")
                .count(),
            4
        );
        let unknown = HostName::try_from("mx9").unwrap();
        let err = records(
            &s,
            &Options {
                host: Some(&unknown),
                dkim: DkimLookup::SkipMissing(None),
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("mx1, mx2"), "{err}");
    }

    #[test]
    fn missing_keys_are_skipped_with_a_warning_only_when_asked() {
        let s = site(
            "site: s\ndomains:\n  example.com:\n    dkim: { selectors: { a: ed25519 } }\nhosts:\n  mx1: { fqdn: mx1.example.com, ipv4: 192.0.2.1 }\n",
        );
        let set = all(&s);
        assert!(set.records.iter().all(|r| !r.name.contains("_domainkey")));
        assert_eq!(set.warnings.len(), 1);
        assert_eq!(set.warnings[0].zone, "example.com");
        assert!(
            set.warnings[0]
                .message
                .contains("mailbake dkim keygen SITE example.com"),
            "{}",
            set.warnings[0]
        );
    }

    #[test]
    fn a_retired_selector_without_its_key_names_the_way_out() {
        let s = site(
            "site: s\ndomains:\n  example.com:\n    dkim: { retired: { old: ed25519 } }\nhosts:\n  mx1: { fqdn: mx1.example.com, ipv4: 192.0.2.1 }\n",
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SecretStore::create(dir.path().join("secrets")).expect("store");
        let opts = Options {
            host: None,
            dkim: DkimLookup::Require(&store),
        };
        let err = records(&s, &opts).expect_err("no key").to_string();
        assert!(
            err.contains("retired DKIM selector `old` of example.com has no key")
                && err.contains("remove `old` from `domains.example.com.dkim.retired`"),
            "{err}"
        );
    }

    #[test]
    fn retired_selectors_stay_published() {
        let s = site(
            "site: s\ndomains:\n  example.com:\n    dkim: { selectors: { b: ed25519 }, retired: { a: ed25519 } }\nhosts:\n  mx1: { fqdn: mx1.example.com, ipv4: 192.0.2.1 }\n",
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SecretStore::create(dir.path().join("secrets")).expect("store");
        let domain = DomainName::try_from("example.com").expect("domain");
        for name in ["a", "b"] {
            let selector = crate::site::Selector::try_from(name).expect("selector");
            store
                .dkim_keygen(
                    &domain,
                    &selector,
                    crate::site::DkimAlgorithm::Ed25519,
                    false,
                )
                .expect("keygen");
        }
        let set = records(
            &s,
            &Options {
                host: None,
                dkim: DkimLookup::Require(&store),
            },
        )
        .expect("records");
        for name in ["a._domainkey.example.com", "b._domainkey.example.com"] {
            assert!(
                txt_of(&set, name).starts_with("v=DKIM1; k=ed25519; p="),
                "{name}"
            );
        }
    }
}
