//! The `image` stage: a pinned base ⊕ the overlay tarball ⇒ a bootable disk, raw or qcow2.
//!
//! The base is told apart by its bytes ([`BaseKind`]):
//! - **a disk image** (Ubuntu's `…-cloudimg-amd64.img`, the production base): its partition
//!   table, boot loaders and files are kept and the overlay is written into its root
//!   filesystem in place, with no root, loop device or mount ([`base_disk`]);
//! - **a root tarball with a kernel** (a Debian root by mmdebstrap): unpacked with the overlay
//!   into a tree ([`rootfs`], as root), made into an MBR disk with one ext4 partition and
//!   mailbake's own GRUB for BIOS ([`disk`], [`ext4`]). A tarball without a kernel, such as
//!   Ubuntu's `-root.tar.xz` (livecd-rootfs purges linux-* and grub-* before packing it), is
//!   refused with the `.img` to use.
//!
//! Either way: [`digest`] the base and compare with the pinned digest *before* anything is
//! written (given, or read from a checksum list whose signature [`signed_sums`] verifies
//! first); work in a temp dir next to the output, `qemu-img convert` to uncompressed qcow2 (the
//! VPS provider rejects compressed qcow2), rename into place only on success.
//!
//! Reproducibility: identical inputs give identical bytes (checked by tests/image.rs across
//! umask, TZ, user, directory and wall-clock time). On the disk path e2fsprogs' own times are
//! pinned with `E2FSPROGS_FAKE_TIME`; on the tarball path identifiers derive from the input
//! digests and the inode ctimes mke2fs 1.47.0 copies from the tree are rewritten by [`ext4`].

pub mod base_disk;
pub mod cli;
pub mod disk;
pub mod ext4;
pub mod rootfs;
pub mod signed_sums;

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// Filesystem label of the root partition. Ubuntu's cloud images use this label and their
/// `/etc/fstab` names the root by it, so the same image layout serves both bases.
pub const ROOT_LABEL: &str = "cloudimg-rootfs";

/// Where the root partition starts: sector 2048 (1 MiB), the usual alignment, which leaves
/// sectors 1..2047 free for GRUB's core image.
pub const PARTITION_START_SECTOR: u64 = 2048;

/// Size of the disk made from a root tarball when `--size` is not given.
pub const DEFAULT_TARBALL_DISK_SIZE: u64 = 3 << 30;

/// Output container format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// QEMU copy-on-write v3, uncompressed (what Contabo accepts for custom images).
    Qcow2,
    /// Plain disk bytes.
    Raw,
}

/// Inputs of [`build`].
#[derive(Debug, Clone)]
pub struct ImageOptions {
    /// Base root filesystem tarball (plain, gzip, xz or zstd).
    pub base: PathBuf,
    /// What the base must be: its sha256, or a signed list that has it.
    pub base_pin: BasePin,
    /// Overlay tarball (plain or gzip) made by `mailbake build`.
    pub overlay: PathBuf,
    /// Output file; replaced atomically.
    pub out: PathBuf,
    pub format: Format,
    /// Disk size in bytes (whole disk, partition table included). A root tarball's disk is
    /// made this size ([`DEFAULT_TARBALL_DISK_SIZE`] if unset); a base disk keeps its own size
    /// unless this is larger, or the overlay needs more room.
    pub size: Option<u64>,
    /// Clamp for every mtime in the image and the time mke2fs records.
    pub source_date_epoch: i64,
}

/// How the base is pinned.
#[derive(Debug, Clone)]
pub enum BasePin {
    /// Its sha256 (hex), for bases published without a signed list (the Debian test base).
    Sha256(String),
    /// Its line in a signed checksum list (Ubuntu's `SHA256SUMS` and `SHA256SUMS.gpg`).
    Signed(signed_sums::SignedSums),
}

/// What [`build`] produced.
#[derive(Debug, Clone)]
pub struct ImageReport {
    pub path: PathBuf,
    /// Size of the output file in bytes.
    pub size: u64,
    pub sha256: String,
    pub elapsed: Duration,
    /// Kernel version GRUB boots (from the base's `/boot/vmlinuz-*`).
    pub kernel: String,
}

