//! SPF: one `v=spf1` record that parses, evaluated (RFC 7208, by mail-auth) for each host's
//! IPv4 and IPv6 address with the domain as MAIL FROM, each of which must come out `pass`;
//! and what an address that is not ours gets (`-all`, `~all`, ...), compared with the site.

use std::net::{IpAddr, Ipv4Addr};

use mail_auth::SpfResult;
use mail_auth::common::parse::TxtRecordParser as _;

use super::{RESOLVER_FIX, ask, host, host_addresses, publish_txt, texts};
use crate::site::{DomainName, HostName, SpfPolicy};
use crate::verify::dns::{RecordType, Resolver};
use crate::verify::net::Dialer;
use crate::verify::spf_eval::result_name;
use crate::verify::{Check, Context, Section};

/// An address no SPF record should authorize: 240.0.0.0/4 is reserved and never sends mail.
/// What it gets is what a forger gets.
const OUTSIDER: IpAddr = IpAddr::V4(Ipv4Addr::new(240, 0, 0, 1));

/// `v=spf1` followed by a space or nothing (RFC 7208 §4.5), case-insensitively.
fn is_spf(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    lower == "v=spf1" || lower.starts_with("v=spf1 ")
}

pub(super) async fn check<R: Resolver, D: Dialer>(
    ctx: &Context<R, D>,
    domain: &DomainName,
) -> Vec<Check> {
    let fix = publish_txt(ctx, domain.as_str());
    let mut out = Vec::new();
    let mut evidence = Vec::new();
    let record = Check::of(Section::Spf, format!("{domain} record")).domain(domain);
    let published = match ask(
        &ctx.resolver,
        domain.as_str(),
        RecordType::Txt,
        &mut evidence,
    )
    .await
    {
        Ok(records) => texts(&records)
            .into_iter()
            .filter(|t| is_spf(t))
            .collect::<Vec<_>>(),
        Err(crate::verify::LookupError::NxDomain) => Vec::new(),
        Err(e) => {
            out.push(
                record
                    .evidence(evidence)
                    .fail(format!("the TXT lookup failed: {e}"), RESOLVER_FIX),
            );
            return out;
        }
    };
    let mut usable = false;
    out.push(match published.as_slice() {
        [] => record.evidence(evidence).fail(
            "no SPF record: receivers cannot tell our mail from forgeries",
            fix.clone(),
        ),
        [one] => match mail_auth::spf::Spf::parse(one.as_bytes()) {
            Ok(_) => {
                usable = true;
                record.evidence(evidence).pass(format!("published: {one}"))
            }
            Err(e) => record.evidence(evidence).fail(
                format!("the record does not parse ({e}); receivers get permerror"),
                fix.clone(),
            ),
        },
        many => record.evidence(evidence).fail(
            format!(
                "{} SPF records; RFC 7208 makes that a permerror for every message",
                many.len()
            ),
            format!("keep exactly one; {fix}"),
        ),
    });
    for name in &ctx.hosts {
        for ip in host_addresses(host(ctx, name)) {
            out.push(address_verdict(ctx, domain, name, ip, &fix).await);
        }
    }
    if usable {
        out.push(qualifier(ctx, domain, &fix).await);
    }
    out
}

/// `check_host()` for one of the host's addresses: the site's own servers must get `pass`.
async fn address_verdict<R: Resolver, D: Dialer>(
    ctx: &Context<R, D>,
    domain: &DomainName,
    name: &HostName,
    ip: IpAddr,
    fix: &str,
) -> Check {
    let eval = ctx.resolver.check_spf(ip, domain.as_str()).await;
    let mut lines = vec![format!(
        "check_host({ip}, {domain}) = {} after {} DNS lookup(s)",
        result_name(eval.result),
        eval.lookups.len()
    )];
    lines.extend(eval.lookups);
    let family = if ip.is_ipv4() { "ip4" } else { "ip6" };
    let builder = Check::of(Section::Spf, format!("{domain} from {ip}"))
        .domain(domain)
        .host(name)
        .evidence(lines);
    if eval.result == SpfResult::Pass {
        builder.pass(format!("{ip} may send as {domain} (pass)"))
    } else {
        builder.fail(
            format!(
                "mail from {ip} as {domain} gets `{}`, not `pass`{}",
                result_name(eval.result),
                explain(eval.result, family)
            ),
            fix,
        )
    }
}

fn explain(result: SpfResult, family: &str) -> String {
    match result {
        SpfResult::SoftFail | SpfResult::Fail | SpfResult::Neutral => {
            format!(
                ": the record does not authorize this address (an `{family}:` term is missing?)"
            )
        }
        SpfResult::PermError => ": the record is broken or needs more than 10 DNS lookups".into(),
        SpfResult::TempError => ": a DNS lookup failed during evaluation".into(),
        SpfResult::None => ": there is no SPF record".into(),
        SpfResult::Pass => String::new(),
    }
}

/// What a forger gets, against what the site asks for.
async fn qualifier<R: Resolver, D: Dialer>(
    ctx: &Context<R, D>,
    domain: &DomainName,
    fix: &str,
) -> Check {
    let want = ctx.site.domains[domain].spf.policy;
    let eval = ctx.resolver.check_spf(OUTSIDER, domain.as_str()).await;
    let mut lines = vec![format!(
        "check_host({OUTSIDER}, {domain}) = {} (an address that is not ours)",
        result_name(eval.result)
    )];
    lines.extend(eval.lookups);
    let builder = Check::of(Section::Spf, format!("{domain} policy"))
        .domain(domain)
        .evidence(lines);
    let got = match eval.result {
        SpfResult::Fail => SpfPolicy::Fail,
        SpfResult::SoftFail => SpfPolicy::SoftFail,
        SpfResult::Neutral | SpfResult::None => SpfPolicy::Neutral,
        SpfResult::Pass => {
            return builder.fail(
                "any address passes (`+all` or an equivalent): anyone can send as this domain",
                fix,
            );
        }
        other => {
            return builder.fail(
                format!("the policy could not be evaluated: {}", result_name(other)),
                fix,
            );
        }
    };
    let meaning = match got {
        SpfPolicy::Fail => "-all: receivers are asked to reject forgeries",
        SpfPolicy::SoftFail => {
            "~all: receivers accept forgeries but mark them (use -all once every sender is listed)"
        }
        SpfPolicy::Neutral => "?all or no `all`: the record says nothing about other senders",
    };
    if got == want {
        builder.pass(format!("ends in {meaning}"))
    } else {
        builder.warn(
            format!("ends in {meaning}; the site asks for {}", want.as_str()),
            fix,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::is_spf;

    #[test]
    fn only_version_1_records_are_spf() {
        assert!(is_spf("v=spf1 -all"));
        assert!(is_spf("V=SPF1"));
        assert!(!is_spf("v=spf10 -all"));
        assert!(!is_spf("google-site-verification=x"));
    }
}
