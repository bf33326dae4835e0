//! Warm builds: the overlay files of an earlier build are reused when nothing they depend on
//! has changed, so an unchanged `build` costs about one hash of its previous output instead of
//! reading the packages, assembling the tree and compressing tens of megabytes again.
//!
//! The [`OverlayKey`] is a digest of everything the overlay's bytes depend on: the rendered
//! layers (so the layers' files, the site values they use and their modes), the pinned
//! packages (by their sha256), SOURCE_DATE_EPOCH, and mailbake itself (its version, the
//! digest of the data built into it, and the identity of its executable, so a rebuilt mailbake
//! never trusts what an older one wrote). A [`Record`] under `<cache>/overlay-keys/<key>`
//! says which bytes that key produced (each file's sha256 and size); a few hundred bytes per
//! key, so the cache does not grow with the overlay's size.
//!
//! The bytes themselves come from the previous output in `--out`, and only when each file
//! there still hashes to what the record says: the warm output is the cold one, byte for byte,
//! or the build is cold.

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::Rendered;
use super::tree::Content;
use crate::fetch::Lock;
use crate::fetch::cache::sha256_file;

/// Bump when the way the overlay's files are written changes without a version change.
const KEY_FORMAT: &str = "mailbake overlay key 2";

/// The digest of every input of the overlay's bytes (hex sha256).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OverlayKey(String);

impl OverlayKey {
    pub fn compute(rendered: &Rendered, lock: &Lock, source_date_epoch: u64) -> OverlayKey {
        let mut h = KeyHasher(Sha256::new());
        h.field(KEY_FORMAT.as_bytes());
        h.field(env!("CARGO_PKG_VERSION").as_bytes());
        h.field(crate::shipped::Digests::compute().all.as_bytes());
        h.field(executable_identity().as_bytes());
        h.field(source_date_epoch.to_string().as_bytes());
        for p in &lock.packages {
            for part in [&p.name, &p.suite, &p.component, &p.version, &p.architecture] {
                h.field(part.as_bytes());
            }
            h.field(p.sha256.as_str().as_bytes());
        }
        for (layer, entries) in &rendered.layers {
            h.field(layer.name.as_bytes());
            for package in &layer.spec.packages {
                h.field(package.as_bytes());
            }
            for (path, entry) in entries {
                h.field(path.as_bytes());
                h.field(format!("{:o} {} {}", entry.mode, entry.uid, entry.gid).as_bytes());
                match &entry.content {
                    Content::Dir => h.field(b"dir"),
                    Content::File(data) => {
                        h.field(b"file");
                        h.field(data);
                    }
                    Content::Symlink(target) => {
                        h.field(b"symlink");
                        h.field(target.as_bytes());
                    }
                }
            }
        }
        OverlayKey(hex::encode(h.0.finalize()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Length-prefixed fields, so no two different input lists hash alike.
struct KeyHasher(Sha256);

impl KeyHasher {
    fn field(&mut self, data: &[u8]) {
        self.0.update((data.len() as u64).to_le_bytes());
        self.0.update(data);
    }
}

/// Which executable is running: its path, device, inode, size and mtime. Cheap (no read of the
/// binary), and any rebuild or reinstall changes it; a false miss only costs a cold build.
fn executable_identity() -> String {
    match std::env::current_exe().and_then(|p| fs::metadata(&p).map(|m| (p, m))) {
        Ok((path, m)) => format!(
            "{} {} {} {} {}.{}",
            path.display(),
            m.dev(),
            m.ino(),
            m.size(),
            m.mtime(),
            m.mtime_nsec()
        ),
        // Unknown: a fresh random value, so nothing is ever reused.
        Err(_) => format!("unknown {:?}", std::time::SystemTime::now()),
    }
}

/// What a key produced: each overlay file's digest and size, and the tree's entry count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub files: Vec<RecordedFile>,
    pub entries: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedFile {
    pub name: String,
    pub sha256: String,
    pub size: u64,
}

/// An earlier output's file that hashes to what the record says, ready to be linked in.
#[derive(Clone, Debug)]
pub struct Verified {
    pub name: String,
    pub path: PathBuf,
    pub sha256: String,
    pub size: u64,
}

fn record_path(cache_root: &Path, key: &OverlayKey) -> PathBuf {
    cache_root.join("overlay-keys").join(key.as_str())
}

impl Record {
    /// The record for `key`, if one was stored and reads back whole.
    pub fn load(cache_root: &Path, key: &OverlayKey) -> Option<Record> {
        let text = fs::read_to_string(record_path(cache_root, key)).ok()?;
        let mut files = Vec::new();
        let mut entries = None;
        for line in text.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            match fields.as_slice() {
                ["entries", n] => entries = n.parse().ok(),
                // Plain file names only: a record never points outside the output.
                ["file", sha256, size, name] if !name.contains('/') && !name.starts_with('.') => {
                    files.push(RecordedFile {
                        name: name.to_string(),
                        sha256: sha256.to_string(),
                        size: size.parse().ok()?,
                    })
                }
                _ => return None,
            }
        }
        Some(Record {
            files,
            entries: entries?,
        })
    }

    /// Stores the record (written to a temporary file and renamed: readers see all or
    /// nothing). A failure only means the next build is cold, so it is reported, not fatal.
    pub fn store(&self, cache_root: &Path, key: &OverlayKey) -> std::io::Result<()> {
        let path = record_path(cache_root, key);
        let dir = path.parent().unwrap_or(cache_root);
        fs::create_dir_all(dir)?;
        let mut text = format!("entries {}\n", self.entries);
        for f in &self.files {
            text.push_str(&format!("file {} {} {}\n", f.sha256, f.size, f.name));
        }
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        tmp.write_all(text.as_bytes())?;
        tmp.persist(&path).map_err(|e| e.error)?;
        Ok(())
    }

    /// The files of `previous_out` this record describes, each hashed once and matching;
    /// `None` when any is missing, of another size or of other bytes.
    pub fn verify(&self, previous_out: &Path) -> Option<Vec<Verified>> {
        self.files
            .iter()
            .map(|f| {
                let path = previous_out.join(&f.name);
                let meta = fs::symlink_metadata(&path).ok()?;
                if !meta.is_file() || meta.len() != f.size {
                    return None;
                }
                let actual = sha256_file(&path).ok()?;
                (actual.as_str() == f.sha256).then(|| Verified {
                    name: f.name.clone(),
                    path,
                    sha256: f.sha256.clone(),
                    size: f.size,
                })
            })
            .collect()
    }
}
