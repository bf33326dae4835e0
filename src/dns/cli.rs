//! `mailbake dns SITE [--host H] [--format zone|table|json] [--secrets DIR]`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;

use super::{DkimLookup, DnsError, Options, json, records, table, zone};
use crate::secrets::SecretStore;
use crate::site::{self, HostName};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Zone-file fragments with absolute names (for a DNS server you run, or a provider that
    /// imports zone files).
    Zone,
    /// Host / Type / Value / TTL, for a registrar's web form.
    Table,
    /// A JSON array of records, for tools.
    Json,
}

#[derive(clap::Args, Debug)]
pub struct DnsArgs {
    /// The site file (YAML).
    pub site: PathBuf,
    /// Only this host's A, AAAA and PTR records (MX, SPF and the rest stay complete).
    #[arg(long, value_name = "H")]
    pub host: Option<String>,
    #[arg(long, value_enum, default_value_t = Format::Zone)]
    pub format: Format,
    /// Secrets store holding the DKIM keys [default: secrets/ beside the site file].
    #[arg(long, value_name = "DIR")]
    pub secrets: Option<PathBuf>,
}

pub fn run(args: &DnsArgs) -> anyhow::Result<()> {
    let loaded = site::load(&args.site)?;
    let host = args
        .host
        .as_deref()
        .map(|h| HostName::try_from(h).map_err(|why| anyhow::anyhow!("--host {h}: {why}")))
        .transpose()?;
    let store_path = args
        .secrets
        .clone()
        .unwrap_or_else(|| SecretStore::default_path(&args.site));
    // The store is only needed for DKIM records; a site without selectors works without one.
    let first_signed = loaded
        .site
        .domains
        .iter()
        .find(|(_, d)| !d.dkim.selectors.is_empty() || !d.dkim.retired.is_empty())
        .map(|(name, _)| name.to_string());
    let store = match first_signed {
        Some(domain) => {
            if !store_path.exists() {
                return Err(DnsError::NoSecretStore {
                    domain,
                    path: store_path,
                }
                .into());
            }
            Some(SecretStore::open(&store_path).map_err(|e| DnsError::Store(Box::new(e)))?)
        }
        None => None,
    };
    let dkim = match &store {
        Some(store) => DkimLookup::Require(store),
        None => DkimLookup::SkipMissing(None),
    };
    let set = records(
        &loaded.site,
        &Options {
            host: host.as_ref(),
            dkim,
        },
    )
    .with_context(|| format!("DNS records for {}", args.site.display()))?;
    let text = match args.format {
        Format::Zone => zone::render(&loaded.site.site, &set),
        Format::Table => table::render(&set),
        Format::Json => json::render(&set),
    };
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .context("writing the records to standard output")?;
    Ok(())
}
