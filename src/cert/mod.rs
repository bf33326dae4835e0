//! `mailbake cert`: the hosts' ACME certificates, obtained where mailbake runs and kept in
//! the secrets store, so that rebuilding or reinstalling a host re-issues nothing.
//!
//! DNS-01 does not need the mail host, so the operator's machine (or CI) can get the
//! certificate: with the site's `tls.acme` settings and the store's `acme.env`, the pinned
//! lego (module `lego`) works on a copy of the store's lego state ([`crate::secrets::AcmeUpdate`])
//! which replaces the stored state whole once lego succeeded and its certificate checks out.
//! A stored certificate good for more than [`RENEW_DAYS`] days is reused without asking the
//! CA anything; within the window `lego renew` replaces it; with no certificate, other names
//! or no account `lego run` obtains one (registering the account once, then reusing it).
//!
//! `build` then puts a valid stored certificate, and the account, into each host's seed
//! (see [`crate::seed`]): chasquid serves it from the first boot, and the host's renewal
//! timer finds lego's state already there and renews it with the same account.
//!
//! A failure (CA or DNS provider down, bad credentials) changes nothing in the store: the
//! stored certificate stays, and the command exits non-zero with lego's own words.

pub mod cli;
pub mod env_file;
mod lego;
mod stored;

use std::path::PathBuf;

pub use lego::{Action, LegoFailed, PinnedLego, Request};
pub use stored::{Freshness, RENEW_DAYS, StoredCertificate, assess, unix_now};

/// Why `mailbake cert` could not do its job. Each message names the file or host and the fix.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error(
        "{site} has no `tls.acme`: `mailbake cert` obtains ACME certificates\n  fix: add `tls.acme` (provider, email) to the site file, see docs/site.md"
    )]
    NoAcme { site: PathBuf },

    #[error(transparent)]
    UnknownHost(#[from] crate::site::UnknownHost),

    #[error(
        "{site} configures `tls.acme` but the secrets store has no {path}\n  fix: write the DNS provider's credentials there as lego environment variables, one NAME=value per line, mode 0600"
    )]
    MissingAcmeEnv { site: PathBuf, path: PathBuf },

    #[error(transparent)]
    EnvFile(#[from] env_file::EnvFileError),

    #[error(
        "{lock} pins no `lego` package, which `mailbake cert` runs\n  fix: use the packages.lock shipped with mailbake, or pin lego in yours"
    )]
    LegoNotPinned { lock: PathBuf },

    #[error(
        "{package} ({path}) has no usr/bin/lego\n  fix: pin a lego package that ships the binary"
    )]
    LegoMissingFromPackage { package: String, path: PathBuf },

    /// Boxed: its words make it several times larger than the other variants.
    #[error(transparent)]
    Lego(Box<LegoRunFailed>),

    #[error(
        "{host} ({fqdn}): lego ended without {what} in {path}; the store is unchanged\n  fix: run `mailbake cert` again; if it persists, report it with lego's output:\n{said}"
    )]
    LegoResult {
        host: String,
        fqdn: String,
        what: String,
        path: PathBuf,
        said: String,
    },

    #[error("{failed} of {total} host(s) have no fresh certificate (see above)")]
    SomeFailed { failed: usize, total: usize },

    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(transparent)]
    Fetch(#[from] crate::fetch::FetchError),

    #[error(transparent)]
    Secrets(#[from] crate::secrets::SecretsError),
}

/// lego ran and failed for one host: what stays in the store, and lego's own words.
#[derive(Debug, thiserror::Error)]
#[error(
    "{host} ({fqdn}): lego {action} failed ({status}); {kept}\n  lego said:\n{said}\n  fix: check that the CA ({server}) and the DNS provider answer and that acme.env's credentials are right, then run `mailbake cert` again"
)]
pub struct LegoRunFailed {
    pub host: String,
    pub fqdn: String,
    pub action: &'static str,
    pub status: String,
    pub server: String,
    /// What stays in the store.
    pub kept: String,
    /// lego's last lines, indented.
    pub said: String,
}

impl CertError {
    fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> CertError {
        CertError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
