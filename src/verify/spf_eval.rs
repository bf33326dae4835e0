//! SPF evaluated by mail-auth's RFC 7208 `check_host()` (include, redirect, a, mx, ptr,
//! exists, macros, the 10-lookup and void-lookup limits), fed through our own view of DNS.
//!
//! mail-auth queries DNS through its hickory resolver, but consults caller-supplied caches
//! (one per record type) before every query and fills them after. That is the plug:
//! - for a [`MemoryZone`] the cache *is* the zone: every question is answered from it
//!   (NXDOMAIN for names it lacks), so nothing reaches the network. mail-auth's own resolver
//!   is built without a single name server, so an injected failure (which the cache cannot
//!   express for A/MX/PTR) fails at once, as a `temperror`;
//! - for the live path mail-auth gets our own hickory resolver (`--resolver` or the
//!   system's), and the cache starts empty and only records what it answered, so the report
//!   can show every lookup the evaluation made.

use std::borrow::Borrow;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use mail_auth::common::parse::TxtRecordParser as _;
use mail_auth::hickory_resolver::TokioResolver;
use mail_auth::hickory_resolver::config::ResolverConfig;
use mail_auth::hickory_resolver::net::runtime::TokioRuntimeProvider;
use mail_auth::hickory_resolver::proto::op::ResponseCode;
use mail_auth::spf::Spf;
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{
    DnsError, DnssecStatus, Error, MX, MessageAuthenticator, Parameters, RecordSet, ResolverCache,
    SpfResult, Txt,
};

use super::dns::{LookupError, MemoryZone, Record, RecordType, show};

/// The outcome of one evaluation and the DNS questions it took.
#[derive(Clone, Debug)]
pub struct SpfEvaluation {
    pub result: SpfResult,
    pub lookups: Vec<String>,
}

/// The EHLO name mail-auth gets; only the `%{h}` macro could ever see it.
const HELO: &str = "mailbake-verify.invalid";

/// RFC 7208's name of a result (`softfail`, `temperror`, ...).
pub fn result_name(result: SpfResult) -> &'static str {
    match result {
        SpfResult::Pass => "pass",
        SpfResult::Fail => "fail",
        SpfResult::SoftFail => "softfail",
        SpfResult::Neutral => "neutral",
        SpfResult::TempError => "temperror",
        SpfResult::PermError => "permerror",
        SpfResult::None => "none",
    }
}

/// One cache type for every record type mail-auth asks for.
pub trait SpfCache:
    ResolverCache<Box<str>, Txt>
    + ResolverCache<Box<str>, RecordSet<MX>>
    + ResolverCache<Box<str>, RecordSet<Ipv4Addr>>
    + ResolverCache<Box<str>, RecordSet<Ipv6Addr>>
    + ResolverCache<IpAddr, RecordSet<Box<str>>>
{
}

impl<T> SpfCache for T where
    T: ResolverCache<Box<str>, Txt>
        + ResolverCache<Box<str>, RecordSet<MX>>
        + ResolverCache<Box<str>, RecordSet<Ipv4Addr>>
        + ResolverCache<Box<str>, RecordSet<Ipv6Addr>>
        + ResolverCache<IpAddr, RecordSet<Box<str>>>
{
}

/// `check_host(ip, domain, postmaster@domain)`: MAIL FROM in `domain`, as a receiver
/// evaluates a message forwarded or sent by one of our hosts.
pub async fn check_with<C: SpfCache>(
    authenticator: &MessageAuthenticator,
    cache: &C,
    ip: IpAddr,
    domain: &str,
) -> SpfResult {
    let sender = format!("postmaster@{domain}");
    let params = Parameters {
        params: SpfParameters::verify_mail_from(ip, HELO, HELO, &sender),
        cache_txt: Some(cache),
        cache_mx: Some(cache),
        cache_ptr: Some(cache),
        cache_ipv4: Some(cache),
        cache_ipv6: Some(cache),
    };
    authenticator.check_host(params).await.result()
}

