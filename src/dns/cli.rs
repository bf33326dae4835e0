//! `mailbake dns SITE [--host H] [--format zone|table|json] [--secrets DIR]`.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;

use super::{DkimLookup, Options, json, records, table, zone};
use crate::secrets::{self, SecretStore};
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
    let store = secrets::open_for_site(&loaded, &store_path)?;
    let dkim = DkimLookup::from_store(store.as_ref());
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
