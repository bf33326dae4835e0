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
use crate::site::{Host, HostName};

/// The fix for a lookup that got no answer at all.
const RESOLVER_FIX: &str =
    "check that the resolver reaches the domain's name servers, then run again";

pub(super) fn tasks<R: Resolver, D: Dialer>(
    ctx: &Arc<Context<R, D>>,
    section: Section,
) -> Vec<Task> {
    let mut out = Vec::new();
    let mut push = |subject: String, job: super::Job| {
        out.push(Task {
            section,
            subject,
            job,
        })
    };
    let domains: Vec<_> = ctx.site.domains.keys().cloned().collect();
    let hosts: Vec<HostName> = ctx.hosts.clone();
    match section {
        Section::Mx => {
            for d in domains {
                let c = ctx.clone();
                push(
                    d.to_string(),
                    Box::pin(async move { vec![mx::check(&c, &d).await] }),
                );
            }
        }
        Section::Addresses => {
            for h in hosts {
                let c = ctx.clone();
                push(
                    h.to_string(),
                    Box::pin(async move { vec![addresses::check(&c, &h).await] }),
                );
            }
        }
        Section::ReverseDns => {
            for h in hosts {
                for ip in host_addresses(host(ctx, &h)) {
                    let c = ctx.clone();
                    let h = h.clone();
                    push(
                        ip.to_string(),
                        Box::pin(async move { vec![reverse::check(&c, &h, ip).await] }),
                    );
                }
            }
        }
        Section::Spf => {
            for d in domains {
                let c = ctx.clone();
                push(
                    d.to_string(),
                    Box::pin(async move { spf::check(&c, &d).await }),
                );
            }
        }
        Section::Dkim => {
            for d in domains {
                let c = ctx.clone();
                push(
                    d.to_string(),
                    Box::pin(async move { dkim::check(&c, &d).await }),
                );
            }
        }
        Section::Dmarc => {
            for d in domains {
                let c = ctx.clone();
                push(
                    d.to_string(),
                    Box::pin(async move { dmarc::check(&c, &d).await }),
                );
            }
        }
        Section::MtaSts => {
            for d in domains
                .into_iter()
                .filter(|d| ctx.site.domains[d].mta_sts.is_some())
            {
                let c = ctx.clone();
                push(
                    d.to_string(),
                    Box::pin(async move { mta_sts::check(&c, &d).await }),
                );
            }
        }
        Section::TlsRpt => {
            for d in domains
                .into_iter()
                .filter(|d| ctx.site.domains[d].tls_rpt.is_some())
            {
                let c = ctx.clone();
                push(
                    d.to_string(),
                    Box::pin(async move { vec![tls_rpt::check(&c, &d).await] }),
                );
            }
        }
        Section::Smtp => {
            for h in hosts {
                for ip in host_addresses(host(ctx, &h)) {
                    for port in [
                        super::SMTP_PORT,
                        super::SUBMISSION_PORT,
                        super::SUBMISSIONS_PORT,
                    ] {
                        let c = ctx.clone();
                        let h = h.clone();
                        push(
                            super::net::endpoint(ip, port),
                            Box::pin(async move { smtp::check(&c, &h, ip, port).await }),
                        );
                    }
                }
            }
        }
        Section::Dnsbl => {
            for h in hosts {
                for ip in host_addresses(host(ctx, &h)) {
                    for zone in ctx.dnsbl_zones.clone() {
                        let c = ctx.clone();
                        let h = h.clone();
                        push(
                            format!("{ip} in {zone}"),
                            Box::pin(async move { vec![dnsbl::check(&c, &h, ip, &zone).await] }),
                        );
                    }
                }
            }
        }
        Section::Outbound => {
            for h in hosts {
                let c = ctx.clone();
                push(
                    h.to_string(),
                    Box::pin(async move { vec![outbound::check(&c, &h)] }),
                );
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
