//! `mailbake verify`: checks a live deployment the way a receiving server will judge it.
//!
//! Every check asks DNS through a [`Resolver`] and connects through a [`Dialer`], and goes
//! only where the site file and DNS say: the site's hosts and addresses, the names its domains
//! publish, the DNSBL zones asked for. The live path ([`live`]) points hickory at `--resolver`
//! (or the system's resolvers) and dials directly; tests use a [`MemoryZone`] and route the
//! site's addresses to servers of their own on loopback, so the protocol code under test is the
//! code that runs for real.
//!
//! Sections, in report order: MX, addresses, reverse DNS, SPF, DKIM, DMARC, MTA-STS, TLS-RPT,
//! SMTP, DNSBL, outbound. docs/verify.md says what each check means and how to fix it.

mod checks;
pub mod cli;
pub mod dns;
mod https;
mod keys;
pub mod live;
pub mod net;
pub(crate) mod probe;
pub mod report;
pub(crate) mod spf_eval;
mod taglist;
pub mod tls;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;

pub use dns::{LookupError, MemoryZone, Record, RecordType, Resolver};
pub use keys::{DkimKeys, dkim_keys};
pub use net::Dialer;
pub use report::{Check, Report, Status};
pub use tls::Trust;

use crate::site::{HostName, Site};

/// One part of the report; `--only` takes these names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Section {
    Mx,
    Addresses,
    ReverseDns,
    Spf,
    Dkim,
    Dmarc,
    MtaSts,
    TlsRpt,
    Smtp,
    Dnsbl,
    Outbound,
}

impl Section {
    pub const ALL: [Section; 11] = [
        Section::Mx,
        Section::Addresses,
        Section::ReverseDns,
        Section::Spf,
        Section::Dkim,
        Section::Dmarc,
        Section::MtaSts,
        Section::TlsRpt,
        Section::Smtp,
        Section::Dnsbl,
        Section::Outbound,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Section::Mx => "MX",
            Section::Addresses => "Addresses (A/AAAA)",
            Section::ReverseDns => "Reverse DNS (PTR)",
            Section::Spf => "SPF",
            Section::Dkim => "DKIM",
            Section::Dmarc => "DMARC",
            Section::MtaSts => "MTA-STS",
            Section::TlsRpt => "TLS-RPT",
            Section::Smtp => "SMTP",
            Section::Dnsbl => "DNSBL",
            Section::Outbound => "Outbound port 25",
        }
    }
}

/// DNSBL zones asked by default: Spamhaus ZEN (what Mail-in-a-Box asks; it includes SBL, which
/// mox asks) and SpamCop (which mox asks).
pub const DEFAULT_DNSBL_ZONES: [&str; 2] = ["zen.spamhaus.org", "bl.spamcop.net"];

/// The ports probed on every address of a host.
pub const SMTP_PORT: u16 = 25;
pub const SUBMISSION_PORT: u16 = 587;
pub const SUBMISSIONS_PORT: u16 = 465;
pub const HTTPS_PORT: u16 = 443;

/// The most one check may take, whatever it waits for (mox: 30 s overall).
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// Everything the checks read: the site, what it expects, and the ways out.
pub struct Context<R, D> {
    pub site: Site,
    /// The records `mailbake dns` prints for the site (DKIM aside): the fixes quote them.
    pub expected: crate::dns::RecordSet,
    /// The DKIM record each selector should publish, from the secrets store.
    pub dkim: DkimKeys,
    /// The hosts the host checks are about (`--host`, else all).
    pub hosts: Vec<HostName>,
    pub dnsbl_zones: Vec<String>,
    pub resolver: R,
    pub dialer: D,
    pub trust: Trust,
    /// "Now" for certificate expiry.
    pub now: SystemTime,
}

impl<R: Resolver, D: Dialer> Context<R, D> {
    /// `host`: only this host's checks (domain-wide checks still cover every host, as
    /// `mailbake dns --host` does). `dnsbl_zones`: empty means [`DEFAULT_DNSBL_ZONES`].
    pub fn new(
        site: Site,
        dkim: DkimKeys,
        host: Option<&HostName>,
        dnsbl_zones: Vec<String>,
        resolver: R,
        dialer: D,
        trust: Trust,
    ) -> Result<Self, crate::dns::DnsError> {
        let expected = crate::dns::records(
            &site,
            &crate::dns::Options {
                host: None,
                dkim: crate::dns::DkimLookup::SkipMissing(None),
            },
        )?;
        if let Some(h) = host
            && !site.hosts.contains_key(h)
        {
            return Err(crate::dns::DnsError::UnknownHost {
                host: h.to_string(),
                known: site
                    .hosts
                    .keys()
                    .map(|k| k.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        let hosts = site
            .hosts
            .keys()
            .filter(|k| host.is_none_or(|h| h == *k))
            .cloned()
            .collect();
        let dnsbl_zones = if dnsbl_zones.is_empty() {
            DEFAULT_DNSBL_ZONES.iter().map(|z| z.to_string()).collect()
        } else {
            dnsbl_zones
        };
        Ok(Context {
            site,
            expected,
            dkim,
            hosts,
            dnsbl_zones,
            resolver,
            dialer,
            trust,
            now: SystemTime::now(),
        })
    }
}

type Job = Pin<Box<dyn Future<Output = Vec<Check>> + Send>>;

/// A unit of work and what to report if it runs out of time.
struct Task {
    section: Section,
    subject: String,
    job: Job,
}

/// Runs the checks of `sections` (all when empty), concurrently, and reports them in section
/// order. Needs a multi-threaded tokio runtime.
pub async fn run<R: Resolver, D: Dialer>(ctx: Arc<Context<R, D>>, sections: &[Section]) -> Report {
    let wanted: Vec<Section> = if sections.is_empty() {
        Section::ALL.to_vec()
    } else {
        Section::ALL
            .into_iter()
            .filter(|s| sections.contains(s))
            .collect()
    };
    let tasks: Vec<Task> = wanted
        .iter()
        .flat_map(|s| checks::tasks(&ctx, *s))
        .collect();
    let mut set = tokio::task::JoinSet::new();
    let mut placeholders = BTreeMap::new();
    for (i, task) in tasks.into_iter().enumerate() {
        placeholders.insert(i, (task.section, task.subject));
        let job = task.job;
        set.spawn(async move { (i, tokio::time::timeout(CHECK_TIMEOUT, job).await) });
    }
    let mut results: BTreeMap<usize, Vec<Check>> = BTreeMap::new();
    while let Some(joined) = set.join_next().await {
        let Ok((i, outcome)) = joined else { continue };
        let checks = match outcome {
            Ok(checks) => checks,
            Err(_) => {
                let (section, subject) = placeholders
                    .get(&i)
                    .cloned()
                    .unwrap_or((Section::Outbound, String::new()));
                vec![Check::of(section, subject).fail(
                    format!("no result within {} s", CHECK_TIMEOUT.as_secs()),
                    "check that the server or resolver answers; run again",
                )]
            }
        };
        results.insert(i, checks);
    }
    // A task that panicked left no entry: say so rather than drop it silently.
    for (i, (section, subject)) in &placeholders {
        results.entry(*i).or_insert_with(|| {
            vec![Check::of(*section, subject.clone()).fail(
                "the check crashed (a bug in mailbake)",
                "report it with the command line that shows it",
            )]
        });
    }
    Report::new(
        ctx.site.site.to_string(),
        ctx.resolver.describe(),
        results.into_values().flatten().collect(),
    )
}

#[cfg(test)]
mod test_server;
#[cfg(test)]
mod tests;
