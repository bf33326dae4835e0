//! lego's state in the secrets store: the site's ACME account and each host's certificate,
//! kept so that a rebuild or a reinstall re-issues nothing (`mailbake cert` fills it, the
//! seeds carry it).
//!
//! The directory `acme/` of the store *is* a lego state directory (what lego's `--path`
//! points at), in lego's own layout, so lego reads and writes it unchanged on the operator's
//! machine and, copied by the seed to `/var/lib/mailbake/acme`, on the host:
//!
//! ```text
//! acme/accounts/<server>/<email>/account.json     the account's registration (its URI at the CA)
//! acme/accounts/<server>/<email>/keys/<email>.key the account's private key
//! acme/certificates/<fqdn>.crt                     a host's certificate chain (leaf first)
//! acme/certificates/<fqdn>.key                     its private key
//! acme/certificates/<fqdn>.issuer.crt              the issuer's certificate
//! acme/certificates/<fqdn>.json                    lego's metadata (the certificate's URL at the CA)
//! ```
//! `<server>` is the directory URL's `host[:port]` with `:` written `_` (lego's rule);
//! `<fqdn>` is the host's name, the first name on its certificate.
//!
//! Updates never touch the live directory: [`SecretStore::begin_acme_update`] copies it into
//! a private work directory under the store's lock, lego works there, and
//! [`AcmeUpdate::commit`] swaps the two directories with one `renameat2(RENAME_EXCHANGE)`.
//! A certificate and its key therefore always change together, and a failed or interrupted
//! run leaves the stored state exactly as it was.

use std::ffi::CString;
use std::fs::{self, File};
use std::io;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use super::error::SecretsError;
use super::store::{DIR_MODE, FILE_MODE, LockGuard, SecretStore, read_private};
use crate::site::DomainName;

/// The store's directory holding lego's state.
pub const ACME_DIR: &str = "acme";
/// Prefix of the work directories of [`AcmeUpdate`] (dot files: never listed as secrets).
const WORK_PREFIX: &str = ".tmp-acme-";
/// Prefix of the directory holding the pinned lego binary, its log and its temporary files
/// while `mailbake cert` runs ([`SecretStore::lego_dir`]).
const LEGO_PREFIX: &str = ".tmp-lego-";
/// Every kind of private work directory a run keeps in the store. Each is named
/// `<prefix><pid>-<random>` ([`crate::workdir`]) and created 0700, so the store stays
/// checkable while it exists and a killed run's leftovers can be told from a live run's.
pub(super) const WORK_PREFIXES: [&str; 2] = [WORK_PREFIX, LEGO_PREFIX];

/// Where lego keeps the account of one ACME directory and e-mail address, relative to its
/// state directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LegoAccount {
    dir: String,
    email: String,
}

impl LegoAccount {
    /// The account of `email` at the ACME directory `directory` (an `https://` URL).
    pub fn new(directory: &str, email: &str) -> Result<LegoAccount, SecretsError> {
        let invalid = |what: &'static str, value: &str, reason: &str| SecretsError::InvalidName {
            what,
            value: value.to_string(),
            reason: reason.to_string(),
        };
        let rest = directory
            .strip_prefix("https://")
            .ok_or_else(|| invalid("ACME directory", directory, "not an https:// URL"))?;
        // lego names the directory after the URL's host and port (Go's url.Host: no user
        // information, `:` as `_`).
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        let host = authority.rsplit('@').next().unwrap_or("").replace(':', "_");
        if host.is_empty() || host.starts_with('.') {
            return Err(invalid("ACME directory", directory, "it has no host"));
        }
        // The address is a path component of lego's (and the store's) layout; `check`
        // applies the same rule, so a site that passes it never fails here.
        if let Some(problem) = crate::site::acme_email_problem(email) {
            return Err(invalid("ACME account e-mail", email, &problem));
        }
        Ok(LegoAccount {
            dir: format!("accounts/{host}/{email}"),
            email: email.to_string(),
        })
    }

    /// The registration (`account.json`).
    pub fn registration(&self) -> String {
        format!("{}/account.json", self.dir)
    }

    /// The account's private key.
    pub fn key(&self) -> String {
        format!("{}/keys/{}.key", self.dir, self.email)
    }
}