/// Evaluates against a [`MemoryZone`]; see the module documentation.
pub async fn check_in_zone(zone: &MemoryZone, ip: IpAddr, domain: String) -> SpfEvaluation {
    let cache = ZoneCache {
        zone,
        log: Mutex::default(),
    };
    let result = match offline_authenticator() {
        Ok(authenticator) => check_with(&authenticator, &cache, ip, &domain).await,
        Err(_) => SpfResult::TempError,
    };
    SpfEvaluation {
        result,
        lookups: cache.log.into_inner().unwrap_or_default(),
    }
}

/// A mail-auth authenticator whose resolver has no name server: it never sends a packet.
fn offline_authenticator() -> Result<MessageAuthenticator, String> {
    TokioResolver::builder_with_config(
        ResolverConfig::from_name_servers(vec![]),
        TokioRuntimeProvider::default(),
    )
    .build()
    .map(MessageAuthenticator)
    .map_err(|e| e.to_string())
}

/// A cache that only records what mail-auth's own resolver answered.
#[derive(Clone, Default)]
pub struct RecordingCache {
    log: Arc<Mutex<Vec<String>>>,
}

impl RecordingCache {
    pub fn take(&self) -> Vec<String> {
        self.log
            .lock()
            .map(|mut log| std::mem::take(&mut *log))
            .unwrap_or_default()
    }

    fn note(&self, line: String) {
        if let Ok(mut log) = self.log.lock() {
            log.push(line);
        }
    }
}

/// The zone, seen through mail-auth's cache interface.
struct ZoneCache<'a> {
    zone: &'a MemoryZone,
    log: Mutex<Vec<String>>,
}

impl ZoneCache<'_> {
    /// mail-auth asks with a key it borrows as `Q`, which we cannot read; we find which of the
    /// zone's names (in mail-auth's key form, `name.`) it is.
    fn find<Q>(&self, key: &Q) -> Option<String>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.zone.names().find_map(|n| {
            let boxed: Box<str> = format!("{n}.").into_boxed_str();
            (Borrow::<Q>::borrow(&boxed) == key).then(|| n.to_string())
        })
    }

    fn note(&self, line: String) {
        if let Ok(mut log) = self.log.lock() {
            log.push(line);
        }
    }

    /// The records of `rtype` at the name mail-auth asked for; `None` for an injected failure.
    fn records<Q>(&self, key: &Q, rtype: RecordType) -> Option<Vec<Record>>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let Some(name) = self.find(key) else {
            self.note(format!("{rtype} (a name outside the zone) -> NXDOMAIN"));
            return Some(Vec::new());
        };
        let answer = self.zone.answer(&name, rtype);
        self.note(show(&name, rtype, &answer));
        match answer {
            Ok(records) => Some(records),
            Err(LookupError::NxDomain) => Some(Vec::new()),
            Err(_) => None,
        }
    }
}

fn set<T>(records: Vec<T>) -> RecordSet<T> {
    RecordSet {
        rrset: records.into(),
        dnssec_status: DnssecStatus::Indeterminate,
    }
}

impl ResolverCache<Box<str>, Txt> for ZoneCache<'_> {
    fn get<Q>(&self, key: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let Some(name) = self.find(key) else {
            self.note(format!(
                "{} (a name outside the zone) -> NXDOMAIN",
                RecordType::Txt
            ));
            return Some(Txt::Error(Error::Dns(DnsError::RecordNotFound(
                ResponseCode::NXDomain,
            ))));
        };
        let answer = self.zone.answer(&name, RecordType::Txt);
        self.note(show(&name, RecordType::Txt, &answer));
        Some(match answer {
            // The choice mail-auth makes for an answer from the network: the first record
            // that parses as SPF.
            Ok(records) => {
                let mut result = Err(Error::Dns(DnsError::InvalidRecordType));
                for r in &records {
                    if let Record::Txt(t) = r {
                        result = Spf::parse(t.as_bytes());
                        if result.is_ok() {
                            break;
                        }
                    }
                }
                result.into()
            }
            Err(LookupError::NxDomain) => {
                Txt::Error(Error::Dns(DnsError::RecordNotFound(ResponseCode::NXDomain)))
            }
            Err(e) => Txt::Error(Error::Dns(DnsError::Resolver(e.to_string()))),
        })
    }

    fn remove<Q>(&self, _: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        None
    }

    fn insert(&self, _: Box<str>, _: Txt, _: Instant) {}
}

