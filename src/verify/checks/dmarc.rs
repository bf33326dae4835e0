//! DMARC per RFC 9989 (which obsoletes RFC 7489): the record exists, parses and says what the
//! site says, tag for tag; the tags RFC 9989 removed (`pct`, `rf`, `ri`) are warned about;
//! `t` and `np` are reported. With no record at `_dmarc.<domain>`, receivers walk up the DNS
//! tree (at most 8 queries, no Public Suffix List) and apply what they find there: verify
//! walks the same way and says which policy applies. Report addresses in another domain are
//! authorized by that domain (`<domain>._report._dmarc.<dest>`, RFC 9990).

use mail_auth::common::parse::TxtRecordParser as _;
use mail_auth::dmarc::Dmarc;

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
        [] => {
            let found = walk_up(ctx, domain, &mut evidence).await;
            let applies = match found {
                Some((name, record)) => format!(
                    "; receivers walk up the DNS tree and apply {name}'s `{record}` instead"
                ),
                None => {
                    "; walking up the DNS tree finds none either: receivers apply no policy to forgeries"
                        .to_string()
                }
            };
            builder
                .evidence(evidence)
                .fail(format!("no DMARC record at {name} (removed?){applies}"), fix)
        }
        [one] => compare(builder.evidence(evidence), one, &expected_text, fix),
        many => builder.evidence(evidence).fail(
            format!(
                "{} DMARC records: receivers then apply none (RFC 9989 §4.10)",
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

/// The tags RFC 9989 removed from DMARC; receivers ignore them.
const REMOVED_TAGS: [&str; 3] = ["pct", "rf", "ri"];

/// A DMARC record's tags other than `v` and the removed ones, names lowercased, for comparing
/// two records tag for tag whatever their order and spacing.
fn tags(text: &str) -> Result<std::collections::BTreeMap<String, String>, String> {
    Ok(taglist::parse(text)?
        .into_iter()
        .map(|(t, v)| (t.to_ascii_lowercase(), v))
        .filter(|(t, _)| t != "v" && !REMOVED_TAGS.contains(&t.as_str()))
        .collect())
}

fn compare(
    builder: crate::verify::report::CheckBuilder,
    published: &str,
    expected: &str,
    fix: String,
) -> crate::verify::Check {
    if let Err(e) = Dmarc::parse(published.as_bytes()) {
        return builder.fail(format!("the record does not parse ({e})"), fix);
    }
    let got = match tags(published) {
        Ok(t) => t,
        Err(e) => return builder.fail(format!("the record does not parse ({e})"), fix),
    };
    if tags(expected).ok().as_ref() != Some(&got) {
        return builder.fail(
            format!("the record does not match the site's policy: published `{published}`, the site says `{expected}`"),
            fix,
        );
    }
    let removed: Vec<&str> = taglist::parse(published)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(t, _)| {
            REMOVED_TAGS
                .iter()
                .find(|r| t.eq_ignore_ascii_case(r))
                .copied()
        })
        .collect();
    if !removed.is_empty() {
        return builder.warn(
            format!(
                "published as the site says, plus `{}`, which RFC 9989 removed: receivers ignore it",
                removed.join("`, `")
            ),
            format!("publish the record without it; {fix}"),
        );
    }
    let p = got.get("p").map(String::as_str).unwrap_or_default();
    let testing = got.get("t").is_some_and(|t| t.eq_ignore_ascii_case("y"));
    let np = got
        .get("np")
        .map(|np| format!(", non-existent subdomains np={np}"))
        .unwrap_or_default();
    if p.eq_ignore_ascii_case("none") {
        return builder.warn(
            format!("published as the site says, with p=none{np}: receivers only report, they take no action on forgeries"),
            "set dmarc.p to quarantine (then reject) in the site file once the reports are clean, and publish the new record",
        );
    }
    if testing {
        return builder.warn(
            format!("published as the site says, in testing mode (t=y){np}: receivers apply p={p} one step milder"),
            "remove `t: true` from the site's dmarc once the reports are clean, and publish the new record",
        );
    }
    builder.pass(format!(
        "published as the site says: p={p}{np}: {published}"
    ))
}

/// The names RFC 9989's DNS tree walk asks, in order, after `_dmarc.<domain>` itself: with
/// more than 7 labels it jumps to the last 7, then drops the leftmost label one at a time
/// down to one label. At most 8 queries in all, the first included.
fn walk_names(domain: &str) -> Vec<String> {
    let labels: Vec<&str> = domain.trim_end_matches('.').split('.').collect();
    let n = labels.len();
    let mut start = if n > 7 { n - 7 } else { 1 };
    let mut names = Vec::new();
    while start < n {
        names.push(format!("_dmarc.{}", labels[start..].join(".")));
        start += 1;
    }
    names
}

/// Walks up from `domain` as receivers do when `_dmarc.<domain>` has no record; returns the
/// first name holding exactly one DMARC record, with it.
async fn walk_up<R: Resolver, D: Dialer>(
    ctx: &Context<R, D>,
    domain: &DomainName,
    evidence: &mut Vec<String>,
) -> Option<(String, String)> {
    for name in walk_names(domain.as_str()) {
        let Ok(records) = ask(&ctx.resolver, &name, RecordType::Txt, evidence).await else {
            continue;
        };
        if let [one] = texts(&records)
            .into_iter()
            .filter(|t| is_dmarc(t))
            .collect::<Vec<_>>()
            .as_slice()
        {
            return Some((name, one.clone()));
        }
    }
    None
}

/// Same domain, or one inside the other. (Narrower than RFC 9989's organizational domain,
/// which takes a DNS tree walk: a sibling subdomain is checked as foreign, which at worst asks
/// for an authorization record that is harmless to publish.)
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
    use super::{same_organization, tags, walk_names};

    #[test]
    fn the_tree_walk_asks_at_most_eight_names_jumping_to_the_last_seven_labels() {
        assert_eq!(walk_names("example.com"), ["_dmarc.com"]);
        assert_eq!(
            walk_names("mail.example.com"),
            ["_dmarc.example.com", "_dmarc.com"]
        );
        assert_eq!(walk_names("com"), Vec::<String>::new());
        let deep = "a.b.c.d.e.f.g.h.i.example.com";
        let names = walk_names(deep);
        assert_eq!(names.len(), 7, "7 after the first query: 8 in all");
        assert_eq!(names[0], "_dmarc.e.f.g.h.i.example.com");
        assert_eq!(names[6], "_dmarc.com");
    }

    #[test]
    fn records_compare_tag_for_tag_without_the_removed_tags() {
        assert_eq!(
            tags("v=DMARC1; p=reject; t=y; np=reject"),
            tags("v=DMARC1;NP=reject ; p=reject;t=y; pct=100; ri=3600")
        );
        assert_ne!(tags("v=DMARC1; p=reject; t=y"), tags("v=DMARC1; p=reject"));
        assert_ne!(
            tags("v=DMARC1; p=reject; np=none"),
            tags("v=DMARC1; p=reject; np=reject")
        );
    }

    #[test]
    fn report_domains_inside_the_domain_need_no_authorization() {
        assert!(same_organization("example.com", "example.com"));
        assert!(same_organization("example.com", "reports.example.com"));
        assert!(same_organization("mail.example.com", "example.com"));
        assert!(!same_organization("example.com", "example.net"));
        assert!(!same_organization("example.com", "badexample.com"));
    }
}
