//! MTA-STS, when the site enables it: `_mta-sts` announces the site's policy (its id is the
//! policy's digest), and the policy served over HTTPS says what the site says: mode, every MX
//! host, a sensible max_age.

use mail_auth::common::parse::TxtRecordParser as _;
use mail_auth::mta_sts::MtaSts;

use super::{RESOLVER_FIX, ask, publish_txt, texts};
use crate::site::DomainName;
use crate::verify::dns::{LookupError, RecordType, Resolver};
use crate::verify::https;
use crate::verify::net::Dialer;
use crate::verify::tls::Expiry;
use crate::verify::{Check, Context, Section, Status};

/// Under a day, senders refetch the policy so often that an outage of the policy host leaves
/// them unprotected quickly (mox warns at the same point).
const MIN_MAX_AGE: u64 = 86_400;

pub(super) async fn check<R: Resolver, D: Dialer>(
    ctx: &Context<R, D>,
    domain: &DomainName,
) -> Vec<Check> {
    let Some(policy) = ctx.expected.mta_sts.iter().find(|p| &p.domain == domain) else {
        return Vec::new();
    };
    let name = format!("_mta-sts.{domain}");
    let mut out = Vec::new();
    let mut evidence = Vec::new();
    let builder = Check::of(Section::MtaSts, name.clone()).domain(domain);
    let fix = publish_txt(ctx, &name);
    let records = match ask(&ctx.resolver, &name, RecordType::Txt, &mut evidence).await {
        Ok(r) => texts(&r),
        Err(LookupError::NxDomain) => Vec::new(),
        Err(e) => {
            out.push(
                builder
                    .evidence(evidence)
                    .fail(format!("the TXT lookup failed: {e}"), RESOLVER_FIX),
            );
            return out;
        }
    };
    let sts: Vec<&String> = records
        .iter()
        .filter(|t| t.to_ascii_lowercase().starts_with("v=stsv1"))
        .collect();
    out.push(match sts.as_slice() {
        [] => builder.evidence(evidence).fail(
            "no MTA-STS record: senders never look for the policy",
            fix,
        ),
        [one] => match MtaSts::parse(one.as_bytes()) {
            Ok(r) if r.id == policy.id => builder
                .evidence(evidence)
                .pass(format!("announces the site's policy (id={})", r.id)),
            Ok(r) => builder.evidence(evidence).warn(
                format!(
                    "announces id={}, but the site's policy has id={}: senders that cached an older policy keep it",
                    r.id, policy.id
                ),
                fix,
            ),
            Err(e) => builder
                .evidence(evidence)
                .fail(format!("the record does not parse ({e})"), fix),
        },
        many => builder.evidence(evidence).fail(
            format!("{} MTA-STS records: senders then ignore MTA-STS", many.len()),
            format!("keep exactly one; {fix}"),
        ),
    });
    out.push(served(ctx, domain, policy).await);
    out
}

async fn served<R: Resolver, D: Dialer>(
    ctx: &Context<R, D>,
    domain: &DomainName,
    policy: &crate::dns::MtaStsPolicy,
) -> Check {
    let mut evidence = Vec::new();
    let builder = Check::of(Section::MtaSts, policy.url.clone()).domain(domain);
    let fix = format!(
        "serve this file at {} (HTTPS, certificate valid for mta-sts.{domain}, Content-Type: text/plain; a build writes it as dns/mta-sts.{domain}.txt):\n{}",
        policy.url,
        policy.text.trim_end()
    );
    let fetched = match https::fetch_policy(ctx, domain.as_str(), &mut evidence).await {
        Ok(f) => f,
        Err(why) => {
            return builder
                .evidence(evidence)
                .fail(format!("the policy is not served: {why}"), fix);
        }
    };
    let mut problems = transport_problems(domain, &fetched);
    let (want_mode, policy_problems) = policy_problems(ctx, domain, &fetched.body);
    problems.extend(policy_problems);
    evidence.push(format!(
        "policy: {}",
        fetched
            .body
            .trim_end()
            .replace("\r\n", " | ")
            .replace('\n', " | ")
    ));
    if let Some(summary) = &fetched.verdict.summary {
        evidence.extend(summary.lines());
    }
    let worst = problems
        .iter()
        .map(|(s, _)| *s)
        .max()
        .unwrap_or(Status::Pass);
    let summary = if problems.is_empty() {
        format!("served as the site says (mode {want_mode}, every MX host listed)")
    } else {
        problems
            .into_iter()
            .map(|(_, p)| p)
            .collect::<Vec<_>>()
            .join("; ")
    };
    builder
        .evidence(evidence)
        .verdict(worst, summary, Some(fix))
}

