//! `mailbake verify SITE [--host H] [--resolver ADDR[:PORT]] [--format text|json]
//! [--only SECTION]... [--ca FILE] [--dnsbl ZONE]... [--secrets DIR]`.
//!
//! Exit status: 0 when no check fails (warnings allowed), 1 when one does, 2 for bad usage.

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;

use super::live::{DirectDialer, LiveResolver};
use super::{Context, Section, Trust, dkim_keys, run};
use crate::secrets::SecretStore;
use crate::site::{self, DnsName, HostName};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Checks grouped by section, with evidence and fixes.
    Text,
    /// One JSON document (schema in docs/verify.md).
    Json,
}

#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// The site file (YAML).
    pub site: PathBuf,
    /// Only this host's checks (domain-wide checks still cover every host).
    #[arg(long, value_name = "H", value_parser = parse_host)]
    pub host: Option<HostName>,
    /// Ask only this DNS server (port 53 unless given; `[v6]:port` for IPv6), never the
    /// system's resolvers [default: the system's resolvers].
    #[arg(long, value_name = "ADDR[:PORT]", value_parser = parse_resolver)]
    pub resolver: Option<SocketAddr>,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Run only these sections (repeat the option for several).
    #[arg(long = "only", value_enum, value_name = "SECTION")]
    pub only: Vec<Section>,
    /// Trust exactly the CA certificates in this PEM file instead of the system store.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// DNSBL zones to look the hosts' addresses up in (repeat for several)
    /// [default: zen.spamhaus.org, bl.spamcop.net].
    #[arg(long = "dnsbl", value_name = "ZONE", value_parser = parse_zone)]
    pub dnsbl: Vec<DnsName>,
    /// Secrets store holding the DKIM keys to compare with [default: secrets/ beside the site
    /// file].
    #[arg(long, value_name = "DIR")]
    pub secrets: Option<PathBuf>,
}

fn parse_host(text: &str) -> Result<HostName, String> {
    HostName::try_from(text)
}

fn parse_zone(text: &str) -> Result<DnsName, String> {
    DnsName::try_from(text)
}

/// `ADDR`, `ADDR:PORT` or `[V6]:PORT`; port 53 when none is given.
pub fn parse_resolver(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        if addr.port() == 0 {
            return Err(format!(
                "`{text}` has port 0, which no DNS server listens on; give its port (53 if you leave it out)"
            ));
        }
        return Ok(addr);
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, 53));
    }
    Err(format!(
        "`{text}` is not a DNS server address; write an IP address with an optional port: 192.0.2.53, 192.0.2.53:5353, [2001:db8::53]:53"
    ))
}

/// Runs the checks and prints the report; `Ok(true)` when a check failed.
pub fn run_cli(args: &VerifyArgs) -> anyhow::Result<bool> {
    let loaded = site::load(&args.site)?;
    let trust = match &args.ca {
        Some(path) => Trust::from_pem_file(path)?,
        None => Trust::system(),
    };
    let store_path = args
        .secrets
        .clone()
        .unwrap_or_else(|| SecretStore::default_path(&args.site));
    let store = SecretStore::open(&store_path).map_err(|e| {
        format!(
            "cannot open the secrets store {}: {e} (pass --secrets DIR)",
            store_path.display()
        )
    });
    let dkim = dkim_keys(&loaded.site, store.as_ref().map_err(String::as_str));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let report = runtime.block_on(async {
        let resolver = LiveResolver::new(args.resolver)?;
        let ctx = Context::new(
            loaded.site.clone(),
            dkim,
            args.host.as_ref(),
            args.dnsbl.iter().map(|z| z.to_string()).collect(),
            resolver,
            DirectDialer,
            trust,
        )?;
        anyhow::Ok(run(Arc::new(ctx), &args.only).await)
    })?;
    let text = match args.format {
        Format::Text => report.to_text(),
        Format::Json => report.to_json(),
    };
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .context("writing the report to standard output")?;
    Ok(report.failed())
}

#[cfg(test)]
mod tests {
    use super::parse_resolver;

    #[test]
    fn resolvers_take_an_optional_port() {
        assert_eq!(
            parse_resolver("192.0.2.53").unwrap().to_string(),
            "192.0.2.53:53"
        );
        assert_eq!(parse_resolver("127.0.0.1:5353").unwrap().port(), 5353);
        assert_eq!(
            parse_resolver("[::1]:5353").unwrap().to_string(),
            "[::1]:5353"
        );
        assert_eq!(parse_resolver("2001:db8::53").unwrap().port(), 53);
        assert!(
            parse_resolver("ns.example.com")
                .unwrap_err()
                .contains("not a DNS server")
        );
        for zero in ["127.0.0.1:0", "[::1]:0"] {
            let said = parse_resolver(zero).unwrap_err();
            assert!(said.contains(&format!("`{zero}` has port 0")), "{said}");
        }
    }
}
