//! What the overlay does to the base's root filesystem, as a list of operations that debugfs
//! carries out.
//!
//! The result is what extracting the overlay over the base would give (the overlay's entries
//! win), with two rules tar leaves to flags:
//! - a symlink in a parent path is followed with the base's root as `/` (a chroot's view), so
//!   `lib/systemd/…` lands in `usr/lib/systemd/…` on a merged-/usr base, as dpkg would put it;
//! - a directory the base already has keeps its contents, and takes the overlay's mode and
//!   owner but keeps its own times (the overlay is not meant to re-date the base's `/etc`).
//!
//! Refused, with the entry named: a file where the base has a directory, a directory where it
//! has a file, a parent that is missing or not a directory, names that debugfs's command line
//! cannot carry (newline, NUL, non-UTF-8), and entry kinds the overlay never has (hard links,
//! devices, FIFOs).

use std::collections::BTreeMap;

use crate::image::ImageError;

/// Longest chain of symlinks followed while resolving one path (Linux uses 40 too).
const MAX_SYMLINKS: usize = 40;

/// What is at a path of the base, not following a final symlink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir,
    File,
    Symlink(String),
    /// Device, FIFO or socket.
    Special,
}

/// Read access to the base's root filesystem.
pub trait BaseTree {
    /// What is at `path` (absolute, already resolved but for its last component), if anything.
    fn node(&self, path: &str) -> Result<Option<Node>, ImageError>;
}

/// Owner, permission bits and (for new inodes) time of an overlay entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attrs {
    /// Permission bits only (07777).
    pub perm: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
}

/// One debugfs step. Paths are absolute and fully resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Mkdir(String),
    /// Remove a file or symlink that an overlay entry replaces.
    Remove(String),
    /// Write payload `payload` as `name` in directory `dir`.
    Write {
        dir: String,
        name: String,
        payload: usize,
    },
    Symlink {
        path: String,
        target: String,
    },
    /// Set type and permission bits, owner, and the times if given.
    Attrs {
        path: String,
        mode: u32,
        attrs: Attrs,
        times: bool,
    },
}

/// The operations for a list of overlay entries, in archive order.
pub struct Planner<'a, B: BaseTree> {
    base: &'a B,
    /// What the operations so far changed: `None` where a base entry was removed.
    changed: BTreeMap<String, Option<Node>>,
    pub ops: Vec<Op>,
    /// Bytes of the files written, for the free-space check.
    pub bytes_written: u64,
    pub inodes_created: u64,
}

/// The kind of an overlay entry, as far as the plan cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    /// A regular file, whose bytes are payload number `.0`, `.1` bytes long.
    File(usize, u64),
    Symlink(String),
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;

impl<'a, B: BaseTree> Planner<'a, B> {
    pub fn new(base: &'a B) -> Self {
        Planner {
            base,
            changed: BTreeMap::new(),
            ops: Vec::new(),
            bytes_written: 0,
            inodes_created: 0,
        }
    }

    fn node(&self, path: &str) -> Result<Option<Node>, ImageError> {
        match self.changed.get(path) {
            Some(n) => Ok(n.clone()),
            None => self.base.node(path),
        }
    }

