//! The one rule for when a site needs its secrets store, and opening the store by it.
//!
//! `build`, `boot` and `dns` all read the store; each used to decide on its own whether a
//! missing store was an error. Now [`needs`] says what a site keeps in the store and
//! [`open_for_site`] applies it once per command: an existing store is always opened and
//! checked (a leaky store is reported even when nothing in it is needed), a missing one is
//! fine exactly when the site keeps no secret (only forwarding aliases, say).

use std::fmt;
use std::path::Path;

use super::SecretsError;
use super::store::{ACME_ENV, SecretStore, TLS_FULLCHAIN, TLS_PRIVKEY};
use crate::site::{DomainName, LoadedSite, Site};

/// Something a site keeps in its secrets store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Need {
    /// The domain lists users: their password hashes.
    Users(DomainName),
    /// The domain has DKIM selectors, signing or retired: their private keys (the DNS records
    /// are derived from them).
    DkimKeys(DomainName),
    /// `tls.acme`: the DNS provider's credentials.
    AcmeCredentials,
    /// `tls.files`: the certificate chain and its key.
    TlsFiles,
}

impl fmt::Display for Need {
    /// What the store holds for this need and the command or step that puts it there.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Need::Users(domain) => write!(
                f,
                "the password hashes of {domain}'s users: `mailbake user add SITE USER@{domain}`"
            ),
            Need::DkimKeys(domain) => write!(
                f,
                "the DKIM keys of {domain}: `mailbake dkim keygen SITE {domain}`"
            ),
            Need::AcmeCredentials => write!(
                f,
                "the DNS provider's credentials for tls.acme: NAME=value lines in {ACME_ENV}"
            ),
            Need::TlsFiles => write!(
                f,
                "the certificate of tls.files: {TLS_FULLCHAIN} and {TLS_PRIVKEY}"
            ),
        }
    }
}

/// Everything `site` keeps in its store, in site order; empty when it needs no store.
pub fn needs(site: &Site) -> Vec<Need> {
    let mut out = Vec::new();
    for (name, domain) in site.domains.iter() {
        if !domain.users.is_empty() {
            out.push(Need::Users(name.clone()));
        }
        if !domain.dkim.selectors.is_empty() || !domain.dkim.retired.is_empty() {
            out.push(Need::DkimKeys(name.clone()));
        }
    }
    if site.tls.acme.is_some() {
        out.push(Need::AcmeCredentials);
    }
    if site.tls.files {
        out.push(Need::TlsFiles);
    }
    out
}

/// Opens the store at `path` for `loaded`: `Some` when it exists (and its permissions check
/// out), `None` when it does not and the site needs none, an error naming everything the
/// store would have to hold when the site needs one.
pub fn open_for_site(
    loaded: &LoadedSite,
    path: &Path,
) -> Result<Option<SecretStore>, SecretsError> {
    // `exists` follows symlinks, as `open` does: a store may live on another volume.
    if path.exists() {
        return SecretStore::open(path).map(Some);
    }
    let needs = needs(&loaded.site);
    if needs.is_empty() {
        return Ok(None);
    }
    Err(SecretsError::StoreNeeded {
        site: loaded.path.clone(),
        path: path.to_path_buf(),
        needs: needs.iter().map(|n| format!("\n  - {n}")).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loaded(yaml: &str, dir: &Path) -> LoadedSite {
        let path = dir.join("site.yaml");
        match crate::site::parse(&path, yaml) {
            Ok(site) => LoadedSite {
                site,
                path,
                dir: dir.to_path_buf(),
            },
            Err(e) => panic!("{}", e.render(false)),
        }
    }

    const FORWARDING_ONLY: &str = "site: s\ndomains:\n  example.com:\n    aliases: { \"*\": someone@example.net }\nhosts:\n  mx1: { fqdn: mx1.example.com, ipv4: 192.0.2.1 }\n";

    #[test]
    fn a_forwarding_only_site_needs_no_store() {
        let dir = tempfile::tempdir().unwrap();
        let site = loaded(FORWARDING_ONLY, dir.path());
        assert!(needs(&site.site).is_empty());
        let opened = open_for_site(&site, &dir.path().join("secrets")).unwrap();
        assert!(opened.is_none());
    }

    #[test]
    fn a_missing_store_names_everything_it_would_hold() {
        let dir = tempfile::tempdir().unwrap();
        let yaml = FORWARDING_ONLY.replace(
            "    aliases:",
            "    users: [i]\n    dkim: { retired: { old: ed25519 } }\n    aliases:",
        ) + "tls: { files: true }\n";
        let site = loaded(&yaml, dir.path());
        let example = DomainName::try_from("example.com").unwrap();
        assert_eq!(
            needs(&site.site),
            [
                Need::Users(example.clone()),
                Need::DkimKeys(example),
                Need::TlsFiles
            ]
        );
        let err = open_for_site(&site, &dir.path().join("secrets")).unwrap_err();
        let msg = err.to_string();
        for part in [
            "site.yaml needs a secrets store",
            "mailbake user add SITE USER@example.com",
            "mailbake dkim keygen SITE example.com",
            TLS_FULLCHAIN,
            "--secrets DIR",
        ] {
            assert!(msg.contains(part), "`{part}` missing from:\n{msg}");
        }
    }
}
