//! The seed stage: per-host cloud-init seeds carrying what the shared image must not: the
//! host's identity (fqdn = PTR name = chasquid's greeting), its network addresses, and the
//! site's secrets (users databases, DKIM keys, TLS key, ACME credentials).
//!
//! For every host this makes:
//! - `user-data` ([`user_data`]): `#cloud-config` that also works alone as provider-API
//!   user-data; it stages the secret files under `/run/mailbake/seed/` and the image's
//!   `mailbake-apply-seed.service` installs them atomically and restarts chasquid once;
//! - `network-config` ([`network`]): netplan v2 with the static IPv6 /64 and IPv4 DHCP or static;
//! - `meta-data` ([`meta`]): `instance-id` = digest of the two files above, so a changed seed
//!   re-applies at the next boot and an unchanged one is a no-op;
//! - `seed.img` ([`image`]): a NoCloud vfat volume labelled `cidata` holding the three files,
//!   byte-for-byte reproducible.
//!
//! Everything here is a pure function of the site and the secrets store: no clock, no
//! randomness, sorted output. The files are secret: [`output_files`] marks them 0600.

pub mod image;
mod material;
pub mod meta;
pub mod network;
pub mod user_data;

use std::path::PathBuf;

use crate::output::OutputFile;
use crate::secrets::{SecretStore, SecretsError};
use crate::site::{Host, HostName, LoadedSite, Site};

pub use material::{Material, TlsPair};
pub use user_data::StagedFile;

/// Why a seed could not be made. Every message names the file or the site entry involved and
/// the command or edit that fixes it.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("secrets store {path}: {source}")]
    Store {
        path: PathBuf,
        #[source]
        source: SecretsError,
    },

    #[error(
        "user {local}@{domain} is listed in {site} but has no password hash in {path}\n  fix: `mailbake user add {site} {local}@{domain}`"
    )]
    MissingUser {
        local: String,
        domain: String,
        site: PathBuf,
        path: PathBuf,
    },

    #[error(
        "user {local}@{domain} has a password hash in {path} but is not in {site}'s `domains.{domain}.users`; every seed would let it log in\n  fix: add it to the site file, or `mailbake user remove {site} {local}@{domain}`"
    )]
    UnlistedUser {
        local: String,
        domain: String,
        site: PathBuf,
        path: PathBuf,
    },

    #[error(
        "DKIM selector {selector} of {domain} is listed in {site} but has no private key ({path})\n  fix: `mailbake dkim keygen {site} {domain}` (then publish the record `mailbake dns` prints)"
    )]
    MissingDkimKey {
        domain: String,
        selector: String,
        site: PathBuf,
        path: PathBuf,
    },

    #[error(
        "DKIM selector {selector} of {domain} is declared as {declared} in the site file but the key in {path} is {actual}\n  fix: correct `domains.{domain}.dkim.selectors.{selector}` in the site file, or generate a new key under a new selector"
    )]
    DkimMismatch {
        domain: String,
        selector: String,
        declared: &'static str,
        actual: String,
        path: PathBuf,
    },

    #[error(
        "{site} configures `tls.acme` (provider {provider}) but the secrets store has no {path}\n  fix: write the DNS provider's credentials there as lego environment variables, one NAME=value per line (e.g. for rfc2136: RFC2136_NAMESERVER=..., RFC2136_TSIG_KEY=..., RFC2136_TSIG_SECRET=...), mode 0600"
    )]
    MissingAcmeEnv {
        site: PathBuf,
        provider: String,
        path: PathBuf,
    },

    #[error(
        "{path}:{line}: not a NAME=value line; systemd reads this file as an EnvironmentFile\n  fix: write one NAME=value per line (`#` starts a comment)"
    )]
    BadAcmeEnv { path: PathBuf, line: usize },

    #[error(
        "{site} sets `tls.files: true` but {path} is missing\n  fix: copy the {what} there (PEM, mode 0600), or remove `tls.files` to let each host make a self-signed certificate at first boot"
    )]
    MissingTlsFile {
        site: PathBuf,
        path: PathBuf,
        what: &'static str,
    },

    #[error(
        "{path} does not look like {what} (no `{marker}` PEM block)\n  fix: supply {what} in PEM format"
    )]
    BadTlsFile {
        path: PathBuf,
        what: &'static str,
        marker: &'static str,
    },

    #[error("host {host}: cannot make seed.img: {source}")]
    Image {
        host: String,
        #[source]
        source: std::io::Error,
    },
}

/// One host's seed.
#[derive(Clone, Debug)]
pub struct HostSeed {
    pub host: String,
    pub fqdn: String,
    pub user_data: Vec<u8>,
    pub meta_data: Vec<u8>,
    pub network_config: Vec<u8>,
    pub instance_id: String,
    /// The NoCloud volume holding the three files.
    pub image: Vec<u8>,
}

/// Builds the seed of every host of the site, with the secrets from `store` (opened by
/// [`crate::secrets::open_for_site`]; `None` for a site that keeps no secret). All secrets are
/// read and checked before any seed is made, so a missing one fails the whole build, never
/// half of it.
pub fn build(loaded: &LoadedSite, store: Option<&SecretStore>) -> Result<Vec<HostSeed>, SeedError> {
    let material = Material::collect(loaded, store)?;
    let site = &loaded.site;
    site.hosts
        .iter()
        .map(|(name, host)| build_host(site, name, host, &material))
        .collect()
}

/// The seed of one host, from secrets already collected by [`Material::collect`].
pub fn build_host(
    site: &Site,
    name: &HostName,
    host: &Host,
    material: &Material,
) -> Result<HostSeed, SeedError> {
    let user_data = user_data::render(site, name, host, material).into_bytes();
    let network_config = network::render(name, host).into_bytes();
    let instance_id = meta::instance_id(&user_data, &network_config);
    let meta_data = meta::render(&instance_id, host).into_bytes();
    let image = image::build(&[
        ("meta-data", &meta_data),
        ("network-config", &network_config),
        ("user-data", &user_data),
    ])
    .map_err(|source| SeedError::Image {
        host: name.to_string(),
        source,
    })?;
    Ok(HostSeed {
        host: name.to_string(),
        fqdn: host.fqdn.to_string(),
        user_data,
        meta_data,
        network_config,
        instance_id,
        image,
    })
}

/// The build's output files for `seeds`: `hosts/<host>/seed/{user-data,meta-data,network-config}`
/// and `hosts/<host>/seed.img`, all 0600 (they carry password hashes and private keys).
pub fn output_files(seeds: &[HostSeed]) -> Vec<OutputFile> {
    seeds
        .iter()
        .flat_map(|s| {
            let dir = format!("hosts/{}", s.host);
            [
                OutputFile::secret(format!("{dir}/seed/user-data"), s.user_data.clone()),
                OutputFile::secret(format!("{dir}/seed/meta-data"), s.meta_data.clone()),
                OutputFile::secret(
                    format!("{dir}/seed/network-config"),
                    s.network_config.clone(),
                ),
                OutputFile::secret(format!("{dir}/seed.img"), s.image.clone()),
            ]
        })
        .collect()
}
