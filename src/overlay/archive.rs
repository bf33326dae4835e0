//! Writing the overlay: a tar, its gzip, and a manifest, byte-for-byte reproducible.
//!
//! Same tree in, same bytes out: entries in path order, every mtime = SOURCE_DATE_EPOCH,
//! numeric owners with empty owner names, plain GNU headers (no pax records carrying atime or
//! ctime), gzip with header mtime 0, no file name and a fixed compression level.

use std::io::Write;

use flate2::{Compression, GzBuilder};
use sha2::{Digest, Sha256};
use tar::{EntryType, Header};

use super::tree::{Content, Tree};

/// Compression level of `overlay.tar.gz`; fixed because it changes the bytes.
const GZIP_LEVEL: u32 = 9;

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// The tree as a tar archive.
pub fn tar(tree: &Tree, mtime: u64) -> std::io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    builder.mode(tar::HeaderMode::Deterministic);
    for (path, entry) in tree.entries() {
        let mut header = Header::new_gnu();
        header.set_mode(entry.mode);
        header.set_uid(entry.uid);
        header.set_gid(entry.gid);
        header.set_mtime(mtime);
        header.set_username("")?;
        header.set_groupname("")?;
        match &entry.content {
            Content::Dir => {
                header.set_entry_type(EntryType::Directory);
                header.set_size(0);
                builder.append_data(&mut header, format!("{path}/"), std::io::empty())?;
            }
            Content::File(data) => {
                header.set_entry_type(EntryType::Regular);
                header.set_size(data.len() as u64);
                builder.append_data(&mut header, path, data.as_slice())?;
            }
            Content::Symlink(target) => {
                header.set_entry_type(EntryType::Symlink);
                header.set_size(0);
                builder.append_link(&mut header, path, target)?;
            }
        }
    }
    builder.into_inner()
}

/// `data` gzip-compressed with a fixed header (mtime 0, no name) and level.
pub fn gzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = GzBuilder::new()
        .mtime(0)
        .operating_system(255)
        .write(Vec::new(), Compression::new(GZIP_LEVEL));
    encoder.write_all(data)?;
    encoder.finish()
}

/// One line per entry: path, type, mode, uid, gid, size, sha256, link target (tab-separated,
/// `-` where a field does not apply). This is what a reviewer diffs between two builds.
pub fn manifest(tree: &Tree) -> String {
    let mut out = String::from("# path\ttype\tmode\tuid\tgid\tsize\tsha256\ttarget\n");
    for (path, entry) in tree.entries() {
        let (kind, size, digest, target) = match &entry.content {
            Content::Dir => ("dir", 0, "-".to_string(), "-"),
            Content::File(data) => ("file", data.len(), sha256_hex(data), "-"),
            Content::Symlink(t) => ("symlink", 0, "-".to_string(), t.as_str()),
        };
        out.push_str(&format!(
            "/{path}\t{kind}\t{:04o}\t{}\t{}\t{size}\t{digest}\t{target}\n",
            entry.mode, entry.uid, entry.gid
        ));
    }
    out
}
