//! TLS-RPT, when the site enables it: `_smtp._tls` asks for reports at exactly the site's
//! addresses.

use std::collections::BTreeSet;

use mail_auth::common::parse::TxtRecordParser as _;
use mail_auth::mta_sts::{ReportUri, TlsRpt};

use super::{RESOLVER_FIX, ask, publish_txt, texts};
use crate::site::DomainName;
use crate::verify::dns::{LookupError, RecordType, Resolver};
use crate::verify::net::Dialer;
use crate::verify::{Check, Context, Section};

pub(super) async fn check<R: Resolver, D: Dialer>(
    ctx: &Context<R, D>,
    domain: &DomainName,
) -> Check {
    let name = format!("_smtp._tls.{domain}");
    let mut evidence = Vec::new();
    let builder = Check::of(Section::TlsRpt, name.clone()).domain(domain);
    let fix = publish_txt(ctx, &name);
    let want: BTreeSet<String> = ctx.site.domains[domain]
        .tls_rpt
        .iter()
        .flat_map(|t| t.rua.0.0.iter())
        .map(|uri| uri.address.to_string().to_ascii_lowercase())
        .collect();
    let records = match ask(&ctx.resolver, &name, RecordType::Txt, &mut evidence).await {
        Ok(r) => texts(&r),
        Err(LookupError::NxDomain) => Vec::new(),
        Err(e) => {
            return builder
                .evidence(evidence)
                .fail(format!("the TXT lookup failed: {e}"), RESOLVER_FIX);
        }
    };
    let rpt: Vec<&String> = records
        .iter()
        .filter(|t| t.to_ascii_lowercase().starts_with("v=tlsrptv1"))
        .collect();
    let one = match rpt.as_slice() {
        [] => {
            return builder.evidence(evidence).fail(
                "no TLS-RPT record: senders send no TLS failure reports",
                fix,
            );
        }
        [one] => one,
        many => {
            return builder.evidence(evidence).fail(
                format!("{} TLS-RPT records: senders then send none", many.len()),
                format!("keep exactly one; {fix}"),
            );
        }
    };
    let record = match TlsRpt::parse(one.as_bytes()) {
        Ok(r) => r,
        Err(e) => {
            return builder
                .evidence(evidence)
                .fail(format!("the record does not parse ({e})"), fix);
        }
    };
    let got: BTreeSet<String> = record
        .rua
        .iter()
        .map(|u| match u {
            ReportUri::Mail(a) => a.to_ascii_lowercase(),
            ReportUri::Http(url) => url.clone(),
        })
        .collect();
    if got == want {
        builder.evidence(evidence).pass(format!(
            "reports go to {}",
            want.iter().cloned().collect::<Vec<_>>().join(", ")
        ))
    } else {
        builder.evidence(evidence).fail(
            format!(
                "reports go to {}, the site says {}",
                got.iter().cloned().collect::<Vec<_>>().join(", "),
                want.iter().cloned().collect::<Vec<_>>().join(", ")
            ),
            fix,
        )
    }
}
