//! Build script: embeds the data mailbake ships (`layers/` and `packages.lock`) in the binary,
//! so an installed or copied `mailbake` never reads the tree it was compiled in.
//! (`cloud-init/` is embedded by `include_str!` in `src/seed/`, next to the code that fills it.)
//!
//! It writes `$OUT_DIR/shipped_data.rs`, included by `src/shipped.rs`: one entry per file or
//! symlink under `layers/`, in path order, each file through `include_bytes!` of its absolute
//! path (so the bytes are the file's, not a copy this script made), each symlink as its target
//! (layers enable systemd units with symlinks that point into the *target* system, so they
//! must never be followed here).

use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

fn main() {
    let root = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let layers = root.join("layers");
    let lock = root.join("packages.lock");
    // A directory makes cargo rerun this script when anything below it changes (added,
    // removed or modified), so the binary never embeds a stale tree.
    println!("cargo:rerun-if-changed={}", layers.display());
    println!("cargo:rerun-if-changed={}", lock.display());

    let mut entries = Vec::new();
    walk(&layers, "", &mut entries);
    entries.sort_by(|a, b| a.0.cmp(&b.0));

    let mut code = String::from("/// Every file and symlink under `layers/`, in path order.\n");
    code.push_str("pub static LAYERS: &[ShippedEntry] = &[\n");
    for (rel, kind) in &entries {
        match kind {
            Kind::File { abs, executable } => writeln!(
                code,
                "    ShippedEntry {{ path: {rel:?}, content: ShippedContent::File {{ executable: {executable}, data: include_bytes!({abs:?}) }} }},",
            ),
            Kind::Symlink(target) => writeln!(
                code,
                "    ShippedEntry {{ path: {rel:?}, content: ShippedContent::Symlink({target:?}) }},",
            ),
        }
        .expect("writing to a String");
    }
    code.push_str("];\n\n/// `packages.lock` as it was when mailbake was built.\n");
    writeln!(
        code,
        "pub static LOCK: &str = include_str!({:?});",
        utf8(&lock)
    )
    .expect("writing to a String");

    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo"));
    fs::write(out.join("shipped_data.rs"), code).expect("writing shipped_data.rs");
}

enum Kind {
    File { abs: String, executable: bool },
    Symlink(String),
}

/// Every file and symlink below `dir` (directories come from their contents), with its path
/// relative to the layers root.
fn walk(dir: &Path, rel: &str, out: &mut Vec<(String, Kind)>) {
    let children = fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
    for child in children {
        let child = child.unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
        let path = child.path();
        let name = child.file_name();
        let name = name
            .to_str()
            .unwrap_or_else(|| panic!("{}: file names in layers/ must be UTF-8", path.display()));
        let child_rel = if rel.is_empty() {
            name.to_string()
        } else {
            format!("{rel}/{name}")
        };
        let meta = fs::symlink_metadata(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        if meta.is_dir() {
            walk(&path, &child_rel, out);
        } else if meta.file_type().is_symlink() {
            let target = fs::read_link(&path)
                .unwrap_or_else(|e| panic!("reading link {}: {e}", path.display()));
            out.push((child_rel, Kind::Symlink(utf8(&target))));
        } else if meta.is_file() {
            let executable = meta.permissions().mode() & 0o111 != 0;
            out.push((
                child_rel,
                Kind::File {
                    abs: utf8(&path),
                    executable,
                },
            ));
        } else {
            panic!(
                "{}: only files, directories and symlinks can be in layers/",
                path.display()
            );
        }
    }
}

fn utf8(path: &Path) -> String {
    path.to_str()
        .unwrap_or_else(|| panic!("{}: paths must be UTF-8", path.display()))
        .to_string()
}
