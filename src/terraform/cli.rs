//! `mailbake terraform SITE --image X.qcow2 --image-base-url URL --out DIR`.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::{FleetImage, TFVARS};
use crate::output;
use crate::secrets::{self, SecretStore};
use crate::site;
use crate::template::SiteContext;

/// Write a Terraform/OpenTofu configuration for the site's hosts on Contabo: the module, and
/// mailbake.auto.tfvars.json with the image and each host's user-data (its seed, naming the
/// image's digest).
#[derive(Debug, clap::Args)]
pub struct TerraformArgs {
    /// The site file (YAML).
    pub site: PathBuf,
    /// The disk image from `mailbake image` (qcow2) the hosts are to run; its sha256 is read
    /// from the file.
    #[arg(long, value_name = "X.qcow2")]
    pub image: PathBuf,
    /// The http(s) URL of the directory the image will be uploaded to; the provider downloads
    /// it from there, under the name this command prints.
    #[arg(long, value_name = "URL")]
    pub image_base_url: String,
    /// Output directory; replaced atomically (only if it is empty or an earlier mailbake
    /// output). Keep Terraform's state elsewhere: see docs/terraform.md.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Secrets store [default: secrets/ beside the site file].
    #[arg(long, value_name = "DIR")]
    pub secrets: Option<PathBuf>,
}

/// The first bytes of every qcow2 file.
const QCOW2_MAGIC: &[u8; 4] = b"QFI\xfb";

pub fn run(args: &TerraformArgs) -> anyhow::Result<()> {
    output::check_destination(&args.out, output::OutputKind::Terraform)?;
    // The cheap checks of the command line first: a bad URL or image fails before the store
    // is opened or the image hashed.
    FleetImage::new(String::new(), &args.image_base_url)?;
    check_qcow2(&args.image)?;
    let loaded = site::load(&args.site)?;
    let secrets = args
        .secrets
        .clone()
        .unwrap_or_else(|| SecretStore::default_path(&args.site));
    let store = secrets::open_for_site(&loaded, &secrets)?;
    let context = SiteContext::for_site(&loaded)?;
    eprintln!("hashing {}", args.image.display());
    let sha256 = crate::image::digest(&args.image)?;
    let image = FleetImage::new(sha256, &args.image_base_url)?;
    let files = super::outputs(&loaded, &context, store.as_ref(), &image)
        .context("writing the Terraform configuration")?;
    output::write_dir(&args.out, output::OutputKind::Terraform, &files)?;
    let site = loaded.site.site.as_str();
    println!(
        "{}: module and {TFVARS} for {} host(s)",
        args.out.display(),
        loaded.site.hosts.len()
    );
    println!("upload {} as {}", args.image.display(), image.url(site));
    println!("  (file name {})", image.file_name(site));
    Ok(())
}

/// Contabo takes qcow2 (or ISO); a raw disk under a `.qcow2` URL would be refused late.
fn check_qcow2(path: &Path) -> anyhow::Result<()> {
    // Opening a FIFO blocks until someone writes to it, and a device or directory is no
    // image: look before opening.
    let meta =
        std::fs::metadata(path).with_context(|| format!("reading the image {}", path.display()))?;
    if !meta.is_file() {
        anyhow::bail!(
            "{} is not a regular file (a FIFO, device or directory)\n  fix: give the qcow2 file `mailbake image` wrote",
            path.display()
        );
    }
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .with_context(|| format!("reading the image {}", path.display()))?;
    if &magic != QCOW2_MAGIC {
        anyhow::bail!(
            "{} is not a qcow2 image\n  fix: build it with `mailbake image ... --format qcow2` (the default): the provider pulls qcow2",
            path.display()
        );
    }
    Ok(())
}