/// What is wrong with how the policy is served: the certificate of `mta-sts.<domain>` and the
/// Content-Type.
fn transport_problems(domain: &DomainName, fetched: &https::Fetched) -> Vec<(Status, String)> {
    let mut problems: Vec<(Status, String)> = Vec::new();
    let host = format!("mta-sts.{domain}");
    if let Err(why) = &fetched.verdict.name {
        problems.push((Status::Fail, format!("the certificate is {why}")));
    }
    if let Err(why) = &fetched.verdict.chain {
        problems.push((Status::Fail, format!("the certificate of {host} {why}")));
    }
    if let Expiry::Expired { .. } | Expiry::NotYetValid = fetched.verdict.expiry {
        problems.push((
            Status::Fail,
            "the certificate is outside its validity dates".into(),
        ));
    }
    if !fetched
        .content_type
        .as_deref()
        .is_some_and(|t| t.trim().to_ascii_lowercase().starts_with("text/plain"))
    {
        problems.push((
            Status::Warn,
            format!(
                "Content-Type is {}, RFC 8461 asks for text/plain",
                fetched.content_type.as_deref().unwrap_or("missing")
            ),
        ));
    }
    problems
}

/// What is wrong with the served policy against the site, and the mode the site wants.
fn policy_problems<'a, R: Resolver, D: Dialer>(
    ctx: &'a Context<R, D>,
    domain: &DomainName,
    body: &str,
) -> (&'a str, Vec<(Status, String)>) {
    let mut problems: Vec<(Status, String)> = Vec::new();
    let site = &ctx.site.domains[domain];
    let want_mode = site
        .mta_sts
        .as_ref()
        .map(|s| s.mode.as_str())
        .unwrap_or("testing");
    let want_age = site
        .mta_sts
        .as_ref()
        .map(|s| u64::from(s.max_age))
        .unwrap_or(0);
    let parsed = parse_policy(body);
    match parsed.version.as_deref() {
        Some("STSv1") => {}
        other => problems.push((
            Status::Fail,
            format!("`version:` is {}, not STSv1", other.unwrap_or("missing")),
        )),
    }
    if parsed.mode.as_deref() != Some(want_mode) {
        problems.push((
            Status::Fail,
            format!(
                "`mode:` is {}, the site says {want_mode}",
                parsed.mode.as_deref().unwrap_or("missing")
            ),
        ));
    }
    for host in ctx.site.hosts.values() {
        if !parsed.mx.iter().any(|p| mx_matches(p, host.fqdn.as_str())) {
            problems.push((
                Status::Fail,
                format!(
                    "the policy does not list {}: senders that honour it will not deliver there",
                    host.fqdn
                ),
            ));
        }
    }
    match parsed.max_age {
        None => problems.push((Status::Fail, "`max_age:` is missing or not a number".into())),
        Some(age) if age < MIN_MAX_AGE => problems.push((
            Status::Warn,
            format!("max_age is {age} s, under a day: senders keep the policy too briefly"),
        )),
        Some(age) if age != want_age => problems.push((
            Status::Warn,
            format!("max_age is {age} s, the site says {want_age} s"),
        )),
        Some(_) => {}
    }
    (want_mode, problems)
}

#[derive(Default)]
struct Policy {
    version: Option<String>,
    mode: Option<String>,
    mx: Vec<String>,
    max_age: Option<u64>,
}

/// RFC 8461 §3.2: `key: value` lines (CRLF or LF); `mx` may repeat.
fn parse_policy(text: &str) -> Policy {
    let mut p = Policy::default();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim().to_string();
        match key.trim() {
            "version" => p.version = Some(value),
            "mode" => p.mode = Some(value),
            "mx" => p.mx.push(value.to_ascii_lowercase()),
            "max_age" => p.max_age = value.parse().ok(),
            _ => {}
        }
    }
    p
}

/// An `mx:` pattern matches the host itself, or with `*.` exactly one more leftmost label.
fn mx_matches(pattern: &str, host: &str) -> bool {
    let pattern = pattern.trim_end_matches('.');
    match pattern.strip_prefix("*.") {
        Some(base) => host
            .split_once('.')
            .is_some_and(|(first, rest)| !first.is_empty() && rest == base),
        None => pattern == host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_and_wildcards_match_one_label() {
        let p = parse_policy(
            "version: STSv1\r\nmode: enforce\r\nmx: smtp.example.com\r\nmx: *.example.net\r\nmax_age: 86400\r\n",
        );
        assert_eq!(p.mode.as_deref(), Some("enforce"));
        assert_eq!(p.max_age, Some(86400));
        assert!(mx_matches(&p.mx[0], "smtp.example.com"));
        assert!(mx_matches(&p.mx[1], "mx.example.net"));
        assert!(!mx_matches(&p.mx[1], "a.mx.example.net"));
        assert!(!mx_matches(&p.mx[1], "example.net"));
    }
}
