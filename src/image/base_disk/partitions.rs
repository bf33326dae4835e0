//! The base disk's partition table, read and grown with util-linux's `sfdisk` (which handles
//! both GPT and MBR and keeps every identifier), and the root filesystem found by its label.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use serde::Deserialize;

use crate::image::{ImageError, run_tool};

const SECTOR: u64 = 512;
/// Where an ext2/3/4 superblock starts inside its filesystem, and its magic number.
const SUPERBLOCK: u64 = 1024;
const EXT_MAGIC: u16 = 0xEF53;

/// One partition: its number in the table and its place on the disk, in bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    pub number: u32,
    pub start: u64,
    pub size: u64,
}

#[derive(Deserialize)]
struct SfdiskJson {
    partitiontable: Table,
}

#[derive(Deserialize)]
struct Table {
    device: String,
    sectorsize: Option<u64>,
    #[serde(default)]
    partitions: Vec<Entry>,
}

#[derive(Deserialize)]
struct Entry {
    node: String,
    start: u64,
    size: u64,
}

/// The partitions of `disk` (a raw image), in table order.
pub fn read(disk: &Path) -> Result<Vec<Partition>, ImageError> {
    let out = run_tool(
        Command::new("sfdisk").arg("--json").arg(disk),
        "the base is not a partitioned disk image: pass Ubuntu's cloud image disk (…-cloudimg-amd64.img)",
    )?;
    let parsed: SfdiskJson = serde_json::from_slice(&out).map_err(|e| ImageError::Tool {
        command: format!("sfdisk --json {}", disk.display()),
        status: "unreadable output".into(),
        stderr: e.to_string(),
        fix: "install util-linux's sfdisk (package fdisk) 2.32 or newer".into(),
    })?;
    let t = parsed.partitiontable;
    let sector = t.sectorsize.unwrap_or(SECTOR);
    t.partitions
        .iter()
        .map(|e| {
            let number = e
                .node
                .strip_prefix(&t.device)
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| ImageError::Tool {
                    command: format!("sfdisk --json {}", disk.display()),
                    status: "unexpected output".into(),
                    stderr: format!(
                        "partition node {:?} is not {:?} + a number",
                        e.node, t.device
                    ),
                    fix: "report this with sfdisk's version".into(),
                })?;
            Ok(Partition {
                number,
                start: e.start * sector,
                size: e.size * sector,
            })
        })
        .collect()
}

/// Bytes of an ext superblock that mailbake reads (through `s_free_blocks_count_hi`).
pub const SUPERBLOCK_LEN: usize = 0x160;

/// The superblock of the ext2/3/4 filesystem that starts at byte `fs_start` of `disk`, if one
/// is there (its magic checked).
pub fn superblock(disk: &mut File, fs_start: u64) -> std::io::Result<Option<[u8; SUPERBLOCK_LEN]>> {
    let mut sb = [0u8; SUPERBLOCK_LEN];
    disk.seek(SeekFrom::Start(fs_start + SUPERBLOCK))?;
    if disk.read_exact(&mut sb).is_err() {
        return Ok(None);
    }
    Ok((u16::from_le_bytes([sb[0x38], sb[0x39]]) == EXT_MAGIC).then_some(sb))
}

/// The label of the ext2/3/4 filesystem at the start of `p`, if it holds one.
fn ext_label(disk: &mut File, p: &Partition) -> std::io::Result<Option<String>> {
    Ok(superblock(disk, p.start)?.map(|sb| {
        let label = &sb[0x78..0x88];
        let end = label.iter().position(|&b| b == 0).unwrap_or(label.len());
        String::from_utf8_lossy(&label[..end]).into_owned()
    }))
}

/// The one partition holding an ext4 filesystem labelled `label`: found by its label, not its
/// position, as Ubuntu's own fstab finds it.
pub fn find_root(disk: &Path, parts: &[Partition], label: &str) -> Result<Partition, ImageError> {
    let mut f = File::open(disk).map_err(ImageError::io(disk))?;
    let mut found = Vec::new();
    let mut seen = Vec::new();
    for p in parts {
        let l = ext_label(&mut f, p).map_err(ImageError::io(disk))?;
        if l.as_deref() == Some(label) {
            found.push(p.clone());
        }
        seen.push(format!(
            "{}: {}",
            p.number,
            l.map(|l| format!("ext label {:?}", l))
                .unwrap_or_else(|| "no ext filesystem".into())
        ));
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        n => Err(ImageError::RootPartition {
            label: label.into(),
            count: n,
            seen: seen.join(", "),
        }),
    }
}

/// Grows `disk` by `extra` bytes and partition `p` (which must end last on the disk) over
/// them; the backup GPT moves to the new end. Returns the partition's new size.
pub fn grow_last(
    disk: &Path,
    parts: &[Partition],
    p: &Partition,
    extra: u64,
) -> Result<u64, ImageError> {
    let end = p.start + p.size;
    if let Some(after) = parts.iter().find(|q| q.start + q.size > end) {
        return Err(ImageError::NoRoomToGrow {
            number: p.number,
            after: after.number,
        });
    }
    let f = File::options()
        .write(true)
        .open(disk)
        .map_err(ImageError::io(disk))?;
    let len = f.metadata().map_err(ImageError::io(disk))?.len();
    f.set_len(len + extra).map_err(ImageError::io(disk))?;
    drop(f);
    // ", +" keeps the start and takes all the space after it.
    let mut child = Command::new("sfdisk")
        .args(["--no-reread", "--no-tell-kernel", "--quiet", "-N"])
        .arg(p.number.to_string())
        .arg(disk)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| ImageError::Tool {
            command: "sfdisk".into(),
            status: "could not start".into(),
            stderr: e.to_string(),
            fix: "install fdisk (sfdisk)".into(),
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(b", +\n").map_err(ImageError::io(disk))?;
    }
    let out = child.wait_with_output().map_err(ImageError::io(disk))?;
    let grown = read(disk)?
        .into_iter()
        .find(|q| q.number == p.number && q.start == p.start);
    match grown {
        Some(q) if out.status.success() && q.size > p.size => Ok(q.size),
        _ => Err(ImageError::Tool {
            command: format!("sfdisk -N {} {}", p.number, disk.display()),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            fix: "the partition could not be grown; pass a base whose root partition is last"
                .into(),
        }),
    }
}
