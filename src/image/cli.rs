//! `mailbake image`: the CLI edge of [`super::build`].

use std::path::PathBuf;

use anyhow::Context;

use super::signed_sums::{SignedSums, UBUNTU_CLOUD_IMAGE_KEYRING};
use super::{BasePin, Format, ImageOptions, build, parse_size};
use crate::epoch::DEFAULT_SOURCE_DATE_EPOCH;

/// Build a bootable disk image from a pinned base and an overlay tarball.
///
/// The base is Ubuntu's cloud image disk (`…-cloudimg-amd64.img`, qcow2 or raw): its partition
/// table, boot loaders and files are kept and the overlay is written into its root filesystem
/// (no root, loop device or mount needed). A root tarball that carries a kernel also works
/// (needs root). Host tools: qemu-img, sfdisk, e2fsprogs; grub-mkimage for a tarball.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("pin").required(true).args(["base_sha256", "base_sums"])))]
pub struct ImageArgs {
    /// Base: Ubuntu's cloud image disk (ubuntu-22.04-server-cloudimg-amd64.img), or a root
    /// tarball with a kernel (.tar, .tar.gz, .tar.xz or .tar.zst), told apart by their bytes
    #[arg(long, value_name = "BASE.img")]
    pub base: PathBuf,
    /// Expected sha256 of the base file; checked before anything is written. For bases
    /// without a signed checksum list (the Debian test base); else use --base-sums
    #[arg(long, value_name = "HEX")]
    pub base_sha256: Option<String>,
    /// Signed checksum list with the base's digest, found by the base's file name (Ubuntu's
    /// SHA256SUMS beside the cloud images)
    #[arg(long, value_name = "SHA256SUMS", requires = "base_sums_sig")]
    pub base_sums: Option<PathBuf>,
    /// Detached signature of --base-sums, verified with gpgv before the list is read
    #[arg(long, value_name = "SHA256SUMS.gpg", requires = "base_sums")]
    pub base_sums_sig: Option<PathBuf>,
    /// Keyring (binary OpenPGP) that must have signed --base-sums
    #[arg(long, value_name = "FILE", default_value = UBUNTU_CLOUD_IMAGE_KEYRING, requires = "base_sums")]
    pub keyring: PathBuf,
    /// Overlay tarball from `mailbake build`; its entries replace the base's
    #[arg(long, value_name = "overlay.tar")]
    pub overlay: PathBuf,
    /// Output image (replaced atomically on success)
    #[arg(long, value_name = "X.qcow2")]
    pub out: PathBuf,
    /// Output format; qcow2 is written uncompressed because providers reject compressed ones
    #[arg(long, value_enum, default_value = "qcow2")]
    pub format: Format,
    /// Disk size (K, M, G, T binary units). A base disk keeps its own size unless this is
    /// larger (or the overlay needs room); a root tarball's disk is 3G unless given
    #[arg(long, value_parser = parse_size)]
    pub size: Option<u64>,
    /// Clamp for file mtimes and the time mke2fs records
    #[arg(long, env = "SOURCE_DATE_EPOCH", default_value_t = DEFAULT_SOURCE_DATE_EPOCH as i64, value_parser = crate::epoch::parse_signed)]
    pub source_date_epoch: i64,
}

pub fn run(args: ImageArgs) -> anyhow::Result<()> {
    let base_pin = match (args.base_sha256, args.base_sums, args.base_sums_sig) {
        (Some(hex), _, _) => BasePin::Sha256(hex),
        (None, Some(sums), Some(signature)) => BasePin::Signed(SignedSums {
            sums,
            signature,
            keyring: args.keyring,
        }),
        // clap requires one of the two ways, and --base-sums-sig with --base-sums.
        _ => anyhow::bail!("give --base-sha256 HEX, or --base-sums FILE with --base-sums-sig FILE"),
    };
    let opts = ImageOptions {
        base: args.base,
        base_pin,
        overlay: args.overlay,
        out: args.out,
        format: args.format,
        size: args.size,
        source_date_epoch: args.source_date_epoch,
    };
    let r = build(&opts).with_context(|| format!("building image {}", opts.out.display()))?;
    println!("image:   {}", r.path.display());
    println!("format:  {:?}", opts.format);
    println!("kernel:  {}", r.kernel);
    println!("size:    {} bytes ({} MiB)", r.size, r.size >> 20);
    println!("sha256:  {}", r.sha256);
    println!("time:    {:.1} s", r.elapsed.as_secs_f64());
    Ok(())
}
