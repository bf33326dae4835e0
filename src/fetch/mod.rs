//! Pinned Debian packages: the lock file, the download cache and the `.deb` reader.
//!
//! `fetch_all` makes every package of a [`Lock`] available as a verified file in a
//! [`Cache`]; [`deb::read_payload`] then gives the overlay stage the files a package installs.
//! A package not in the cache is taken from a directory of saved `.deb`s when one is given
//! ([`SAVED_DEBS_ENV`]), else downloaded through apt with a private state directory (see
//! [`apt`]) from a mirror or a snapshot of the archive (see [`mirror`]). Whatever the source,
//! a file enters the cache only with the lock's sha256. When every package is already cached,
//! apt is not run at all, so repeat builds need neither apt nor network.

pub mod apt;
pub mod cache;
pub mod cli;
pub mod deb;
pub mod lock;
pub mod mirror;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

pub use cache::{Cache, Lookup, default_cache_dir, sha256_file};
pub use deb::{
    ControlFields, DebError, EntryKind, PayloadEntry, read_control, read_payload, read_version,
};
pub use lock::{Archive, Lock, LockError, PinnedPackage, Sha256Digest, Source};

/// Why packages could not be fetched. Each message names the file or package and the fix.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(transparent)]
    Lock(#[from] LockError),

    #[error("{origin}: `{url}` is not an http:// or https:// URL of a Debian mirror: it {reason}")]
    BadMirror {
        origin: String,
        /// The URL, or a note in its place when it holds credentials.
        url: String,
        reason: String,
    },

    #[error(
        "no cache directory: set MAILBAKE_CACHE (or XDG_CACHE_HOME or HOME), or pass --cache DIR"
    )]
    NoCacheDir,

    #[error("cannot create cache directory {path}: {source} (pass --cache DIR to use another)")]
    CacheDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "sha256 mismatch for {package}:\n  expected {expected} (lock file)\n  actual   {actual} ({path}, discarded)\n\
         The archive served different bytes for this version. Do not just copy the new digest: \
         find out why (a rebuilt package gets a new version, so this points at a bad mirror or \
         a tampered file)."
    )]
    DigestMismatch {
        package: String,
        path: PathBuf,
        expected: Sha256Digest,
        actual: Sha256Digest,
    },

    #[error(
        "{package} is not available from {mirror} {suite}; the pinned version may have left \
         the archive.\n{}{}apt said:\n{apt_message}",
        available_hint(available),
        same_bytes_hint(package, suite)
    )]
    NotInArchive {
        package: String,
        suite: String,
        mirror: String,
        apt_message: String,
        /// `"VERSION sha256:DIGEST"` for each version the archive has now.
        available: Vec<String>,
    },

    #[error(
        "apt-get not found in PATH: it is needed to download packages that are not cached yet \
         (install apt, or fill the cache on a host that has it and pass --cache)"
    )]
    AptGetMissing,

    #[error(
        "Debian archive keyring {path} not found: install the debian-archive-keyring package \
         (it verifies the archive's signatures)"
    )]
    KeyringMissing { path: PathBuf },

    #[error(
        "the lock file pins {pinned} with sha256 {digest}, but the file with that digest \
         ({path}) is {found}: correct the version or the sha256 there"
    )]
    WrongPackage {
        pinned: String,
        digest: Sha256Digest,
        found: String,
        path: PathBuf,
    },

    #[error(
        "{dir} ({origin}): {source}; it should be a directory of saved .deb files (named \
         <sha256>.deb, as in the cache's debs/, or as apt names them)"
    )]
    SavedDebs {
        dir: PathBuf,
        origin: String,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "{path} is not {package}: its sha256 is {actual}, the lock pins {expected}; remove it \
         from the directory of saved .debs, or put the file with the pinned digest there"
    )]
    SavedDebMismatch {
        package: String,
        path: PathBuf,
        expected: Sha256Digest,
        actual: Sha256Digest,
    },

    #[error(transparent)]
    Deb(#[from] DebError),

    #[error("{step} failed ({status}):\n{stderr}")]
    AptFailed {
        step: String,
        status: String,
        stderr: String,
    },
}

fn available_hint(available: &[String]) -> String {
    if available.is_empty() {
        return "The archive has no version of it for this architecture: check the name and \
                suite in the lock file.\n"
            .into();
    }
    let mut s = String::from("The archive has now (version and sha256 from its signed index):\n");
    for v in available {
        s.push_str(&format!("  {v}\n"));
    }
    s.push_str(
        "To move the pin, review the new version, then put its version and sha256 into the lock file.\n",
    );
    s
}

/// How to build the same bytes once the archive has dropped a pin.
fn same_bytes_hint(package: &str, suite: &str) -> String {
    format!(
        "To build the same bytes without moving the pin, use either:\n  \
         - a directory where the .deb was saved (a copy of another machine's \
         ~/.cache/mailbake/debs/, or the file as apt names it): {SAVED_DEBS_ENV}=DIR, or \
         `mailbake fetch --debs DIR` (its sha256 must be the lock's);\n  \
         - a snapshot of the archive from a day {suite} still had {package}: \
         {}=https://snapshot.debian.org/archive/debian/YYYYMMDDTHHMMSSZ (the timestamps are \
         listed at https://snapshot.debian.org/package/NAME/).\n",
        mirror::MIRROR_ENV
    )
}

