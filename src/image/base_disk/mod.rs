//! The image stage on a base *disk* (Ubuntu's `…-cloudimg-amd64.img`, qcow2 or raw): the
//! base's own boot chain is kept whole and the overlay is written into its root filesystem in
//! place.
//!
//! Steps, each checked:
//! 1. `qemu-img convert` the base to a raw disk in the work directory (sparse);
//! 2. read its partition table ([`partitions`]) and find the root filesystem by its label
//!    (`cloudimg-rootfs`), wherever it sits;
//! 3. `e2fsck -fn` it: a damaged or uncleanly unmounted base is refused before any change;
//! 4. plan the overlay against the base's tree ([`plan`], read with the `ext4-view` crate);
//! 5. if the overlay does not fit with room to spare (or `--size` asks for more), grow the disk,
//!    the last partition (`sfdisk`) and the filesystem (`resize2fs`);
//! 6. carry the plan out with `debugfs` ([`debugfs`]), every time it records pinned;
//! 7. `e2fsck -fn` again, and read every overlay entry back and compare it with the archive.
//!
//! Nothing is mounted, no loop device is used and root is not needed: e2fsprogs opens the
//! filesystem inside the disk file at its byte offset. The partition table, the BIOS boot
//! partition, the ESP and every file of the base the overlay does not name keep their bytes,
//! so owners, modes, links, device nodes, ACLs and extended attributes (file capabilities
//! included) stay as the base has them.

pub mod debugfs;
pub mod partitions;
pub mod plan;

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use sha2::{Digest, Sha256};

use self::plan::{Attrs, BaseTree, EntryKind, Node, Planner};
use super::rootfs::{Input, newest_kernel_in};
use super::{ImageError, ROOT_LABEL, progress, run_tool};

/// Free space left in the root filesystem after the overlay: the first boot writes logs,
/// host keys and the seed's files before cloud-init grows the filesystem to the real disk.
pub const HEADROOM: u64 = 128 << 20;

/// What [`build`] made.
pub struct Built {
    pub raw: PathBuf,
    pub kernel: String,
}

/// Reads a filesystem inside a disk file, from its byte offset on.
struct AtOffset {
    file: File,
    offset: u64,
}

impl ext4_view::Ext4Read for AtOffset {
    fn read(
        &mut self,
        start_byte: u64,
        dst: &mut [u8],
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync + 'static>> {
        self.file.seek(SeekFrom::Start(self.offset + start_byte))?;
        self.file.read_exact(dst)?;
        Ok(())
    }
}

/// The root filesystem of a disk, opened read-only.
pub struct RootFs(ext4_view::Ext4);

impl RootFs {
    pub fn open(disk: &Path, offset: u64) -> Result<RootFs, ImageError> {
        let file = File::open(disk).map_err(ImageError::io(disk))?;
        ext4_view::Ext4::load(Box::new(AtOffset { file, offset }))
            .map(RootFs)
            .map_err(|e| ImageError::Ext4(format!("{}: root filesystem: {e}", disk.display())))
    }

    fn err(path: &str, e: ext4_view::Ext4Error) -> ImageError {
        ImageError::Ext4(format!("base root filesystem, {path}: {e}"))
    }

    /// The newest `/boot/vmlinuz-<ver>` that has a `/boot/initrd.img-<ver>`.
    pub fn newest_kernel(&self) -> Result<Option<String>, ImageError> {
        let names: Vec<String> = match self.0.read_dir("/boot") {
            Ok(rd) => rd
                .filter_map(|e| e.ok())
                .map(|e| {
                    e.file_name()
                        .as_str()
                        .map(str::to_string)
                        .unwrap_or_default()
                })
                .collect(),
            Err(ext4_view::Ext4Error::NotFound) => return Ok(None),
            Err(e) => return Err(Self::err("/boot", e)),
        };
        Ok(newest_kernel_in(&names))
    }
}

impl BaseTree for RootFs {
    fn node(&self, path: &str) -> Result<Option<Node>, ImageError> {
        let meta = match self.0.symlink_metadata(path) {
            Ok(m) => m,
            Err(ext4_view::Ext4Error::NotFound) => return Ok(None),
            Err(e) => return Err(Self::err(path, e)),
        };
        use ext4_view::FileType;
        Ok(Some(match meta.file_type() {
            FileType::Directory => Node::Dir,
            FileType::Regular => Node::File,
            FileType::Symlink => {
                let target = self.0.read_link(path).map_err(|e| Self::err(path, e))?;
                Node::Symlink(
                    target
                        .to_str()
                        .map_err(|_| {
                            ImageError::Ext4(format!(
                                "base root filesystem, {path}: a symlink whose target is not UTF-8 lies on an overlay path"
                            ))
                        })?
                        .to_string(),
                )
            }
            _ => Node::Special,
        }))
    }
}

