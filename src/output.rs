//! Output directories that appear whole or not at all, and replace only their own kind.
//!
//! A stage writes everything into a fresh temporary directory beside the destination and only
//! renames it into place once every file is written and synced. A failure leaves the previous
//! output (if any) untouched and no half-written files behind.
//!
//! Each output carries [`KIND_FILE`], naming the command that made it ([`OutputKind`]), and a
//! command replaces only an empty directory or its own kind of output: `build --out` given a
//! drain export would otherwise delete the only copy of undelivered mail.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The file that lists an output's digests.
pub const SUMS_FILE: &str = "SHA256SUMS";
/// The file that marks a directory as one kind of mailbake output (listed in [`SUMS_FILE`]).
pub const KIND_FILE: &str = "MAILBAKE-OUTPUT";

/// Which command made an output directory, and so which command may replace it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputKind {
    /// `mailbake build --out`: overlay, seeds, DNS records.
    Build,
    /// `mailbake drain --export`: a host's undelivered mail.
    DrainExport,
    /// `mailbake terraform --out`: the Terraform module and its values.
    Terraform,
}

impl OutputKind {
    const ALL: [OutputKind; 3] = [
        OutputKind::Build,
        OutputKind::DrainExport,
        OutputKind::Terraform,
    ];

    /// The command and option that write this kind, as the operator types them.
    pub fn command(self) -> &'static str {
        match self {
            OutputKind::Build => "mailbake build --out",
            OutputKind::DrainExport => "mailbake drain --export",
            OutputKind::Terraform => "mailbake terraform --out",
        }
    }

    /// The content of [`KIND_FILE`].
    fn marker(self) -> String {
        format!("{}\n", self.command())
    }

    fn from_marker(bytes: &[u8]) -> Option<OutputKind> {
        OutputKind::ALL
            .into_iter()
            .find(|k| bytes == k.marker().as_bytes())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("cannot write {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{} exists and is not an output of `{}` (it has no {KIND_FILE} naming that command{}); nothing was written\n  fix: choose another directory, or remove this one yourself if nothing in it is needed",
        path.display(),
        kind.command(),
        if *sums { format!("; its {SUMS_FILE} may be an older mailbake's") } else { String::new() }
    )]
    NotOurs {
        path: PathBuf,
        kind: OutputKind,
        sums: bool,
    },
    #[error(
        "{} holds the output of `{}`, which `{}` must not replace; nothing was written\n  fix: choose another directory",
        path.display(),
        found.command(),
        kind.command()
    )]
    OtherKind {
        path: PathBuf,
        kind: OutputKind,
        found: OutputKind,
    },
    #[error(
        "{} is a symbolic link{}; `{}` replaces a directory by renaming, which would replace the link and not what it points to; nothing was written\n  fix: give the directory itself",
        path.display(),
        target.as_ref().map(|t| format!(" to {}", t.display())).unwrap_or_default(),
        kind.command()
    )]
    Symlink {
        path: PathBuf,
        target: Option<PathBuf>,
        kind: OutputKind,
    },
    #[error(
        "cannot write into {} (the directory `{}` puts {} in): {source}; nothing was done\n  fix: give a path whose parent is a directory you can write",
        parent.display(),
        kind.command(),
        path.display()
    )]
    BadParent {
        path: PathBuf,
        parent: PathBuf,
        kind: OutputKind,
        source: std::io::Error,
    },
    #[error(
        "output path `{path}` must be relative, stay inside the output directory and hold no control character"
    )]
    BadPath { path: String },
    #[error("output path `{path}` is the name of a file mailbake writes itself in every output")]
    Reserved { path: String },
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

/// A file an earlier output already holds with the right bytes (checked by the caller against
/// `sha256`): [`write_dir_reusing`] links it into the new output instead of writing it again.
#[derive(Clone, Debug)]
pub struct ReusedFile {
    pub path: String,
    pub source: PathBuf,
    pub sha256: String,
    pub size: usize,
}

/// Refuses a `dest` that [`write_dir`] would refuse (a symbolic link, a directory that is
/// neither empty nor an earlier output of `kind`, a parent that cannot be written), so a
/// command checks `--out` before doing any work. Makes the parent directories as the write
/// will, and proves the parent writable by making and removing a staging directory there.
pub fn check_destination(dest: &Path, kind: OutputKind) -> Result<(), OutputError> {
    match fs::symlink_metadata(dest) {
        Ok(meta) if meta.file_type().is_symlink() => {
            return Err(OutputError::Symlink {
                path: dest.to_path_buf(),
                target: fs::read_link(dest).ok(),
                kind,
            });
        }
        Ok(_) => match found_kind(dest) {
            Found::Empty => {}
            Found::Kind(found) if found == kind => {}
            Found::Kind(found) => {
                return Err(OutputError::OtherKind {
                    path: dest.to_path_buf(),
                    kind,
                    found,
                });
            }
            Found::Foreign { sums } => {
                return Err(OutputError::NotOurs {
                    path: dest.to_path_buf(),
                    kind,
                    sums,
                });
            }
        },
        Err(_) => {}
    }
    let parent = parent_of(dest);
    let bad_parent = |source| OutputError::BadParent {
        path: dest.to_path_buf(),
        parent: parent.to_path_buf(),
        kind,
        source,
    };
    fs::create_dir_all(parent).map_err(bad_parent)?;
    crate::workdir::create(parent, STAGING_PREFIX).map_err(bad_parent)?;
    Ok(())
}

