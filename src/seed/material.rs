//! The secret material of a site's seeds: read from the secrets store and checked against
//! the site file once, before any seed is made.

use std::collections::BTreeMap;

use super::SeedError;
use super::files::StagedFile;
use crate::cert::{StoredCertificate, unix_now};
use crate::secrets::{
    ACME_ENV, KeyKind, LegoAccount, LegoCertificate, SecretStore, SecretsError, TLS_FULLCHAIN,
    TLS_PRIVKEY,
};
use crate::site::certificate_host_names as host_names;
use crate::site::{Domain, DomainName, Host, LoadedSite};

/// lego's state directory on the host: `acme-renew`'s `state=` (layers/acme), where the seed
/// puts the store's account and certificate so the host's lego renews them instead of
/// starting over.
pub const HOST_ACME_STATE: &str = "/var/lib/mailbake/acme";

/// The site-wide secret material every host's seed carries, read and checked once.
#[derive(Clone, Debug, Default)]
pub struct Material {
    /// Users databases, DKIM keys and acme.env at their destination paths, sorted by path.
    pub files: Vec<StagedFile>,
    /// Certificate chain and private key when the site provides them (`tls.files`).
    pub tls: Option<TlsPair>,
    /// lego's state from the store (`mailbake cert`), for sites with `tls.acme`.
    pub acme: AcmeMaterial,
}

/// What the store's lego state gives the seeds: the site's ACME account, and each host's
/// stored certificate when it can be served.
#[derive(Clone, Debug, Default)]
pub struct AcmeMaterial {
    /// The account's registration and key at their place in the host's lego state; empty
    /// when the store has no account for the site's directory and e-mail.
    pub account: Vec<StagedFile>,
    /// By host fqdn: the stored certificate its seed carries.
    pub certificates: BTreeMap<String, HostCertificate>,
    /// By host fqdn: why its seed carries none (for the build's report).
    pub absent: BTreeMap<String, String>,
}

/// A host's stored certificate: lego's files for the host's lego state, and the pair
/// chasquid serves from the first boot (the same bytes, so `acme-renew` sees its own
/// certificate installed).
#[derive(Clone, Debug)]
pub struct HostCertificate {
    pub lego_files: Vec<StagedFile>,
    pub pair: TlsPair,
    pub certificate: StoredCertificate,
}

/// The site's own certificate (`tls.files`), the same for every host.
#[derive(Clone, Debug)]
pub struct TlsPair {
    pub fullchain: Vec<u8>,
    pub privkey: Vec<u8>,
}

/// Reads secrets from one store for one site, turning store errors into seed errors that
/// name the site file's fix.
struct Reader<'a> {
    loaded: &'a LoadedSite,
    store: &'a SecretStore,
}

impl Material {
    /// Reads and checks every secret the site's seeds need. `store` is `None` only for a site
    /// that keeps no secret ([`crate::secrets::needs`] is empty), which has nothing to collect.
    pub fn collect(
        loaded: &LoadedSite,
        store: Option<&SecretStore>,
    ) -> Result<Material, SeedError> {
        let Some(store) = store else {
            debug_assert!(crate::secrets::needs(&loaded.site).is_empty());
            return Ok(Material::default());
        };
        let reader = Reader { loaded, store };
        let mut files = Vec::new();
        for (name, domain) in loaded.site.domains.iter() {
            files.extend(reader.users_file(name, domain)?);
            files.extend(reader.dkim_files(name, domain)?);
        }
        files.extend(reader.acme_env()?);
        let tls = reader.tls_pair()?;
        let acme = reader.acme_state()?;
        files.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(Material { files, tls, acme })
    }
}

