//! `mailbake image`: the CLI edge of [`super::build`].

use std::path::PathBuf;

use anyhow::Context;

use super::{Format, ImageOptions, build, parse_size};
use crate::epoch::DEFAULT_SOURCE_DATE_EPOCH;

/// Build a bootable disk image from a pinned base root tarball and an overlay tarball.
///
/// Needs root (file ownership, device nodes) and host tools: mke2fs/e2fsck (e2fsprogs),
/// grub-mkimage (grub-common), qemu-img (qemu-utils), xz/zstd for compressed bases.
#[derive(Debug, clap::Args)]
pub struct ImageArgs {
    /// Base root filesystem tarball (.tar, .tar.gz, .tar.xz or .tar.zst)
    #[arg(long, value_name = "ROOTFS.tar")]
    pub base: PathBuf,
    /// Expected sha256 of the base file; checked before anything is written
    #[arg(long, value_name = "HEX")]
    pub base_sha256: String,
    /// Overlay tarball from `mailbake build`; its entries replace the base's
    #[arg(long, value_name = "overlay.tar")]
    pub overlay: PathBuf,
    /// Output image (replaced atomically on success)
    #[arg(long, value_name = "X.qcow2")]
    pub out: PathBuf,
    /// Output format; qcow2 is written uncompressed because providers reject compressed ones
    #[arg(long, value_enum, default_value = "qcow2")]
    pub format: Format,
    /// Disk size (K, M, G, T binary units)
    #[arg(long, default_value = "3G", value_parser = parse_size)]
    pub size: u64,
    /// Clamp for file mtimes and the time mke2fs records
    #[arg(long, env = "SOURCE_DATE_EPOCH", default_value_t = DEFAULT_SOURCE_DATE_EPOCH as i64)]
    pub source_date_epoch: i64,
}

pub fn run(args: ImageArgs) -> anyhow::Result<()> {
    let opts = ImageOptions {
        base: args.base,
        base_sha256: args.base_sha256,
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