/// Everything that can go wrong in the image stage.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(
        "base {path}: sha256 mismatch\n  expected {expected}\n  actual   {actual}\n  \
         fix: pin the digest of the tarball you mean to use, or fetch the one that was pinned"
    )]
    DigestMismatch {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("--base-sha256 {0:?} is not 64 hex digits")]
    BadDigest(String),
    #[error(
        "base {path}: sha256 differs from the one the signed list {sums} gives for it\n  signed   {expected}\n  actual   {actual}\n  \
         fix: the file is not the one that was signed (corrupt or replaced download): fetch it again from the same directory as the list"
    )]
    SignedDigestMismatch {
        path: PathBuf,
        sums: PathBuf,
        expected: String,
        actual: String,
    },
    #[error(
        "keyring {} not found\n  fix: install Debian's ubuntu-keyring package (trixie and later; it has \
         ubuntu-cloudimage-keyring.gpg, the key that signs Ubuntu's cloud images), or pass --keyring FILE",
        keyring.display()
    )]
    KeyringMissing { keyring: PathBuf },
    #[error(
        "{}: BAD signature: {} was not made over this list (changed after signing, or the signature of another file)\n  \
         fix: download SHA256SUMS and SHA256SUMS.gpg again, together, from the directory the base comes from",
        sums.display(), signature.display()
    )]
    BadSignature { sums: PathBuf, signature: PathBuf },
    #[error(
        "{}: signed by key {key}, which is not in the keyring {}\n  \
         fix: check the list comes from the publisher you expect; for Ubuntu's cloud images use \
         /usr/share/keyrings/ubuntu-cloudimage-keyring.gpg (package ubuntu-keyring), else pass --keyring with the publisher's key",
        sums.display(), keyring.display()
    )]
    UnknownSigningKey {
        sums: PathBuf,
        key: String,
        keyring: PathBuf,
    },
    #[error(
        "{}: gpgv does not accept this signature with keyring {}: {gpgv}\n  \
         fix: pass the detached signature of the list (SHA256SUMS.gpg) and a keyring in binary OpenPGP format (`gpg --export`, not --armor)",
        signature.display(), keyring.display()
    )]
    SignatureRefused {
        signature: PathBuf,
        keyring: PathBuf,
        gpgv: String,
    },
    #[error(
        "{}: the signed list {} has no line for `{}`\n  \
         fix: pass the SHA256SUMS of the directory the base was downloaded from, and keep the base's published file name",
        base.display(), sums.display(), base.file_name().map(|n| n.to_string_lossy()).unwrap_or_default()
    )]
    NotInSums { base: PathBuf, sums: PathBuf },
    #[error(
        "{}: lists `{name}` twice with different digests; refusing to pick one\n  fix: get a clean copy of the list and its signature",
        sums.display()
    )]
    ConflictingSums { name: String, sums: PathBuf },
    #[error(
        "the image stage must run as root (euid {0}): extraction has to record real file \
         ownership (root, _apt, systemd users) and create device nodes before mke2fs copies the \
         tree; run it with sudo or in a root container"
    )]
    NotRoot(u32),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{archive}: entry {entry}: {reason}")]
    Archive {
        archive: PathBuf,
        entry: String,
        reason: String,
    },
    #[error(
        "base {0}: a root tarball with no kernel (no /boot/vmlinuz-* with its /boot/initrd.img-*)\n  \
         Ubuntu's …-cloudimg-amd64-root.tar.xz and .squashfs are made this way: its build removes linux-* and grub-* before packing them, \
         so they cannot boot on their own\n  \
         fix: pass the disk image from the same directory, listed in the same SHA256SUMS: \
         --base ubuntu-22.04-server-cloudimg-amd64.img (or a root tarball whose base has a linux-image-* package)"
    )]
    NoKernel(PathBuf),
    #[error(
        "base disk: {count} partitions hold an ext4 filesystem labelled `{label}` (partitions: {seen})\n  \
         fix: pass Ubuntu's cloud image disk as published (…-cloudimg-amd64.img): its root filesystem is the one labelled `{label}`"
    )]
    RootPartition {
        label: String,
        count: usize,
        seen: String,
    },
    #[error(
        "base disk: partition {after} lies after the root partition {number}, so the root cannot grow over the end of the disk\n  \
         fix: use a base whose root partition is last (Ubuntu's is), or free room in its root filesystem"
    )]
    NoRoomToGrow { number: u32, after: u32 },
    #[error("overlay entry {entry}: {reason}")]
    Overlay { entry: String, reason: String },
    #[error(
        "base {0}: no /usr/lib/grub/i386-pc (boot.img, kernel.img, *.mod): install grub-pc-bin (Debian) or grub-pc (Ubuntu) in the base"
    )]
    NoGrub(PathBuf),
    #[error("`{command}` failed ({status}): {stderr}\n  fix: {fix}")]
    Tool {
        command: String,
        status: String,
        stderr: String,
        fix: String,
    },
    #[error("{0}")]
    Ext4(String),
}

impl ImageError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> ImageError {
        let path = path.into();
        move |source| ImageError::Io { path, source }
    }
}

/// Prints a progress line on stderr with the time since `start`.
pub(crate) fn progress(start: Instant, msg: impl AsRef<str>) {
    eprintln!("[{:>6.1}s] {}", start.elapsed().as_secs_f64(), msg.as_ref());
}

