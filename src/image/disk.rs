//! The raw disk: MBR partition table, ext4 root written by `mke2fs -d` straight into the
//! partition, GRUB's boot sector and core image written by hand.
//!
//! No loop device, mount or `grub-install`: those need privileges and devices that CI
//! containers lack, and `grub-bios-setup` refuses plain files (it guesses the root device from
//! the host). What grub-install would do for BIOS boot is small and documented in
//! shared/reference/boot.md: core.img in the gap before the partition, boot.img in sector 0
//! pointing at it.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use super::{ImageError, PARTITION_START_SECTOR, progress, run_tool, uuid_string};

const SECTOR: u64 = 512;

/// Identifiers derived from the inputs (random ones would make every build differ).
#[derive(Debug, Clone)]
pub struct Ids {
    pub fs_uuid: [u8; 16],
    pub hash_seed: [u8; 16],
    pub disk_id: u32,
}

/// mke2fs settings written to a private config so the host's /etc/mke2fs.conf cannot change
/// the filesystem. Features are those of Debian 12's and Ubuntu 22.04's defaults minus anything
/// GRUB 2.06 or a 5.15 kernel cannot read (no `orphan_file`, no `metadata_csum_seed`).
const MKE2FS_CONF: &str = "\
[defaults]
\tbase_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr
\tdefault_mntopts = acl,user_xattr
\tenable_periodic_fsck = 0
\tblocksize = 4096
\tinode_size = 256
\tinode_ratio = 16384
[fs_types]
\text4 = {
\t\tfeatures = has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize
\t}
";

/// Cylinder/head/sector address for an MBR entry (255 heads, 63 sectors); addresses past
/// what CHS can express get the conventional 1023/254/63 and firmware uses the LBA fields.
fn chs(lba: u64) -> [u8; 3] {
    let (heads, spt) = (255u64, 63u64);
    let c = lba / (heads * spt);
    if c > 1023 {
        return [0xfe, 0xff, 0xff];
    }
    let h = (lba / spt) % heads;
    let s = lba % spt + 1;
    [
        h as u8,
        (s as u8) | (((c >> 2) & 0xc0) as u8),
        (c & 0xff) as u8,
    ]
}

/// Builds sector 0: GRUB's boot.img code, the disk id, one bootable Linux partition and the
/// 0x55AA signature.
///
/// Patches to boot.img (offsets fixed by GRUB's i386-pc boot.S):
/// - 0x5c, u64: LBA of core.img's first sector = 1 (we put it right after the MBR);
/// - 0x64 = 0xff: boot from the drive the BIOS booted us from, whatever its number;
/// - 0x66..0x67 = two NOPs: skip the floppy probe that would misfire on some BIOSes.
fn boot_sector(boot_img: &[u8], disk_id: u32, part_sectors: u64) -> Result<[u8; 512], ImageError> {
    if boot_img.len() != 512 {
        return Err(ImageError::Ext4(format!(
            "GRUB boot.img is {} bytes, expected 512: the base's GRUB is damaged",
            boot_img.len()
        )));
    }
    let mut s = [0u8; 512];
    s[..0x1b8].copy_from_slice(&boot_img[..0x1b8]);
    s[0x5c..0x64].copy_from_slice(&1u64.to_le_bytes());
    s[0x64] = 0xff;
    s[0x66] = 0x90;
    s[0x67] = 0x90;
    s[0x1b8..0x1bc].copy_from_slice(&disk_id.to_le_bytes());
    let e = &mut s[0x1be..0x1ce];
    let start = PARTITION_START_SECTOR;
    let last = start + part_sectors - 1;
    e[0] = 0x80; // bootable
    e[1..4].copy_from_slice(&chs(start));
    e[4] = 0x83; // Linux
    e[5..8].copy_from_slice(&chs(last));
    e[8..12].copy_from_slice(&(start as u32).to_le_bytes());
    let count = u32::try_from(part_sectors)
        .map_err(|_| ImageError::Ext4("disk larger than 2 TiB does not fit an MBR".into()))?;
    e[12..16].copy_from_slice(&count.to_le_bytes());
    s[0x1fe] = 0x55;
    s[0x1ff] = 0xaa;
    Ok(s)
}

/// Builds the raw disk at `raw` from `tree` (which must already hold `/boot/grub/…` and the
/// base's `/usr/lib/grub/i386-pc`).
pub fn build_raw(
    tree: &Path,
    raw: &Path,
    size: u64,
    label: &str,
    ids: &Ids,
    sde: i64,
    start: Instant,
) -> Result<(), ImageError> {
    // Whole MiB so the partition ends on a 4 KiB block boundary.
    let size = size.div_ceil(1 << 20) * (1 << 20);
    let part_offset = PARTITION_START_SECTOR * SECTOR;
    if size < part_offset + (64 << 20) {
        return Err(ImageError::Ext4(format!(
            "--size {size} bytes is too small for a root filesystem; use e.g. 3G"
        )));
    }
    let part_bytes = size - part_offset;

    // Sparse file of the final size: mke2fs writes only what it uses.
    File::create(raw)
        .and_then(|f| f.set_len(size))
        .map_err(ImageError::io(raw))?;

    make_filesystem(tree, raw, part_bytes, label, ids, sde, start)?;
    install_grub(tree, raw, ids, part_bytes, start)
}

