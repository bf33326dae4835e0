//! DKIM: every active and retired selector publishes a record that parses, whose public key is
//! the key in the secrets store. A mismatch (a stale paste after a rotation) fails: receivers
//! would reject every signature made with the real key.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::{RESOLVER_FIX, ask, texts};
use crate::site::DomainName;
use crate::verify::dns::{LookupError, RecordType, Resolver};
use crate::verify::net::Dialer;
use crate::verify::report::CheckBuilder;
use crate::verify::taglist;
use crate::verify::{Check, Context, Section};

pub(super) async fn check<R: Resolver, D: Dialer>(
    ctx: &Context<R, D>,
    domain: &DomainName,
) -> Vec<Check> {
    let dkim = &ctx.site.domains[domain].dkim;
    if dkim.selectors.is_empty() && dkim.retired.is_empty() {
        return vec![Check::of(Section::Dkim, domain.as_str()).domain(domain).warn(
            "no DKIM selectors: mail from this domain is unsigned, so DMARC rests on SPF alone (which forwarding breaks)",
            format!("add dkim.selectors to {domain} in the site file (docs/site.md), then `mailbake dkim keygen SITE {domain}` and publish the records"),
        )];
    }
    let mut out = Vec::new();
    for (selector, retired) in dkim
        .selectors
        .keys()
        .map(|s| (s, false))
        .chain(dkim.retired.keys().map(|s| (s, true)))
    {
        out.push(one(ctx, domain, selector.as_str(), retired).await);
    }
    out
}

/// A parsed DKIM key record: the key type and the decoded key bytes.
#[derive(Debug, PartialEq, Eq)]
struct KeyRecord {
    kind: String,
    key: Vec<u8>,
}

/// Parses a DKIM key record (RFC 6376 §3.6.1) and checks that its key decodes as a key of its
/// type; `Err` says what is wrong.
fn parse_key_record(text: &str) -> Result<KeyRecord, String> {
    let tags = taglist::parse(text)?;
    if let Some(v) = taglist::get(&tags, "v")
        && (v != "DKIM1" || tags.first().map(|(t, _)| t.as_str()) != Some("v"))
    {
        return Err(format!("`v={v}` must be `v=DKIM1` and come first"));
    }
    let kind = taglist::get(&tags, "k")
        .unwrap_or("rsa")
        .to_ascii_lowercase();
    let p = taglist::get(&tags, "p").ok_or("there is no `p=` (public key) tag")?;
    let p: String = p.chars().filter(|c| !c.is_whitespace()).collect();
    if p.is_empty() {
        return Err("`p=` is empty: the key is revoked".into());
    }
    let key = BASE64
        .decode(p.as_bytes())
        .map_err(|e| format!("`p=` is not base64: {e}"))?;
    match kind.as_str() {
        "rsa" => {
            use rsa::pkcs8::DecodePublicKey as _;
            rsa::PublicKey::from_public_key_der(&key)
                .map_err(|e| format!("`p=` is not an RSA public key: {e}"))?;
        }
        "ed25519" => {
            let bytes: [u8; 32] = key
                .as_slice()
                .try_into()
                .map_err(|_| format!("an Ed25519 key has 32 bytes, `p=` has {}", key.len()))?;
            ed25519_dalek::VerifyingKey::from_bytes(&bytes)
                .map_err(|e| format!("`p=` is not an Ed25519 public key: {e}"))?;
        }
        other => {
            return Err(format!(
                "`k={other}` is not a key type receivers know (rsa, ed25519)"
            ));
        }
    }
    Ok(KeyRecord { kind, key })
}

async fn one<R: Resolver, D: Dialer>(
    ctx: &Context<R, D>,
    domain: &DomainName,
    selector: &str,
    retired: bool,
) -> Check {
    let name = format!("{selector}._domainkey.{domain}");
    let role = if retired {
        "retired selector"
    } else {
        "selector"
    };
    let builder = Check::of(Section::Dkim, name.clone()).domain(domain);
    let mut evidence = Vec::new();
    let expected = ctx
        .dkim
        .get(&(domain.to_string(), selector.to_string()))
        .cloned()
        .unwrap_or_else(|| Err("not looked up".into()));
    let fix = match &expected {
        Ok(value) => format!(
            "publish the store's key (mailbake dns SITE prints it):\n{name}. IN TXT \"{value}\""
        ),
        Err(_) => format!(
            "generate the key with `mailbake dkim keygen SITE {domain}` (or point --secrets at the store that has it), then publish its record"
        ),
    };
    let published = match ask(&ctx.resolver, &name, RecordType::Txt, &mut evidence).await {
        Ok(records) => texts(&records),
        Err(LookupError::NxDomain) => Vec::new(),
        Err(e) => {
            return builder
                .evidence(evidence)
                .fail(format!("the TXT lookup failed: {e}"), RESOLVER_FIX);
        }
    };
    let text = match published.as_slice() {
        [] => {
            let why = if retired {
                "not published: mail signed with it before the rotation no longer verifies"
            } else {
                "not published: receivers cannot verify the signatures"
            };
            return builder
                .evidence(evidence)
                .fail(format!("{role} {why}"), fix);
        }
        [one] => one,
        many => {
            return builder.evidence(evidence).fail(
                format!(
                    "{} TXT records at {name}; verifiers may pick either",
                    many.len()
                ),
                format!("keep exactly one; {fix}"),
            );
        }
    };
    let record = match parse_key_record(text) {
        Ok(r) => r,
        Err(why) => {
            return builder
                .evidence(evidence)
                .fail(format!("the record does not parse: {why}"), fix);
        }
    };
    judge_against_store(builder, evidence, &record, expected, role, fix)
}

/// The published key (`record`, parsed) against the store's (`expected`): the same key passes.
fn judge_against_store(
    builder: CheckBuilder,
    mut evidence: Vec<String>,
    record: &KeyRecord,
    expected: Result<String, String>,
    role: &str,
    fix: String,
) -> Check {
    let expected = match expected {
        Ok(value) => value,
        Err(why) => {
            evidence.push(format!("secrets store: {why}"));
            return builder.evidence(evidence).fail(
                "the record parses, but there is no key in the secrets store to compare it with",
                fix,
            );
        }
    };
    match parse_key_record(&expected) {
        Ok(want) if want == *record => builder.evidence(evidence).pass(format!(
            "{role} published; its {} key is the one in the secrets store",
            record.kind
        )),
        Ok(_) => builder.evidence(evidence).fail(
            "the published key is not the key in the secrets store (a stale paste?): every signature will fail",
            fix,
        ),
        Err(why) => builder
            .evidence(evidence)
            .fail(format!("the store's own record does not parse: {why}"), fix),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_records_parse_and_check_their_key() {
        let ed = "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=";
        assert_eq!(
            parse_key_record(ed).map(|r| r.kind).as_deref(),
            Ok("ed25519")
        );
        assert!(
            parse_key_record("v=DKIM1; k=ed25519; p=AAAA")
                .unwrap_err()
                .contains("32 bytes")
        );
        assert!(
            parse_key_record("v=DKIM1; k=rsa; p=")
                .unwrap_err()
                .contains("revoked")
        );
        assert!(
            parse_key_record("v=DKIM1; k=rsa; p=AAAA")
                .unwrap_err()
                .contains("RSA")
        );
        assert!(
            parse_key_record("k=rsa; v=DKIM1; p=AAAA")
                .unwrap_err()
                .contains("first")
        );
        assert!(
            parse_key_record("v=DKIM1; k=dsa; p=AAAA")
                .unwrap_err()
                .contains("dsa")
        );
    }
}