/// The environment variable naming a directory of saved `.deb`s (see [`Sources`]).
pub const SAVED_DEBS_ENV: &str = "MAILBAKE_DEBS";

/// Where packages missing from the cache may come from besides the mirror.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// A directory of saved `.deb`s, looked in before the archive: each pinned package as
    /// `<sha256>.deb` (the cache's own layout, so a copy of a cache's `debs/` works) or under
    /// apt's name `NAME_VERSION_ARCH.deb` (the epoch's colon as `%3a` or as is). Nothing in it
    /// is trusted: a file is used only if its sha256 and control fields are the pin's.
    pub saved_debs: Option<(PathBuf, String)>,
}

impl Sources {
    /// `$MAILBAKE_DEBS`, when set and not empty.
    pub fn from_env() -> Sources {
        Sources {
            saved_debs: std::env::var_os(SAVED_DEBS_ENV)
                .filter(|d| !d.is_empty())
                .map(|d| (PathBuf::from(d), SAVED_DEBS_ENV.to_string())),
        }
    }

    /// The saved `.deb` that claims to be `pkg`, if any (not yet checked).
    fn saved(&self, pkg: &PinnedPackage) -> Result<Option<PathBuf>, FetchError> {
        let Some((dir, origin)) = &self.saved_debs else {
            return Ok(None);
        };
        if let Err(source) = std::fs::read_dir(dir) {
            return Err(FetchError::SavedDebs {
                dir: dir.clone(),
                origin: origin.clone(),
                source,
            });
        }
        let (epoch, rest) = match pkg.version.split_once(':') {
            Some((e, r)) => (Some(e), r),
            None => (None, pkg.version.as_str()),
        };
        let mut names = vec![format!("{}.deb", pkg.sha256)];
        match epoch {
            Some(e) => {
                for sep in ["%3a", ":"] {
                    names.push(format!(
                        "{}_{e}{sep}{rest}_{}.deb",
                        pkg.name, pkg.architecture
                    ));
                }
            }
            None => names.push(format!("{}_{rest}_{}.deb", pkg.name, pkg.architecture)),
        }
        Ok(names.iter().map(|n| dir.join(n)).find(|p| p.is_file()))
    }
}

/// A package present and verified in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedDeb {
    pub package: PinnedPackage,
    /// `<cache>/debs/<sha256>.deb`.
    pub path: PathBuf,
    /// Whether it was downloaded by this call (false: it was already cached).
    pub downloaded: bool,
}

/// Makes every package of `lock` available in `cache`, verified against its pinned digest,
/// with the [`Sources`] this process's environment names.
///
/// Progress lines (`cached …`, `fetching …`) go to `progress`. Results are in lock order.
/// On error, packages verified so far stay cached; nothing unverified enters the cache.
pub fn fetch_all(
    lock: &Lock,
    cache: &Cache,
    progress: &mut dyn Write,
) -> Result<Vec<CachedDeb>, FetchError> {
    fetch_all_from(lock, cache, &Sources::from_env(), progress)
}

/// [`fetch_all`] with explicit [`Sources`].
pub fn fetch_all_from(
    lock: &Lock,
    cache: &Cache,
    sources: &Sources,
    progress: &mut dyn Write,
) -> Result<Vec<CachedDeb>, FetchError> {
    // Progress output is best effort: a closed stderr must not fail a fetch.
    let mut say = |msg: String| {
        let _ = writeln!(progress, "{msg}");
    };
    let mut results: Vec<Option<CachedDeb>> = Vec::with_capacity(lock.packages.len());
    let mut missing = Vec::new();
    for (i, pkg) in lock.packages.iter().enumerate() {
        match cache.lookup(pkg)? {
            Lookup::Hit(path) => {
                check_identity(&path, pkg)?;
                say(format!("cached {} ({})", pkg.label(), path.display()));
                results.push(Some(CachedDeb {
                    package: pkg.clone(),
                    path,
                    downloaded: false,
                }));
            }
            Lookup::Corrupt { actual } => {
                say(format!(
                    "corrupt cache entry for {} (sha256 {actual}, expected {}): deleted, fetching again",
                    pkg.label(),
                    pkg.sha256
                ));
                results.push(None);
                missing.push(i);
            }
            Lookup::Miss => {
                results.push(None);
                missing.push(i);
            }
        }
    }

    // Saved .debs next: a pin the archive has dropped is still found there.
    let mut still_missing = Vec::new();
    for i in missing {
        let pkg = &lock.packages[i];
        match sources.saved(pkg)? {
            Some(saved) => {
                let path = insert_copy(cache, &saved, pkg)?;
                say(format!(
                    "verified {} (from {}, now {})",
                    pkg.label(),
                    saved.display(),
                    path.display()
                ));
                results[i] = Some(CachedDeb {
                    package: pkg.clone(),
                    path,
                    downloaded: false,
                });
            }
            None => still_missing.push(i),
        }
    }
    let missing = still_missing;

    // Only the sources of packages that are not cached are asked: a pin its suite has since
    // dropped stays usable as long as its bytes are in the cache.
    let mut by_source: BTreeMap<Source, Vec<usize>> = BTreeMap::new();
    for i in missing {
        by_source
            .entry(lock.packages[i].source())
            .or_default()
            .push(i);
    }
    if !by_source.is_empty() {
        let mirror = mirror::resolve(lock.archive.mirror.as_deref())?;
        for (source, indexes) in by_source {
            let packages: Vec<&PinnedPackage> =
                indexes.iter().map(|&i| &lock.packages[i]).collect();
            let dir = cache.apt_dir().join(source.dir_name());
            let state = apt::AptState::prepare(&dir, &source, &packages, &mirror.url)?;
            say(format!(
                "updating package lists for {source} from {} ({})",
                mirror.url, mirror.origin
            ));
            state.update()?;
            for i in indexes {
                let pkg = &lock.packages[i];
                say(format!("fetching {} from {source} …", pkg.label()));
                let path = download_one(&state, cache, pkg)?;
                say(format!("verified {} ({})", pkg.label(), path.display()));
                results[i] = Some(CachedDeb {
                    package: pkg.clone(),
                    path,
                    downloaded: true,
                });
            }
        }
    }
    // Every slot is filled above: a hit at lookup, or a download (which returned early on error).
    Ok(results.into_iter().flatten().collect())
}

