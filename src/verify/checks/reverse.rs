//! Reverse DNS: the PTR of every address (IPv4 and IPv6, never skipped) is the host's fqdn,
//! and the fqdn resolves back to that address (forward-confirmed reverse DNS, what receivers
//! call `iprev`).

use std::net::IpAddr;

use super::{RESOLVER_FIX, ask, host};
use crate::site::HostName;
use crate::verify::dns::{LookupError, Record, RecordType, Resolver};
use crate::verify::net::Dialer;
use crate::verify::{Check, Context, Section};

pub(super) async fn check<R: Resolver, D: Dialer>(
    ctx: &Context<R, D>,
    name: &HostName,
    ip: IpAddr,
) -> Check {
    let h = host(ctx, name);
    let fqdn = h.fqdn.as_str();
    let (ptr_name, _zone) = crate::dns::reverse_name(ip, h);
    let mut evidence = Vec::new();
    let builder = Check::of(Section::ReverseDns, ip.to_string()).host(name);
    let fix = format!(
        "set the reverse DNS (PTR) of {ip} to {fqdn} in your provider's panel (only the holder of the address block can)"
    );
    let names: Vec<String> =
        match ask(&ctx.resolver, &ptr_name, RecordType::Ptr, &mut evidence).await {
            Ok(records) => records
                .into_iter()
                .filter_map(|r| match r {
                    Record::Ptr(n) => Some(n),
                    _ => None,
                })
                .collect(),
            Err(LookupError::NxDomain) => Vec::new(),
            Err(e) => {
                return builder
                    .evidence(evidence)
                    .fail(format!("the PTR lookup failed: {e}"), RESOLVER_FIX);
            }
        };
    if names.is_empty() {
        return builder.evidence(evidence).fail(
            format!("{ip} has no PTR record: many receivers refuse mail from such addresses"),
            fix,
        );
    }
    if !names.iter().any(|n| n == fqdn) {
        return builder.evidence(evidence).fail(
            format!("the PTR of {ip} is {}, not {fqdn}", names.join(", ")),
            fix,
        );
    }
    let rtype = if ip.is_ipv4() {
        RecordType::A
    } else {
        RecordType::Aaaa
    };
    let confirmed = match ask(&ctx.resolver, fqdn, rtype, &mut evidence).await {
        Ok(records) => records.iter().any(|r| match (r, ip) {
            (Record::A(a), IpAddr::V4(want)) => *a == want,
            (Record::Aaaa(a), IpAddr::V6(want)) => *a == want,
            _ => false,
        }),
        Err(_) => false,
    };
    if !confirmed {
        return builder.evidence(evidence).fail(
            format!("the PTR names {fqdn}, but {fqdn} does not resolve back to {ip} (not forward-confirmed)"),
            format!("publish {fqdn}. {rtype} {ip} (mailbake dns SITE prints it)"),
        );
    }
    let note = if names.len() > 1 {
        format!(
            " (also {}: one PTR per address is safer)",
            names
                .iter()
                .filter(|n| *n != fqdn)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        )
    } else {
        String::new()
    };
    builder
        .evidence(evidence)
        .pass(format!("{ip} -> {fqdn} -> {ip}, forward-confirmed{note}"))
}
