//! Normalising inode times in a finished ext4 filesystem.
//!
//! Why: e2fsprogs 1.47.0 (Debian 12, Ubuntu 22.04 has 1.46.5) copies `st_atime`, `st_mtime`
//! and `st_ctime` of every source file into its inode (`set_inode_extra` in
//! misc/create_inode.c). mtime and atime we control ([`super::rootfs`] sets them), but ctime is
//! always "when the file was extracted" and no syscall can set it, so two builds of the same
//! inputs would differ in every inode (and its checksum). `E2FSPROGS_FAKE_TIME` only pins the
//! times mke2fs invents itself (superblock, journal, crtime, lost+found), not copied ones.
//! e2fsprogs >= 1.47.1 can read a tarball directly and clamp all times, but neither Debian 12
//! nor Ubuntu 22.04 ships it.
//!
//! So after mke2fs we walk the inode tables of the partition and set, for every in-use inode,
//! ctime := mtime and atime := mtime (with their nanosecond/epoch `_extra` words), then
//! recompute the inode checksum (crc32c, as the kernel and e2fsck verify it). Nothing else in
//! the filesystem depends on those fields. `e2fsck -fn` afterwards proves the result consistent.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use super::ImageError;

const EXT4_MAGIC: u16 = 0xEF53;
const INCOMPAT_64BIT: u32 = 0x80;
const INCOMPAT_CSUM_SEED: u32 = 0x2000;
const RO_COMPAT_METADATA_CSUM: u32 = 0x400;
const BG_INODE_UNINIT: u16 = 0x1;

