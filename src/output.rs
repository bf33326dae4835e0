//! Output directories that appear whole or not at all.
//!
//! A stage writes everything into a fresh temporary directory beside the destination and only
//! renames it into place once every file is written and synced. A failure leaves the previous
//! output (if any) untouched and no half-written files behind.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The file that marks a directory as a mailbake output (and lists its digests).
pub const SUMS_FILE: &str = "SHA256SUMS";

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("cannot write {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} exists and is not a mailbake output (it has no {SUMS_FILE}); choose another --out or remove it", path.display())]
    NotOurs { path: PathBuf },
    #[error("output path `{path}` must be relative and stay inside the output directory")]
    BadPath { path: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> OutputError + '_ {
    move |source| OutputError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One file to write: relative path, bytes, mode. Secrets use 0600.
#[derive(Clone, Debug)]
pub struct OutputFile {
    pub path: String,
    pub data: Vec<u8>,
    pub mode: u32,
}

impl OutputFile {
    pub fn public(path: impl Into<String>, data: Vec<u8>) -> OutputFile {
        OutputFile {
            path: path.into(),
            data,
            mode: 0o644,
        }
    }

    pub fn secret(path: impl Into<String>, data: Vec<u8>) -> OutputFile {
        OutputFile {
            path: path.into(),
            data,
            mode: 0o600,
        }
    }
}

/// A file [`write_dir`] wrote, with the digest it listed in `SHA256SUMS`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    pub path: String,
    pub size: usize,
    pub sha256: String,
}

/// Refuses a `dest` that [`write_dir`] would refuse to replace (it exists and is neither empty
/// nor an earlier mailbake output), so a command can check `--out` before doing any work.
pub fn check_destination(dest: &Path) -> Result<(), OutputError> {
    if dest.exists() && !is_replaceable(dest) {
        return Err(OutputError::NotOurs {
            path: dest.to_path_buf(),
        });
    }
    Ok(())
}

/// Writes `files` plus a `SHA256SUMS` over all of them into `dest`, atomically, and returns
/// each file's digest (hashed once, for `SHA256SUMS` and the caller's report alike).
/// Directories holding a secret file are made 0700.
pub fn write_dir(dest: &Path, files: &[OutputFile]) -> Result<Vec<Written>, OutputError> {
    check_destination(dest)?;
    let parent = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(io(parent))?;
    // Staging directories of runs that were killed (they may hold seeds) go first.
    crate::workdir::remove_stale(parent, STAGING_PREFIX);
    crate::workdir::remove_stale(parent, OLD_PREFIX);
    // 0700 until the output is complete and in place: seeds are written into it.
    let staging = crate::workdir::create(parent, STAGING_PREFIX).map_err(io(parent))?;

    let mut written: Vec<Written> = Vec::with_capacity(files.len());
    for file in files {
        if file.path.starts_with('/') || file.path.split('/').any(|s| s.is_empty() || s == "..") {
            return Err(OutputError::BadPath {
                path: file.path.clone(),
            });
        }
        let target = staging.path().join(&file.path);
        if let Some(dir) = target.parent() {
            fs::create_dir_all(dir).map_err(io(dir))?;
        }
        write_synced(&target, &file.data, file.mode)?;
        written.push(Written {
            path: file.path.clone(),
            size: file.data.len(),
            sha256: hex::encode(Sha256::digest(&file.data)),
        });
    }
    let mut sums: Vec<(&str, &str)> = written
        .iter()
        .map(|w| (w.path.as_str(), w.sha256.as_str()))
        .collect();
    sums.sort();
    let sums_text: String = sums
        .iter()
        .map(|(path, digest)| format!("{digest}  {path}\n"))
        .collect();
    write_synced(&staging.path().join(SUMS_FILE), sums_text.as_bytes(), 0o644)?;
    set_directory_modes(staging.path(), files)?;

    let staged = staging.keep();
    if dest.exists() {
        // Swap: move the old output aside, the new one in, then delete the old one.
        let old = crate::workdir::create(parent, OLD_PREFIX)
            .map_err(io(parent))?
            .keep();
        fs::rename(dest, &old).map_err(io(dest))?;
        if let Err(e) = fs::rename(&staged, dest) {
            let _ = fs::rename(&old, dest);
            let _ = fs::remove_dir_all(&staged);
            return Err(io(dest)(e));
        }
        fs::remove_dir_all(&old).map_err(io(&old))?;
    } else if let Err(e) = fs::rename(&staged, dest) {
        let _ = fs::remove_dir_all(&staged);
        return Err(io(dest)(e));
    }
    // Browsable only once complete; secret subdirectories stay 0700.
    fs::set_permissions(dest, fs::Permissions::from_mode(0o755)).map_err(io(dest))?;
    Ok(written)
}