impl Reader<'_> {
    fn store_err(&self, source: SecretsError) -> SeedError {
        SeedError::Store {
            path: self.store.root().to_path_buf(),
            source,
        }
    }

    /// The users database of `name`, after checking it holds exactly the site's users.
    fn users_file(
        &self,
        name: &DomainName,
        domain: &Domain,
    ) -> Result<Option<StagedFile>, SeedError> {
        let site = &self.loaded.path;
        let path = self.store.users_path(name);
        let db = self.store.user_db(name).map_err(|e| self.store_err(e))?;
        if let Some(local) = domain.users.iter().find(|u| db.get(u.as_str()).is_none()) {
            return Err(SeedError::MissingUser {
                local: local.to_string(),
                domain: name.to_string(),
                site: site.clone(),
                path,
            });
        }
        // The site file is the source of truth for who may log in; a hash left in the store
        // for someone no longer listed must not quietly keep working on every host.
        if let Some((local, _)) = db
            .users()
            .find(|(l, _)| !domain.users.iter().any(|u| u.as_str() == *l))
        {
            return Err(SeedError::UnlistedUser {
                local: local.to_string(),
                domain: name.to_string(),
                site: site.clone(),
                path,
            });
        }
        let bytes = self
            .store
            .user_db_bytes(name)
            .map_err(|e| self.store_err(e))?;
        Ok(bytes.map(|bytes| {
            StagedFile::chasquid_secret(format!("/etc/chasquid/domains/{name}/users"), bytes)
        }))
    }

    /// The private key of every signing selector of `name`, each of the declared algorithm.
    fn dkim_files(&self, name: &DomainName, domain: &Domain) -> Result<Vec<StagedFile>, SeedError> {
        let mut files = Vec::new();
        for (selector, algorithm) in domain.dkim.selectors.iter() {
            let path = self.store.dkim_path(name, selector);
            let key = match self.store.dkim_key(name, selector) {
                Ok(key) => key,
                Err(SecretsError::MissingKey { .. }) => {
                    return Err(SeedError::MissingDkimKey {
                        domain: name.to_string(),
                        selector: selector.to_string(),
                        site: self.loaded.path.clone(),
                        path,
                    });
                }
                Err(e) => return Err(self.store_err(e)),
            };
            let actual = match key.kind() {
                KeyKind::Ed25519 => "ed25519".to_string(),
                KeyKind::Rsa { bits } => format!("rsa-{bits}"),
            };
            if actual != algorithm.as_str() {
                return Err(SeedError::DkimMismatch {
                    domain: name.to_string(),
                    selector: selector.to_string(),
                    declared: algorithm.as_str(),
                    actual,
                    path,
                });
            }
            files.push(StagedFile::chasquid_secret(
                format!("/etc/chasquid/domains/{name}/dkim:{selector}.pem"),
                key.pem().as_bytes().to_vec(),
            ));
        }
        Ok(files)
    }

    /// The ACME DNS-provider credentials, when the site uses ACME.
    fn acme_env(&self) -> Result<Option<StagedFile>, SeedError> {
        let Some(acme) = &self.loaded.site.tls.acme else {
            return Ok(None);
        };
        let path = self.store.root().join(ACME_ENV);
        let bytes = self
            .store
            .read_secret(ACME_ENV)
            .map_err(|e| self.store_err(e))?
            .ok_or_else(|| SeedError::MissingAcmeEnv {
                site: self.loaded.path.clone(),
                provider: acme.provider.to_string(),
                path: path.clone(),
            })?;
        // The file is shipped as is; reading it as `mailbake cert` does refuses whatever
        // systemd on the host could read otherwise.
        crate::cert::env_file::parse(&bytes, &path)?;
        Ok(Some(StagedFile::root_only(
            "/etc/mailbake/acme.env".into(),
            bytes.to_vec(),
        )))
    }

    /// The store's ACME account and every host's usable certificate. The one place a seed
    /// depends on the clock: an expired certificate is never put into a seed.
    fn acme_state(&self) -> Result<AcmeMaterial, SeedError> {
        let Some(acme) = &self.loaded.site.tls.acme else {
            return Ok(AcmeMaterial::default());
        };
        let account = LegoAccount::new(&acme.directory.0, acme.email.as_str())
            .map_err(|e| self.store_err(e))?;
        let mut material = AcmeMaterial::default();
        let registration = self.acme_file(&account.registration())?;
        let key = self.acme_file(&account.key())?;
        if let (Some(registration), Some(key)) = (registration, key) {
            material.account = vec![registration, key];
        }
        let now = unix_now();
        for host in self.loaded.site.hosts.values() {
            let fqdn = host.fqdn.to_string();
            match self.host_certificate(host, !material.account.is_empty(), now)? {
                Ok(cert) => {
                    material.certificates.insert(fqdn, cert);
                }
                Err(why) => {
                    material.absent.insert(fqdn, why);
                }
            }
        }
        Ok(material)
    }

    /// `host`'s stored certificate if it can be served now (for its names, not expired, with
    /// its key and the account); otherwise why not.
    fn host_certificate(
        &self,
        host: &Host,
        has_account: bool,
        now: i64,
    ) -> Result<Result<HostCertificate, String>, SeedError> {
        let files = LegoCertificate::of(&host.fqdn);
        let Some(chain) = self.acme_file(&files.chain)? else {
            return Ok(Err("no certificate in the secrets store".into()));
        };
        if !has_account {
            return Ok(Err(
                "the store has a certificate but no ACME account for the site's directory and e-mail".into(),
            ));
        }
        let certificate = match StoredCertificate::parse(&chain.data) {
            Ok(c) => c,
            Err(e) => return Ok(Err(format!("the stored certificate is unreadable ({e})"))),
        };
        if !certificate.names_match(&host_names(&self.loaded.site, &host.fqdn)) {
            return Ok(Err(
                "the stored certificate is for other names than the site's".into(),
            ));
        }
        if certificate.expired(now) {
            return Ok(Err(format!(
                "the stored certificate expired on {}",
                certificate.not_after_text
            )));
        }
        let Some(key) = self.acme_file(&files.key)? else {
            return Ok(Err("the stored certificate has no key".into()));
        };
        let pair = TlsPair {
            fullchain: chain.data.clone(),
            privkey: key.data.clone(),
        };
        let mut lego_files = vec![chain, key];
        for rel in [&files.issuer, &files.resource] {
            lego_files.extend(self.acme_file(rel)?);
        }
        Ok(Ok(HostCertificate {
            lego_files,
            pair,
            certificate,
        }))
    }

    /// A file of the store's lego state, staged at its place in the host's.
    fn acme_file(&self, rel: &str) -> Result<Option<StagedFile>, SeedError> {
        let bytes = self.store.read_acme(rel).map_err(|e| self.store_err(e))?;
        Ok(bytes.map(|b| StagedFile::root_only(format!("{HOST_ACME_STATE}/{rel}"), b.to_vec())))
    }

    /// The certificate chain and key, when the site sets `tls.files`.
    fn tls_pair(&self) -> Result<Option<TlsPair>, SeedError> {
        if !self.loaded.site.tls.files {
            return Ok(None);
        }
        let fullchain = self.tls_file(
            TLS_FULLCHAIN,
            "certificate chain",
            "-----BEGIN CERTIFICATE-----",
        )?;
        let privkey = self.tls_file(TLS_PRIVKEY, "private key", "PRIVATE KEY-----")?;
        Ok(Some(TlsPair { fullchain, privkey }))
    }

    fn tls_file(
        &self,
        name: &str,
        what: &'static str,
        marker: &'static str,
    ) -> Result<Vec<u8>, SeedError> {
        let path = self.store.root().join(name);
        let bytes = self
            .store
            .read_secret(name)
            .map_err(|e| self.store_err(e))?
            .ok_or_else(|| SeedError::MissingTlsFile {
                site: self.loaded.path.clone(),
                path: path.clone(),
                what,
            })?;
        if !String::from_utf8_lossy(&bytes).contains(marker) {
            return Err(SeedError::BadTlsFile { path, what, marker });
        }
        Ok(bytes.to_vec())
    }
}