/// A/AAAA/MX answers from the zone. A name without records is an empty set: for SPF that
/// is what "no such record" means (no match). An injected failure is `None`: mail-auth then
/// asks its own resolver, which has no server and fails at once, giving `temperror`.
macro_rules! zone_cache_for {
    ($t:ty, $rtype:expr, $pick:expr) => {
        impl ResolverCache<Box<str>, RecordSet<$t>> for ZoneCache<'_> {
            fn get<Q>(&self, key: &Q) -> Option<RecordSet<$t>>
            where
                Box<str>: Borrow<Q>,
                Q: Hash + Eq + ?Sized,
            {
                let pick: fn(Vec<Record>) -> Vec<$t> = $pick;
                self.records(key, $rtype).map(|r| set(pick(r)))
            }

            fn remove<Q>(&self, _: &Q) -> Option<RecordSet<$t>>
            where
                Box<str>: Borrow<Q>,
                Q: Hash + Eq + ?Sized,
            {
                None
            }

            fn insert(&self, _: Box<str>, _: RecordSet<$t>, _: Instant) {}
        }
    };
}

zone_cache_for!(Ipv4Addr, RecordType::A, |records| records
    .into_iter()
    .filter_map(|r| match r {
        Record::A(ip) => Some(ip),
        _ => None,
    })
    .collect());
zone_cache_for!(Ipv6Addr, RecordType::Aaaa, |records| records
    .into_iter()
    .filter_map(|r| match r {
        Record::Aaaa(ip) => Some(ip),
        _ => None,
    })
    .collect());
zone_cache_for!(MX, RecordType::Mx, group_mx);

/// mail-auth's MX form: one entry per preference, lowest first.
fn group_mx(records: Vec<Record>) -> Vec<MX> {
    let mut by_pref: std::collections::BTreeMap<u16, Vec<Box<str>>> = Default::default();
    for r in records {
        if let Record::Mx {
            preference,
            exchange,
        } = r
        {
            by_pref
                .entry(preference)
                .or_default()
                .push(format!("{exchange}.").into_boxed_str());
        }
    }
    by_pref
        .into_iter()
        .map(|(preference, exchanges)| MX {
            exchanges: exchanges.into_boxed_slice(),
            preference,
        })
        .collect()
}

/// PTR questions come keyed by address (the `ptr` mechanism and `%{p}`, both rare and
/// discouraged by RFC 7208 §5.5); the zone answers them by reverse name.
impl ResolverCache<IpAddr, RecordSet<Box<str>>> for ZoneCache<'_> {
    fn get<Q>(&self, key: &Q) -> Option<RecordSet<Box<str>>>
    where
        IpAddr: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let name = self.zone.names().find_map(|n| {
            let ip = parse_reverse_name(n)?;
            (Borrow::<Q>::borrow(&ip) == key).then(|| n.to_string())
        });
        let Some(name) = name else {
            self.note(format!(
                "{} (an address outside the zone) -> NXDOMAIN",
                RecordType::Ptr
            ));
            return Some(set(Vec::new()));
        };
        let answer = self.zone.answer(&name, RecordType::Ptr);
        self.note(show(&name, RecordType::Ptr, &answer));
        match answer {
            Ok(records) => Some(set(records
                .into_iter()
                .filter_map(|r| match r {
                    Record::Ptr(n) => Some(format!("{n}.").into_boxed_str()),
                    _ => None,
                })
                .collect())),
            Err(LookupError::NxDomain) => Some(set(Vec::new())),
            Err(_) => None,
        }
    }

    fn remove<Q>(&self, _: &Q) -> Option<RecordSet<Box<str>>>
    where
        IpAddr: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        None
    }

    fn insert(&self, _: IpAddr, _: RecordSet<Box<str>>, _: Instant) {}
}