/// lego's files of one host's certificate, relative to its state directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LegoCertificate {
    /// The chain, leaf first (what chasquid serves as `fullchain.pem`).
    pub chain: String,
    /// Its private key (chasquid's `privkey.pem`).
    pub key: String,
    pub issuer: String,
    /// lego's metadata (the certificate's URL, used to revoke it).
    pub resource: String,
}

impl LegoCertificate {
    /// The files of the certificate whose first name is `fqdn` (lego names them after it).
    pub fn of(fqdn: &DomainName) -> LegoCertificate {
        let stem = format!("certificates/{fqdn}");
        LegoCertificate {
            chain: format!("{stem}.crt"),
            key: format!("{stem}.key"),
            issuer: format!("{stem}.issuer.crt"),
            resource: format!("{stem}.json"),
        }
    }

    /// Every file, chain and key first.
    pub fn files(&self) -> [&str; 4] {
        [&self.chain, &self.key, &self.issuer, &self.resource]
    }
}

impl SecretStore {
    /// The store's lego state directory (which need not exist).
    pub fn acme_dir(&self) -> PathBuf {
        self.root().join(ACME_DIR)
    }

    /// A file of lego's state (`rel` as [`LegoAccount`] and [`LegoCertificate`] name them);
    /// `None` if absent.
    pub fn read_acme(&self, rel: &str) -> Result<Option<Zeroizing<Vec<u8>>>, SecretsError> {
        if rel.starts_with('/') || rel.split('/').any(|c| c.is_empty() || c == "..") {
            return Err(SecretsError::InvalidName {
                what: "lego state file",
                value: rel.to_string(),
                reason: "must be a relative path inside acme/".into(),
            });
        }
        read_private(&self.acme_dir().join(rel))
    }

    /// A private directory (0700 from its creation) in the store for the pinned lego: its
    /// binary, its log and its temporary files, which thus never reach the system's temporary
    /// directory. Removed on drop; after a `kill -9` the store's next opening removes it.
    pub fn lego_dir(&self) -> Result<tempfile::TempDir, SecretsError> {
        crate::workdir::create(self.root(), LEGO_PREFIX)
            .map_err(|e| SecretsError::io("create a directory for lego in", self.root(), e))
    }

    /// Starts an update of lego's state: takes the store's lock (held until the update is
    /// committed or dropped) and copies the state into a private work directory for lego.
    /// Work directories a crashed run left behind are removed first: nothing else can be
    /// using them while the lock is held.
    pub fn begin_acme_update(&self) -> Result<AcmeUpdate<'_>, SecretsError> {
        let lock = self.lock()?;
        remove_stale_work_dirs(self.root())?;
        let work = crate::workdir::create(self.root(), WORK_PREFIX)
            .map_err(|e| SecretsError::io("create a work directory in", self.root(), e))?;
        let live = self.acme_dir();
        if live.exists() {
            copy_private_tree(&live, work.path())?;
        }
        Ok(AcmeUpdate {
            store: self,
            work,
            _lock: lock,
        })
    }
}

/// A private copy of lego's state being updated; dropping it discards the changes.
pub struct AcmeUpdate<'a> {
    store: &'a SecretStore,
    work: tempfile::TempDir,
    _lock: LockGuard,
}

impl AcmeUpdate<'_> {
    /// The work directory: lego's `--path` for this update.
    pub fn path(&self) -> &Path {
        self.work.path()
    }

    /// Makes the work directory the store's state in one atomic step, then removes the old
    /// state. Modes are made private first (lego writes 0600/0700, but its files pass through
    /// the caller's umask and lego's own choices, and the store refuses anything looser).
    pub fn commit(self) -> Result<(), SecretsError> {
        make_tree_private(self.work.path())?;
        let live = self.store.acme_dir();
        if live.exists() {
            exchange(self.work.path(), &live)?;
        } else {
            fs::rename(self.work.path(), &live)
                .map_err(|e| SecretsError::io("rename into place", &live, e))?;
        }
        File::open(self.store.root())
            .and_then(|d| d.sync_all())
            .map_err(|e| SecretsError::io("sync directory", self.store.root(), e))?;
        // The work path now holds the previous state (or nothing): the TempDir's drop
        // removes it.
        Ok(())
    }
}

