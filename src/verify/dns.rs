//! DNS as the checks see it: a [`Resolver`] answers A, AAAA, MX, TXT and PTR questions and
//! evaluates SPF. Two implementations: [`MemoryZone`] (records keyed by name and type, plus
//! injected failures; what the unit tests use, the way mox's tests use a mock resolver) and
//! [`super::live::LiveResolver`] (hickory, pointed at `--resolver` or the system's resolvers).
//!
//! Names are absolute, lowercase and without the trailing dot, as the site model writes them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use super::spf_eval::{self, SpfEvaluation};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RecordType {
    A,
    Aaaa,
    Mx,
    Txt,
    Ptr,
}

impl fmt::Display for RecordType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RecordType::A => "A",
            RecordType::Aaaa => "AAAA",
            RecordType::Mx => "MX",
            RecordType::Txt => "TXT",
            RecordType::Ptr => "PTR",
        })
    }
}

/// One answer record. TXT holds the record's strings joined without separators (RFC 7208
/// §3.3, RFC 6376 §3.6.2.2); names are lowercase without the trailing dot.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Record {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Mx { preference: u16, exchange: String },
    Txt(String),
    Ptr(String),
}

impl Record {
    pub fn record_type(&self) -> RecordType {
        match self {
            Record::A(_) => RecordType::A,
            Record::Aaaa(_) => RecordType::Aaaa,
            Record::Mx { .. } => RecordType::Mx,
            Record::Txt(_) => RecordType::Txt,
            Record::Ptr(_) => RecordType::Ptr,
        }
    }
}

impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Record::A(ip) => write!(f, "{ip}"),
            Record::Aaaa(ip) => write!(f, "{ip}"),
            Record::Mx {
                preference,
                exchange,
            } => write!(f, "{preference} {exchange}"),
            Record::Txt(text) => write!(f, "\"{}\"", text.escape_default()),
            Record::Ptr(name) => f.write_str(name),
        }
    }
}

/// Why a question got no usable answer. An existing name without records of the type (NODATA)
/// is not an error: it is an empty answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("NXDOMAIN (no such name)")]
    NxDomain,
    #[error("no answer within {} s", .0.as_secs())]
    Timeout(Duration),
    /// SERVFAIL, REFUSED, a network error: the question could not be answered.
    #[error("lookup failed: {0}")]
    Failed(String),
}

pub type Answer = Result<Vec<Record>, LookupError>;

