//! The secrets store and the crypto material that goes into per-host seeds: chasquid users
//! databases (scrypt password hashes) and DKIM private keys.
//!
//! Secrets never enter the site file (it lives in git) nor the image (it is public): they live
//! in a directory of their own, by default `secrets/` beside the site file, and only the seed
//! stage copies them out. [`open_for_site`] opens it by the one rule for when a site needs
//! one ([`needs`]).
//!
//! # Store layout
//!
//! ```text
//! secrets/                          0700
//! ├── .lock                         0600  advisory lock serialising read-modify-write updates
//! ├── users/                        0700
//! │   └── <domain>                  0600  chasquid users database, chasquid's own text format:
//! │                                       copied verbatim to /etc/chasquid/domains/<domain>/users
//! ├── dkim/                         0700
//! │   └── <domain>/                 0700
//! │       └── <selector>.pem        0600  PKCS#8 `PRIVATE KEY` (RSA >= 2048 or Ed25519):
//! │                                       copied to /etc/chasquid/domains/<domain>/dkim:<selector>.pem
//! ├── acme.env                      0600  DNS-provider credentials for ACME (see [`ACME_ENV`])
//! ├── acme/                         0700  lego's state, in lego's own layout (see [`LegoAccount`],
//! │   │                                   [`LegoCertificate`]); written by `mailbake cert`
//! │   ├── accounts/<server>/<email>/account.json, keys/<email>.key
//! │   │                             0600  the site's ACME account: registration and key
//! │   └── certificates/<fqdn>.{crt,key,issuer.crt,json}
//! │                                 0600  each host's certificate chain, key, issuer, metadata
//! ├── tls-fullchain.pem             0600  with `tls.files`: the certificate chain ([`TLS_FULLCHAIN`])
//! └── tls-privkey.pem               0600  with `tls.files`: its private key ([`TLS_PRIVKEY`])
//! ```
//!
//! Rules the store enforces, and why:
//! - **Private modes.** Directories are created 0700 and files 0600. A store in which any entry
//!   is group- or world-accessible is refused (not silently fixed): a password hash or DKIM key
//!   that others could read must be treated as leaked, and the operator has to know.
//! - **Atomic writes.** Every file is written to a temporary file in the same directory, synced,
//!   then renamed over the target, and the directory is synced. An interrupted run leaves either
//!   the old or the new file, never half of one. chasquid >= 1.12 treats a malformed users file
//!   on reload as fatal, so a torn file would take the mail server down.
//! - **Whole-state updates for ACME.** `acme/` is replaced as one directory (a work copy
//!   swapped in with `RENAME_EXCHANGE`), so a certificate never meets another one's key.
//! - **Plaintext passwords are never stored**; only chasquid's scrypt hash.
//! - **Names are path components**, so the store only takes the site's typed names
//!   ([`DomainName`](crate::site::DomainName), [`LocalPart`](crate::site::LocalPart),
//!   [`Selector`](crate::site::Selector)): their validation already keeps them to a strict
//!   ASCII subset without `/` or `..`, and it is the same check the site file gets.

mod acme;
pub mod cli;
mod dkim;
mod error;
mod password;
mod required;
mod store;
pub(crate) mod textproto;
mod userdb;

pub use acme::{ACME_DIR, AcmeUpdate, LegoAccount, LegoCertificate};
pub use dkim::{DkimKey, KeyKind, MIN_RSA_BITS, dns_txt_value, generate};
pub use error::{KeyError, SecretsError};
pub use password::{
    MIN_PASSWORD_CHARS, Password, SMTP_LINE_LIMIT, max_password_bytes, read_password_from,
    read_password_twice_from_tty,
};
pub use required::{Need, needs, open_for_site};
pub use store::{ACME_ENV, SecretStore, TLS_FULLCHAIN, TLS_PRIVKEY};
pub use userdb::{
    Credential, SCRYPT_KEY_LEN, SCRYPT_LOG_N, SCRYPT_P, SCRYPT_R, SCRYPT_SALT_LEN, ScryptHash,
    UserDb, hash_password,
};
