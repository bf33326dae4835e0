//! What mailbake ships inside its binary: `layers/`, `cloud-init/` and `packages.lock`, as
//! they were in the source tree it was compiled from (the build script embeds them).
//!
//! One rule for every command: the built-in copy is used unless `--layers DIR` or
//! `--lock FILE` names another one. Nothing is looked up in the current directory or in the
//! tree mailbake was built in, so a binary installed with `cargo install`, copied into a CI
//! image or kept after its checkout is gone behaves the same everywhere, and
//! `mailbake version --verbose` prints the digests that say which data it carries.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::fetch::{Lock, LockError};
use crate::overlay::layers::{LayerError, LayersTree, SourceContent, SourceEntry};

/// One file or symlink of the built-in `layers/`.
pub struct ShippedEntry {
    /// Relative to `layers/`, e.g. `chasquid/layer.yaml`.
    pub path: &'static str,
    pub content: ShippedContent,
}

pub enum ShippedContent {
    File {
        executable: bool,
        data: &'static [u8],
    },
    Symlink(&'static str),
}

mod data {
    use super::{ShippedContent, ShippedEntry};
    include!(concat!(env!("OUT_DIR"), "/shipped_data.rs"));
}

/// How error messages name the built-in copies (they have no path on disk).
pub const BUILT_IN: &str = "[built into mailbake]";

/// The layers a build renders: the directory `dir` when given, else the built-in copy.
pub fn layers(dir: Option<&Path>) -> Result<LayersTree, LayerError> {
    match dir {
        Some(dir) => LayersTree::read_dir(dir),
        None => Ok(built_in_layers()),
    }
}

/// The built-in `layers/`.
pub fn built_in_layers() -> LayersTree {
    let entries = data::LAYERS
        .iter()
        .map(|e| SourceEntry {
            path: e.path.to_string(),
            content: match e.content {
                ShippedContent::File { executable, data } => SourceContent::File {
                    executable,
                    data: Cow::Borrowed(data),
                },
                ShippedContent::Symlink(target) => SourceContent::Symlink(target.to_string()),
            },
        })
        .collect();
    LayersTree::new(PathBuf::from(BUILT_IN).join("layers"), entries)
}

/// The lock file a command uses: `file` when given, else the built-in copy.
pub fn lock(file: Option<&Path>) -> Result<Lock, LockError> {
    match file {
        Some(file) => Lock::load(file),
        None => Lock::parse(data::LOCK, &PathBuf::from(BUILT_IN).join("packages.lock")),
    }
}

/// The sha256 of each part of the built-in data and of all of them together.
pub struct Digests {
    pub layers: String,
    pub cloud_init: String,
    pub lock: String,
    pub all: String,
}

impl Digests {
    pub fn compute() -> Digests {
        let layers = hex::encode(tree_digest(data::LAYERS.iter().map(|e| match e.content {
            ShippedContent::File { executable, data } => {
                (e.path, if executable { "x" } else { "f" }, data)
            }
            ShippedContent::Symlink(target) => (e.path, "l", target.as_bytes()),
        })));
        let cloud_init = hex::encode(tree_digest(
            crate::seed::TEMPLATES
                .iter()
                .map(|(name, text)| (*name, "f", text.as_bytes())),
        ));
        // Plain sha256 of the file, so it can be compared with `sha256sum packages.lock`.
        let lock = hex::encode(Sha256::digest(data::LOCK.as_bytes()));
        let all = hex::encode(Sha256::digest(
            format!("layers {layers}\ncloud-init {cloud_init}\npackages.lock {lock}\n").as_bytes(),
        ));
        Digests {
            layers,
            cloud_init,
            lock,
            all,
        }
    }
}

/// A digest of a list of (path, kind, bytes) that changes when any path, kind or byte does:
/// each entry is framed by its kind, its path and its length.
fn tree_digest<'a>(entries: impl Iterator<Item = (&'a str, &'a str, &'a [u8])>) -> [u8; 32] {
    let mut h = Sha256::new();
    for (path, kind, bytes) in entries {
        h.update(format!("{kind} {path} {}\n", bytes.len()).as_bytes());
        h.update(bytes);
    }
    h.finalize().into()
}

/// What `mailbake version --verbose` prints.
pub fn describe() -> String {
    let d = Digests::compute();
    let files = data::LAYERS
        .iter()
        .filter(|e| matches!(e.content, ShippedContent::File { .. }))
        .count();
    let links = data::LAYERS.len() - files;
    let mut out = String::new();
    let _ = writeln!(out, "mailbake {}", env!("CARGO_PKG_VERSION"));
    let _ = writeln!(
        out,
        "built-in data (used unless --layers DIR or --lock FILE names another):"
    );
    let _ = writeln!(
        out,
        "  layers/        sha256:{}  ({files} files, {links} symlinks)",
        d.layers
    );
    let _ = writeln!(
        out,
        "  cloud-init/    sha256:{}  ({} templates)",
        d.cloud_init,
        crate::seed::TEMPLATES.len()
    );
    let _ = writeln!(
        out,
        "  packages.lock  sha256:{}  (as `sha256sum packages.lock`)",
        d.lock
    );
    let _ = writeln!(out, "  all            sha256:{}", d.all);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The built-in layers are the source tree's, byte for byte, symlinks as symlinks: the
    /// same tree read from disk gives the same entries.
    #[test]
    fn built_in_layers_are_the_source_trees() {
        let on_disk =
            LayersTree::read_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("layers")).unwrap();
        let built_in = built_in_layers();
        let paths = |t: &LayersTree| -> Vec<String> {
            t.entries().iter().map(|e| e.path.clone()).collect()
        };
        assert_eq!(paths(&on_disk), paths(&built_in));
        for (disk, embedded) in on_disk.entries().iter().zip(built_in.entries()) {
            assert!(
                disk == embedded,
                "{} differs from its built-in copy",
                disk.path
            );
        }
        assert!(
            built_in
                .entries()
                .iter()
                .any(|e| matches!(e.content, SourceContent::Symlink(_))),
            "the layers enable units with symlinks"
        );
    }

    #[test]
    fn the_built_in_lock_is_the_source_trees() {
        let on_disk =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("packages.lock"))
                .unwrap();
        assert_eq!(on_disk, data::LOCK);
        assert!(lock(None).is_ok());
    }

    #[test]
    fn the_digest_changes_with_any_path_kind_or_byte() {
        let base = tree_digest([("a", "f", &b"x"[..])].into_iter());
        for other in [
            tree_digest([("b", "f", &b"x"[..])].into_iter()),
            tree_digest([("a", "x", &b"x"[..])].into_iter()),
            tree_digest([("a", "f", &b"y"[..])].into_iter()),
            tree_digest([("a", "f", &b"x"[..]), ("b", "f", &b""[..])].into_iter()),
        ] {
            assert_ne!(base, other);
        }
    }
}