/// One line of evidence for a lookup: `TXT _dmarc.example.com -> "v=DMARC1; ..."`.
pub fn show(name: &str, rtype: RecordType, answer: &Answer) -> String {
    match answer {
        Ok(records) if records.is_empty() => format!("{rtype} {name} -> no records"),
        Ok(records) => format!(
            "{rtype} {name} -> {}",
            records
                .iter()
                .map(Record::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Err(e) => format!("{rtype} {name} -> {e}"),
    }
}

/// The questions the checks ask. Implementations bound every lookup in time.
pub trait Resolver: Send + Sync + 'static {
    fn lookup(&self, name: &str, rtype: RecordType) -> impl Future<Output = Answer> + Send;

    /// Evaluates SPF (RFC 7208 `check_host()`) for a message from `ip` with MAIL FROM in
    /// `domain`, through this resolver's view of DNS.
    fn check_spf(&self, ip: IpAddr, domain: &str) -> impl Future<Output = SpfEvaluation> + Send;

    /// Where the questions go, for reports.
    fn describe(&self) -> String;
}

/// Records of the answer that are of `rtype` (a resolver may add others, e.g. CNAMEs).
pub fn of_type(records: &[Record], rtype: RecordType) -> impl Iterator<Item = &Record> {
    records.iter().filter(move |r| r.record_type() == rtype)
}

/// An in-memory zone: records by name and type, and failures to inject by name and type.
/// A name with no record of any type is NXDOMAIN; an existing name without the asked type is
/// an empty answer, as a real server would give.
#[derive(Clone, Debug, Default)]
pub struct MemoryZone {
    records: BTreeMap<String, BTreeSet<Record>>,
    failures: BTreeMap<(String, RecordType), LookupError>,
}

impl MemoryZone {
    pub fn new() -> Self {
        MemoryZone::default()
    }

    /// The zone `mailbake dns` would have published for a site: every record of the set.
    pub fn from_records(set: &crate::dns::RecordSet) -> Self {
        let mut zone = MemoryZone::new();
        for r in &set.records {
            let record = match &r.data {
                crate::dns::RecordData::A(ip) => Record::A(*ip),
                crate::dns::RecordData::Aaaa(ip) => Record::Aaaa(*ip),
                crate::dns::RecordData::Mx {
                    preference,
                    exchange,
                } => Record::Mx {
                    preference: *preference,
                    exchange: exchange.clone(),
                },
                crate::dns::RecordData::Txt(text) => Record::Txt(text.clone()),
                crate::dns::RecordData::Ptr(name) => Record::Ptr(name.clone()),
            };
            zone.add(&r.name, record);
        }
        zone
    }

    pub fn add(&mut self, name: &str, record: Record) -> &mut Self {
        self.records
            .entry(normalize(name))
            .or_default()
            .insert(record);
        self
    }

    /// Removes every record of `rtype` at `name`.
    pub fn remove(&mut self, name: &str, rtype: RecordType) -> &mut Self {
        let key = normalize(name);
        if let Some(set) = self.records.get_mut(&key) {
            set.retain(|r| r.record_type() != rtype);
            if set.is_empty() {
                self.records.remove(&key);
            }
        }
        self
    }

    /// Replaces the records of `rtype` at `name` with `records`.
    pub fn replace(&mut self, name: &str, rtype: RecordType, records: Vec<Record>) -> &mut Self {
        self.remove(name, rtype);
        for r in records {
            self.add(name, r);
        }
        self
    }

    /// Makes every question for `rtype` at `name` fail with `error`.
    pub fn fail(&mut self, name: &str, rtype: RecordType, error: LookupError) -> &mut Self {
        self.failures.insert((normalize(name), rtype), error);
        self
    }

    /// The answer a server holding this zone gives, synchronously.
    pub fn answer(&self, name: &str, rtype: RecordType) -> Answer {
        let key = normalize(name);
        if let Some(error) = self.failures.get(&(key.clone(), rtype)) {
            return Err(error.clone());
        }
        match self.records.get(&key) {
            None => Err(LookupError::NxDomain),
            Some(set) => Ok(set
                .iter()
                .filter(|r| r.record_type() == rtype)
                .cloned()
                .collect()),
        }
    }

    /// Every owner name in the zone.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.records.keys().map(String::as_str)
    }

    /// Whether a failure is injected for this question.
    pub fn has_failure(&self, name: &str, rtype: RecordType) -> bool {
        self.failures.contains_key(&(normalize(name), rtype))
    }
}

fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

impl Resolver for MemoryZone {
    fn lookup(&self, name: &str, rtype: RecordType) -> impl Future<Output = Answer> + Send {
        std::future::ready(self.answer(name, rtype))
    }

    fn check_spf(&self, ip: IpAddr, domain: &str) -> impl Future<Output = SpfEvaluation> + Send {
        spf_eval::check_in_zone(self, ip, domain.to_string())
    }

    fn describe(&self) -> String {
        "an in-memory zone".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nxdomain_nodata_and_injected_failures_differ() {
        let mut zone = MemoryZone::new();
        zone.add("Example.com.", Record::Txt("v=spf1 -all".into()));
        assert_eq!(
            zone.answer("example.com", RecordType::Txt),
            Ok(vec![Record::Txt("v=spf1 -all".into())])
        );
        assert_eq!(zone.answer("example.com", RecordType::Mx), Ok(vec![]));
        assert_eq!(
            zone.answer("nowhere.example.com", RecordType::A),
            Err(LookupError::NxDomain)
        );
        zone.fail(
            "example.com",
            RecordType::Txt,
            LookupError::Timeout(Duration::from_secs(10)),
        );
        assert_eq!(
            zone.answer("example.com", RecordType::Txt),
            Err(LookupError::Timeout(Duration::from_secs(10)))
        );
    }
}
