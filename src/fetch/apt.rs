//! Running apt against a private state directory.
//!
//! apt is used (rather than an HTTP client) because it verifies the archive's signed
//! InRelease file against Debian's keyring and the Packages index against it: the lock's
//! sha256 then pins bytes that also came from an authenticated index.
//!
//! Every path apt would normally take from the host (sources, preferences, lists, dpkg status,
//! caches) is redirected into `<cache>/apt/<suite>_<component>/`, so the host's package
//! configuration is neither read for sources nor written; only apt.conf.d is still read, which
//! keeps host-wide transport settings such as a proxy working.
//!
//! Each source (suite and component) of the lock gets a state of its own, with a sources list
//! of exactly one line: a package is then found in its own suite or not at all, and the list of
//! versions offered when a pin has gone is that suite's.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::FetchError;
use super::lock::{PinnedPackage, Source};

/// The keyring that signs Debian's archive (package `debian-archive-keyring`).
pub const DEBIAN_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// The image is amd64 whatever the build host is, so apt is told to index amd64.
pub const NATIVE_ARCH: &str = "amd64";

/// apt's private state for one source of one cache.
pub struct AptState {
    dir: PathBuf,
    mirror: String,
    source: Source,
    architectures: Vec<String>,
    /// Held for as long as this value lives: apt's own locks are off (`Debug::NoLocking`,
    /// because they live in host paths), so this keeps two mailbake runs sharing a cache
    /// from updating the same lists at once.
    _lock: File,
}

impl AptState {
    /// Creates `dir` with a one-line sources.list for `source`, an empty dpkg status (so the
    /// host's installed packages never influence what apt picks) and the directories apt
    /// expects, then takes the state lock. `packages` are the ones to be downloaded from this
    /// source: their architectures are indexed.
    pub fn prepare(
        dir: &Path,
        source: &Source,
        packages: &[&PinnedPackage],
        mirror: &str,
    ) -> Result<AptState, FetchError> {
        if !Path::new(DEBIAN_KEYRING).exists() {
            return Err(FetchError::KeyringMissing {
                path: DEBIAN_KEYRING.into(),
            });
        }
        let io_err = |path: &Path| {
            let path = path.to_owned();
            move |source| FetchError::Io { path, source }
        };
        for sub in ["lists/partial", "cache/archives/partial"] {
            let d = dir.join(sub);
            std::fs::create_dir_all(&d).map_err(io_err(&d))?;
        }
        let lock_path = dir.join("lock");
        let lock_file = File::create(&lock_path).map_err(io_err(&lock_path))?;
        lock_file.lock().map_err(io_err(&lock_path))?;

        let architectures: Vec<String> = std::iter::once(NATIVE_ARCH.to_owned())
            .chain(
                packages
                    .iter()
                    .map(|p| p.architecture.clone())
                    .filter(|a| a != "all"),
            )
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let sources = format!(
            "# Written by mailbake from packages.lock; rewritten on every fetch.\n\
             # target=Packages: only the index needed to download .debs, whatever extra\n\
             # indexes (AppStream, Contents) the host's apt.conf.d enables.\n\
             deb [arch={} target=Packages signed-by={DEBIAN_KEYRING}] {} {} {}\n",
            architectures.join(","),
            mirror,
            source.suite,
            source.component
        );
        // Written on every run so an edited lock (another mirror) takes effect.
        let sources_path = dir.join("sources.list");
        std::fs::write(&sources_path, sources).map_err(io_err(&sources_path))?;
        let status = dir.join("status");
        std::fs::write(&status, "").map_err(io_err(&status))?;
        Ok(AptState {
            dir: dir.to_owned(),
            mirror: mirror.to_string(),
            source: source.clone(),
            architectures,
            _lock: lock_file,
        })
    }

    /// The `-o` options that confine apt to this state directory.
    fn options(&self) -> Vec<OsString> {
        let d = &self.dir;
        let mut opts: Vec<(String, OsString)> = vec![
            ("Dir::Etc::SourceList".into(), d.join("sources.list").into()),
            ("Dir::Etc::SourceParts".into(), "/dev/null".into()),
            ("Dir::Etc::Preferences".into(), "/dev/null".into()),
            ("Dir::Etc::PreferencesParts".into(), "/dev/null".into()),
            ("Dir::State::Lists".into(), d.join("lists").into()),
            ("Dir::State::Status".into(), d.join("status").into()),
            ("Dir::Cache".into(), d.join("cache").into()),
            ("APT::Architecture".into(), NATIVE_ARCH.into()),
            // Debian's index translations are not needed to download a .deb.
            ("Acquire::Languages".into(), "none".into()),
            ("Debug::NoLocking".into(), "1".into()),
            // The default sandbox user (_apt) could not write into the caller's temp dir.
            ("APT::Sandbox::User".into(), "root".into()),
            // Without this, `apt-get update` exits 0 when an index failed to download.
            ("APT::Update::Error-Mode".into(), "any".into()),
        ];
        for arch in &self.architectures {
            opts.push(("APT::Architectures::".into(), arch.into()));
        }
        if super::mirror::is_snapshot(&self.mirror) {
            // A snapshot's signed Release files are past their Valid-Until by design; the
            // signature is still checked, and the lock's digests pin every .deb.
            opts.push(("Acquire::Check-Valid-Until".into(), "false".into()));
        }
        opts.into_iter()
            .flat_map(|(k, v)| {
                let mut kv = OsString::from(k);
                kv.push("=");
                kv.push(v);
                [OsString::from("-o"), kv]
            })
            .collect()
    }

