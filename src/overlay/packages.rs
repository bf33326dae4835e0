//! The pinned packages' payloads as overlay entries.
//!
//! fetch reads a `.deb`'s `data.tar` as it is; the overlay needs entries it can merge with the
//! layers and unpack onto a base image whose files it does not control. So hard links become
//! copies (on the base, a link's target may be replaced independently), and every entry
//! carries its package as its [`Origin`], which is what lets a layer replace a package's
//! sample file.

use std::collections::BTreeMap;

use super::tree::{Content, Entry, Origin};
use crate::fetch::{EntryKind, PayloadEntry};

/// The files of one pinned package, as they go into the overlay.
#[derive(Clone, Debug)]
pub struct PackagePayload {
    pub name: String,
    pub version: String,
    pub entries: Vec<(String, Entry)>,
}

#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    #[error(
        "{origin}: `{path}` is a hard link to `{target}`, which is not a regular file earlier in the package; the .deb is malformed (re-fetch it, or pin another version)"
    )]
    DanglingHardlink {
        origin: Origin,
        path: String,
        target: String,
    },
}

impl PackagePayload {
    /// The overlay entries of package `name` at `version`, from the payload fetch read out
    /// of its `.deb`.
    pub fn new(
        name: &str,
        version: &str,
        payload: Vec<PayloadEntry>,
    ) -> Result<PackagePayload, PackageError> {
        let origin = Origin::Package {
            name: name.to_string(),
            version: version.to_string(),
        };
        // A hard link names an earlier regular file of the same archive.
        let mut files: BTreeMap<&str, &[u8]> = BTreeMap::new();
        let mut entries = Vec::with_capacity(payload.len());
        for e in &payload {
            let content = match e.kind {
                EntryKind::Dir => Content::Dir,
                EntryKind::File => {
                    files.insert(&e.path, &e.contents);
                    Content::File(e.contents.clone())
                }
                EntryKind::Symlink => Content::Symlink(e.link_target.clone().unwrap_or_default()),
                EntryKind::Hardlink => {
                    let target = e.link_target.as_deref().unwrap_or_default();
                    let data = files
                        .get(target)
                        .ok_or_else(|| PackageError::DanglingHardlink {
                            origin: origin.clone(),
                            path: e.path.clone(),
                            target: target.to_string(),
                        })?;
                    Content::File(data.to_vec())
                }
            };
            entries.push((
                e.path.clone(),
                Entry {
                    content,
                    mode: e.mode & 0o7777,
                    uid: e.uid,
                    gid: e.gid,
                    origin: origin.clone(),
                },
            ));
        }
        Ok(PackagePayload {
            name: name.to_string(),
            version: version.to_string(),
            entries,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, kind: EntryKind, target: Option<&str>, contents: &[u8]) -> PayloadEntry {
        PayloadEntry {
            path: path.into(),
            kind,
            mode: 0o755,
            uid: 0,
            gid: 0,
            link_target: target.map(str::to_string),
            contents: contents.to_vec(),
        }
    }

    #[test]
    fn hard_links_become_copies_of_their_target() {
        let payload = PackagePayload::new(
            "p",
            "1.0-1",
            vec![
                entry("usr/bin", EntryKind::Dir, None, b""),
                entry("usr/bin/a", EntryKind::File, None, b"binary"),
                entry("usr/bin/b", EntryKind::Hardlink, Some("usr/bin/a"), b""),
            ],
        )
        .unwrap();
        let (path, b) = &payload.entries[2];
        assert_eq!(path, "usr/bin/b");
        assert_eq!(b.content, Content::File(b"binary".to_vec()));
        assert_eq!(b.origin.to_string(), "package p 1.0-1");
    }

    #[test]
    fn a_hard_link_to_a_missing_target_is_an_error_not_an_empty_file() {
        for (target, entries) in [
            ("usr/bin/gone", vec![]),
            // A directory is not a file a hard link can share.
            ("usr/bin", vec![entry("usr/bin", EntryKind::Dir, None, b"")]),
        ] {
            let mut payload = entries;
            payload.push(entry("usr/bin/b", EntryKind::Hardlink, Some(target), b""));
            let err = PackagePayload::new("p", "1.0-1", payload).unwrap_err();
            let msg = err.to_string();
            assert!(
                msg.contains("usr/bin/b")
                    && msg.contains(target)
                    && msg.contains("package p 1.0-1"),
                "{msg}"
            );
        }
    }
}
