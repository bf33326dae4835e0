//! The `dns` stage: the DNS records a site needs published, in three formats.
//!
//! Everything a receiving server checks before it trusts our mail lives in DNS, and none of it
//! can be baked into the image: MX and A/AAAA so senders find the hosts, PTR so the hosts'
//! addresses name them back (walkthrough steps 1 and 8), SPF, DKIM and DMARC so receivers can
//! tell our mail from forgeries (steps 6, 12, 13), and optionally MTA-STS and TLS-RPT.
//!
//! [`records`](fn@records) turns a [`Site`](crate::site::Site) (plus the public halves of the DKIM keys in
//! the secrets store) into a [`RecordSet`]; [`zone`], [`table`] and [`json`] render it:
//!
//! - `zone`: zone-file fragments, one per zone, with absolute names. They carry no SOA or NS
//!   records on purpose: those belong to whoever hosts the zone, and a fragment that brought
//!   its own would clash with them. Paste the records into the existing zone.
//! - `table`: what a person types into a registrar's web form, names relative to the domain.
//! - `json`: a stable array for tools (and for the tests, which verify DKIM signatures against
//!   exactly what this prints).
//!
//! Output is deterministic: the same site and keys give the same bytes.

pub mod cli;
pub mod json;
mod records;
pub mod table;
pub mod zone;

pub use records::{
    DkimLookup, MtaStsPolicy, Options, Record, RecordData, RecordSet, Warning, ZoneKind, records,
    reverse_name,
};

use crate::output::OutputFile;
use crate::secrets::{SecretStore, SecretsError};
use crate::site::LoadedSite;

/// Why the records could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error(
        "DKIM record for selector `{selector}` of {domain}: {source}\n  (the DNS record is derived from the private key; mailbake never invents one)"
    )]
    DkimKey {
        domain: String,
        selector: String,
        // Boxed: SecretsError is large and this is the cold path.
        #[source]
        source: Box<SecretsError>,
    },

    #[error(
        "retired DKIM selector `{selector}` of {domain} has no key in the secrets store, so its record cannot be published\n  fix: restore the key from a backup of the store, or remove `{selector}` from `domains.{domain}.dkim.retired` (mail it signed stops verifying)"
    )]
    RetiredKeyMissing { domain: String, selector: String },

    #[error(
        "no host `{host}` in the site; its hosts are: {known}\n  fix: pass one of them to --host"
    )]
    UnknownHost { host: String, known: String },
}

/// The DNS files `mailbake build` adds to its output, under `dns/`:
/// `<zone>.zone` for every zone, `records.json`, `records.txt` (the registrar table) and
/// `mta-sts.<domain>.txt` for every domain with MTA-STS.
///
/// The DKIM records come from `store`, the same store the build's seeds are made from, so
/// what is published matches what the hosts sign with (`None` for a site without secrets,
/// see [`crate::secrets::needs`]).
pub fn build_outputs(
    loaded: &LoadedSite,
    store: Option<&SecretStore>,
) -> Result<(Vec<OutputFile>, Vec<String>), DnsError> {
    let set = records(
        &loaded.site,
        &Options {
            host: None,
            dkim: DkimLookup::from_store(store),
        },
    )?;
    let mut files = Vec::new();
    for (zone_name, text) in zone::render_zones(&loaded.site.site, &set) {
        files.push(OutputFile::public(
            format!("dns/{zone_name}.zone"),
            text.into_bytes(),
        ));
    }
    files.push(OutputFile::public(
        "dns/records.json",
        json::render(&set).into_bytes(),
    ));
    files.push(OutputFile::public(
        "dns/records.txt",
        table::render(&set).into_bytes(),
    ));
    for policy in &set.mta_sts {
        files.push(OutputFile::public(
            format!("dns/mta-sts.{}.txt", policy.domain),
            policy.text.clone().into_bytes(),
        ));
    }
    Ok((
        files,
        set.warnings.iter().map(|w| w.message.clone()).collect(),
    ))
}