/// sha256 of a file, streamed.
pub fn digest(path: &Path) -> Result<String, ImageError> {
    let mut f = File::open(path).map_err(ImageError::io(path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(ImageError::io(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Parses sizes such as `3G`, `512M`, `2048K` or plain bytes (binary units).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m = match c.to_ascii_uppercase() {
                'K' => 1u64 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(format!("{s:?}: unknown unit {c:?}; use K, M, G or T")),
            };
            (&t[..i], m)
        }
        _ => (t, 1),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: not a size; examples: 3G, 2560M"))?;
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?}: too large"))
}

/// Runs a tool, turning a non-zero exit into [`ImageError::Tool`] with its stderr and a fix.
pub(crate) fn run_tool(cmd: &mut Command, fix: &str) -> Result<Vec<u8>, ImageError> {
    let shown = format!("{cmd:?}");
    let out = cmd.output().map_err(|e| ImageError::Tool {
        command: shown.clone(),
        status: "could not start".into(),
        stderr: e.to_string(),
        fix: fix.into(),
    })?;
    if !out.status.success() {
        return Err(ImageError::Tool {
            command: shown,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            fix: fix.into(),
        });
    }
    Ok(out.stdout)
}

/// Derives 16 stable bytes for a purpose (filesystem UUID, htree hash seed, MBR id) from the
/// two input digests, so the same inputs give the same identifiers and different inputs
/// different ones.
pub(crate) fn derive_id(base_sha: &str, overlay_sha: &str, purpose: &str) -> [u8; 16] {
    let mut h = Sha256::new();
    h.update(b"mailbake-image\0");
    h.update(purpose.as_bytes());
    h.update(b"\0");
    h.update(base_sha.as_bytes());
    h.update(b"\0");
    h.update(overlay_sha.as_bytes());
    let d = h.finalize();
    let mut id = [0u8; 16];
    id.copy_from_slice(&d[..16]);
    // Mark it as a random (version 4, RFC 4122 variant) UUID so tools treat it as well formed.
    id[6] = (id[6] & 0x0f) | 0x40;
    id[8] = (id[8] & 0x3f) | 0x80;
    id
}

/// Formats 16 bytes as a UUID string.
pub(crate) fn uuid_string(b: &[u8; 16]) -> String {
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// What kind of base was given, told by its bytes rather than its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BaseKind {
    /// A disk image (qcow2, or raw with a partition table): its boot chain is kept.
    Disk,
    /// A root filesystem tarball: the disk and its boot chain are made here.
    Tarball,
}

impl BaseKind {
    pub fn detect(path: &Path) -> Result<BaseKind, ImageError> {
        let mut head = Vec::with_capacity(520);
        File::open(path)
            .map_err(ImageError::io(path))?
            .take(520)
            .read_to_end(&mut head)
            .map_err(ImageError::io(path))?;
        let qcow2 = head.starts_with(b"QFI\xfb");
        let gpt = head.get(512..520) == Some(b"EFI PART".as_slice());
        let tar = head.get(257..262) == Some(b"ustar".as_slice());
        let mbr = !tar && head.get(510..512) == Some([0x55, 0xaa].as_slice());
        Ok(if qcow2 || gpt || mbr {
            BaseKind::Disk
        } else {
            BaseKind::Tarball
        })
    }
}

/// Builds the image. See the module documentation for the steps.
pub fn build(opts: &ImageOptions) -> Result<ImageReport, ImageError> {
    let start = Instant::now();
    let kind = BaseKind::detect(&opts.base)?;
    let (base_sha, overlay_sha) = check_inputs(opts, kind, start)?;
    let out_dir = match opts.out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    // Next to the output so the final rename stays on one filesystem.
    let work = tempfile::Builder::new()
        .prefix(".mailbake-image-")
        .tempdir_in(&out_dir)
        .map_err(ImageError::io(&out_dir))?;
    let (raw, kernel) = match kind {
        BaseKind::Disk => {
            let b = base_disk::build(
                &opts.base,
                &opts.overlay,
                work.path(),
                opts.size,
                opts.source_date_epoch,
                start,
            )?;
            (b.raw, b.kernel)
        }
        BaseKind::Tarball => disk_from_tarball(opts, work.path(), &base_sha, &overlay_sha, start)?,
    };
    let staged = match opts.format {
        Format::Raw => raw,
        Format::Qcow2 => to_qcow2(&raw, start)?,
    };
    std::fs::rename(&staged, &opts.out).map_err(ImageError::io(&opts.out))?;
    let sha256 = digest(&opts.out)?;
    let size = std::fs::metadata(&opts.out)
        .map_err(ImageError::io(&opts.out))?
        .len();
    progress(start, format!("wrote {}", opts.out.display()));
    Ok(ImageReport {
        path: opts.out.clone(),
        size,
        sha256,
        elapsed: start.elapsed(),
        kernel,
    })
}

/// A root tarball's disk: base and overlay merged into a tree, made into an MBR disk with one
/// ext4 partition and GRUB for BIOS. Returns the raw disk and the kernel it boots.
fn disk_from_tarball(
    opts: &ImageOptions,
    work: &Path,
    base_sha: &str,
    overlay_sha: &str,
    start: Instant,
) -> Result<(PathBuf, String), ImageError> {
    let tree = work.join("root");
    let sde = opts.source_date_epoch;
    let boot = merge_tree(opts, &tree, start)?;
    let raw = work.join("disk.raw");
    let ids = disk::Ids {
        fs_uuid: derive_id(base_sha, overlay_sha, "fs-uuid"),
        hash_seed: derive_id(base_sha, overlay_sha, "hash-seed"),
        disk_id: {
            let d = derive_id(base_sha, overlay_sha, "mbr-id");
            u32::from_le_bytes([d[0], d[1], d[2], d[3]])
        },
    };
    let size = opts.size.unwrap_or(DEFAULT_TARBALL_DISK_SIZE);
    disk::build_raw(&tree, &raw, size, ROOT_LABEL, &ids, sde, start)?;
    // The tree is no longer needed; free its space before the conversion copies the disk.
    std::fs::remove_dir_all(&tree).map_err(ImageError::io(&tree))?;
    Ok((raw, boot.kernel))
}

/// Checks the base against its pinned digest, then, for a root tarball, that we are root
/// (extraction records real owners and makes device nodes); returns the digests of the base and the overlay, from
/// which the image's identifiers are derived.
fn check_inputs(
    opts: &ImageOptions,
    kind: BaseKind,
    start: Instant,
) -> Result<(String, String), ImageError> {
    let expected = match &opts.base_pin {
        BasePin::Sha256(hex) => {
            let expected = hex.trim().to_ascii_lowercase();
            if expected.len() != 64 || !expected.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ImageError::BadDigest(hex.clone()));
            }
            expected
        }
        BasePin::Signed(signed) => {
            progress(
                start,
                format!(
                    "verifying the signature of {} with {}",
                    signed.sums.display(),
                    signed.keyring.display()
                ),
            );
            signed_sums::expected_digest(signed, &opts.base)?
        }
    };
    progress(
        start,
        format!("verifying sha256 of {}", opts.base.display()),
    );
    let actual = digest(&opts.base)?;
    if actual != expected {
        return Err(match &opts.base_pin {
            BasePin::Sha256(_) => ImageError::DigestMismatch {
                path: opts.base.clone(),
                expected,
                actual,
            },
            BasePin::Signed(signed) => ImageError::SignedDigestMismatch {
                path: opts.base.clone(),
                sums: signed.sums.clone(),
                expected,
                actual,
            },
        });
    }
    // Checked after the digest so a wrong pin is reported even when not root. A base disk is
    // changed inside its own filesystem by e2fsprogs, which needs no privilege.
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if kind == BaseKind::Tarball && euid != 0 {
        return Err(ImageError::NotRoot(euid));
    }
    let overlay_sha = digest(&opts.overlay)?;
    progress(
        start,
        format!("base ok ({actual}); overlay sha256 {overlay_sha}"),
    );
    Ok((actual, overlay_sha))
}

