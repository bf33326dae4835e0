//! MX: the domain's MX records name exactly the site's hosts, and every MX target resolves to
//! that host's addresses and nothing else.

use std::collections::BTreeSet;
use std::net::IpAddr;

use super::{RESOLVER_FIX, ask, expected_lines, host_addresses};
use crate::dns::RecordData;
use crate::site::{DomainName, Host};
use crate::verify::dns::{LookupError, Record, RecordType, Resolver};
use crate::verify::net::Dialer;
use crate::verify::{Check, Context, Section};

pub(super) async fn check<R: Resolver, D: Dialer>(
    ctx: &Context<R, D>,
    domain: &DomainName,
) -> Check {
    let mut evidence = Vec::new();
    let builder = Check::of(Section::Mx, domain.as_str()).domain(domain);
    let fix = publish_fix(ctx, domain);
    let answer = ask(
        &ctx.resolver,
        domain.as_str(),
        RecordType::Mx,
        &mut evidence,
    )
    .await;
    let mx: Vec<(u16, String)> = match answer {
        Ok(records) => records
            .into_iter()
            .filter_map(|r| match r {
                Record::Mx {
                    preference,
                    exchange,
                } => Some((preference, exchange)),
                _ => None,
            })
            .collect(),
        Err(LookupError::NxDomain) => {
            return builder
                .evidence(evidence)
                .fail(format!("{domain} does not exist in DNS"), fix);
        }
        Err(e) => {
            return builder
                .evidence(evidence)
                .fail(format!("the MX lookup failed: {e}"), RESOLVER_FIX);
        }
    };
    if mx.is_empty() {
        return builder.evidence(evidence).fail(
            "no MX records: senders fall back to the domain's own address, which is not a mail host",
            fix,
        );
    }
    if mx.iter().any(|(_, e)| e.is_empty() || e == ".") {
        return builder.evidence(evidence).fail(
            "a null MX (`0 .`): the domain announces that it receives no mail at all",
            fix,
        );
    }
    let site_names: BTreeSet<&str> = ctx.site.hosts.values().map(|h| h.fqdn.as_str()).collect();
    let published: BTreeSet<&str> = mx.iter().map(|(_, e)| e.as_str()).collect();
    let mut problems = Vec::new();
    for missing in site_names.difference(&published) {
        problems.push(format!("{missing} (a site host) is not an MX"));
    }
    for extra in published.difference(&site_names) {
        problems.push(format!("{extra} is an MX but not a host of the site"));
    }
    for host in ctx
        .site
        .hosts
        .values()
        .filter(|h| published.contains(h.fqdn.as_str()))
    {
        problems.extend(address_problems(ctx, host, &mut evidence).await);
    }
    let targets: Vec<String> = mx.iter().map(|(p, e)| format!("{e} ({p})")).collect();
    if problems.is_empty() {
        builder.evidence(evidence).pass(format!(
            "MX points at the site's hosts only: {}",
            targets.join(", ")
        ))
    } else {
        builder.evidence(evidence).fail(problems.join("; "), fix)
    }
}

/// The records to publish for the domain's mail to reach the site's hosts.
fn publish_fix<R: Resolver, D: Dialer>(ctx: &Context<R, D>, domain: &DomainName) -> String {
    format!(
        "publish the MX records and the hosts' addresses (mailbake dns SITE prints them):\n{}",
        expected_lines(ctx, |r| {
            (r.zone == domain.as_str() && matches!(r.data, RecordData::Mx { .. }))
                || matches!(r.data, RecordData::A(_) | RecordData::Aaaa(_))
        })
    )
}

/// An MX target that is ours must resolve to its host's addresses, and only to them.
async fn address_problems<R: Resolver, D: Dialer>(
    ctx: &Context<R, D>,
    host: &Host,
    evidence: &mut Vec<String>,
) -> Vec<String> {
    let mut problems = Vec::new();
    let want: BTreeSet<IpAddr> = host_addresses(host).into_iter().collect();
    let mut got = BTreeSet::new();
    for rtype in [RecordType::A, RecordType::Aaaa] {
        match ask(&ctx.resolver, host.fqdn.as_str(), rtype, evidence).await {
            Ok(records) => got.extend(records.iter().filter_map(|r| match r {
                Record::A(ip) => Some(IpAddr::V4(*ip)),
                Record::Aaaa(ip) => Some(IpAddr::V6(*ip)),
                _ => None,
            })),
            Err(LookupError::NxDomain) => {}
            Err(e) => problems.push(format!("{rtype} {} could not be looked up: {e}", host.fqdn)),
        }
    }
    for ip in want.difference(&got) {
        problems.push(format!("{} does not resolve to {ip}", host.fqdn));
    }
    for ip in got.difference(&want) {
        problems.push(format!(
            "{} also resolves to {ip}, which is not in the site",
            host.fqdn
        ));
    }
    problems
}