    /// Adds one overlay entry, named by its archive path (relative, `/`-separated).
    pub fn add(&mut self, name: &str, kind: EntryKind, attrs: Attrs) -> Result<(), ImageError> {
        let refuse = |reason: String| ImageError::Overlay {
            entry: name.to_string(),
            reason,
        };
        let comps = components(name).map_err(refuse)?;
        let Some((last, parents)) = comps.split_last() else {
            // The archive's own root (`./`): the base's root keeps its metadata.
            return Ok(());
        };
        let dir = self.resolve_dir(parents).map_err(refuse)?;
        let path = join(&dir, last);
        let existing = self.node(&path)?;
        match kind {
            EntryKind::Dir => {
                let target = match existing {
                    None => {
                        self.ops.push(Op::Mkdir(path.clone()));
                        self.changed.insert(path.clone(), Some(Node::Dir));
                        self.inodes_created += 1;
                        self.ops.push(Op::Attrs {
                            path,
                            mode: S_IFDIR | attrs.perm,
                            attrs,
                            times: true,
                        });
                        return Ok(());
                    }
                    Some(Node::Dir) => path,
                    // A directory symlink stays (dpkg's and `tar --keep-directory-symlink`'s
                    // rule); its target takes the entry's mode and owner.
                    Some(Node::Symlink(_)) => {
                        let mut c = parents.to_vec();
                        c.push(last);
                        self.resolve_dir(&c).map_err(refuse)?
                    }
                    Some(_) => {
                        return Err(refuse(format!(
                            "the base has a file at {path}, the overlay a directory"
                        )));
                    }
                };
                self.ops.push(Op::Attrs {
                    path: target,
                    mode: S_IFDIR | attrs.perm,
                    attrs,
                    times: false,
                });
            }
            EntryKind::File(payload, len) => {
                self.make_room(&path, existing).map_err(refuse)?;
                self.ops.push(Op::Write {
                    dir,
                    name: (*last).to_string(),
                    payload,
                });
                self.changed.insert(path.clone(), Some(Node::File));
                self.bytes_written += len;
                self.inodes_created += 1;
                self.ops.push(Op::Attrs {
                    path,
                    mode: S_IFREG | attrs.perm,
                    attrs,
                    times: true,
                });
            }
            EntryKind::Symlink(target) => {
                check_text(&target).map_err(|e| refuse(format!("link target: {e}")))?;
                self.make_room(&path, existing).map_err(refuse)?;
                self.ops.push(Op::Symlink {
                    path: path.clone(),
                    target: target.clone(),
                });
                self.changed
                    .insert(path.clone(), Some(Node::Symlink(target)));
                self.inodes_created += 1;
                self.ops.push(Op::Attrs {
                    path,
                    mode: S_IFLNK | 0o777,
                    attrs,
                    times: true,
                });
            }
        }
        Ok(())
    }

    /// Removes a file or symlink at `path` so an entry can take its place.
    fn make_room(&mut self, path: &str, existing: Option<Node>) -> Result<(), String> {
        match existing {
            None => Ok(()),
            Some(Node::File) | Some(Node::Symlink(_)) => {
                self.ops.push(Op::Remove(path.to_string()));
                self.changed.insert(path.to_string(), None);
                Ok(())
            }
            Some(Node::Dir) => Err(format!(
                "the base has a directory at {path}, the overlay a file"
            )),
            Some(Node::Special) => Err(format!(
                "the base has a device, FIFO or socket at {path}; the overlay may not replace it"
            )),
        }
    }

    /// Resolves directory components from `/`, following symlinks inside the base.
    fn resolve_dir(&self, comps: &[&str]) -> Result<String, String> {
        let mut todo: Vec<String> = comps.iter().rev().map(|c| c.to_string()).collect();
        let mut cur = String::from("/");
        let mut hops = 0;
        while let Some(c) = todo.pop() {
            match c.as_str() {
                "" | "." => continue,
                ".." => {
                    cur = parent(&cur);
                    continue;
                }
                _ => {}
            }
            let next = join(&cur, &c);
            match self.node(&next).map_err(|e| e.to_string())? {
                Some(Node::Dir) => cur = next,
                Some(Node::Symlink(target)) => {
                    hops += 1;
                    if hops > MAX_SYMLINKS {
                        return Err(format!("too many symlinks resolving {next}"));
                    }
                    if target.starts_with('/') {
                        cur = String::from("/");
                    }
                    todo.extend(target.split('/').rev().map(str::to_string));
                }
                Some(_) => return Err(format!("{next} is not a directory in the base")),
                None => {
                    return Err(format!(
                        "{next} is neither in the base nor earlier in the overlay"
                    ));
                }
            }
        }
        Ok(cur)
    }
}