/// The address a reverse-DNS owner name stands for (`10.113.0.203.in-addr.arpa` -> 203.0.113.10).
fn parse_reverse_name(name: &str) -> Option<IpAddr> {
    if let Some(v4) = name.strip_suffix(".in-addr.arpa") {
        let mut octets: Vec<u8> = v4
            .split('.')
            .map(|o| o.parse().ok())
            .collect::<Option<_>>()?;
        octets.reverse();
        let octets: [u8; 4] = octets.try_into().ok()?;
        return Some(IpAddr::V4(Ipv4Addr::from(octets)));
    }
    let nibbles = name.strip_suffix(".ip6.arpa")?;
    let mut digits: Vec<u8> = nibbles
        .split('.')
        .map(|n| u8::from_str_radix(n, 16).ok().filter(|_| n.len() == 1))
        .collect::<Option<_>>()?;
    digits.reverse();
    if digits.len() != 32 {
        return None;
    }
    let bytes: Vec<u8> = digits.chunks(2).map(|p| (p[0] << 4) | p[1]).collect();
    let bytes: [u8; 16] = bytes.try_into().ok()?;
    Some(IpAddr::V6(Ipv6Addr::from(bytes)))
}

/// What mail-auth's own resolver answered, for the evidence: it fills the cache after each
/// query, and this cache keeps only the log.
fn describe_txt(record: &Txt) -> String {
    match record {
        Txt::Spf(_) => "an SPF record (v=spf1)".into(),
        Txt::Error(e) => e.to_string(),
        _ => "a TXT record".into(),
    }
}

fn describe_set<T: std::fmt::Display>(answer: &RecordSet<T>) -> String {
    if answer.rrset.is_empty() {
        return "no records".into();
    }
    answer
        .rrset
        .iter()
        .map(|r| r.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn describe_mx(answer: &RecordSet<MX>) -> String {
    answer
        .rrset
        .iter()
        .map(|mx| {
            let names: Vec<&str> = mx
                .exchanges
                .iter()
                .map(|e| e.trim_end_matches('.'))
                .collect();
            format!("{} {}", mx.preference, names.join(" "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

macro_rules! recording_cache_for {
    ($k:ty, $v:ty, $rtype:expr, $describe:expr) => {
        impl ResolverCache<$k, $v> for RecordingCache {
            fn get<Q>(&self, _: &Q) -> Option<$v>
            where
                $k: Borrow<Q>,
                Q: Hash + Eq + ?Sized,
            {
                None
            }

            fn remove<Q>(&self, _: &Q) -> Option<$v>
            where
                $k: Borrow<Q>,
                Q: Hash + Eq + ?Sized,
            {
                None
            }

            fn insert(&self, key: $k, value: $v, _: Instant) {
                let describe: fn(&$v) -> String = $describe;
                let key = key.to_string();
                self.note(format!(
                    "{} {} -> {}",
                    $rtype,
                    key.trim_end_matches('.'),
                    describe(&value)
                ));
            }
        }
    };
}

recording_cache_for!(Box<str>, Txt, RecordType::Txt, describe_txt);
recording_cache_for!(Box<str>, RecordSet<Ipv4Addr>, RecordType::A, describe_set);
recording_cache_for!(
    Box<str>,
    RecordSet<Ipv6Addr>,
    RecordType::Aaaa,
    describe_set
);
recording_cache_for!(Box<str>, RecordSet<MX>, RecordType::Mx, describe_mx);
recording_cache_for!(IpAddr, RecordSet<Box<str>>, RecordType::Ptr, describe_set);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reverse_names_parse_back_to_addresses() {
        for (name, ip) in [
            ("10.113.0.203.in-addr.arpa", "203.0.113.10"),
            (
                "0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa",
                "2001:db8:1::10",
            ),
        ] {
            assert_eq!(parse_reverse_name(name), ip.parse().ok(), "{name}");
        }
        assert_eq!(parse_reverse_name("example.com"), None);
        assert_eq!(parse_reverse_name("1.2.in-addr.arpa"), None);
    }
}