/// The base with the overlay over it, in `tree`, plus the boot files the disk needs.
fn merge_tree(
    opts: &ImageOptions,
    tree: &Path,
    start: Instant,
) -> Result<rootfs::BootFiles, ImageError> {
    let mut merged = rootfs::Tree::new(tree, opts.source_date_epoch)?;
    progress(start, "extracting base");
    merged.extract(&opts.base)?;
    progress(start, "extracting overlay (its entries win)");
    merged.extract(&opts.overlay)?;
    let boot = merged.add_boot_files(ROOT_LABEL)?;
    merged.finish()?;
    progress(
        start,
        format!(
            "tree ready: kernel {}, GRUB modules from the base",
            boot.kernel
        ),
    );
    Ok(boot)
}

/// `raw` converted to an uncompressed qcow2 beside it.
fn to_qcow2(raw: &Path, start: Instant) -> Result<PathBuf, ImageError> {
    progress(start, "converting to qcow2 (uncompressed)");
    let q = raw.with_file_name("disk.qcow2");
    run_tool(
        Command::new("qemu-img")
            .args(["convert", "-f", "raw", "-O", "qcow2", "-o", "compat=1.1"])
            .arg(raw)
            .arg(&q),
        "install qemu-utils (qemu-img)",
    )?;
    Ok(q)
}
