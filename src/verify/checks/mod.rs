//! The checks, one module per section. Each section turns the site into [`Task`]s (one per
//! domain, host, address or port), which [`super::run`] runs concurrently.

mod addresses;
mod dkim;
mod dmarc;
mod dnsbl;
mod mta_sts;
mod mx;
mod outbound;
mod reverse;
mod smtp;
mod spf;
mod tls_rpt;

use std::net::IpAddr;
use std::sync::Arc;

use super::dns::{Answer, RecordType, Resolver, show};
use super::net::Dialer;
use super::{Context, Section, Task};
use crate::dns::{Record as ExpectedRecord, RecordData};
use crate::site::{DomainName, Host, HostName};

/// The fix for a lookup that got no answer at all.
const RESOLVER_FIX: &str =
    "check that the resolver reaches the domain's name servers, then run again";

pub(super) fn tasks<R: Resolver, D: Dialer>(
    ctx: &Arc<Context<R, D>>,
    section: Section,
) -> Vec<Task> {
    let task = |subject: String, job: super::Job| Task {
        section,
        subject,
        job,
    };
    match section {
        Section::Mx
        | Section::Spf
        | Section::Dkim
        | Section::Dmarc
        | Section::MtaSts
        | Section::TlsRpt => domain_jobs(ctx, section)
            .map(|(d, job)| task(d.to_string(), job))
            .collect(),
        Section::Addresses | Section::Outbound => ctx
            .hosts
            .iter()
            .map(|h| task(h.to_string(), host_job(ctx, section, h.clone())))
            .collect(),
        Section::ReverseDns | Section::Smtp | Section::Dnsbl => ctx
            .hosts
            .iter()
            .flat_map(|h| address_jobs(ctx, section, h))
            .map(|(subject, job)| task(subject, job))
            .collect(),
    }
}

/// One job per site domain the section applies to (MTA-STS and TLS-RPT only where the site
/// sets them up).
fn domain_jobs<R: Resolver, D: Dialer>(
    ctx: &Arc<Context<R, D>>,
    section: Section,
) -> impl Iterator<Item = (DomainName, super::Job)> {
    let applies = |d: &DomainName| match section {
        Section::MtaSts => ctx.site.domains[d].mta_sts.is_some(),
        Section::TlsRpt => ctx.site.domains[d].tls_rpt.is_some(),
        _ => true,
    };
    let domains: Vec<DomainName> = ctx
        .site
        .domains
        .keys()
        .filter(|d| applies(d))
        .cloned()
        .collect();
    let ctx = ctx.clone();
    domains.into_iter().map(move |d| {
        let (c, name) = (ctx.clone(), d.clone());
        let job: super::Job = match section {
            Section::Mx => Box::pin(async move { vec![mx::check(&c, &name).await] }),
            Section::Spf => Box::pin(async move { spf::check(&c, &name).await }),
            Section::Dkim => Box::pin(async move { dkim::check(&c, &name).await }),
            Section::Dmarc => Box::pin(async move { dmarc::check(&c, &name).await }),
            Section::MtaSts => Box::pin(async move { mta_sts::check(&c, &name).await }),
            _ => Box::pin(async move { vec![tls_rpt::check(&c, &name).await] }),
        };
        (d, job)
    })
}

/// The job of a section checked once per host.
fn host_job<R: Resolver, D: Dialer>(
    ctx: &Arc<Context<R, D>>,
    section: Section,
    h: HostName,
) -> super::Job {
    let c = ctx.clone();
    match section {
        Section::Addresses => Box::pin(async move { vec![addresses::check(&c, &h).await] }),
        _ => Box::pin(async move { vec![outbound::check(&c, &h)] }),
    }
}

/// The jobs of a section checked per public address of a host: its PTR, every SMTP port, and
/// every DNSBL zone.
fn address_jobs<R: Resolver, D: Dialer>(
    ctx: &Arc<Context<R, D>>,
    section: Section,
    h: &HostName,
) -> Vec<(String, super::Job)> {
    let mut out: Vec<(String, super::Job)> = Vec::new();
    for ip in host_addresses(host(ctx, h)) {
        match section {
            Section::ReverseDns => {
                let (c, h) = (ctx.clone(), h.clone());
                out.push((
                    ip.to_string(),
                    Box::pin(async move { vec![reverse::check(&c, &h, ip).await] }),
                ));
            }
            Section::Smtp => {
                for port in [
                    super::SMTP_PORT,
                    super::SUBMISSION_PORT,
                    super::SUBMISSIONS_PORT,
                ] {
                    let (c, h) = (ctx.clone(), h.clone());
                    out.push((
                        super::net::endpoint(ip, port),
                        Box::pin(async move { smtp::check(&c, &h, ip, port).await }),
                    ));
                }
            }
            _ => {
                for zone in ctx.dnsbl_zones.clone() {
                    let (c, h) = (ctx.clone(), h.clone());
                    out.push((
                        format!("{ip} in {zone}"),
                        Box::pin(async move { vec![dnsbl::check(&c, &h, ip, &zone).await] }),
                    ));
                }
            }
        }
    }
    out
}

fn host<'a, R, D>(ctx: &'a Context<R, D>, name: &HostName) -> &'a Host {
    // Context::new keeps only names of the site's hosts.
    &ctx.site.hosts[name]
}

/// A host's public addresses: IPv4, then IPv6 when it has one.
fn host_addresses(host: &Host) -> Vec<IpAddr> {
    let mut ips = vec![IpAddr::V4(host.ipv4.address)];
    if let Some(v6) = &host.ipv6 {
        ips.push(IpAddr::V6(v6.address.addr()));
    }
    ips
}

/// Looks `name` up and notes the question and its answer as evidence.
async fn ask<R: Resolver>(
    resolver: &R,
    name: &str,
    rtype: RecordType,
    evidence: &mut Vec<String>,
) -> Answer {
    let answer = resolver.lookup(name, rtype).await;
    evidence.push(show(name, rtype, &answer));
    answer
}

/// The TXT strings of an answer.
fn texts(records: &[super::Record]) -> Vec<String> {
    records
        .iter()
        .filter_map(|r| match r {
            super::Record::Txt(t) => Some(t.clone()),
            _ => None,
        })
        .collect()
}

/// A record as a zone-file line, the form the fixes quote:
/// `_dmarc.example.com. 3600 IN TXT "v=DMARC1; p=quarantine"`.
fn zone_line(name: &str, ttl: u32, data: &RecordData) -> String {
    let value = match data {
        RecordData::Txt(t) => format!("\"{}\"", t.replace('\\', "\\\\").replace('"', "\\\"")),
        RecordData::Mx {
            preference,
            exchange,
        } => format!("{preference} {exchange}."),
        RecordData::Ptr(n) => format!("{n}."),
        other => other.to_string(),
    };
    format!("{name}. {ttl} IN {} {value}", data.type_name())
}

/// The expected records matching `keep`, as zone-file lines joined by newlines.
fn expected_lines<R, D>(ctx: &Context<R, D>, keep: impl Fn(&ExpectedRecord) -> bool) -> String {
    ctx.expected
        .records
        .iter()
        .filter(|r| keep(r))
        .map(|r| zone_line(&r.name, r.ttl, &r.data))
        .collect::<Vec<_>>()
        .join("\n")
}

/// "publish: <lines>" for the expected TXT record at `name`.
fn publish_txt<R, D>(ctx: &Context<R, D>, name: &str) -> String {
    let lines = expected_lines(ctx, |r| {
        r.name == name && matches!(r.data, RecordData::Txt(_))
    });
    format!("publish (mailbake dns SITE prints it):\n{lines}")
}
