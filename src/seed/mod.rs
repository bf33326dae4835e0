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
pub mod meta;
pub mod network;
pub mod user_data;

use std::path::{Path, PathBuf};

use crate::output::OutputFile;
use crate::secrets::{ACME_ENV, SecretStore, SecretsError};
use crate::site::{Host, HostName, Site};

pub use user_data::{StagedFile, TLS_FULLCHAIN, TLS_PRIVKEY};

/// Why a seed could not be made. Every message names the file or the site entry involved and
/// the command or edit that fixes it.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error(
        "{site} needs secrets (users, DKIM keys or TLS material) but the secrets store {path} does not exist\n  fix: create it with `mailbake init`, add the users with `mailbake user add {site} USER@DOMAIN` and the keys with `mailbake dkim keygen {site} DOMAIN`, or pass --secrets DIR"
    )]
    NoStore { site: PathBuf, path: PathBuf },

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

/// Builds the seed of every host of `site`. `site_path` appears in messages (the fix commands
/// take it); `secrets` is the store directory. All secrets are read and checked before any
/// seed is made, so a missing one fails the whole build, never half of it.
pub fn build(site: &Site, site_path: &Path, secrets: &Path) -> Result<Vec<HostSeed>, SeedError> {
    let material = collect(site, site_path, secrets)?;
    site.hosts
        .iter()
        .map(|(name, host)| build_host(site, name, host, &material))
        .collect()
}

/// The seed of one host, from secrets already collected by [`collect`].
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

/// The site-wide secret material every host's seed carries, read and checked once.
#[derive(Clone, Debug, Default)]
pub struct Material {
    /// Users databases, DKIM keys and acme.env at their destination paths, sorted by path.
    pub files: Vec<StagedFile>,
    /// Certificate chain and private key when the site provides them (`tls.files`).
    pub tls: Option<(Vec<u8>, Vec<u8>)>,
}

/// True when the site cannot be served without a secrets store.
fn needs_secrets(site: &Site) -> bool {
    site.tls.acme.is_some()
        || site.tls.files
        || site
            .domains
            .values()
            .any(|d| !d.users.is_empty() || !d.dkim.selectors.is_empty())
}

/// Reads and checks every secret the site's seeds need.
pub fn collect(site: &Site, site_path: &Path, secrets: &Path) -> Result<Material, SeedError> {
    if !secrets.exists() && !needs_secrets(site) {
        // A site without users, DKIM, ACME or TLS files has nothing secret; do not insist on
        // an empty store.
        return Ok(Material::default());
    }
    if !secrets.exists() {
        return Err(SeedError::NoStore {
            site: site_path.to_path_buf(),
            path: secrets.to_path_buf(),
        });
    }
    let store_err = |source| SeedError::Store {
        path: secrets.to_path_buf(),
        source,
    };
    let store = SecretStore::open(secrets).map_err(store_err)?;
    let mut files = Vec::new();

    for (domain, spec) in site.domains.iter() {
        let users_path = store.users_path(domain);
        let db = store.user_db(domain).map_err(store_err)?;
        for local in &spec.users {
            if db.get(local.as_str()).is_none() {
                return Err(SeedError::MissingUser {
                    local: local.to_string(),
                    domain: domain.to_string(),
                    site: site_path.to_path_buf(),
                    path: users_path,
                });
            }
        }
        // The site file is the source of truth for who may log in; a hash left in the store
        // for someone no longer listed must not quietly keep working on every host.
        if let Some((local, _)) = db
            .users()
            .find(|(l, _)| !spec.users.iter().any(|u| u.as_str() == *l))
        {
            return Err(SeedError::UnlistedUser {
                local: local.to_string(),
                domain: domain.to_string(),
                site: site_path.to_path_buf(),
                path: users_path,
            });
        }
        if let Some(bytes) = store.user_db_bytes(domain).map_err(store_err)? {
            files.push(StagedFile::chasquid_secret(
                format!("/etc/chasquid/domains/{domain}/users"),
                bytes,
            ));
        }

        for (selector, algorithm) in spec.dkim.selectors.iter() {
            let path = store.dkim_path(domain, selector);
            let key = match store.dkim_key(domain, selector) {
                Ok(key) => key,
                Err(SecretsError::MissingKey { .. }) => {
                    return Err(SeedError::MissingDkimKey {
                        domain: domain.to_string(),
                        selector: selector.to_string(),
                        site: site_path.to_path_buf(),
                        path,
                    });
                }
                Err(e) => return Err(store_err(e)),
            };
            let actual = match key.kind() {
                crate::secrets::KeyKind::Ed25519 => "ed25519".to_string(),
                crate::secrets::KeyKind::Rsa { bits } => format!("rsa-{bits}"),
            };
            if actual != algorithm.as_str() {
                return Err(SeedError::DkimMismatch {
                    domain: domain.to_string(),
                    selector: selector.to_string(),
                    declared: algorithm.as_str(),
                    actual,
                    path,
                });
            }
            files.push(StagedFile::chasquid_secret(
                format!("/etc/chasquid/domains/{domain}/dkim:{selector}.pem"),
                key.pem().as_bytes().to_vec(),
            ));
        }
    }

    if let Some(acme) = &site.tls.acme {
        let path = secrets.join(ACME_ENV);
        let bytes = store
            .read_secret(ACME_ENV)
            .map_err(store_err)?
            .ok_or_else(|| SeedError::MissingAcmeEnv {
                site: site_path.to_path_buf(),
                provider: acme.provider.to_string(),
                path: path.clone(),
            })?;
        check_env_file(&bytes, &path)?;
        files.push(StagedFile::root_only(
            "/etc/mailbake/acme.env".into(),
            bytes.to_vec(),
        ));
    }

    let tls = if site.tls.files {
        let read = |name: &str, what: &'static str, marker: &'static str| {
            let path = secrets.join(name);
            let bytes = store.read_secret(name).map_err(store_err)?.ok_or_else(|| {
                SeedError::MissingTlsFile {
                    site: site_path.to_path_buf(),
                    path: path.clone(),
                    what,
                }
            })?;
            if !String::from_utf8_lossy(&bytes).contains(marker) {
                return Err(SeedError::BadTlsFile { path, what, marker });
            }
            Ok(bytes.to_vec())
        };
        Some((
            read(
                TLS_FULLCHAIN,
                "certificate chain",
                "-----BEGIN CERTIFICATE-----",
            )?,
            read(TLS_PRIVKEY, "private key", "PRIVATE KEY-----")?,
        ))
    } else {
        None
    };

    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(Material { files, tls })
}

/// acme.env becomes a systemd EnvironmentFile: refuse what systemd would misread.
fn check_env_file(bytes: &[u8], path: &Path) -> Result<(), SeedError> {
    let text = String::from_utf8_lossy(bytes);
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let name = line.split('=').next().unwrap_or("");
        let name_ok = line.contains('=')
            && !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with(|c: char| c.is_ascii_digit());
        if !name_ok {
            return Err(SeedError::BadAcmeEnv {
                path: path.to_path_buf(),
                line: n + 1,
            });
        }
    }
    Ok(())
}