/// Swaps two directories atomically (Linux `renameat2` with `RENAME_EXCHANGE`).
fn exchange(a: &Path, b: &Path) -> Result<(), SecretsError> {
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|_| SecretsError::io("rename", p, io::ErrorKind::InvalidInput.into()))
    };
    let (ca, cb) = (c(a)?, c(b)?);
    // SAFETY: both paths are valid NUL-terminated strings that outlive the call; AT_FDCWD
    // makes them relative to the working directory, as std's rename does.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc != 0 {
        return Err(SecretsError::io(
            "swap in the new ACME state at",
            b,
            io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Removes the work directories whose run is gone (see [`WORK_PREFIXES`]). The caller holds
/// the store's lock, so no update is in progress: a work directory whose owner is not running
/// (or whose name carries no owner, as an older mailbake named them) is a killed run's.
pub(super) fn remove_stale_work_dirs(root: &Path) -> Result<(), SecretsError> {
    for path in stale_work_dirs(root)? {
        fs::remove_dir_all(&path)
            .map_err(|e| SecretsError::io("remove the stale work directory", &path, e))?;
    }
    Ok(())
}

/// The work directories in `root` whose owner process is gone.
pub(super) fn stale_work_dirs(root: &Path) -> Result<Vec<PathBuf>, SecretsError> {
    let entries = fs::read_dir(root).map_err(|e| SecretsError::Unreadable {
        path: root.to_path_buf(),
        source: e,
    })?;
    let mut stale = Vec::new();
    for entry in entries.flatten() {
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if let Some(prefix) = work_prefix(&name)
            && is_dir
            && !crate::workdir::owner_alive(&name, prefix)
        {
            stale.push(entry.path());
        }
    }
    stale.sort();
    Ok(stale)
}

/// The work-directory prefix `name` starts with, if any.
pub(super) fn work_prefix(name: &str) -> Option<&'static str> {
    WORK_PREFIXES.into_iter().find(|p| name.starts_with(p))
}

/// Copies the plain files and directories under `from` into `to` (which exists), with the
/// store's modes. Anything else is refused, as the store refuses it.
fn copy_private_tree(from: &Path, to: &Path) -> Result<(), SecretsError> {
    let entries = fs::read_dir(from).map_err(|e| SecretsError::Unreadable {
        path: from.to_path_buf(),
        source: e,
    })?;
    for entry in entries {
        let entry = entry.map_err(|e| SecretsError::Unreadable {
            path: from.to_path_buf(),
            source: e,
        })?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let meta = fs::symlink_metadata(&src).map_err(|e| SecretsError::Unreadable {
            path: src.clone(),
            source: e,
        })?;
        if meta.is_dir() {
            fs::create_dir(&dst)
                .and_then(|()| fs::set_permissions(&dst, fs::Permissions::from_mode(DIR_MODE)))
                .map_err(|e| SecretsError::io("create directory", &dst, e))?;
            copy_private_tree(&src, &dst)?;
        } else if meta.is_file() {
            let bytes = read_private(&src)?.unwrap_or_default();
            fs::write(&dst, &*bytes)
                .and_then(|()| fs::set_permissions(&dst, fs::Permissions::from_mode(FILE_MODE)))
                .map_err(|e| SecretsError::io("write", &dst, e))?;
        } else {
            return Err(SecretsError::NotPlain { path: src });
        }
    }
    Ok(())
}

/// Sets every directory under `dir` (and `dir`) to 0700 and every file to 0600; refuses
/// symbolic links and special files.
fn make_tree_private(dir: &Path) -> Result<(), SecretsError> {
    fs::set_permissions(dir, fs::Permissions::from_mode(DIR_MODE))
        .map_err(|e| SecretsError::io("chmod", dir, e))?;
    let entries = fs::read_dir(dir).map_err(|e| SecretsError::Unreadable {
        path: dir.to_path_buf(),
        source: e,
    })?;
    for entry in entries.flatten() {
        let path = entry.path();
        let meta = fs::symlink_metadata(&path).map_err(|e| SecretsError::Unreadable {
            path: path.clone(),
            source: e,
        })?;
        if meta.is_dir() {
            make_tree_private(&path)?;
        } else if meta.is_file() {
            fs::set_permissions(&path, fs::Permissions::from_mode(FILE_MODE))
                .map_err(|e| SecretsError::io("chmod", &path, e))?;
        } else {
            return Err(SecretsError::NotPlain { path });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_are_where_lego_puts_them() {
        let a = LegoAccount::new("https://198.51.100.14:14000/dir", "ops@example.com").unwrap();
        assert_eq!(
            a.registration(),
            "accounts/198.51.100.14_14000/ops@example.com/account.json"
        );
        assert_eq!(
            a.key(),
            "accounts/198.51.100.14_14000/ops@example.com/keys/ops@example.com.key"
        );
        let le = LegoAccount::new(
            "https://acme-v02.api.letsencrypt.org/directory",
            "ops@example.com",
        )
        .unwrap();
        assert_eq!(
            le.registration(),
            "accounts/acme-v02.api.letsencrypt.org/ops@example.com/account.json"
        );
        let v6 = LegoAccount::new("https://[2001:db8::14]:14000/dir", "a@b.c").unwrap();
        assert_eq!(
            v6.registration(),
            "accounts/[2001_db8__14]_14000/a@b.c/account.json"
        );
    }

    #[test]
    fn an_address_that_would_leave_the_directory_is_refused() {
        for email in [
            "a/b@example.com",
            ".hidden@example.com",
            "",
            "a`b@example.com",
            "ops.@example.com",
        ] {
            let err = LegoAccount::new("https://ca.test/dir", email).unwrap_err();
            assert!(
                err.to_string().contains("invalid ACME account e-mail"),
                "{err}"
            );
        }
        assert!(LegoAccount::new("http://ca.test/dir", "a@b.c").is_err());
    }

    #[test]
    fn certificates_are_named_after_the_host() {
        let fqdn = DomainName::try_from("smtp.example.com").unwrap();
        let c = LegoCertificate::of(&fqdn);
        assert_eq!(
            c.files(),
            [
                "certificates/smtp.example.com.crt",
                "certificates/smtp.example.com.key",
                "certificates/smtp.example.com.issuer.crt",
                "certificates/smtp.example.com.json"
            ]
        );
    }

    fn store() -> (tempfile::TempDir, SecretStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SecretStore::create(dir.path().join("secrets")).unwrap();
        (dir, store)
    }

    fn write(path: &Path, data: &[u8]) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, data).unwrap();
    }

    #[test]
    fn a_committed_update_replaces_the_whole_state_with_private_modes() {
        let (_dir, store) = store();
        let first = store.begin_acme_update().unwrap();
        write(&first.path().join("certificates/a.crt"), b"one");
        // As if lego had run under a lax umask.
        fs::set_permissions(
            first.path().join("certificates/a.crt"),
            fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        first.commit().unwrap();
        assert_eq!(
            &*store.read_acme("certificates/a.crt").unwrap().unwrap(),
            b"one"
        );

        let second = store.begin_acme_update().unwrap();
        assert_eq!(
            fs::read(second.path().join("certificates/a.crt")).unwrap(),
            b"one",
            "an update starts from the stored state"
        );
        write(&second.path().join("certificates/a.crt"), b"two");
        write(&second.path().join("certificates/a.key"), b"key two");
        second.commit().unwrap();
        assert_eq!(
            &*store.read_acme("certificates/a.crt").unwrap().unwrap(),
            b"two"
        );
        assert_eq!(
            &*store.read_acme("certificates/a.key").unwrap().unwrap(),
            b"key two"
        );
        // Reopening checks every mode: nothing group- or world-accessible, no work dir left.
        SecretStore::open(store.root()).unwrap();
        let leftovers: Vec<_> = fs::read_dir(store.root())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(WORK_PREFIX))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn a_dropped_update_leaves_the_state_as_it_was() {
        let (_dir, store) = store();
        let first = store.begin_acme_update().unwrap();
        write(&first.path().join("certificates/a.crt"), b"kept");
        first.commit().unwrap();
        {
            let failed = store.begin_acme_update().unwrap();
            write(&failed.path().join("certificates/a.crt"), b"half");
            // lego failed: the update is dropped, not committed.
        }
        assert_eq!(
            &*store.read_acme("certificates/a.crt").unwrap().unwrap(),
            b"kept"
        );
        assert!(store.read_acme("../acme.env").is_err());
    }
}
