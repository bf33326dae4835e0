//! Carrying out a [`super::plan`] with e2fsprogs' `debugfs`, on the root filesystem where it
//! lies inside the disk file (`disk.raw?offset=N`): no loop device, no mount, no root.
//!
//! debugfs reads one command per line and splits it into words; a word in double quotes may
//! hold spaces, and `""` inside the quotes stands for one `"`. Every path and link target is
//! quoted that way ([`quote`]); newlines and NUL never reach here (the plan refuses them).
//!
//! debugfs does not stop or change its exit status when a command fails: it prints the error
//! and goes on. So its output is read back, and anything other than the echo of a command or
//! the number of an inode it allocated fails the build with debugfs's own words.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use super::plan::Op;
use crate::image::{ImageError, run_tool};

/// One word for debugfs's command line.
pub fn quote(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// A path's directory and last name: `/a/b` gives `/a` and `b`, `/a` gives `/` and `a`.
fn split(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(0) => ("/", &path[1..]),
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("/", path),
    }
}

/// The debugfs script for `ops`; payload `n` is the file `payloads/n` (a plain name, run from
/// the work directory).
///
/// Every command that creates or removes a name runs in that name's directory (`cd`, then the
/// plain name): debugfs 1.47's `write` links its file into the current directory whatever path
/// it is given, and `mkdir`, `rm` and `symlink` given `/name` resolve the empty directory part
/// as the current directory, not `/`.
pub fn script(ops: &[Op]) -> String {
    let mut s = String::new();
    let in_dir = |s: &mut String, path: &str, command: &str, rest: &str| {
        let (dir, name) = split(path);
        // Writing into a String cannot fail.
        let _ = writeln!(s, "cd {}\n{command} {}{rest}", quote(dir), quote(name));
    };
    for op in ops {
        let _ = match op {
            Op::Mkdir(p) => {
                in_dir(&mut s, p, "mkdir", "");
                Ok(())
            }
            Op::Remove(p) => {
                in_dir(&mut s, p, "rm", "");
                Ok(())
            }
            Op::Write { dir, name, payload } => writeln!(
                s,
                "cd {}\nwrite payloads/{payload} {}",
                quote(dir),
                quote(name)
            ),
            Op::Symlink { path, target } => {
                in_dir(&mut s, path, "symlink", &format!(" {}", quote(target)));
                Ok(())
            }
            Op::Attrs {
                path,
                mode,
                attrs,
                times,
            } => {
                let p = quote(path);
                let _ = writeln!(s, "sif {p} mode 0{mode:o}");
                let _ = writeln!(s, "sif {p} uid {}", attrs.uid);
                let _ = writeln!(s, "sif {p} gid {}", attrs.gid);
                if *times {
                    for field in ["mtime", "atime", "ctime", "crtime"] {
                        let _ = writeln!(s, "sif {p} {field} @{}", attrs.mtime);
                    }
                }
                Ok(())
            }
        };
    }
    s
}

/// Runs `script` read-write on the filesystem at byte `offset` of `disk`, from `workdir`
/// (where `payloads/` is). `sde` pins every time debugfs records itself.
pub fn apply(
    disk: &Path,
    offset: u64,
    workdir: &Path,
    script_text: &str,
    sde: i64,
) -> Result<(), ImageError> {
    let script_path = workdir.join("overlay.debugfs");
    std::fs::write(&script_path, script_text).map_err(ImageError::io(&script_path))?;
    let target = format!("{}?offset={offset}", disk.display());
    let out = Command::new("debugfs")
        .current_dir(workdir)
        .env("E2FSPROGS_FAKE_TIME", sde.to_string())
        .arg("-w")
        .arg("-f")
        .arg(&script_path)
        .arg(&target)
        .output()
        .map_err(|e| ImageError::Tool {
            command: "debugfs".into(),
            status: "could not start".into(),
            stderr: e.to_string(),
            fix: "install e2fsprogs (debugfs)".into(),
        })?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let complaints = complaints(&text);
    if !out.status.success() || !complaints.is_empty() {
        return Err(ImageError::Tool {
            command: format!("debugfs -w -f {} {target}", script_path.display()),
            status: out.status.to_string(),
            stderr: complaints.join("\n"),
            fix: "the base's root filesystem refused a change (full, or damaged: check it with e2fsck -fn)".into(),
        });
    }
    Ok(())
}

/// The lines of debugfs's output that are neither its banner, the echo of a command, nor an
/// allocated inode number.
fn complaints(output: &str) -> Vec<String> {
    output
        .lines()
        .filter(|l| {
            !(l.is_empty()
                || l.starts_with("debugfs ")
                || l.starts_with("debugfs: ")
                || l.starts_with("Allocated inode: "))
        })
        .map(|l| l.escape_debug().to_string())
        .collect()
}

/// `e2fsck -fn` on the filesystem at `offset`: proof that it is consistent, before and after.
pub fn check(disk: &Path, offset: u64, when: &str) -> Result<(), ImageError> {
    run_tool(
        Command::new("e2fsck")
            .arg("-fn")
            .arg(format!("{}?offset={offset}", disk.display())),
        &format!(
            "the root filesystem is not consistent {when}; if it is the base, get a clean copy"
        ),
    )
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::base_disk::plan::Attrs;

    #[test]
    fn words_are_quoted_with_doubled_quotes() {
        assert_eq!(quote("a b"), "\"a b\"");
        assert_eq!(quote("x\"y"), "\"x\"\"y\"");
        assert_eq!(quote("-x"), "\"-x\"");
    }

    #[test]
    fn a_write_changes_directory_then_writes_by_plain_name() {
        let s = script(&[
            Op::Write {
                dir: "/etc/a b".into(),
                name: "n\"q".into(),
                payload: 7,
            },
            Op::Attrs {
                path: "/etc/a b/n\"q".into(),
                mode: 0o100600,
                attrs: Attrs {
                    perm: 0o600,
                    uid: 1,
                    gid: 2,
                    mtime: 9,
                },
                times: true,
            },
        ]);
        assert!(
            s.starts_with("cd \"/etc/a b\"\nwrite payloads/7 \"n\"\"q\"\n"),
            "{s}"
        );
        assert!(s.contains("sif \"/etc/a b/n\"\"q\" mode 0100600\n"), "{s}");
        assert!(s.contains("sif \"/etc/a b/n\"\"q\" crtime @9\n"), "{s}");
    }

    #[test]
    fn names_at_the_root_are_made_from_the_root() {
        let s = script(&[
            Op::Remove("/lib".into()),
            Op::Mkdir("/srv".into()),
            Op::Symlink {
                path: "/etc/a b".into(),
                target: "../x".into(),
            },
        ]);
        assert_eq!(
            s,
            "cd \"/\"\nrm \"lib\"\ncd \"/\"\nmkdir \"srv\"\ncd \"/etc\"\nsymlink \"a b\" \"../x\"\n"
        );
    }

    #[test]
    fn only_debugfs_chatter_is_not_a_complaint() {
        let out = "debugfs 1.47.0 (5-Feb-2023)\ndebugfs: mkdir \"/x\"\nAllocated inode: 12\n\
                   mkdir: Ext2 inode is not a directory \n";
        assert_eq!(complaints(out), ["mkdir: Ext2 inode is not a directory "]);
    }
}