/// What one overlay entry must look like in the finished filesystem.
struct Expected {
    name: String,
    kind: EntryKind,
    attrs: Attrs,
    sha256: Option<[u8; 32]>,
}

/// The overlay as debugfs steps, with what it needs and what must come out.
struct OverlayPlan {
    ops: Vec<plan::Op>,
    /// Bytes of regular files, and inodes, the steps create.
    bytes: u64,
    inodes: u64,
    expected: Vec<Expected>,
}

/// The overlay read into a plan, its files' bytes into `work/payloads/`.
fn plan_overlay(
    base: &RootFs,
    overlay: &Path,
    work: &Path,
    sde: i64,
) -> Result<OverlayPlan, ImageError> {
    let payloads = work.join("payloads");
    fs::create_dir(&payloads).map_err(ImageError::io(&payloads))?;
    let mut planner = Planner::new(base);
    let mut expected = Vec::new();
    let mut input = Input::open(overlay)?;
    read_entries(
        &mut input.reader,
        overlay,
        &payloads,
        sde,
        &mut planner,
        &mut expected,
    )?;
    input.finish(overlay)?;
    Ok(OverlayPlan {
        ops: planner.ops,
        bytes: planner.bytes_written,
        inodes: planner.inodes_created,
        expected,
    })
}

/// Plans every entry of the overlay archive in order.
fn read_entries(
    reader: &mut dyn Read,
    overlay: &Path,
    payloads: &Path,
    sde: i64,
    planner: &mut Planner<'_, RootFs>,
    expected: &mut Vec<Expected>,
) -> Result<(), ImageError> {
    let mut archive = tar::Archive::new(reader);
    let bad = |entry: &str, reason: String| ImageError::Archive {
        archive: overlay.to_path_buf(),
        entry: entry.to_string(),
        reason,
    };
    for (n, entry) in archive
        .entries()
        .map_err(ImageError::io(overlay))?
        .enumerate()
    {
        let mut entry = entry.map_err(ImageError::io(overlay))?;
        let raw = entry.path_bytes().into_owned();
        let name = String::from_utf8(raw).map_err(|e| {
            bad(
                &String::from_utf8_lossy(e.as_bytes()),
                "name is not UTF-8".into(),
            )
        })?;
        let h = entry.header();
        let field = |r: std::io::Result<u64>, what: &str| {
            r.map_err(|e| bad(&name, format!("bad {what}: {e}")))
        };
        let perm = field(h.mode().map(u64::from), "mode")? as u32 & 0o7777;
        let uid = u32::try_from(field(h.uid(), "uid")?)
            .map_err(|_| bad(&name, "uid out of range".into()))?;
        let gid = u32::try_from(field(h.gid(), "gid")?)
            .map_err(|_| bad(&name, "gid out of range".into()))?;
        let mtime = i64::try_from(field(h.mtime(), "mtime")?)
            .unwrap_or(i64::MAX)
            .min(sde);
        let attrs = Attrs {
            perm,
            uid,
            gid,
            mtime,
        };
        let (kind, sha256) = match h.entry_type() {
            tar::EntryType::Directory => (EntryKind::Dir, None),
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| String::from_utf8_lossy(&t).into_owned())
                    .ok_or_else(|| bad(&name, "symlink without a target".into()))?;
                (EntryKind::Symlink(target), None)
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let path = payloads.join(n.to_string());
                let mut out = File::create(&path).map_err(ImageError::io(&path))?;
                let mut hasher = HashingReader {
                    inner: &mut entry,
                    hash: Sha256::new(),
                };
                let len = std::io::copy(&mut hasher, &mut out).map_err(ImageError::io(&path))?;
                (EntryKind::File(n, len), Some(hasher.hash.finalize().into()))
            }
            other => {
                return Err(bad(
                    &name,
                    format!(
                        "entry kind {other:?}: an overlay holds directories, files and symlinks only"
                    ),
                ));
            }
        };
        planner.add(&name, kind.clone(), attrs)?;
        expected.push(Expected {
            name,
            kind,
            attrs,
            sha256,
        });
    }
    Ok(())
}

