//! The on-disk secrets store; see the module documentation of [`crate::secrets`] for the
//! layout and the rules it keeps.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use super::dkim::{self, DkimKey};
use super::error::SecretsError;
use super::password::Password;
use super::userdb::{Credential, ScryptHash, UserDb};
use crate::site::{DkimAlgorithm, DomainName, LocalPart, Selector};

/// File name, at the store's top level, of the ACME DNS-provider credentials.
pub const ACME_ENV: &str = "acme.env";
/// File name, at the store's top level, of the certificate chain when the site sets `tls.files`.
pub const TLS_FULLCHAIN: &str = "tls-fullchain.pem";
/// File name, at the store's top level, of the certificate's private key (`tls.files`).
pub const TLS_PRIVKEY: &str = "tls-privkey.pem";

const USERS_DIR: &str = "users";
const DKIM_DIR: &str = "dkim";
const LOCK_FILE: &str = ".lock";
const TEMP_PREFIX: &str = ".tmp-";
pub(super) const DIR_MODE: u32 = 0o700;
pub(super) const FILE_MODE: u32 = 0o600;

/// A secrets directory whose permissions have been checked.
#[derive(Debug, Clone)]
pub struct SecretStore {
    root: PathBuf,
}

/// Holds the store's advisory lock until dropped (closing the file releases it).
pub(super) struct LockGuard(#[allow(dead_code)] File);

impl SecretStore {
    /// Where the store lives by default: `secrets/` beside the site file.
    pub fn default_path(site_file: &Path) -> PathBuf {
        site_file
            .parent()
            .unwrap_or_else(|| Path::new("."))
            .join("secrets")
    }

    /// Creates the store (mode 0700) if it does not exist, then opens it. Idempotent, so
    /// `mailbake init` can run again; an existing store must already be private.
    pub fn create(root: impl Into<PathBuf>) -> Result<Self, SecretsError> {
        let root = root.into();
        if !root.exists() {
            if let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty()) {
                fs::create_dir_all(parent)
                    .map_err(|e| SecretsError::io("create directory", parent, e))?;
            }
            make_private_dir(&root)?;
        }
        Self::open(root)
    }

    /// Opens an existing store, refusing it if anything in it is group/world-accessible,
    /// is not a plain file or directory, or cannot be read.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, SecretsError> {
        let root = root.into();
        // The root may be a symlink (e.g. to an encrypted volume); what it points to is checked.
        let meta = match fs::metadata(&root) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(SecretsError::StoreMissing { path: root });
            }
            Err(e) => {
                return Err(SecretsError::Unreadable {
                    path: root,
                    source: e,
                });
            }
        };
        if !meta.is_dir() {
            return Err(SecretsError::NotPlain { path: root });
        }
        check_mode(&root, &meta)?;
        let store = SecretStore { root };
        store.sweep_killed_runs()?;
        store.check_tree(&store.root.clone())?;
        Ok(store)
    }

    /// Removes the work directories of runs that were killed (`kill -9`, power loss) before
    /// they could clean up, so one such run never makes the store unusable. Only done when
    /// the store's lock is free: a holder of the lock may be mid-update, and it sweeps them
    /// itself when it starts the next one.
    fn sweep_killed_runs(&self) -> Result<(), SecretsError> {
        if super::acme::stale_work_dirs(&self.root)?.is_empty() {
            return Ok(());
        }
        let Some(_lock) = self.try_lock() else {
            return Ok(());
        };
        super::acme::remove_stale_work_dirs(&self.root)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Walks the store and refuses insecure or odd entries, so a leak is reported on every
    /// run rather than only when the affected file happens to be read.
    fn check_tree(&self, dir: &Path) -> Result<(), SecretsError> {
        let entries = fs::read_dir(dir).map_err(|e| SecretsError::Unreadable {
            path: dir.to_path_buf(),
            source: e,
        })?;
        let mut children = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| SecretsError::Unreadable {
                path: dir.to_path_buf(),
                source: e,
            })?;
            children.push(entry.path());
        }
        children.sort();
        for path in children {
            let meta = fs::symlink_metadata(&path).map_err(|e| SecretsError::Unreadable {
                path: path.clone(),
                source: e,
            })?;
            if !(meta.is_dir() || meta.is_file()) {
                return Err(SecretsError::NotPlain { path });
            }
            check_mode(&path, &meta)?;
            // A running command's work directory is private (checked just above) and holds
            // what lego writes, in lego's modes: its contents are not the store's, and become
            // so only through a commit that makes them private.
            let work_dir = dir == self.root
                && path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| super::acme::work_prefix(n).is_some());
            if meta.is_dir() && !work_dir {
                self.check_tree(&path)?;
            }
        }
        Ok(())
    }

    /// The store-wide lock if nobody holds it; `None` if it is held or cannot be taken (a
    /// read-only store, for one).
    fn try_lock(&self) -> Option<LockGuard> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(FILE_MODE)
            .open(self.root.join(LOCK_FILE))
            .ok()?;
        file.try_lock().ok()?;
        Some(LockGuard(file))
    }

    /// Takes the store-wide lock so two concurrent `mailbake user add` runs cannot each
    /// read the old database and lose the other's user.
    pub(super) fn lock(&self) -> Result<LockGuard, SecretsError> {
        let path = self.root.join(LOCK_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(FILE_MODE)
            .open(&path)
            .map_err(|e| SecretsError::io("open lock file", &path, e))?;
        file.lock()
            .map_err(|e| SecretsError::io("lock", &path, e))?;
        Ok(LockGuard(file))
    }

    // ---- users -------------------------------------------------------------------------

    /// Path of the users database of `domain` (which need not exist).
    pub fn users_path(&self, domain: &DomainName) -> PathBuf {
        self.root.join(USERS_DIR).join(domain.as_str())
    }

    /// The users database of `domain`; empty if the domain has none yet.
    pub fn user_db(&self, domain: &DomainName) -> Result<UserDb, SecretsError> {
        let path = self.users_path(domain);
        match read_private(&path)? {
            Some(bytes) => UserDb::parse(&bytes, &path),
            None => Ok(UserDb::new()),
        }
    }

    /// Adds `local@domain` with a scrypt hash of `password`; refuses an existing user so a
    /// typo cannot silently replace someone's password.
    pub fn add_user(
        &self,
        domain: &DomainName,
        local: &LocalPart,
        password: &Password,
    ) -> Result<(), SecretsError> {
        password.check_fits_auth(&format!("{local}@{domain}"))?;
        let _lock = self.lock()?;
        let path = self.users_path(domain);
        let mut db = self.user_db(domain)?;
        if db.get(local.as_str()).is_some() {
            return Err(SecretsError::UserExists {
                local: local.to_string(),
                domain: domain.to_string(),
                path,
            });
        }
        // Hash before touching the file: the slow part happens while nothing is half-done.
        let hash = ScryptHash::new_random(password)?;
        db.insert(local.to_string(), Credential::Scrypt(hash));
        self.write_private(&path, db.render().as_bytes())
    }

    /// Removes `local@domain`.
    pub fn remove_user(&self, domain: &DomainName, local: &LocalPart) -> Result<(), SecretsError> {
        let _lock = self.lock()?;
        let path = self.users_path(domain);
        let mut db = self.user_db(domain)?;
        if db.remove(local.as_str()).is_none() {
            return Err(SecretsError::UnknownUser {
                local: local.to_string(),
                domain: domain.to_string(),
                path,
            });
        }
        self.write_private(&path, db.render().as_bytes())
    }

    /// Local parts of `domain`'s users, sorted.
    pub fn list_users(&self, domain: &DomainName) -> Result<Vec<String>, SecretsError> {
        Ok(self
            .user_db(domain)?
            .users()
            .map(|(local, _)| local.to_string())
            .collect())
    }

    /// Errors with [`SecretsError::UnknownUser`] for the first of `locals` (e.g. the site
    /// file's `users:`) that has no entry, so a build never ships a user who cannot log in.
    pub fn require_users(
        &self,
        domain: &DomainName,
        locals: &[LocalPart],
    ) -> Result<(), SecretsError> {
        let db = self.user_db(domain)?;
        match locals.iter().find(|local| db.get(local.as_str()).is_none()) {
            Some(local) => Err(SecretsError::UnknownUser {
                path: self.users_path(domain),
                local: local.to_string(),
                domain: domain.to_string(),
            }),
            None => Ok(()),
        }
    }

    /// Checks a password the way chasquid would, offline.
    pub fn authenticate(
        &self,
        domain: &DomainName,
        local: &LocalPart,
        password: &str,
    ) -> Result<bool, SecretsError> {
        Ok(self.user_db(domain)?.authenticate(local.as_str(), password))
    }

    /// The users database file of `domain` exactly as stored, to be copied verbatim into the
    /// seed as `domains/<domain>/users`; `None` if the domain has no users file. The content
    /// is parsed first so a damaged file is reported here rather than by chasquid on the host.
    pub fn user_db_bytes(&self, domain: &DomainName) -> Result<Option<Vec<u8>>, SecretsError> {
        let path = self.users_path(domain);
        match read_private(&path)? {
            Some(bytes) => {
                UserDb::parse(&bytes, &path)?;
                Ok(Some(bytes.to_vec()))
            }
            None => Ok(None),
        }
    }

    /// Domains that have a users database, sorted.
    pub fn user_domains(&self) -> Result<Vec<String>, SecretsError> {
        list_names(&self.root.join(USERS_DIR), |_| true)
    }

    // ---- DKIM --------------------------------------------------------------------------

    /// Path of the private key for `selector` of `domain` (which need not exist).
    pub fn dkim_path(&self, domain: &DomainName, selector: &Selector) -> PathBuf {
        self.root
            .join(DKIM_DIR)
            .join(domain.as_str())
            .join(format!("{selector}.pem"))
    }

    /// Generates and stores a new key. An existing key is kept unless `force`: replacing a
    /// published key breaks verification of mail in flight until DNS catches up.
    pub fn dkim_keygen(
        &self,
        domain: &DomainName,
        selector: &Selector,
        algorithm: DkimAlgorithm,
        force: bool,
    ) -> Result<DkimKey, SecretsError> {
        let path = self.dkim_path(domain, selector);
        let _lock = self.lock()?;
        if !force && fs::symlink_metadata(&path).is_ok() {
            return Err(SecretsError::KeyExists { path });
        }
        let pem = dkim::generate(algorithm).map_err(|source| SecretsError::Key {
            path: path.clone(),
            source,
        })?;
        // Check what we generated with the same code that will load it later.
        let key = DkimKey::from_pem(&pem).map_err(|source| SecretsError::Key {
            path: path.clone(),
            source,
        })?;
        self.write_private(&path, pem.as_bytes())?;
        Ok(key)
    }

    /// Loads and checks the key for `selector` of `domain`.
    pub fn dkim_key(
        &self,
        domain: &DomainName,
        selector: &Selector,
    ) -> Result<DkimKey, SecretsError> {
        let path = self.dkim_path(domain, selector);
        let Some(bytes) = read_private(&path)? else {
            return Err(SecretsError::MissingKey {
                domain: domain.to_string(),
                selector: selector.to_string(),
                path,
            });
        };
        let text = std::str::from_utf8(&bytes).map_err(|_| SecretsError::Key {
            path: path.clone(),
            source: super::error::KeyError::Malformed("not a text (PEM) file".into()),
        })?;
        DkimKey::from_pem(text).map_err(|source| SecretsError::Key { path, source })
    }

    /// Selectors that have a key for `domain`, sorted.
    pub fn list_dkim_selectors(&self, domain: &DomainName) -> Result<Vec<String>, SecretsError> {
        let dir = self.root.join(DKIM_DIR).join(domain.as_str());
        let names = list_names(&dir, |n| n.ends_with(".pem"))?;
        Ok(names
            .into_iter()
            .filter_map(|n| n.strip_suffix(".pem").map(str::to_string))
            .collect())
    }

    /// Domains that have a DKIM key directory, sorted.
    pub fn dkim_domains(&self) -> Result<Vec<String>, SecretsError> {
        list_names(&self.root.join(DKIM_DIR), |_| true)
    }

    // ---- other files -------------------------------------------------------------------

    /// Reads a top-level secret file such as [`ACME_ENV`]; `None` if absent.
    pub fn read_secret(&self, name: &str) -> Result<Option<Zeroizing<Vec<u8>>>, SecretsError> {
        read_private(&self.top_level(name)?)
    }

    /// Writes a top-level secret file such as [`ACME_ENV`], atomically, mode 0600.
    pub fn write_secret(&self, name: &str, bytes: &[u8]) -> Result<(), SecretsError> {
        let path = self.top_level(name)?;
        let _lock = self.lock()?;
        self.write_private(&path, bytes)
    }

    fn top_level(&self, name: &str) -> Result<PathBuf, SecretsError> {
        let ok = !name.is_empty()
            && !name.starts_with('.')
            && name != USERS_DIR
            && name != DKIM_DIR
            && name != super::acme::ACME_DIR
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !ok {
            return Err(SecretsError::InvalidName {
                what: "secret file name",
                value: name.to_string(),
                reason: "use a plain file name such as acme.env".into(),
            });
        }
        Ok(self.root.join(name))
    }

    /// Writes `bytes` to `path` (inside the store) atomically: a 0600 temp file in the same
    /// directory, fsync, rename over the target, fsync of the directory. On any error the temp
    /// file is removed (by `NamedTempFile`'s drop) and the old file is untouched.
    fn write_private(&self, path: &Path, bytes: &[u8]) -> Result<(), SecretsError> {
        let dir = path
            .parent()
            .ok_or_else(|| SecretsError::io("write", path, io::ErrorKind::InvalidInput.into()))?;
        self.ensure_dirs(dir)?;
        let mut tmp = tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .permissions(fs::Permissions::from_mode(FILE_MODE))
            .tempfile_in(dir)
            .map_err(|e| SecretsError::io("create a temporary file in", dir, e))?;
        tmp.write_all(bytes)
            .and_then(|()| tmp.as_file().sync_all())
            .map_err(|e| SecretsError::io("write", tmp.path().to_path_buf(), e))?;
        tmp.persist(path)
            .map_err(|e| SecretsError::io("replace", path, e.error))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| SecretsError::io("sync directory", dir, e))?;
        Ok(())
    }

    /// Creates the directories between the root and `dir`, each 0700.
    fn ensure_dirs(&self, dir: &Path) -> Result<(), SecretsError> {
        let rel = dir.strip_prefix(&self.root).map_err(|_| {
            SecretsError::io(
                "write outside the store",
                dir,
                io::ErrorKind::InvalidInput.into(),
            )
        })?;
        let mut current = self.root.clone();
        for part in rel.components() {
            current.push(part);
            match fs::symlink_metadata(&current) {
                Ok(meta) if meta.is_dir() => check_mode(&current, &meta)?,
                Ok(_) => return Err(SecretsError::NotPlain { path: current }),
                Err(e) if e.kind() == io::ErrorKind::NotFound => make_private_dir(&current)?,
                Err(e) => {
                    return Err(SecretsError::Unreadable {
                        path: current,
                        source: e,
                    });
                }
            }
        }
        Ok(())
    }
}