/// What an existing destination holds.
enum Found {
    Empty,
    Kind(OutputKind),
    /// Anything else; `sums` when it has a [`SUMS_FILE`] (an older mailbake's output).
    Foreign {
        sums: bool,
    },
}

fn found_kind(dest: &Path) -> Found {
    if fs::read_dir(dest).is_ok_and(|mut entries| entries.next().is_none()) {
        return Found::Empty;
    }
    // Read only a marker that is a plain file: a symlink could point anywhere.
    let marker = dest.join(KIND_FILE);
    let plain = fs::symlink_metadata(&marker).is_ok_and(|m| m.is_file() && m.len() < 256);
    match plain.then(|| fs::read(&marker).ok()).flatten() {
        Some(bytes) => match OutputKind::from_marker(&bytes) {
            Some(kind) => Found::Kind(kind),
            None => Found::Foreign { sums: true },
        },
        None => Found::Foreign {
            sums: dest.join(SUMS_FILE).is_file(),
        },
    }
}

/// The directory `dest` is renamed into.
fn parent_of(dest: &Path) -> &Path {
    dest.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Writes `files` plus [`KIND_FILE`] and a `SHA256SUMS` over all of them into `dest`,
/// atomically, and returns each file's digest (hashed once, for `SHA256SUMS` and the caller's
/// report alike). Directories holding a secret file are made 0700.
pub fn write_dir(
    dest: &Path,
    kind: OutputKind,
    files: &[OutputFile],
) -> Result<Vec<Written>, OutputError> {
    write_dir_reusing(dest, kind, files, &[])
}

/// [`write_dir`], with `reused` files hard-linked (or, across file systems, copied) from where
/// they are, so a warm build does not write tens of megabytes it already wrote. Public 0644
/// files only: a link shares its mode with the earlier output's file.
pub fn write_dir_reusing(
    dest: &Path,
    kind: OutputKind,
    files: &[OutputFile],
    reused: &[ReusedFile],
) -> Result<Vec<Written>, OutputError> {
    // The two files this module writes itself; a caller's file of that name would forge them.
    let names = files
        .iter()
        .map(|f| &f.path)
        .chain(reused.iter().map(|f| &f.path));
    if let Some(path) = names
        .into_iter()
        .find(|p| *p == KIND_FILE || *p == SUMS_FILE)
    {
        return Err(OutputError::Reserved { path: path.clone() });
    }
    let parent = parent_of(dest);
    // Staging directories of runs that were killed (they may hold seeds) go first.
    crate::workdir::remove_stale(parent, STAGING_PREFIX);
    crate::workdir::remove_stale(parent, OLD_PREFIX);
    check_destination(dest, kind)?;
    // 0700 until the output is complete and in place: seeds are written into it.
    let staging = crate::workdir::create(parent, STAGING_PREFIX).map_err(io(parent))?;

    let mut written: Vec<Written> = Vec::with_capacity(files.len() + reused.len());
    for file in reused {
        let target = staged_path(staging.path(), &file.path)?;
        link_or_copy(&file.source, &target)?;
        written.push(Written {
            path: file.path.clone(),
            size: file.size,
            sha256: file.sha256.clone(),
        });
    }
    let marker = OutputFile::public(KIND_FILE, kind.marker().into_bytes());
    for file in files.iter().chain([&marker]) {
        let target = staged_path(staging.path(), &file.path)?;
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

/// Where `path` (relative, inside the output) goes in the staging directory; its parent made.
fn staged_path(staging: &Path, path: &str) -> Result<PathBuf, OutputError> {
    // A control character (a newline above all) would forge a line of SHA256SUMS.
    if path.starts_with('/')
        || path.split('/').any(|s| s.is_empty() || s == "..")
        || path.chars().any(char::is_control)
    {
        return Err(OutputError::BadPath {
            path: path.to_string(),
        });
    }
    let target = staging.join(path);
    if let Some(dir) = target.parent() {
        fs::create_dir_all(dir).map_err(io(dir))?;
    }
    Ok(target)
}

fn link_or_copy(source: &Path, target: &Path) -> Result<(), OutputError> {
    if fs::hard_link(source, target).is_ok() {
        return Ok(());
    }
    fs::copy(source, target).map_err(io(target))?;
    fs::set_permissions(target, fs::Permissions::from_mode(0o644)).map_err(io(target))?;
    File::open(target)
        .and_then(|f| f.sync_all())
        .map_err(io(target))
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
        write_dir(
            &dest,
            OutputKind::Build,
            &[OutputFile::public("a", b"one".to_vec())],
        )
        .unwrap();
        let bad = [
            OutputFile::public("b", b"two".to_vec()),
            OutputFile::public("../escape", vec![]),
        ];
        assert!(write_dir(&dest, OutputKind::Build, &bad).is_err());
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
            OutputKind::Build,
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
        let err = write_dir(
            dir.path(),
            OutputKind::Build,
            &[OutputFile::public("a", vec![])],
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("is not an output of `mailbake build --out`")
        );
        assert!(dir.path().join("precious").exists());
    }

    /// Names in `dir`, sorted.
    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn each_command_replaces_only_its_own_kind_of_output() {
        for existing in OutputKind::ALL {
            for writer in OutputKind::ALL {
                let dir = tempfile::tempdir().unwrap();
                let dest = dir.path().join("out");
                write_dir(
                    &dest,
                    existing,
                    &[OutputFile::secret("m:1", b"mail".to_vec())],
                )
                .unwrap();
                let result = write_dir(&dest, writer, &[OutputFile::public("b", vec![])]);
                if existing == writer {
                    assert!(result.is_ok(), "{writer:?} over its own: {result:?}");
                    assert_eq!(names(&dest), ["MAILBAKE-OUTPUT", "SHA256SUMS", "b"]);
                    continue;
                }
                let said = result.expect_err("another kind is refused").to_string();
                assert!(
                    said.contains(&format!("holds the output of `{}`", existing.command()))
                        && said.contains(&format!("`{}` must not replace", writer.command())),
                    "{existing:?} under {writer:?}: {said}"
                );
                assert_eq!(fs::read(dest.join("m:1")).unwrap(), b"mail", "{said}");
                assert_eq!(names(dir.path()), ["out"], "leftovers after: {said}");
            }
        }
    }

    #[test]
    fn a_directory_with_only_sha256sums_or_a_forged_marker_is_not_an_output() {
        for (marker, what) in [
            (None, "SHA256SUMS alone"),
            (
                Some("mailbake build --out\nextra\n"),
                "a marker with more in it",
            ),
            (Some("something else\n"), "an unknown marker"),
        ] {
            let dir = tempfile::tempdir().unwrap();
            fs::write(dir.path().join(SUMS_FILE), "").unwrap();
            fs::write(dir.path().join("m:queued"), "mail").unwrap();
            if let Some(text) = marker {
                fs::write(dir.path().join(KIND_FILE), text).unwrap();
            }
            let said = write_dir(dir.path(), OutputKind::Build, &[])
                .expect_err(what)
                .to_string();
            assert!(
                said.contains("is not an output of `mailbake build --out`"),
                "{what}: {said}"
            );
            assert!(dir.path().join("m:queued").exists(), "{what}");
        }
    }

    #[test]
    fn a_symlink_to_an_earlier_output_is_refused_before_anything_is_staged() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        write_dir(
            &real,
            OutputKind::Build,
            &[OutputFile::public("a", b"one".to_vec())],
        )
        .unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let said = check_destination(&link, OutputKind::Build)
            .expect_err("a symlink is refused")
            .to_string();
        assert!(
            said.contains("is a symbolic link to")
                && said.contains("fix: give the directory itself"),
            "{said}"
        );
        let said = write_dir(
            &link,
            OutputKind::Build,
            &[OutputFile::public("a", b"two".to_vec())],
        )
        .expect_err("a symlink is refused")
        .to_string();
        assert_eq!(
            names(dir.path()),
            ["link", "real"],
            "leftovers after: {said}"
        );
        assert_eq!(fs::read(real.join("a")).unwrap(), b"one");
    }

    #[test]
    fn a_name_with_a_newline_never_reaches_sha256sums() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out");
        let forged =
            "m:a\n0000000000000000000000000000000000000000000000000000000000000000  overlay.tar";
        let err = write_dir(
            &dest,
            OutputKind::DrainExport,
            &[OutputFile::secret(forged, vec![])],
        )
        .expect_err("a newline in a name is refused");
        assert!(err.to_string().contains("no control character"), "{err}");
        assert!(!dest.exists());
    }

    #[test]
    fn a_parent_that_cannot_be_written_is_refused_by_the_check() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        fs::write(&file, "").unwrap();
        let said = check_destination(&file.join("export"), OutputKind::DrainExport)
            .expect_err("a file as parent is refused")
            .to_string();
        assert!(
            said.contains("cannot write into") && said.contains("mailbake drain --export"),
            "{said}"
        );
    }
}