fn le16(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
fn put16(b: &mut [u8], o: usize, v: u16) {
    b[o..o + 2].copy_from_slice(&v.to_le_bytes());
}
fn put32(b: &mut [u8], o: usize, v: u32) {
    b[o..o + 4].copy_from_slice(&v.to_le_bytes());
}

/// CRC32C (Castagnoli) without the usual pre/post inversion, the form ext4 chains its
/// checksums with (`ext2fs_crc32c_le` / the kernel's `ext4_chksum`).
fn crc32c_raw(mut crc: u32, data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, slot) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    (c >> 1) ^ 0x82F6_3B78
                } else {
                    c >> 1
                };
            }
            *slot = c;
        }
        t
    });
    for &b in data {
        crc = table[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    crc
}

/// What the superblock says about the layout of the inode tables.
struct Geometry {
    block_size: u64,
    first_data_block: u64,
    groups: usize,
    inodes_per_group: usize,
    inode_size: usize,
    desc_size: usize,
    /// The seed of the metadata checksums, when the filesystem has them.
    csum_seed: Option<u32>,
}

impl Geometry {
    /// Reads the 1024-byte superblock `sb`; `bad` words the error.
    fn read(sb: &[u8], bad: &dyn Fn(String) -> ImageError) -> Result<Geometry, ImageError> {
        if le16(sb, 0x38) != EXT4_MAGIC {
            return Err(bad("no ext4 superblock".into()));
        }
        let block_size = 1024u64 << le32(sb, 0x18);
        let first_data_block = u64::from(le32(sb, 0x14));
        let blocks_per_group = u64::from(le32(sb, 0x20));
        let inodes_per_group = le32(sb, 0x28) as usize;
        let inode_size = le16(sb, 0x58) as usize;
        let incompat = le32(sb, 0x60);
        let ro_compat = le32(sb, 0x64);
        let is64 = incompat & INCOMPAT_64BIT != 0;
        let blocks_count = u64::from(le32(sb, 0x04))
            | if is64 {
                u64::from(le32(sb, 0x150)) << 32
            } else {
                0
            };
        let desc_size = if is64 { le16(sb, 0xFE) as usize } else { 32 };
        if inode_size < 128 || blocks_per_group == 0 || desc_size < 32 {
            return Err(bad("implausible superblock geometry".into()));
        }
        let csum_seed = if ro_compat & RO_COMPAT_METADATA_CSUM == 0 {
            None
        } else if incompat & INCOMPAT_CSUM_SEED != 0 {
            Some(le32(sb, 0x270))
        } else {
            Some(crc32c_raw(!0, &sb[0x68..0x78]))
        };
        let groups = (blocks_count - first_data_block).div_ceil(blocks_per_group) as usize;
        Ok(Geometry {
            block_size,
            first_data_block,
            groups,
            inodes_per_group,
            inode_size,
            desc_size,
            csum_seed,
        })
    }
}

/// Sets ctime and atime to mtime in every in-use inode of the ext4 filesystem that starts at
/// byte `offset` of `image`, fixing inode checksums. Returns how many inodes were rewritten.
pub fn normalize_times(image: &Path, offset: u64) -> Result<u64, ImageError> {
    let bad = |m: String| ImageError::Ext4(format!("{} at byte {offset}: {m}", image.display()));
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .map_err(ImageError::io(image))?;
    let read_at = |f: &mut std::fs::File, pos: u64, buf: &mut [u8]| {
        f.seek(SeekFrom::Start(pos))
            .and_then(|_| f.read_exact(buf))
            .map_err(ImageError::io(image))
    };
    let mut sb = vec![0u8; 1024];
    read_at(&mut f, offset + 1024, &mut sb)?;
    let geo = Geometry::read(&sb, &bad)?;
    let mut gdt = vec![0u8; geo.groups * geo.desc_size];
    let gdt_pos = offset + (geo.first_data_block + 1) * geo.block_size;
    read_at(&mut f, gdt_pos, &mut gdt)?;

    let mut bitmap = vec![0u8; geo.block_size as usize];
    let mut table = vec![0u8; geo.inodes_per_group * geo.inode_size];
    let mut changed = 0u64;
    for g in 0..geo.groups {
        let d = &gdt[g * geo.desc_size..(g + 1) * geo.desc_size];
        if le16(d, 0x12) & BG_INODE_UNINIT != 0 {
            continue;
        }
        let hi = |o: usize| {
            if geo.desc_size >= 64 {
                u64::from(le32(d, o)) << 32
            } else {
                0
            }
        };
        let bitmap_block = u64::from(le32(d, 0x04)) | hi(0x24);
        let table_block = u64::from(le32(d, 0x08)) | hi(0x28);
        read_at(&mut f, offset + bitmap_block * geo.block_size, &mut bitmap)?;
        let table_pos = offset + table_block * geo.block_size;
        read_at(&mut f, table_pos, &mut table)?;
        let mut dirty = false;
        for i in 0..geo.inodes_per_group {
            if bitmap[i / 8] & (1 << (i % 8)) == 0 {
                continue;
            }
            let ino = (g * geo.inodes_per_group + i + 1) as u32;
            let inode = &mut table[i * geo.inode_size..(i + 1) * geo.inode_size];
            normalize_inode(inode, ino, geo.csum_seed);
            dirty = true;
            changed += 1;
        }
        if dirty {
            f.seek(SeekFrom::Start(table_pos))
                .and_then(|_| f.write_all(&table))
                .map_err(ImageError::io(image))?;
        }
    }
    f.sync_all().map_err(ImageError::io(image))?;
    Ok(changed)
}

/// ctime := mtime and atime := mtime in one inode (number `ino`), then its checksum anew.
fn normalize_inode(inode: &mut [u8], ino: u32, csum_seed: Option<u32>) {
    let inode_size = inode.len();
    let mtime = le32(inode, 0x10);
    put32(inode, 0x08, mtime);
    put32(inode, 0x0C, mtime);
    let extra = if inode_size > 128 {
        le16(inode, 0x80) as usize
    } else {
        0
    };
    // i_ctime_extra 0x84, i_mtime_extra 0x88, i_atime_extra 0x8C: present only when
    // i_extra_isize covers them.
    if 128 + extra >= 0x90 {
        let mx = le32(inode, 0x88);
        put32(inode, 0x84, mx);
        put32(inode, 0x8C, mx);
    }
    if let Some(seed) = csum_seed {
        let has_hi = inode_size > 128 && extra >= 4;
        put16(inode, 0x7C, 0);
        if has_hi {
            put16(inode, 0x82, 0);
        }
        let generation = le32(inode, 0x64);
        let mut crc = crc32c_raw(seed, &ino.to_le_bytes());
        crc = crc32c_raw(crc, &generation.to_le_bytes());
        crc = crc32c_raw(crc, inode);
        put16(inode, 0x7C, crc as u16);
        if has_hi {
            put16(inode, 0x82, (crc >> 16) as u16);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::crc32c_raw;

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        // The standard CRC-32C of "123456789" is 0xE3069283 (with pre/post inversion).
        assert_eq!(!crc32c_raw(!0, b"123456789"), 0xE306_9283);
    }
}
