//! The content-addressed download cache.
//!
//! Layout under the cache root:
//! - `debs/<sha256>.deb`: verified packages, named by the digest the lock file pins, so two
//!   lock files that pin the same bytes share one file and a changed pin never reuses a stale one;
//! - `apt/<suite>_<component>/`: apt's private state for each source (sources.list, lists,
//!   status, caches), see [`super::apt`];
//! - `tmp/`: downloads in progress; each lives in its own temporary directory that is removed
//!   on failure, and a file only enters `debs/` by an atomic rename after its digest checked out.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::FetchError;
use super::lock::{PinnedPackage, Sha256Digest};

/// A cache directory (see the module documentation for its layout).
#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

/// What a cache lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The file is there and its digest is right.
    Hit(PathBuf),
    /// Nothing there.
    Miss,
    /// A file was there with the wrong digest; it has been deleted.
    Corrupt { actual: Sha256Digest },
}

impl Cache {
    /// Opens (creating if needed) the cache at `root`.
    ///
    /// The root is made absolute because apt is run from a temporary working directory and
    /// is handed paths inside the cache.
    pub fn open(root: &Path) -> Result<Cache, FetchError> {
        for sub in ["debs", "tmp"] {
            let dir = root.join(sub);
            std::fs::create_dir_all(&dir).map_err(|source| FetchError::CacheDir {
                path: dir.clone(),
                source,
            })?;
        }
        let root = std::fs::canonicalize(root).map_err(|source| FetchError::CacheDir {
            path: root.to_owned(),
            source,
        })?;
        Ok(Cache { root })
    }

    /// Opens the default cache (see [`default_cache_dir`]).
    pub fn open_default() -> Result<Cache, FetchError> {
        let root = default_cache_dir(|k| std::env::var_os(k)).ok_or(FetchError::NoCacheDir)?;
        Cache::open(&root)
    }

    /// The cache root (absolute).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the `.deb` with this digest lives (whether or not it is there yet).
    pub fn deb_path(&self, digest: &Sha256Digest) -> PathBuf {
        self.root.join("debs").join(format!("{digest}.deb"))
    }

    /// The parent of apt's private state directories (one per source).
    pub fn apt_dir(&self) -> PathBuf {
        self.root.join("apt")
    }

    /// Directory for temporary download directories; on the same filesystem as `debs/` so
    /// the final rename is atomic.
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// Looks a package up, re-hashing the cached file: a cache is only as good as its last
    /// check, and disks, users and half-finished copies do corrupt files. A corrupt file is
    /// deleted so the caller can fetch it again.
    pub fn lookup(&self, pkg: &PinnedPackage) -> Result<Lookup, FetchError> {
        let path = self.deb_path(&pkg.sha256);
        let actual = match sha256_file(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Lookup::Miss),
            Err(source) => return Err(FetchError::Io { path, source }),
        };
        if actual == pkg.sha256 {
            return Ok(Lookup::Hit(path));
        }
        std::fs::remove_file(&path).map_err(|source| FetchError::Io {
            path: path.clone(),
            source,
        })?;
        Ok(Lookup::Corrupt { actual })
    }

    /// Moves a freshly downloaded file into the cache if and only if its digest is the pinned
    /// one and `check` (run after the digest matched) accepts it. Otherwise the file is left
    /// where it is (in a temporary directory the caller removes) and nothing enters the cache.
    pub fn insert(
        &self,
        downloaded: &Path,
        pkg: &PinnedPackage,
        check: impl FnOnce(&Path) -> Result<(), FetchError>,
    ) -> Result<PathBuf, FetchError> {
        let actual = sha256_file(downloaded).map_err(|source| FetchError::Io {
            path: downloaded.to_owned(),
            source,
        })?;
        if actual != pkg.sha256 {
            return Err(FetchError::DigestMismatch {
                package: pkg.label(),
                path: downloaded.to_owned(),
                expected: pkg.sha256.clone(),
                actual,
            });
        }
        check(downloaded)?;
        // Flush before the rename so a crash cannot leave a renamed but empty file behind.
        File::open(downloaded)
            .and_then(|f| f.sync_all())
            .map_err(|source| FetchError::Io {
                path: downloaded.to_owned(),
                source,
            })?;
        let dest = self.deb_path(&pkg.sha256);
        std::fs::rename(downloaded, &dest).map_err(|source| FetchError::Io {
            path: dest.clone(),
            source,
        })?;
        Ok(dest)
    }
}

/// The default cache root: `$MAILBAKE_CACHE`, else `$XDG_CACHE_HOME/mailbake`, else
/// `$HOME/.cache/mailbake`. Empty values count as unset, and a relative `XDG_CACHE_HOME` is
/// ignored as the XDG base directory specification requires.
///
/// `env` is a parameter so the rule can be tested without mutating the process environment.
pub fn default_cache_dir(env: impl Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    let non_empty = |k: &str| env(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = non_empty("MAILBAKE_CACHE") {
        return Some(dir);
    }
    if let Some(xdg) = non_empty("XDG_CACHE_HOME").filter(|p| p.is_absolute()) {
        return Some(xdg.join("mailbake"));
    }
    non_empty("HOME").map(|home| home.join(".cache").join("mailbake"))
}

/// sha256 of a file's contents.
pub fn sha256_file(path: &Path) -> io::Result<Sha256Digest> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(Sha256Digest::from_bytes(&hasher.finalize().into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| {
            pairs
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn cache_dir_precedence() {
        let all = [
            ("MAILBAKE_CACHE", "/m"),
            ("XDG_CACHE_HOME", "/x"),
            ("HOME", "/h"),
        ];
        assert_eq!(default_cache_dir(env_of(&all)), Some("/m".into()));
        assert_eq!(
            default_cache_dir(env_of(&all[1..])),
            Some("/x/mailbake".into())
        );
        assert_eq!(
            default_cache_dir(env_of(&all[2..])),
            Some("/h/.cache/mailbake".into())
        );
        assert_eq!(
            default_cache_dir(env_of(&[
                ("MAILBAKE_CACHE", ""),
                ("XDG_CACHE_HOME", "rel"),
                ("HOME", "/h")
            ])),
            Some("/h/.cache/mailbake".into())
        );
        assert_eq!(default_cache_dir(env_of(&[])), None);
    }

    #[test]
    fn sha256_of_known_content() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("abc");
        std::fs::write(&p, b"abc").expect("write");
        assert_eq!(
            sha256_file(&p).expect("hash").as_str(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
