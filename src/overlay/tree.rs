//! The overlay as a tree of entries keyed by path, before it is written out.

use std::collections::BTreeMap;
use std::fmt;

/// Where an entry came from: it decides what may replace it (a layer replaces a package's
/// sample file, never another layer's file) and names the culprit in messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The payload of a pinned package.
    Package { name: String, version: String },
    /// A layer, by its directory name.
    Layer(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Package { name, version } => write!(f, "package {name} {version}"),
            Origin::Layer(name) => write!(f, "layer {name}"),
        }
    }
}

/// What an entry is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Content {
    Dir,
    File(Vec<u8>),
    Symlink(String),
}

/// One file system entry of the overlay. Owners are numeric: the overlay is unpacked onto
/// base images whose user databases mailbake does not control, so only root (0) is used and
/// services create their own users (sysusers.d) and fix ownership (tmpfiles.d) at boot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub content: Content,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub origin: Origin,
}

impl Entry {
    pub fn dir(origin: &Origin) -> Entry {
        Entry {
            content: Content::Dir,
            mode: 0o755,
            uid: 0,
            gid: 0,
            origin: origin.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error(
        "`{path}` from {origin} cannot be placed: `{parent}` is not a directory (it comes from {parent_origin})"
    )]
    ParentNotDir {
        path: String,
        origin: String,
        parent: String,
        parent_origin: String,
    },
    #[error("`{path}` is provided twice, by {first} and by {second}; remove it from one of them")]
    Conflict {
        path: String,
        first: String,
        second: String,
    },
    #[error("`{path}` from {origin} is not a clean relative path (no `..`, no empty segments)")]
    BadPath { path: String, origin: String },
}

/// Entries sorted by path; a path always sorts before the paths below it, so writing them in
/// order puts every directory before its contents.
#[derive(Clone, Debug, Default)]
pub struct Tree {
    entries: BTreeMap<String, Entry>,
}

/// How [`Tree::insert`] treats a path that is already there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnExisting {
    /// Replace it: layers override package files (our chasquid.conf over the sample).
    Replace,
    /// Refuse it: two layers writing one file is a mistake.
    Refuse,
}

impl Tree {
    pub fn entries(&self) -> impl Iterator<Item = (&String, &Entry)> {
        self.entries.iter()
    }

    pub fn get(&self, path: &str) -> Option<&Entry> {
        self.entries.get(path)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds `entry` at `path` (relative, `/`-separated), creating missing parent directories.
    /// Directories merge; anything else follows `on_existing`.
    pub fn insert(
        &mut self,
        path: &str,
        entry: Entry,
        on_existing: OnExisting,
    ) -> Result<(), TreeError> {
        let path = path.trim_end_matches('/');
        if path.is_empty()
            || path.starts_with('/')
            || path
                .split('/')
                .any(|seg| seg.is_empty() || seg == "." || seg == "..")
        {
            return Err(TreeError::BadPath {
                path: path.to_string(),
                origin: entry.origin.to_string(),
            });
        }
        let mut parent = String::new();
        for segment in path
            .split('/')
            .collect::<Vec<_>>()
            .split_last()
            .map_or(&[][..], |(_, init)| init)
        {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(segment);
            match self.entries.get(&parent) {
                None => {
                    self.entries
                        .insert(parent.clone(), Entry::dir(&entry.origin));
                }
                Some(existing) if existing.content == Content::Dir => {}
                Some(existing) => {
                    return Err(TreeError::ParentNotDir {
                        path: path.to_string(),
                        origin: entry.origin.to_string(),
                        parent: parent.clone(),
                        parent_origin: existing.origin.to_string(),
                    });
                }
            }
        }
        match self.entries.get(path) {
            Some(existing) if existing.content == Content::Dir && entry.content == Content::Dir => {
                // The later definition of a directory sets its mode and owner.
                self.entries.insert(path.to_string(), entry);
            }
            Some(existing) if on_existing == OnExisting::Refuse => {
                return Err(TreeError::Conflict {
                    path: path.to_string(),
                    first: existing.origin.to_string(),
                    second: entry.origin.to_string(),
                });
            }
            Some(existing) if existing.content == Content::Dir => {
                return Err(TreeError::Conflict {
                    path: path.to_string(),
                    first: existing.origin.to_string(),
                    second: entry.origin.to_string(),
                });
            }
            _ => {
                self.entries.insert(path.to_string(), entry);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(data: &str, origin: Origin) -> Entry {
        Entry {
            content: Content::File(data.as_bytes().to_vec()),
            mode: 0o644,
            uid: 0,
            gid: 0,
            origin,
        }
    }

    fn layer(name: &str) -> Origin {
        Origin::Layer(name.into())
    }

    #[test]
    fn parents_are_created_and_sorted_first() {
        let mut t = Tree::default();
        t.insert(
            "etc/chasquid/chasquid.conf",
            file("x", layer("a")),
            OnExisting::Refuse,
        )
        .unwrap();
        t.insert("etc-x", file("y", layer("a")), OnExisting::Refuse)
            .unwrap();
        let paths: Vec<&str> = t.entries().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            paths,
            ["etc", "etc-x", "etc/chasquid", "etc/chasquid/chasquid.conf"]
        );
    }

    #[test]
    fn layers_replace_package_files_but_not_each_other() {
        let mut t = Tree::default();
        t.insert(
            "etc/a",
            file(
                "pkg",
                Origin::Package {
                    name: "p".into(),
                    version: "1".into(),
                },
            ),
            OnExisting::Replace,
        )
        .unwrap();
        t.insert("etc/a", file("layer", layer("l")), OnExisting::Replace)
            .unwrap();
        assert_eq!(
            t.get("etc/a").unwrap().content,
            Content::File(b"layer".to_vec())
        );
        let err = t
            .insert("etc/a", file("again", layer("m")), OnExisting::Refuse)
            .unwrap_err();
        assert!(err.to_string().contains("layer l") && err.to_string().contains("layer m"));
    }

    #[test]
    fn unclean_paths_and_files_as_parents_are_refused() {
        let mut t = Tree::default();
        assert!(
            t.insert("etc/../x", file("x", layer("l")), OnExisting::Refuse)
                .is_err()
        );
        t.insert("etc/f", file("x", layer("l")), OnExisting::Refuse)
            .unwrap();
        assert!(
            t.insert("etc/f/g", file("x", layer("l")), OnExisting::Refuse)
                .is_err()
        );
    }
}
