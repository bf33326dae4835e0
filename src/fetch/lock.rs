//! `packages.lock`: the Debian packages the overlay ships, pinned by version and by the
//! sha256 of the `.deb` file.
//!
//! The version pins what apt is asked for; the digest pins the bytes. A version alone is not
//! enough because an archive can rebuild a package (binNMU) or a mirror can be compromised;
//! a digest alone is not enough because apt needs a name and version to find the file.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};

/// The parsed lock file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lock {
    /// Settings shared by every package's source (only the mirror).
    #[serde(default)]
    pub archive: Archive,
    /// The pinned packages, in the order they are fetched and reported.
    pub packages: Vec<PinnedPackage>,
}

/// Where the archive is. Which part of it (suite, component) is per package.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Archive {
    /// Base URL of a Debian mirror. Optional: by default the mirror this host's apt already
    /// uses for Debian (see [`super::mirror`]).
    #[serde(default, deserialize_with = "mirror_url")]
    pub mirror: Option<String>,
}

/// One signed APT source: `deb MIRROR SUITE COMPONENT`, without the mirror (shared by all).
///
/// Each package names its own, so a package can come from the suite that has the version
/// worth shipping (chasquid from a rolling suite, lego from backports) and is looked up in that
/// suite only: apt never sees two suites at once, so it cannot pick the pinned version from
/// another one.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Source {
    /// Suite (codename), e.g. `forky` or `trixie-backports`.
    pub suite: String,
    /// Archive component, e.g. `main`.
    pub component: String,
}

impl Source {
    /// A name for this source that is safe as one path component and unique per source: suites
    /// and components never contain `_` (see `source_word`).
    pub fn dir_name(&self) -> String {
        format!("{}_{}", self.suite, self.component)
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.suite, self.component)
    }
}

/// One package pinned to exact bytes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinnedPackage {
    /// Debian package name.
    #[serde(deserialize_with = "package_name")]
    pub name: String,
    /// The suite the package is downloaded from, e.g. `forky`.
    #[serde(deserialize_with = "source_word")]
    pub suite: String,
    /// The archive component within the suite; `main` unless given.
    #[serde(default = "default_component", deserialize_with = "source_word")]
    pub component: String,
    /// Exact Debian version, epoch included if it has one.
    #[serde(deserialize_with = "package_version")]
    pub version: String,
    /// Debian architecture, e.g. `amd64` or `all`.
    #[serde(deserialize_with = "architecture")]
    pub architecture: String,
    /// sha256 of the `.deb` file.
    pub sha256: Sha256Digest,
}

fn default_component() -> String {
    "main".into()
}

impl PinnedPackage {
    /// The `name version arch` triple used in progress lines and errors.
    pub fn label(&self) -> String {
        format!("{} {} {}", self.name, self.version, self.architecture)
    }

    /// The APT source this package is downloaded from.
    pub fn source(&self) -> Source {
        Source {
            suite: self.suite.clone(),
            component: self.component.clone(),
        }
    }
}

/// A sha256 digest: exactly 64 lowercase hex digits.
///
/// Lowercase only, so a digest has one spelling: it is also a file name in the cache.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256Digest(String);

impl<'de> Deserialize<'de> for Sha256Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked(
            d,
            "sha256",
            |s| Sha256Digest::try_from(s.to_owned()).is_ok(),
            "exactly 64 lowercase hex digits (as printed by `sha256sum FILE.deb`)",
        )
        .map(Sha256Digest)
    }
}

impl Sha256Digest {
    /// The digest as 64 lowercase hex digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Wraps the raw 32-byte output of a hasher.
    pub fn from_bytes(bytes: &[u8; 32]) -> Self {
        Sha256Digest(hex::encode(bytes))
    }
}

impl TryFrom<String> for Sha256Digest {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        let ok = s.len() == 64
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if ok {
            Ok(Sha256Digest(s))
        } else {
            Err(format!(
                "invalid sha256 {s:?}: expected exactly 64 lowercase hex digits \
                 (as printed by `sha256sum FILE.deb`)"
            ))
        }
    }
}