    /// `apt-get update` into the private lists.
    pub fn update(&self) -> Result<(), FetchError> {
        let out = self.run("apt-get", &["update"], &self.dir)?;
        if !out.status.success() {
            return Err(FetchError::AptFailed {
                step: "apt-get update".into(),
                status: out.status.to_string(),
                stderr: tail(&out.stderr),
            });
        }
        Ok(())
    }

    /// `apt-get download NAME:ARCH=VERSION` into `dest_dir` (apt-get download always writes
    /// to the working directory).
    pub fn download(&self, pkg: &PinnedPackage, dest_dir: &Path) -> Result<(), FetchError> {
        let spec = if pkg.architecture == "all" {
            format!("{}={}", pkg.name, pkg.version)
        } else {
            format!("{}:{}={}", pkg.name, pkg.architecture, pkg.version)
        };
        let out = self.run("apt-get", &["download", &spec], dest_dir)?;
        if out.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        // LC_ALL=C below makes these messages stable enough to recognise.
        let not_in_archive = stderr.lines().any(|l| {
            l.starts_with("E: ")
                && (l.contains("Unable to locate package")
                    || l.contains("was not found")
                    || l.contains("Can't select version")
                    || l.contains("Can't find a source to download"))
        });
        if not_in_archive {
            return Err(FetchError::NotInArchive {
                package: pkg.label(),
                suite: self.source.suite.clone(),
                mirror: self.mirror.clone(),
                apt_message: tail(&out.stderr),
                available: self.available(pkg),
            });
        }
        Err(FetchError::AptFailed {
            step: format!("apt-get download {spec}"),
            status: out.status.to_string(),
            stderr: tail(&out.stderr),
        })
    }

    /// The versions of `pkg` (same name and architecture) in the updated index, each with the
    /// sha256 the signed index gives for its .deb, as `"VERSION sha256:DIGEST"`. This is what
    /// a user needs to move a pin whose version has left the archive. Best effort: any
    /// failure gives an empty list, since it only enriches an error that is already certain.
    pub fn available(&self, pkg: &PinnedPackage) -> Vec<String> {
        let spec = format!("{}:{}", pkg.name, pkg.architecture);
        let Ok(out) = self.run("apt-cache", &["show", &spec], &self.dir) else {
            return Vec::new();
        };
        let text = String::from_utf8_lossy(&out.stdout);
        text.split("\n\n")
            .filter_map(|stanza| {
                let field = |name: &str| {
                    stanza.lines().find_map(|l| {
                        l.strip_prefix(name)
                            .and_then(|rest| rest.strip_prefix(':'))
                            .map(str::trim)
                    })
                };
                Some(format!("{} sha256:{}", field("Version")?, field("SHA256")?))
            })
            .collect()
    }

    fn run(&self, program: &str, args: &[&str], cwd: &Path) -> Result<Output, FetchError> {
        Command::new(program)
            .arg("-q")
            .args(self.options())
            .args(args)
            .current_dir(cwd)
            .env("LC_ALL", "C")
            .output()
            .map_err(|source| {
                if source.kind() == io::ErrorKind::NotFound {
                    FetchError::AptGetMissing
                } else {
                    FetchError::Io {
                        path: "apt-get".into(),
                        source,
                    }
                }
            })
    }
}

/// The last lines of apt's stderr: enough to see the error without flooding the terminal.
fn tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options_for(mirror: &str) -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        let source = Source {
            suite: "forky".into(),
            component: "main".into(),
        };
        let state = AptState::prepare(dir.path(), &source, &[], mirror).unwrap();
        state
            .options()
            .into_iter()
            .map(|o| o.to_string_lossy().into_owned())
            .collect()
    }

    /// A snapshot's Release files are past their Valid-Until by design: apt is told to accept
    /// that for a snapshot URL, and only for one.
    #[test]
    fn only_a_snapshot_skips_the_valid_until_check() {
        if !Path::new(DEBIAN_KEYRING).exists() {
            panic!("{DEBIAN_KEYRING} is missing: run scripts/setup-host");
        }
        let off = "Acquire::Check-Valid-Until=false".to_string();
        assert!(
            options_for("https://snapshot.debian.org/archive/debian/20261201T000000Z")
                .contains(&off)
        );
        assert!(!options_for("http://deb.debian.org/debian").contains(&off));
    }
}
