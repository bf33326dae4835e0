//! DMARC: the record exists, parses and says what the site says; report addresses in another
//! domain are authorized by that domain (`<domain>._report._dmarc.<dest>`, RFC 7489 §7.1).

use mail_auth::common::parse::TxtRecordParser as _;
use mail_auth::dmarc::{Dmarc, Policy};

use super::{RESOLVER_FIX, ask, publish_txt, texts};
use crate::site::DomainName;
use crate::verify::dns::{LookupError, RecordType, Resolver};
use crate::verify::net::Dialer;
use crate::verify::taglist;
use crate::verify::{Check, Context, Section};

fn is_dmarc(text: &str) -> bool {
    text.trim_start()
        .to_ascii_lowercase()
        .starts_with("v=dmarc1")
}

pub(super) async fn check<R: Resolver, D: Dialer>(
    ctx: &Context<R, D>,
    domain: &DomainName,
) -> Vec<Check> {
    let name = format!("_dmarc.{domain}");
    let site_policy = ctx.site.domains[domain].dmarc.as_ref();
    let mut evidence = Vec::new();
    let builder = Check::of(Section::Dmarc, name.clone()).domain(domain);
    let published: Vec<String> =
        match ask(&ctx.resolver, &name, RecordType::Txt, &mut evidence).await {
            Ok(records) => texts(&records)
                .into_iter()
                .filter(|t| is_dmarc(t))
                .collect(),
            Err(LookupError::NxDomain) => Vec::new(),
            Err(e) => {
                return vec![
                    builder
                        .evidence(evidence)
                        .fail(format!("the TXT lookup failed: {e}"), RESOLVER_FIX),
                ];
            }
        };
    let Some(site_policy) = site_policy else {
        let summary = if published.is_empty() {
            "no DMARC record, and the site file asks for none: Gmail and Yahoo require DMARC from bulk senders".to_string()
        } else {
            "a DMARC record is published, but the site file has none, so `mailbake dns` does not print it".to_string()
        };
        return vec![builder.evidence(evidence).warn(
            summary,
            format!("add `dmarc: {{ p: quarantine, rua: mailto:... }}` to {domain} in the site file (docs/site.md), then publish what `mailbake dns` prints"),
        )];
    };
    let fix = publish_txt(ctx, &name);
    let expected_text = ctx
        .expected
        .records
        .iter()
        .find_map(|r| match &r.data {
            crate::dns::RecordData::Txt(t) if r.name == name => Some(t.clone()),
            _ => None,
        })
        .unwrap_or_default();
    let mut out = Vec::new();
    out.push(match published.as_slice() {
        [] => builder.evidence(evidence).fail(
            "no DMARC record (removed?): receivers apply no policy to forgeries",
            fix,
        ),
        [one] => compare(
            builder.evidence(evidence),
            one,
            &expected_text,
            site_policy.p,
            fix,
        ),
        many => builder.evidence(evidence).fail(
            format!(
                "{} DMARC records: receivers then apply none (RFC 7489 §6.6.3)",
                many.len()
            ),
            format!("keep exactly one; {fix}"),
        ),
    });
    let destinations = site_policy
        .rua
        .iter()
        .chain(site_policy.ruf.iter())
        .flat_map(|uris| uris.0.iter())
        .map(|uri| uri.address.domain().to_string());
    let mut seen = std::collections::BTreeSet::new();
    for dest in destinations {
        if same_organization(domain.as_str(), &dest) || !seen.insert(dest.clone()) {
            continue;
        }
        out.push(authorization(ctx, domain, &dest).await);
    }
    out
}

fn compare(
    builder: crate::verify::report::CheckBuilder,
    published: &str,
    expected: &str,
    site_p: crate::site::DmarcPolicy,
    fix: String,
) -> crate::verify::Check {
    let got = match Dmarc::parse(published.as_bytes()) {
        Ok(r) => r,
        Err(e) => {
            return builder.fail(format!("the record does not parse ({e})"), fix);
        }
    };
    let want = Dmarc::parse(expected.as_bytes());
    let pct = |text: &str| {
        taglist::parse(text)
            .ok()
            .and_then(|t| taglist::get(&t, "pct").map(str::to_string))
    };
    let same = want.as_ref().is_ok_and(|w| *w == got) && pct(published) == pct(expected);
    if !same {
        return builder.fail(
            format!("the record does not match the site's policy: published `{published}`, the site says `{expected}`"),
            fix,
        );
    }
    if got.p == Policy::None || site_p == crate::site::DmarcPolicy::None {
        return builder.warn(
            "published as the site says, with p=none: receivers only report, they take no action on forgeries",
            "set dmarc.p to quarantine (then reject) in the site file once the reports are clean, and publish the new record",
        );
    }
    builder.pass(format!("published as the site says: {published}"))
}

/// Same domain, or one inside the other. (Without the public suffix list this is narrower
/// than RFC 7489's organizational domain: a sibling subdomain is checked as foreign, which
/// at worst asks for an authorization record that is harmless to publish.)
fn same_organization(domain: &str, dest: &str) -> bool {
    domain == dest || domain.ends_with(&format!(".{dest}")) || dest.ends_with(&format!(".{domain}"))
}

async fn authorization<R: Resolver, D: Dialer>(
    ctx: &Context<R, D>,
    domain: &DomainName,
    dest: &str,
) -> Check {
    let name = format!("{domain}._report._dmarc.{dest}");
    let mut evidence = Vec::new();
    let builder = Check::of(Section::Dmarc, name.clone()).domain(domain);
    let fix = format!(
        "whoever runs {dest} publishes:\n{name}. IN TXT \"v=DMARC1\"\n(or send the reports to an address in {domain})"
    );
    match ask(&ctx.resolver, &name, RecordType::Txt, &mut evidence).await {
        Ok(records) if texts(&records).iter().any(|t| is_dmarc(t)) => builder
            .evidence(evidence)
            .pass(format!("{dest} accepts DMARC reports about {domain}")),
        Ok(_) | Err(LookupError::NxDomain) => builder.evidence(evidence).fail(
            format!("{dest} has not authorized reports about {domain}: receivers will not send them there"),
            fix,
        ),
        Err(e) => builder
            .evidence(evidence)
            .fail(format!("the TXT lookup failed: {e}"), RESOLVER_FIX),
    }
}

#[cfg(test)]
mod tests {
    use super::same_organization;

    #[test]
    fn report_domains_inside_the_domain_need_no_authorization() {
        assert!(same_organization("example.com", "example.com"));
        assert!(same_organization("example.com", "reports.example.com"));
        assert!(same_organization("mail.example.com", "example.com"));
        assert!(!same_organization("example.com", "example.net"));
        assert!(!same_organization("example.com", "badexample.com"));
    }
}