/// Creates one directory with mode 0700, then sets the mode explicitly because the umask
/// only ever removes bits and an odd umask could have removed the owner's.
fn make_private_dir(path: &Path) -> Result<(), SecretsError> {
    DirBuilder::new()
        .mode(DIR_MODE)
        .create(path)
        .and_then(|()| fs::set_permissions(path, fs::Permissions::from_mode(DIR_MODE)))
        .map_err(|e| SecretsError::io("create directory", path, e))
}

/// Refuses entries that the group or others can access in any way.
fn check_mode(path: &Path, meta: &fs::Metadata) -> Result<(), SecretsError> {
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        let (what, fix_mode) = if meta.is_dir() {
            ("a directory accessible to group or others", "700")
        } else {
            ("a file accessible to group or others", "600")
        };
        return Err(SecretsError::Insecure {
            path: path.to_path_buf(),
            what,
            mode,
            fix_mode,
        });
    }
    Ok(())
}

/// Reads a secret file after checking it is a private regular file; `None` if absent.
pub(super) fn read_private(path: &Path) -> Result<Option<Zeroizing<Vec<u8>>>, SecretsError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(SecretsError::Unreadable {
                path: path.to_path_buf(),
                source: e,
            });
        }
    };
    if meta.is_symlink() {
        return Err(SecretsError::NotPlain {
            path: path.to_path_buf(),
        });
    }
    check_mode(path, &meta)?;
    fs::read(path)
        .map(|b| Some(Zeroizing::new(b)))
        .map_err(|e| SecretsError::Unreadable {
            path: path.to_path_buf(),
            source: e,
        })
}

/// Sorted names in `dir` matching `keep`, skipping dot files (lock, interrupted temp files);
/// an absent directory has no names.
fn list_names(dir: &Path, keep: impl Fn(&str) -> bool) -> Result<Vec<String>, SecretsError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(SecretsError::Unreadable {
                path: dir.to_path_buf(),
                source: e,
            });
        }
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| SecretsError::Unreadable {
            path: dir.to_path_buf(),
            source: e,
        })?;
        if let Some(name) = entry.file_name().to_str()
            && !name.starts_with('.')
            && keep(name)
        {
            names.push(name.to_string());
        }
    }
    names.sort();
    Ok(names)
}
