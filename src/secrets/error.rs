//! Errors of the secrets store. Each message names the file involved and says how to fix it,
//! because the person reading it is an operator at a terminal, not a developer.

use std::io;
use std::path::PathBuf;

/// Anything that can go wrong reading or writing secrets.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error(
        "secrets store {path} does not exist\n  fix: create it with `mailbake init`, or point to the right directory"
    )]
    StoreMissing { path: PathBuf },

    #[error(
        "{} needs a secrets store, but {} does not exist; it would hold:{needs}\n  fix: create it with the commands above (SITE is the site file), or pass --secrets DIR if the store is elsewhere", site.display(), path.display()
    )]
    StoreNeeded {
        site: PathBuf,
        path: PathBuf,
        /// One `\n  - ` line per [`super::required::Need`].
        needs: String,
    },

    #[error(
        "{path} is {what} (mode {mode:04o}); secrets must be private to their owner\n  fix: chmod {fix_mode} '{path}' (and treat its contents as leaked if others could read it)"
    )]
    Insecure {
        path: PathBuf,
        what: &'static str,
        mode: u32,
        fix_mode: &'static str,
    },

    #[error(
        "{path} is a symbolic link or special file; the secrets store holds only plain files and directories\n  fix: replace it with the file it points to"
    )]
    NotPlain { path: PathBuf },

    #[error(
        "cannot read {path}: {source}\n  fix: make it readable by the user running mailbake and by no one else (e.g. `chown $(id -un) '{path}' && chmod u+rwX,go= '{path}'`: 0700 for a directory, 0600 for a file)"
    )]
    Unreadable {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error(
        "{path}:{line}: {message}\n  fix: restore this users database from backup, or remove it and add the users again"
    )]
    UserDbSyntax {
        path: PathBuf,
        line: usize,
        message: String,
    },

    #[error(
        "user {local}@{domain} does not exist in {path}\n  fix: add it with `mailbake user add SITE {local}@{domain}`"
    )]
    UnknownUser {
        local: String,
        domain: String,
        path: PathBuf,
    },

    #[error(
        "user {local}@{domain} already exists in {path}\n  fix: remove it first with `mailbake user remove SITE {local}@{domain}` to change its password"
    )]
    UserExists {
        local: String,
        domain: String,
        path: PathBuf,
    },

    #[error("invalid {what} {value:?}: {reason}")]
    InvalidName {
        what: &'static str,
        value: String,
        reason: String,
    },

    #[error(
        "password too short: {got} characters, at least {min} required\n  fix: choose a longer password (a few random words work well)"
    )]
    PasswordTooShort { got: usize, min: usize },

    #[error(
        "password too long: {got} bytes, but {address} can log in with at most {max}: chasquid reads SMTP lines of at most 1000 bytes and AUTH PLAIN sends the address and password base64-encoded on one\n  fix: choose a shorter password"
    )]
    PasswordTooLong {
        got: usize,
        max: usize,
        address: String,
    },

    #[error(
        "password contains a {what}, which SMTP AUTH cannot carry\n  fix: choose another password"
    )]
    PasswordInvalidChar { what: &'static str },

    #[error("the two passwords do not match\n  fix: type the same password twice")]
    PasswordMismatch,

    #[error("cannot read the password from {source_name}: {source}")]
    PasswordInput {
        source_name: &'static str,
        #[source]
        source: io::Error,
    },

    #[error(
        "no DKIM key for selector {selector:?} of {domain} (expected {path})\n  fix: generate one with `mailbake dkim keygen SITE {domain}`"
    )]
    MissingKey {
        domain: String,
        selector: String,
        path: PathBuf,
    },

    #[error(
        "DKIM key {path} already exists\n  fix: pick a new selector (DNS caches the old record), or pass --force to replace it"
    )]
    KeyExists { path: PathBuf },

    #[error("DKIM key {path}: {source}")]
    Key {
        path: PathBuf,
        #[source]
        source: KeyError,
    },

    #[error("the system random number generator failed: {0}")]
    Random(String),
}

/// A problem with DKIM key material itself, independent of where it is stored.
/// [`SecretsError::Key`] adds the file name.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "RSA key has {bits} bits, fewer than the {min} mailbake requires (RFC 8301 rejects < 1024 and receivers distrust 1024)\n  fix: generate a new key with `mailbake dkim keygen` under a new selector and publish its record"
    )]
    Weak { bits: usize, min: usize },

    #[error(
        "PKCS#1 `RSA PRIVATE KEY`, which chasquid rejects\n  fix: convert it with `openssl pkcs8 -topk8 -nocrypt -in OLD.pem -out NEW.pem`"
    )]
    Pkcs1,

    #[error(
        "encrypted private key; chasquid needs it unencrypted\n  fix: `openssl pkcs8 -topk8 -nocrypt -in OLD.pem -out NEW.pem` (keep the result at mode 0600)"
    )]
    Encrypted,

    #[error(
        "PEM block is {label:?}, expected \"PRIVATE KEY\" (PKCS#8)\n  fix: supply an unencrypted PKCS#8 RSA or Ed25519 private key"
    )]
    WrongLabel { label: String },

    #[error(
        "unsupported key algorithm {oid}; chasquid signs with RSA or Ed25519 only\n  fix: generate a key with `mailbake dkim keygen`"
    )]
    UnsupportedAlgorithm { oid: String },

    #[error("not a valid PEM private key: {0}")]
    Malformed(String),

    #[error("key generation failed: {0}")]
    Generation(String),
}

impl SecretsError {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        SecretsError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unreadable_fix_suits_directories_and_files() {
        let err = SecretsError::Unreadable {
            path: PathBuf::from("secrets/dkim"),
            source: io::ErrorKind::PermissionDenied.into(),
        };
        let text = err.to_string();
        assert!(!text.contains("chmod 600"), "{text}");
        assert!(
            text.contains("0700 for a directory, 0600 for a file"),
            "{text}"
        );
    }
}
