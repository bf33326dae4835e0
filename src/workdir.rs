//! Private working directories that a crashed run cannot leave behind for long.
//!
//! A directory that holds secrets while mailbake works (a build's staging output, the seed of
//! a test boot) is created 0700 and named `<prefix><pid>-<random>`. Dropping the
//! [`tempfile::TempDir`] removes it; a `kill -9` cannot, so every run first removes the
//! directories with its prefix whose owner process is gone ([`remove_stale`]). Only
//! directories that are ours are touched: the name must carry a pid, the entry must be a
//! directory (not a symlink) owned by the user running mailbake, and that pid must not be a
//! live process. A live pid, even one reused by another program, keeps its directory.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Creates `parent/<prefix><our pid>-<random>`, mode 0700: created with that mode (the umask
/// can only narrow it, so it is never wider at any moment), then set explicitly in case the
/// umask took the owner's bits too.
pub fn create(parent: &Path, prefix: &str) -> io::Result<tempfile::TempDir> {
    let private = fs::Permissions::from_mode(0o700);
    let dir = tempfile::Builder::new()
        .prefix(&format!("{prefix}{}-", std::process::id()))
        .permissions(private.clone())
        .tempdir_in(parent)?;
    fs::set_permissions(dir.path(), private)?;
    Ok(dir)
}

/// Removes the directories in `parent` named `<prefix><pid>-…` that are ours and whose
/// process is gone; returns what it removed. Errors reading `parent` mean nothing to clean.
pub fn remove_stale(parent: &Path, prefix: &str) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(parent) else {
        return Vec::new();
    };
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| owner(n, prefix)) else {
            continue;
        };
        let path = entry.path();
        let ours = fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir() && m.uid() == me);
        if ours && !alive(pid) && fs::remove_dir_all(&path).is_ok() {
            removed.push(path);
        }
    }
    removed
}

/// Whether `name` is `<prefix><pid>-…` and that process is running: such a directory is in
/// use and must be left alone. A name without a pid has no owner to wait for.
pub fn owner_alive(name: &str, prefix: &str) -> bool {
    owner(name, prefix).is_some_and(alive)
}

/// The pid in a name `<prefix><pid>-…`.
fn owner(name: &str, prefix: &str) -> Option<libc::pid_t> {
    let (pid, _) = name.strip_prefix(prefix)?.split_once('-')?;
    pid.parse().ok()
}

/// Whether a process with this pid exists (signal 0 checks without sending anything; EPERM
/// means it exists but belongs to someone else).
fn alive(pid: libc::pid_t) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill with signal 0 only checks that the process exists.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pid that was just used and is gone: a child that exited and was reaped.
    fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    }

    #[test]
    fn only_our_directories_of_dead_processes_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let made = create(dir.path(), ".x-").unwrap();
        assert_eq!(
            fs::metadata(made.path()).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let dead = dir.path().join(format!(".x-{}-abc", dead_pid()));
        fs::create_dir(&dead).unwrap();
        fs::write(dead.join("seed.img"), b"secret").unwrap();
        let not_a_pid = dir.path().join(".x-mine-abc");
        fs::create_dir(&not_a_pid).unwrap();
        let other_prefix = dir.path().join(format!(".y-{}-abc", dead_pid()));
        fs::create_dir(&other_prefix).unwrap();
        let file = dir.path().join(format!(".x-{}-file", dead_pid()));
        fs::write(&file, b"").unwrap();

        assert_eq!(remove_stale(dir.path(), ".x-"), vec![dead.clone()]);
        assert!(!dead.exists());
        assert!(made.path().exists(), "a live process keeps its directory");
        assert!(not_a_pid.exists() && other_prefix.exists() && file.exists());
    }
}
