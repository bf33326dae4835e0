//! DNSBL: each host address looked up in each zone (IPv4 octets and IPv6 nibbles reversed,
//! RFC 5782). Spamhaus answers 127.255.255.252/254/255 when it refuses a query (bad query, a
//! public resolver, over the limit): that is "not asked", never "listed".

use std::net::{IpAddr, Ipv4Addr};

use super::{ask, texts};
use crate::site::HostName;
use crate::verify::dns::{LookupError, Record, RecordType, Resolver};
use crate::verify::net::Dialer;
use crate::verify::{Check, Context, Section};

/// The owner name to ask: `10.113.0.203.zen.spamhaus.org`, nibbles for IPv6.
pub(super) fn query_name(ip: IpAddr, zone: &str) -> String {
    let reversed = match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => v6
            .octets()
            .iter()
            .rev()
            .flat_map(|b| [b & 0xf, b >> 4])
            .map(|n| format!("{n:x}"))
            .collect::<Vec<_>>()
            .join("."),
    };
    format!("{reversed}.{zone}")
}

/// Spamhaus's "query refused" answers (its return codes page).
fn refusal(ip: Ipv4Addr) -> Option<&'static str> {
    match ip.octets() {
        [127, 255, 255, 252] => Some("the query was malformed (127.255.255.252)"),
        [127, 255, 255, 254] => {
            Some("the list refuses queries from public or open resolvers (127.255.255.254)")
        }
        [127, 255, 255, 255] => {
            Some("the resolver exceeded the list's query limit (127.255.255.255)")
        }
        [127, 255, 255, _] => Some("the list refused the query (127.255.255.x)"),
        _ => None,
    }
}

pub(super) async fn check<R: Resolver, D: Dialer>(
    ctx: &Context<R, D>,
    host: &HostName,
    ip: IpAddr,
    zone: &str,
) -> Check {
    let name = query_name(ip, zone);
    let mut evidence = Vec::new();
    let builder = Check::of(Section::Dnsbl, format!("{ip} in {zone}")).host(host);
    let not_asked_fix = "ask through a resolver of your own (not 8.8.8.8, 1.1.1.1 or your ISP's), e.g. run verify on the host or pass --resolver; Spamhaus also offers a free Data Query Service key";
    let codes: Vec<Ipv4Addr> = match ask(&ctx.resolver, &name, RecordType::A, &mut evidence).await {
        Err(LookupError::NxDomain) => {
            return builder
                .evidence(evidence)
                .pass(format!("not listed in {zone}"));
        }
        Err(e) => {
            return builder
                .evidence(evidence)
                .warn(format!("could not ask {zone}: {e}"), not_asked_fix);
        }
        Ok(records) => records
            .iter()
            .filter_map(|r| match r {
                Record::A(a) => Some(*a),
                _ => None,
            })
            .collect(),
    };
    if codes.is_empty() {
        return builder
            .evidence(evidence)
            .pass(format!("not listed in {zone}"));
    }
    if let Some(why) = codes.iter().find_map(|c| refusal(*c)) {
        return builder
            .evidence(evidence)
            .warn(format!("query refused, not listed: {why}"), not_asked_fix);
    }
    if codes.iter().any(|c| c.octets()[0] != 127) {
        return builder.evidence(evidence).warn(
            "the answer is not a DNSBL code (127.0.0.x): the resolver seems to rewrite NXDOMAIN",
            not_asked_fix,
        );
    }
    // The reason, when the list publishes one.
    let _ = ask(&ctx.resolver, &name, RecordType::Txt, &mut evidence)
        .await
        .map(|r| texts(&r));
    let list: Vec<String> = codes.iter().map(|c| c.to_string()).collect();
    builder.evidence(evidence).fail(
        format!("listed in {zone} ({}): many receivers refuse mail from {ip}", list.join(", ")),
        format!("find out why (the TXT answer names the listing; open relay? a leaked password?), fix that, then request removal at {zone}'s web site"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_names_reverse_octets_and_nibbles() {
        assert_eq!(
            query_name("203.0.113.10".parse().unwrap(), "zen.spamhaus.org"),
            "10.113.0.203.zen.spamhaus.org"
        );
        assert_eq!(
            query_name("2001:db8:1::10".parse().unwrap(), "zen.spamhaus.org"),
            "0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2.zen.spamhaus.org"
        );
    }
}