impl std::str::FromStr for Sha256Digest {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Sha256Digest::try_from(s.to_owned())
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a lock file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "lock file {path} not found: check the --lock path, or leave --lock out to use the \
         packages.lock built into mailbake"
    )]
    NotFound { path: PathBuf },

    #[error("cannot read lock file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Syntax errors, unknown keys, missing fields and invalid values all land here, with
    /// the position serde_norway reports when it has one.
    #[error(
        "{path}:{line}:{column}: {message}\n  (the format is described in the comment at the top of packages.lock)"
    )]
    Malformed {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },

    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl Lock {
    /// Reads and validates a lock file.
    pub fn load(path: &Path) -> Result<Lock, LockError> {
        let text = std::fs::read_to_string(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                LockError::NotFound {
                    path: path.to_owned(),
                }
            } else {
                LockError::Read {
                    path: path.to_owned(),
                    source,
                }
            }
        })?;
        Lock::parse(&text, path)
    }

    /// Parses lock file text; `path` is used only in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Lock, LockError> {
        let lock: Lock = serde_norway::from_str(text).map_err(|e| {
            let (line, column) = e
                .location()
                .map(|l| (l.line(), l.column()))
                .unwrap_or((1, 1));
            let mut message = e.to_string();
            // serde_norway appends the position to its message; it is already in our prefix.
            let suffix = format!(" at line {line} column {column}");
            if let Some(stripped) = message.strip_suffix(&suffix) {
                message = stripped.to_owned();
            }
            LockError::Malformed {
                path: path.to_owned(),
                line,
                column,
                message,
            }
        })?;
        lock.check(path)?;
        Ok(lock)
    }

    /// Rules that span several entries, so serde cannot check them field by field.
    fn check(&self, path: &Path) -> Result<(), LockError> {
        if self.packages.is_empty() {
            return Err(LockError::Invalid {
                path: path.to_owned(),
                message: "`packages` is empty: pin at least one package".into(),
            });
        }
        for (i, p) in self.packages.iter().enumerate() {
            if let Some(first) = self.packages[..i]
                .iter()
                .find(|q| q.name == p.name && q.architecture == p.architecture)
            {
                return Err(LockError::Invalid {
                    path: path.to_owned(),
                    message: format!(
                        "package {} ({}) is pinned twice (versions {} and {}): keep one entry",
                        p.name, p.architecture, first.version, p.version
                    ),
                });
            }
        }
        Ok(())
    }
}

// The field checks below keep lock values from ever being read as apt options or as extra
// words on the sources.list line, since they are passed to apt-get verbatim.

/// Deserializes a string and checks it. The check runs inside the visitor, while the
/// deserializer still knows where the scalar is: serde_norway then reports the value's own
/// line and column (a check after deserializing would only get the enclosing mapping's).
fn checked<'de, D: Deserializer<'de>>(
    d: D,
    what: &'static str,
    valid: fn(&str) -> bool,
    expected: &'static str,
) -> Result<String, D::Error> {
    struct Check {
        what: &'static str,
        valid: fn(&str) -> bool,
        expected: &'static str,
    }
    impl serde::de::Visitor<'_> for Check {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "{} ({})", self.what, self.expected)
        }
        fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<String, E> {
            if (self.valid)(s) {
                Ok(s.to_owned())
            } else {
                Err(E::custom(format!(
                    "invalid {} {s:?}: expected {}",
                    self.what, self.expected
                )))
            }
        }
    }
    d.deserialize_str(Check {
        what,
        valid,
        expected,
    })
}

fn package_name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    checked(
        d,
        "package name",
        |s| {
            s.len() >= 2
                && s.bytes()
                    .next()
                    .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b))
        },
        "a Debian package name (lowercase letters, digits, `+`, `-`, `.`; starting with a letter or digit)",
    )
}

fn package_version<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    checked(
        d,
        "version",
        |s| {
            s.bytes().next().is_some_and(|b| b.is_ascii_digit())
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+-.~:".contains(&b))
        },
        "an exact Debian version as shown by `apt-cache policy NAME`, e.g. 1.15.0-1+b4",
    )
}

fn architecture<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    checked(
        d,
        "architecture",
        |s| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        },
        "a Debian architecture such as amd64 or all",
    )
}

