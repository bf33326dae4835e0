//! The secrets store and the crypto material that goes into per-host seeds: chasquid users
//! databases (scrypt password hashes) and DKIM private keys.
//!
//! Secrets never enter the site file (it lives in git) nor the image (it is public): they live
//! in a directory of their own, by default `secrets/` beside the site file, and only the seed
//! stage copies them out.
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
//! └── acme.env                      0600  DNS-provider credentials for ACME (see [`ACME_ENV`])
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
//! - **Plaintext passwords are never stored**; only chasquid's scrypt hash.
//! - **Names are path components**, so domains, local parts and selectors are checked against a
//!   strict ASCII subset before any path is built (no `..`, no `/`).

pub mod cli;
mod dkim;
mod error;
mod names;
mod password;
mod store;
mod textproto;
mod userdb;

pub use dkim::{DkimAlgorithm, DkimKey, KeyKind, MIN_RSA_BITS, dns_txt_value, generate};
pub use error::{KeyError, SecretsError};
pub use names::{normalize_domain, normalize_local_part, validate_selector};
pub use password::{
    MIN_PASSWORD_CHARS, Password, SMTP_LINE_LIMIT, max_password_bytes, read_password_from,
    read_password_twice_from_tty,
};
pub use store::{ACME_ENV, SecretStore};
pub use userdb::{
    Credential, SCRYPT_KEY_LEN, SCRYPT_LOG_N, SCRYPT_P, SCRYPT_R, SCRYPT_SALT_LEN, ScryptHash,
    UserDb, hash_password,
};