/// The ext4 root filesystem, made by mke2fs from `tree` straight into the partition of `raw`,
/// then made reproducible ([`super::ext4::normalize_times`]) and checked by e2fsck.
fn make_filesystem(
    tree: &Path,
    raw: &Path,
    part_bytes: u64,
    label: &str,
    ids: &Ids,
    sde: i64,
    start: Instant,
) -> Result<(), ImageError> {
    let part_offset = PARTITION_START_SECTOR * SECTOR;
    let work = raw.parent().unwrap_or(Path::new("."));
    let conf = work.join("mke2fs.conf");
    fs::write(&conf, MKE2FS_CONF).map_err(ImageError::io(&conf))?;
    progress(
        start,
        format!("mke2fs: ext4 {} MiB, label {label}", part_bytes >> 20),
    );
    let uuid = uuid_string(&ids.fs_uuid);
    let seed = uuid_string(&ids.hash_seed);
    // -E offset: write into the partition of the plain file (no loop device).
    // lazy_*_init=0: zero inode tables and journal now so the bytes never depend on what the
    //   file held before, and the guest does not zero them on first boot.
    // nodiscard: discarding a file punches holes; pointless work here.
    // E2FSPROGS_FAKE_TIME: superblock times, journal, crtime of every inode.
    run_tool(
        Command::new("mke2fs")
            .env("MKE2FS_CONFIG", &conf)
            .env("E2FSPROGS_FAKE_TIME", sde.to_string())
            .env("LC_ALL", "C")
            .env("TZ", "UTC")
            .args(["-q", "-F", "-t", "ext4", "-L", label, "-U", &uuid, "-E"])
            .arg(format!(
                "offset={part_offset},hash_seed={seed},lazy_itable_init=0,lazy_journal_init=0,nodiscard"
            ))
            .arg("-d")
            .arg(tree)
            .arg(raw)
            .arg(format!("{}k", part_bytes / 1024)),
        "install e2fsprogs >= 1.43 (mke2fs -d); if it ran out of space, raise --size",
    )?;

    progress(start, "normalising inode times (ctime/atime := mtime)");
    let n = super::ext4::normalize_times(raw, part_offset)?;
    progress(
        start,
        format!("{n} inodes normalised; checking with e2fsck -fn"),
    );
    run_tool(
        Command::new("e2fsck")
            .env("E2FSPROGS_FAKE_TIME", sde.to_string())
            .args(["-f", "-n"])
            .arg(format!("{}?offset={part_offset}", raw.display())),
        "this is a bug in mailbake's ext4 time normalisation: report it with the e2fsck output",
    )?;

    Ok(())
}

/// GRUB for SeaBIOS: boot.img in the MBR (with the partition table) and core.img in the gap
/// before the partition, both from the base's own i386-pc modules.
fn install_grub(
    tree: &Path,
    raw: &Path,
    ids: &Ids,
    part_bytes: u64,
    start: Instant,
) -> Result<(), ImageError> {
    let work = raw.parent().unwrap_or(Path::new("."));
    progress(start, "GRUB: core.img from the base's i386-pc modules");
    let grub_dir = tree.join("usr/lib/grub/i386-pc");
    let core = work.join("core.img");
    // Only what reads the partition and finds /boot/grub; the rest (normal, linux, serial, …)
    // is loaded from /boot/grub/i386-pc at boot.
    run_tool(
        Command::new("grub-mkimage")
            .args(["-O", "i386-pc", "-d"])
            .arg(&grub_dir)
            .args(["-p", "(hd0,msdos1)/boot/grub", "-o"])
            .arg(&core)
            .args(["biosdisk", "part_msdos", "ext2", "search", "search_label"]),
        "install grub-common (grub-mkimage) on the host",
    )?;
    let core_img = fs::read(&core).map_err(ImageError::io(&core))?;
    let gap = (PARTITION_START_SECTOR - 1) * SECTOR;
    if core_img.len() as u64 > gap {
        return Err(ImageError::Ext4(format!(
            "core.img is {} bytes, more than the {gap} bytes before the partition",
            core_img.len()
        )));
    }
    let boot_img_path = grub_dir.join("boot.img");
    let mut boot_img = Vec::new();
    File::open(&boot_img_path)
        .and_then(|mut f| f.read_to_end(&mut boot_img))
        .map_err(ImageError::io(&boot_img_path))?;
    let mbr = boot_sector(&boot_img, ids.disk_id, part_bytes / SECTOR)?;

    let mut f = OpenOptions::new()
        .write(true)
        .open(raw)
        .map_err(ImageError::io(raw))?;
    // core.img's first sector (diskboot.img) already lists sectors 2.. as the rest of the core
    // when it sits at LBA 1, so it is written unchanged.
    f.seek(SeekFrom::Start(SECTOR))
        .and_then(|_| f.write_all(&core_img))
        .and_then(|_| f.seek(SeekFrom::Start(0)))
        .and_then(|_| f.write_all(&mbr))
        .and_then(|_| f.sync_all())
        .map_err(ImageError::io(raw))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chs_of_sector_2048_is_the_classic_value() {
        assert_eq!(chs(2048), [32, 33, 0]);
        assert_eq!(chs(1 << 30), [0xfe, 0xff, 0xff]);
    }

    #[test]
    fn boot_sector_has_patches_partition_and_signature() {
        let boot = [0xAAu8; 512];
        let s = boot_sector(&boot, 0x1234_5678, 1000).unwrap_or([0; 512]);
        assert_eq!(&s[0x5c..0x64], &1u64.to_le_bytes());
        assert_eq!(s[0x64], 0xff);
        assert_eq!(&s[0x1b8..0x1bc], &0x1234_5678u32.to_le_bytes());
        assert_eq!(s[0x1be], 0x80);
        assert_eq!(s[0x1c2], 0x83);
        assert_eq!(&s[0x1c6..0x1ca], &2048u32.to_le_bytes());
        assert_eq!(&s[0x1ca..0x1ce], &1000u32.to_le_bytes());
        assert_eq!(&s[0x1fe..], &[0x55, 0xaa]);
    }
}
