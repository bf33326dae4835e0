//! Addresses: the A and AAAA records of each host's fqdn are exactly its site addresses.

use std::collections::BTreeSet;
use std::net::IpAddr;

use super::{ask, expected_lines, host, host_addresses};
use crate::dns::RecordData;
use crate::site::HostName;
use crate::verify::dns::{LookupError, Record, RecordType, Resolver};
use crate::verify::net::Dialer;
use crate::verify::{Check, Context, Section};

pub(super) async fn check<R: Resolver, D: Dialer>(ctx: &Context<R, D>, name: &HostName) -> Check {
    let h = host(ctx, name);
    let fqdn = h.fqdn.as_str();
    let mut evidence = Vec::new();
    let builder = Check::of(Section::Addresses, fqdn).host(name);
    let want: BTreeSet<IpAddr> = host_addresses(h).into_iter().collect();
    let mut got = BTreeSet::new();
    let mut failures = Vec::new();
    for rtype in [RecordType::A, RecordType::Aaaa] {
        match ask(&ctx.resolver, fqdn, rtype, &mut evidence).await {
            Ok(records) => got.extend(records.iter().filter_map(|r| match r {
                Record::A(ip) => Some(IpAddr::V4(*ip)),
                Record::Aaaa(ip) => Some(IpAddr::V6(*ip)),
                _ => None,
            })),
            Err(LookupError::NxDomain) => {}
            Err(e) => failures.push(format!("{rtype} lookup failed: {e}")),
        }
    }
    let fix = format!(
        "publish exactly these address records (and remove any other A/AAAA of {fqdn}):\n{}",
        expected_lines(ctx, |r| {
            r.name == fqdn && matches!(r.data, RecordData::A(_) | RecordData::Aaaa(_))
        })
    );
    if !failures.is_empty() {
        return builder.evidence(evidence).fail(failures.join("; "), fix);
    }
    let mut problems = Vec::new();
    for ip in want.difference(&got) {
        problems.push(format!("{fqdn} does not resolve to {ip}"));
    }
    for ip in got.difference(&want) {
        problems.push(format!("{fqdn} resolves to {ip}, which is not the site's"));
    }
    if problems.is_empty() {
        let list: Vec<String> = want.iter().map(|ip| ip.to_string()).collect();
        builder
            .evidence(evidence)
            .pass(format!("{fqdn} resolves to {}", list.join(" and ")))
    } else {
        builder.evidence(evidence).fail(problems.join("; "), fix)
    }
}
