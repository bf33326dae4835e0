//! Writing the overlay: a tar, its zstd-compressed copy, and a manifest, byte-for-byte
//! reproducible.
//!
//! Same tree in, same bytes out: entries in path order, every mtime = SOURCE_DATE_EPOCH,
//! numeric owners with empty owner names, plain GNU headers (no pax records carrying atime or
//! ctime), zstd at a fixed level in multi-threaded mode.
//!
//! Why zstd and not gzip: `mailbake image` reads the plain `overlay.tar`; the compressed copy is
//! only for uploads and people, and gzip -9 of the ~52 MB overlay was most of a build's time.
//! zstd compresses it smaller in a fraction of that on every core. Its multi-threaded output
//! depends on the level and the input only, not on how many workers ran (tested below), so
//! a 2-core laptop and a 64-core CI runner write the same bytes.

use std::io::Write;

use sha2::{Digest, Sha256};
use tar::{EntryType, Header};

use super::tree::{Content, Tree};

/// Compression level of `overlay.tar.zst`; fixed because it changes the bytes. 6 keeps a cold
/// build well under a second of compression on two cores and the file smaller than gzip -9.
const ZSTD_LEVEL: i32 = 6;

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

/// `data` zstd-compressed at [`ZSTD_LEVEL`], with a content checksum, on up to 8 workers.
pub fn zstd(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
    zstd_with_workers(data, workers as u32)
}

/// [`zstd`] with a given number of workers (at least 1: multi-threaded mode, whose bytes do
/// not depend on the count; 0 would be zstd's single-threaded mode, which writes others).
fn zstd_with_workers(data: &[u8], workers: u32) -> std::io::Result<Vec<u8>> {
    let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), ZSTD_LEVEL)?;
    encoder.multithread(workers.max(1))?;
    encoder.include_checksum(true)?;
    encoder.set_pledged_src_size(Some(data.len() as u64))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Compressible but not trivial bytes, several of zstd's multi-threading jobs long.
    fn sample(len: usize) -> Vec<u8> {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        (0..len)
            .map(|_| {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                b"etc/chasquid usr/bin lib systemd \n"[(x >> 59) as usize % 33]
            })
            .collect()
    }

    #[test]
    fn zstd_bytes_do_not_depend_on_the_number_of_workers() {
        let data = sample(40 << 20);
        let one = zstd_with_workers(&data, 1).unwrap();
        let four = zstd_with_workers(&data, 4).unwrap();
        assert!(one == four, "1 worker and 4 workers wrote different bytes");
        assert_eq!(zstd::stream::decode_all(&one[..]).unwrap(), data);
        assert!(one.len() < data.len(), "{} bytes", one.len());
    }
}