/// The components of an archive path, refusing `..` and what debugfs cannot carry.
fn components(name: &str) -> Result<Vec<&str>, String> {
    check_text(name)?;
    let mut out = Vec::new();
    for c in name.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err("`..` in an overlay path".into()),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// debugfs reads one command per line: a newline or NUL cannot be carried in a name.
fn check_text(s: &str) -> Result<(), String> {
    if s.contains(['\n', '\r', '\0']) {
        return Err(format!("{s:?} holds a newline or NUL"));
    }
    Ok(())
}

fn join(dir: &str, name: &str) -> String {
    if dir == "/" {
        format!("/{name}")
    } else {
        format!("{dir}/{name}")
    }
}

fn parent(path: &str) -> String {
    match path.rfind('/') {
        Some(0) | None => "/".into(),
        Some(i) => path[..i].into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A base with merged /usr: `/lib -> usr/lib`, `/etc` with one file, a device node.
    struct Fake(BTreeMap<&'static str, Node>);

    impl BaseTree for Fake {
        fn node(&self, path: &str) -> Result<Option<Node>, ImageError> {
            Ok(self.0.get(path).cloned())
        }
    }

    fn base() -> Fake {
        Fake(BTreeMap::from([
            ("/etc", Node::Dir),
            ("/etc/hostname", Node::File),
            ("/usr", Node::Dir),
            ("/usr/lib", Node::Dir),
            ("/lib", Node::Symlink("usr/lib".into())),
            ("/dev", Node::Dir),
            ("/dev/null", Node::Special),
            ("/run", Node::Dir),
            ("/etc/resolv.conf", Node::Symlink("/run/resolv.conf".into())),
        ]))
    }

    fn attrs() -> Attrs {
        Attrs {
            perm: 0o644,
            uid: 0,
            gid: 0,
            mtime: 1,
        }
    }

    #[test]
    fn parents_follow_the_bases_symlinks_and_new_directories_are_made() {
        let b = base();
        let mut p = Planner::new(&b);
        p.add("lib/", EntryKind::Dir, attrs()).unwrap();
        p.add("lib/systemd/", EntryKind::Dir, attrs()).unwrap();
        p.add("lib/systemd/x.service", EntryKind::File(0, 10), attrs())
            .unwrap();
        assert!(p.ops.contains(&Op::Mkdir("/usr/lib/systemd".into())));
        assert!(p.ops.contains(&Op::Write {
            dir: "/usr/lib/systemd".into(),
            name: "x.service".into(),
            payload: 0
        }));
        // The symlink itself stays; its target got the entry's mode, not a new time.
        assert!(p.ops.contains(&Op::Attrs {
            path: "/usr/lib".into(),
            mode: S_IFDIR | 0o644,
            attrs: attrs(),
            times: false
        }));
        assert!(!p.ops.iter().any(|o| matches!(o, Op::Remove(_))));
    }

    #[test]
    fn a_file_or_symlink_the_overlay_replaces_is_removed_first() {
        let b = base();
        let mut p = Planner::new(&b);
        p.add("etc/hostname", EntryKind::File(3, 5), attrs())
            .unwrap();
        p.add(
            "etc/resolv.conf",
            EntryKind::Symlink("../run/x".into()),
            attrs(),
        )
        .unwrap();
        assert_eq!(p.ops[0], Op::Remove("/etc/hostname".into()));
        assert!(p.ops.contains(&Op::Remove("/etc/resolv.conf".into())));
        assert_eq!(p.bytes_written, 5);
    }

    #[test]
    fn kinds_that_cannot_replace_each_other_are_refused_with_the_entry_named() {
        let b = base();
        let cases: [(&str, EntryKind, &str); 5] = [
            ("etc", EntryKind::File(0, 1), "a directory at /etc"),
            ("etc/hostname/", EntryKind::Dir, "a file at /etc/hostname"),
            ("dev/null", EntryKind::File(0, 1), "device"),
            ("nowhere/x", EntryKind::File(0, 1), "/nowhere is neither"),
            ("etc/hostname/x", EntryKind::File(0, 1), "not a directory"),
        ];
        for (name, kind, want) in cases {
            let mut p = Planner::new(&b);
            let err = p.add(name, kind, attrs()).unwrap_err().to_string();
            assert!(err.contains(name) && err.contains(want), "{name}: {err}");
        }
    }

    #[test]
    fn names_debugfs_cannot_carry_and_dot_dot_are_refused() {
        let b = base();
        for name in ["etc/a\nb", "etc/../../x", "etc/a\0"] {
            let mut p = Planner::new(&b);
            assert!(
                p.add(name, EntryKind::File(0, 1), attrs()).is_err(),
                "{name:?}"
            );
        }
    }

    #[test]
    fn symlink_loops_end_in_an_error() {
        let b = Fake(BTreeMap::from([
            ("/a", Node::Symlink("b".into())),
            ("/b", Node::Symlink("a".into())),
        ]));
        let err = Planner::new(&b)
            .add("a/x", EntryKind::File(0, 1), attrs())
            .unwrap_err()
            .to_string();
        assert!(err.contains("too many symlinks"), "{err}");
    }
}