/// Suites and components: also a directory name in the cache (see [`Source::dir_name`]), so
/// no `/` and no `_`. Debian's own (forky, sid, trixie-backports, main, non-free-firmware)
/// all fit.
fn source_word<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    checked(
        d,
        "suite/component",
        |s| {
            s.bytes()
                .next()
                .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.+".contains(&b))
        },
        "one lowercase word such as forky, trixie-backports or main",
    )
}

fn mirror_url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    checked(
        d,
        "mirror",
        |s| {
            (s.starts_with("http://") || s.starts_with("https://"))
                && s.bytes()
                    .all(|b| b.is_ascii_graphic() && !b"[]#".contains(&b))
                && crate::site::url_problem(s, &["http://", "https://"]).is_none()
        },
        "an http:// or https:// URL without spaces or user:password@, with an ASCII host, ending in the archive's path (…/debian)",
    )
    .map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
archive:
  mirror: http://mirror.example/debian
packages:
  - name: chasquid
    suite: forky
    version: 1.15.0-1+b4
    architecture: amd64
    sha256: 8c9307e2faf2db384f3fecf58acfd30da31abc48525507add36c9eae51b4328b
";

    fn parse_err(text: &str) -> (LockError, String) {
        let err = Lock::parse(text, Path::new("x/packages.lock"))
            .expect_err("lock text should be rejected");
        let msg = err.to_string();
        (err, msg)
    }

    fn location(err: &LockError) -> (usize, usize) {
        match err {
            LockError::Malformed { line, column, .. } => (*line, *column),
            other => panic!("expected a Malformed error, got {other:?}"),
        }
    }

    #[test]
    fn parses_a_good_lock() {
        let lock = Lock::parse(GOOD, Path::new("packages.lock")).expect("good lock parses");
        assert_eq!(
            lock.archive.mirror.as_deref(),
            Some("http://mirror.example/debian")
        );
        assert_eq!(lock.packages.len(), 1);
        assert_eq!(
            lock.packages[0].source(),
            Source {
                suite: "forky".into(),
                component: "main".into()
            },
            "the component defaults to main"
        );
        assert_eq!(lock.packages[0].name, "chasquid");
        assert_eq!(
            lock.packages[0].sha256.as_str(),
            "8c9307e2faf2db384f3fecf58acfd30da31abc48525507add36c9eae51b4328b"
        );
    }

    #[test]
    fn the_repository_lock_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("packages.lock");
        let lock = Lock::load(&path).expect("packages.lock at the repo root parses");
        let pins: Vec<_> = lock
            .packages
            .iter()
            .map(|p| (p.name.as_str(), p.suite.as_str(), p.version.as_str()))
            .collect();
        assert_eq!(
            pins,
            [
                ("chasquid", "forky", "1.19.0-1"),
                ("lego", "trixie-backports", "4.35.2-3~bpo13+1")
            ]
        );
    }

    #[test]
    fn each_package_names_its_own_suite_and_component() {
        let two = format!(
            "{GOOD}  - name: lego\n    suite: trixie-backports\n    component: contrib\n    \
             version: 4.35.2-3~bpo13+1\n    architecture: amd64\n    sha256: {}\n",
            "1".repeat(64)
        );
        let lock = Lock::parse(&two, Path::new("packages.lock")).expect("two sources parse");
        let sources: Vec<String> = lock
            .packages
            .iter()
            .map(|p| p.source().to_string())
            .collect();
        assert_eq!(sources, ["forky main", "trixie-backports contrib"]);
        assert_eq!(
            lock.packages[1].source().dir_name(),
            "trixie-backports_contrib"
        );
    }

    #[test]
    fn the_archive_section_is_optional() {
        let text = GOOD.replace("archive:\n  mirror: http://mirror.example/debian\n", "");
        let lock = Lock::parse(&text, Path::new("packages.lock")).expect("lock without archive");
        assert_eq!(lock.archive.mirror, None);
    }

    #[test]
    fn a_suite_that_is_not_one_path_component_is_refused() {
        // The suite names a directory in the cache; `/`, `_` and `..` tricks are refused.
        for bad in ["../x", "trixie/updates", "a_b", "Forky", ".hidden"] {
            let text = GOOD.replace("suite: forky", &format!("suite: \"{bad}\""));
            let (err, msg) = parse_err(&text);
            assert_eq!(location(&err), (5, 12), "{bad}: {msg}");
            assert!(msg.contains("invalid suite/component"), "{msg}");
        }
    }

    #[test]
    fn unknown_key_is_named_with_its_location() {
        // The second case is the old format's lock-wide suite: now per package.
        for (after, added, line, field) in [
            ("    architecture: amd64\n", "    arch: amd64\n", 8, "arch"),
            (
                "  mirror: http://mirror.example/debian\n",
                "  suite: trixie\n",
                3,
                "suite",
            ),
        ] {
            let (err, msg) = parse_err(&GOOD.replace(after, &format!("{after}{added}")));
            assert_eq!(location(&err).0, line, "{msg}");
            assert!(msg.contains(&format!("unknown field `{field}`")), "{msg}");
            assert!(
                msg.starts_with(&format!("x/packages.lock:{line}:")),
                "{msg}"
            );
        }
    }

    #[test]
    fn unknown_top_level_key_is_rejected() {
        let (err, msg) = parse_err(&format!("{GOOD}extra: 1\n"));
        assert_eq!(location(&err).0, 9, "{msg}");
        assert!(msg.contains("unknown field `extra`"), "{msg}");
    }

    #[test]
    fn bad_digest_is_rejected_with_its_location() {
        // Uppercase hex is refused too: the digest doubles as a cache file name.
        for bad in [
            "8c9307e2",
            "8C9307E2FAF2DB384F3FECF58ACFD30DA31ABC48525507ADD36C9EAE51B4328B",
            "zz9307e2faf2db384f3fecf58acfd30da31abc48525507add36c9eae51b4328b",
        ] {
            let text = GOOD.replace(
                "8c9307e2faf2db384f3fecf58acfd30da31abc48525507add36c9eae51b4328b",
                bad,
            );
            let (err, msg) = parse_err(&text);
            // Line and column of the value itself, not of the enclosing entry.
            assert_eq!(location(&err), (8, 13), "{msg}");
            assert!(msg.contains("invalid sha256"), "{msg}");
            assert!(msg.contains(bad), "{msg}");
        }
    }

    #[test]
    fn missing_field_is_named_with_its_location() {
        // The suite is required per package: there is no lock-wide default to fall back on.
        for (field, line) in [
            ("version", "    version: 1.15.0-1+b4\n"),
            ("suite", "    suite: forky\n"),
        ] {
            let (err, msg) = parse_err(&GOOD.replace(line, ""));
            assert!(msg.contains(&format!("missing field `{field}`")), "{msg}");
            // serde reports the position of the mapping that lacks the field.
            assert_eq!(location(&err).0, 4, "{msg}");
        }
    }

    #[test]
    fn option_like_values_are_refused() {
        let text = GOOD.replace("name: chasquid", "name: -oDebug::x=1");
        let (err, msg) = parse_err(&text);
        assert_eq!(location(&err).0, 4, "{msg}");
        assert!(msg.contains("invalid package name"), "{msg}");
    }

    #[test]
    fn yaml_syntax_error_has_a_location() {
        let (err, msg) = parse_err("archive: [\n");
        let (line, _) = location(&err);
        assert!(line >= 1, "{msg}");
        assert!(msg.starts_with("x/packages.lock:"), "{msg}");
    }

    #[test]
    fn duplicate_package_is_refused() {
        let dup = GOOD.lines().skip(3).collect::<Vec<_>>().join("\n");
        let (err, msg) = parse_err(&format!("{GOOD}{dup}\n"));
        assert!(matches!(err, LockError::Invalid { .. }), "{msg}");
        assert!(msg.contains("pinned twice"), "{msg}");
    }

    #[test]
    fn missing_file_says_how_to_fix_it() {
        let err = Lock::load(Path::new("/nonexistent/packages.lock")).expect_err("no such file");
        assert!(matches!(err, LockError::NotFound { .. }));
        assert!(err.to_string().contains("--lock"), "{err}");
    }
}