/// A fresh temporary directory inside the cache (on the same filesystem as `debs/`), removed
/// when dropped.
fn cache_tempdir(cache: &Cache, prefix: &str) -> Result<tempfile::TempDir, FetchError> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(cache.tmp_dir())
        .map_err(|source| FetchError::Io {
            path: cache.tmp_dir(),
            source,
        })
}

/// Copies a saved `.deb` into a temporary directory inside the cache, then hands it to
/// [`Cache::insert`], which checks its digest (and [`check_identity`] its control fields)
/// before it enters the cache. The saved file itself is left as it was.
fn insert_copy(cache: &Cache, saved: &Path, pkg: &PinnedPackage) -> Result<PathBuf, FetchError> {
    let tmp = cache_tempdir(cache, "saved-")?;
    let copy = tmp.path().join("saved.deb");
    std::fs::copy(saved, &copy).map_err(|source| FetchError::Io {
        path: saved.to_owned(),
        source,
    })?;
    cache
        .insert(&copy, pkg, |p| check_identity(p, pkg))
        .map_err(|e| match e {
            FetchError::DigestMismatch {
                package,
                expected,
                actual,
                ..
            } => FetchError::SavedDebMismatch {
                package,
                path: saved.to_owned(),
                expected,
                actual,
            },
            other => other,
        })
}

/// Downloads one package into a fresh temporary directory inside the cache, then hands the
/// single `.deb` apt wrote to [`Cache::insert`]. The directory is removed however this ends.
fn download_one(
    state: &apt::AptState,
    cache: &Cache,
    pkg: &PinnedPackage,
) -> Result<PathBuf, FetchError> {
    let tmp = cache_tempdir(cache, "download-")?;
    state.download(pkg, tmp.path())?;
    let io_err = |source| FetchError::Io {
        path: tmp.path().to_owned(),
        source,
    };
    let mut debs = Vec::new();
    for entry in std::fs::read_dir(tmp.path()).map_err(io_err)? {
        let p = entry.map_err(io_err)?.path();
        if p.extension().is_some_and(|e| e == "deb") {
            debs.push(p);
        }
    }
    // apt names the file itself (escaping an epoch's colon); expecting exactly one file avoids
    // re-implementing its naming rule.
    match debs.as_slice() {
        // The identity check runs before the rename, so a file that is not the pinned package
        // never enters the cache.
        [one] => cache.insert(one, pkg, |p| check_identity(p, pkg)),
        _ => Err(FetchError::AptFailed {
            step: format!("apt-get download {}", pkg.label()),
            status: "exit status 0".into(),
            stderr: format!("expected one .deb file, found {}: {debs:?}", debs.len()),
        }),
    }
}

/// Checks that a `.deb` is the package the lock names. The digest pins the bytes, but a lock
/// edited by hand can pair one package's digest with another's name or version; without this
/// check the cache would silently serve the other package under the new label.
fn check_identity(path: &std::path::Path, pkg: &PinnedPackage) -> Result<(), FetchError> {
    let control = read_control(path)?;
    let field = |name| control.get(name).unwrap_or("?").to_owned();
    let found = (field("Package"), field("Version"), field("Architecture"));
    if (found.0.as_str(), found.1.as_str(), found.2.as_str())
        == (
            pkg.name.as_str(),
            pkg.version.as_str(),
            pkg.architecture.as_str(),
        )
    {
        return Ok(());
    }
    Err(FetchError::WrongPackage {
        pinned: pkg.label(),
        digest: pkg.sha256.clone(),
        found: format!("{} {} {}", found.0, found.1, found.2),
        path: path.to_owned(),
    })
}