/// Hashes what passes through it.
struct HashingReader<R> {
    inner: R,
    hash: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

/// Block size, total and free blocks and free inodes of the filesystem at `offset`, and
/// whether its journal still needs replaying.
struct Space {
    block: u64,
    blocks: u64,
    free_blocks: u64,
    free_inodes: u64,
    needs_recovery: bool,
}

fn space(disk: &Path, offset: u64) -> Result<Space, ImageError> {
    let mut f = File::open(disk).map_err(ImageError::io(disk))?;
    let sb = partitions::superblock(&mut f, offset)
        .map_err(ImageError::io(disk))?
        .ok_or_else(|| {
            ImageError::Ext4(format!(
                "{}: no ext filesystem at byte {offset}",
                disk.display()
            ))
        })?;
    let u32_at = |o: usize| u64::from(u32::from_le_bytes([sb[o], sb[o + 1], sb[o + 2], sb[o + 3]]));
    let incompat = u32_at(0x60);
    let wide = incompat & 0x80 != 0;
    let hi = |o: usize| if wide { u32_at(o) << 32 } else { 0 };
    Ok(Space {
        block: 1024u64 << u32_at(0x18).min(6),
        blocks: u32_at(0x04) | hi(0x150),
        free_blocks: u32_at(0x0C) | hi(0x158),
        free_inodes: u32_at(0x10),
        needs_recovery: incompat & 0x4 != 0,
    })
}

fn round_up_mib(n: u64) -> u64 {
    n.div_ceil(1 << 20) << 20
}

/// Applies the overlay to the base disk; the result is a raw disk in `work`.
pub fn build(
    base: &Path,
    overlay: &Path,
    work: &Path,
    min_size: Option<u64>,
    sde: i64,
    start: Instant,
) -> Result<Built, ImageError> {
    let raw = work.join("disk.raw");
    progress(start, "converting the base disk to raw (sparse)");
    run_tool(
        Command::new("qemu-img")
            .args(["convert", "-O", "raw"])
            .arg(base)
            .arg(&raw),
        "install qemu-utils (qemu-img); the base must be a qcow2 or raw disk image",
    )?;
    let parts = partitions::read(&raw)?;
    let root = partitions::find_root(&raw, &parts, ROOT_LABEL)?;
    progress(
        start,
        format!(
            "root filesystem `{ROOT_LABEL}`: partition {} at byte {} ({} MiB)",
            root.number,
            root.start,
            root.size >> 20
        ),
    );
    let before = space(&raw, root.start)?;
    if before.needs_recovery {
        return Err(ImageError::Ext4(format!(
            "{}: the root filesystem was not cleanly unmounted (its journal needs replaying); \
             fix: use the published image as downloaded, not one that has been booted",
            base.display()
        )));
    }
    debugfs::check(&raw, root.start, "in the base")?;

    let fs = RootFs::open(&raw, root.start)?;
    let kernel = fs.newest_kernel()?.ok_or_else(|| {
        ImageError::Ext4(format!(
            "{}: the root filesystem has no /boot/vmlinuz-* with its initrd.img-*: not a bootable cloud image",
            base.display()
        ))
    })?;
    progress(start, "planning the overlay against the base's tree");
    let OverlayPlan {
        ops,
        bytes,
        inodes,
        expected,
    } = plan_overlay(&fs, overlay, work, sde)?;
    drop(fs);

    let needed = round_up_mib(bytes + (inodes + ops.len() as u64) * before.block + HEADROOM);
    let free = before.free_blocks * before.block;
    let disk_len = fs::metadata(&raw).map_err(ImageError::io(&raw))?.len();
    let extra = needed
        .saturating_sub(free)
        .max(min_size.map_or(0, |m| round_up_mib(m).saturating_sub(disk_len)));
    if extra > 0 {
        progress(
            start,
            format!(
                "growing the disk by {} MiB (overlay {} MiB, free {} MiB)",
                extra >> 20,
                bytes >> 20,
                free >> 20
            ),
        );
        let new_size = partitions::grow_last(&raw, &parts, &root, extra)?;
        grow_filesystem(&raw, root.start, new_size, work, sde)?;
    }
    let room = space(&raw, root.start)?;
    if room.free_inodes < inodes {
        return Err(ImageError::Ext4(format!(
            "the base's root filesystem has {} free inodes, the overlay needs {inodes}",
            room.free_inodes
        )));
    }

    progress(
        start,
        format!("writing {} overlay entries with debugfs", expected.len()),
    );
    debugfs::apply(&raw, root.start, work, &debugfs::script(&ops), sde)?;
    fs::remove_dir_all(work.join("payloads")).map_err(ImageError::io(work))?;
    debugfs::check(&raw, root.start, "after the overlay was written")?;
    verify(&raw, root.start, &expected)?;
    let after = space(&raw, root.start)?;
    progress(
        start,
        format!(
            "overlay written and read back; {} MiB of {} MiB free",
            (after.free_blocks * after.block) >> 20,
            (after.blocks * after.block) >> 20
        ),
    );
    Ok(Built { raw, kernel })
}

/// Grows the filesystem at `offset` of `disk` to `size` bytes.
///
/// resize2fs is run on a copy of the filesystem in a file of its own, not at the offset: when
/// its device is a regular file, it sets that file's length to the filesystem's size, which
/// inside a disk would cut off the filesystem's last `offset` bytes and the backup GPT.
fn grow_filesystem(
    disk: &Path,
    offset: u64,
    size: u64,
    work: &Path,
    sde: i64,
) -> Result<(), ImageError> {
    let part = work.join("root.ext4");
    {
        let mut from = File::open(disk).map_err(ImageError::io(disk))?;
        from.seek(SeekFrom::Start(offset))
            .map_err(ImageError::io(disk))?;
        let mut to = File::create(&part).map_err(ImageError::io(&part))?;
        std::io::copy(&mut from.take(size), &mut to).map_err(ImageError::io(&part))?;
        to.set_len(size).map_err(ImageError::io(&part))?;
    }
    run_tool(
        Command::new("resize2fs")
            .env("E2FSPROGS_FAKE_TIME", sde.to_string())
            .arg("-f")
            .arg(&part)
            .arg(format!("{}K", size / 1024)),
        "install e2fsprogs (resize2fs)",
    )?;
    let mut from = File::open(&part).map_err(ImageError::io(&part))?;
    let mut to = File::options()
        .write(true)
        .open(disk)
        .map_err(ImageError::io(disk))?;
    to.seek(SeekFrom::Start(offset))
        .map_err(ImageError::io(disk))?;
    std::io::copy(&mut from, &mut to).map_err(ImageError::io(disk))?;
    drop(from);
    fs::remove_file(&part).map_err(ImageError::io(&part))
}

/// Reads every overlay entry back from the finished filesystem: the same kind, mode, owner and
/// (for files) bytes, or the build fails naming the entry.
fn verify(raw: &Path, offset: u64, expected: &[Expected]) -> Result<(), ImageError> {
    let fs = RootFs::open(raw, offset)?;
    let mismatch = |name: &str, what: String| ImageError::Overlay {
        entry: name.to_string(),
        reason: format!("after debugfs wrote it, {what}"),
    };
    for e in expected {
        let path = format!("/{}", e.name.trim_start_matches("./").trim_end_matches('/'));
        if path == "/" {
            continue;
        }
        // Parents may be symlinks (merged /usr): the crate resolves them as the kernel would.
        let meta = match &e.kind {
            EntryKind::Dir => fs.0.metadata(path.as_str()),
            _ => fs.0.symlink_metadata(path.as_str()),
        }
        .map_err(|err| mismatch(&e.name, format!("it cannot be read: {err}")))?;
        if meta.mode() & 0o7777 != e.attrs.perm as u16 && !matches!(e.kind, EntryKind::Symlink(_)) {
            return Err(mismatch(&e.name, format!("its mode is {:o}", meta.mode())));
        }
        if (meta.uid(), meta.gid()) != (e.attrs.uid, e.attrs.gid) {
            return Err(mismatch(
                &e.name,
                format!("its owner is {}:{}", meta.uid(), meta.gid()),
            ));
        }
        match &e.kind {
            EntryKind::Dir if !meta.is_dir() => {
                return Err(mismatch(&e.name, "it is not a directory".into()));
            }
            EntryKind::Symlink(t) => {
                let got =
                    fs.0.read_link(path.as_str())
                        .map_err(|err| mismatch(&e.name, err.to_string()))?;
                if got.as_ref() != t.as_bytes() {
                    return Err(mismatch(&e.name, format!("it points to {}", got.display())));
                }
            }
            EntryKind::File(..) => {
                let data =
                    fs.0.read(path.as_str())
                        .map_err(|err| mismatch(&e.name, err.to_string()))?;
                let sha: [u8; 32] = Sha256::digest(&data).into();
                if Some(sha) != e.sha256 {
                    return Err(mismatch(
                        &e.name,
                        "its bytes differ from the overlay's".into(),
                    ));
                }
            }
            EntryKind::Dir => {}
        }
    }
    Ok(())
}