/// Prefix of the staging directory a run writes its output into (pid-tagged, 0700).
const STAGING_PREFIX: &str = ".mailbake-out-";
/// Prefix of the previous output while it is swapped out.
const OLD_PREFIX: &str = ".mailbake-old-";

/// Gives every directory below `root` an explicit mode, so the output does not depend on the
/// umask (`create_dir_all` honours it): 0700 for a directory that directly holds a secret
/// (0600) file, 0755 for the others.
fn set_directory_modes(root: &Path, files: &[OutputFile]) -> Result<(), OutputError> {
    let mut modes: std::collections::BTreeMap<PathBuf, u32> = std::collections::BTreeMap::new();
    for file in files {
        let mut dir = Path::new(&file.path).parent();
        let mut holder = true;
        while let Some(d) = dir.filter(|d| !d.as_os_str().is_empty()) {
            let secret = holder && file.mode & 0o077 == 0;
            let mode = modes.entry(d.to_path_buf()).or_insert(0o755);
            if secret {
                *mode = 0o700;
            }
            holder = false;
            dir = d.parent();
        }
    }
    for (dir, mode) in modes {
        let path = root.join(dir);
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).map_err(io(&path))?;
    }
    Ok(())
}

fn is_replaceable(dest: &Path) -> bool {
    dest.join(SUMS_FILE).is_file()
        || fs::read_dir(dest).is_ok_and(|mut entries| entries.next().is_none())
}

fn write_synced(path: &Path, data: &[u8], mode: u32) -> Result<(), OutputError> {
    let mut file: File = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io(path))?;
    // The process umask may have narrowed the mode; outputs must not depend on it.
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(io(path))?;
    file.write_all(data).map_err(io(path))?;
    file.sync_all().map_err(io(path))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_leaves_the_previous_output_alone() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out");
        write_dir(&dest, &[OutputFile::public("a", b"one".to_vec())]).unwrap();
        let bad = [
            OutputFile::public("b", b"two".to_vec()),
            OutputFile::public("../escape", vec![]),
        ];
        assert!(write_dir(&dest, &bad).is_err());
        assert_eq!(fs::read(dest.join("a")).unwrap(), b"one");
        assert!(!dest.join("b").exists());
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from("out")]);
    }

    #[test]
    fn secrets_are_0600_in_a_0700_directory_and_sums_list_everything() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out");
        write_dir(
            &dest,
            &[
                OutputFile::public("overlay.tar", b"tar".to_vec()),
                OutputFile::secret("hosts/mx1/seed/user-data", b"secret".to_vec()),
            ],
        )
        .unwrap();
        let mode = |p: &str| fs::metadata(dest.join(p)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode("hosts/mx1/seed/user-data"), 0o600);
        assert_eq!(mode("hosts/mx1/seed"), 0o700);
        assert_eq!(mode("overlay.tar"), 0o644);
        let sums = fs::read_to_string(dest.join(SUMS_FILE)).unwrap();
        assert!(sums.contains("  hosts/mx1/seed/user-data\n") && sums.contains("  overlay.tar\n"));
    }

    #[test]
    fn a_foreign_directory_is_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("precious"), b"x").unwrap();
        let err = write_dir(dir.path(), &[OutputFile::public("a", vec![])]).unwrap_err();
        assert!(err.to_string().contains("not a mailbake output"));
        assert!(dir.path().join("precious").exists());
    }
}
