//! `mailbake build`: from a site file to the artifacts a site needs (today: the overlay).
//!
//! Pure in the sense that matters: the outputs depend only on the site file, the layers, the
//! pinned packages and SOURCE_DATE_EPOCH; never on the clock, the working directory, the
//! umask or the time zone.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;

use crate::fetch::{self, Cache, Lock};
use crate::output::{self, OutputFile};
use crate::overlay::tree::{Content, Entry};
use crate::overlay::{self, PackagePayload, archive};
use crate::seed;
use crate::site;

/// SOURCE_DATE_EPOCH used when none is given: 2026-01-01T00:00:00Z. Fixed, so that a build
/// without the variable is still reproducible.
pub const DEFAULT_SOURCE_DATE_EPOCH: u64 = 1_767_225_600;

#[derive(Clone, Debug)]
pub struct BuildOptions {
    pub site: PathBuf,
    pub out: PathBuf,
    pub lock: PathBuf,
    pub cache: Option<PathBuf>,
    pub layers: PathBuf,
    /// The secrets store the seeds copy users, DKIM keys and credentials from
    /// (usually [`crate::secrets::SecretStore::default_path`] of the site file).
    pub secrets: PathBuf,
    pub source_date_epoch: u64,
}

/// What a build wrote: each file with its size and sha256.
#[derive(Clone, Debug)]
pub struct BuildReport {
    pub files: Vec<(String, usize, String)>,
    pub overlay_entries: usize,
}

pub fn run(opts: &BuildOptions, progress: &mut dyn Write) -> anyhow::Result<BuildReport> {
    let started = Instant::now();
    let loaded = site::load(&opts.site)?;
    let _ = writeln!(
        progress,
        "site {}: {} domain(s), {} host(s)",
        opts.site.display(),
        loaded.site.domains.len(),
        loaded.site.hosts.len()
    );

    // Seeds first: a missing secret is the likeliest failure and costs nothing to find,
    // while the overlay means reading and compressing tens of megabytes.
    let seeds = seed::build(&loaded.site, &opts.site, &opts.secrets)?;
    let _ = writeln!(
        progress,
        "seeds: {} host(s), secrets from {}",
        seeds.len(),
        opts.secrets.display()
    );

    let packages = load_packages(&opts.lock, opts.cache.as_deref(), progress)?;
    let tree = overlay::build(&loaded.site, &loaded.dir, &opts.layers, &packages)
        .with_context(|| format!("rendering the layers in {}", opts.layers.display()))?;
    let tar = archive::tar(&tree, opts.source_date_epoch).context("writing overlay.tar")?;
    let tar_gz = archive::gzip(&tar).context("compressing overlay.tar")?;
    let manifest = archive::manifest(&tree);
    let _ = writeln!(
        progress,
        "overlay: {} entries, {} bytes ({} gzipped)",
        tree.len(),
        tar.len(),
        tar_gz.len()
    );

    let mut files = vec![
        OutputFile::public("overlay.tar", tar),
        OutputFile::public("overlay.tar.gz", tar_gz),
        OutputFile::public("MANIFEST", manifest.into_bytes()),
    ];
    files.extend(seed::output_files(&seeds));
    files.extend(dns_outputs(&loaded, &opts.secrets, progress)?);
    output::write_dir(&opts.out, &files)?;
    let report = BuildReport {
        files: files
            .iter()
            .map(|f| (f.path.clone(), f.data.len(), archive::sha256_hex(&f.data)))
            .collect(),
        overlay_entries: tree.len(),
    };
    let _ = writeln!(
        progress,
        "wrote {} in {:.1}s",
        opts.out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(report)
}

/// The DNS records of the site, with DKIM records from the build's secrets store.
fn dns_outputs(
    loaded: &site::LoadedSite,
    secrets: &Path,
    progress: &mut dyn Write,
) -> anyhow::Result<Vec<OutputFile>> {
    let store = crate::secrets::SecretStore::open(secrets)?;
    let (files, warnings) =
        crate::dns::build_outputs(loaded, &store).context("writing the DNS records (dns/)")?;
    for warning in warnings {
        let _ = writeln!(progress, "warning: dns: {warning}");
    }
    Ok(files)
}

/// Fetches (or finds in the cache) every pinned package and reads its payload.
fn load_packages(
    lock_path: &Path,
    cache: Option<&Path>,
    progress: &mut dyn Write,
) -> anyhow::Result<Vec<PackagePayload>> {
    let lock = Lock::load(lock_path)?;
    let cache = match cache {
        Some(dir) => Cache::open(dir)?,
        None => Cache::open_default()?,
    };
    let debs = fetch::fetch_all(&lock, &cache, progress)?;
    debs.iter()
        .map(|deb| {
            let origin = format!("package {}", deb.package.label());
            let entries = fetch::deb::read_payload(&deb.path)
                .with_context(|| format!("reading {}", deb.path.display()))?;
            Ok(PackagePayload {
                name: deb.package.name.clone(),
                version: deb.package.version.clone(),
                entries: payload_entries(entries, &origin),
            })
        })
        .collect()
}

/// A package's files as overlay entries. Hard links become copies: the overlay is unpacked on
/// top of another tree, where a link's target may be replaced independently.
fn payload_entries(entries: Vec<fetch::deb::PayloadEntry>, origin: &str) -> Vec<(String, Entry)> {
    use fetch::deb::EntryKind;
    let contents_of = |path: &str, all: &[fetch::deb::PayloadEntry]| {
        all.iter()
            .find(|e| e.path == path)
            .map(|e| e.contents.clone())
            .unwrap_or_default()
    };
    entries
        .iter()
        .map(|e| {
            let content = match e.kind {
                EntryKind::Dir => Content::Dir,
                EntryKind::File => Content::File(e.contents.clone()),
                EntryKind::Symlink => Content::Symlink(e.link_target.clone().unwrap_or_default()),
                EntryKind::Hardlink => Content::File(contents_of(
                    e.link_target.as_deref().unwrap_or_default(),
                    &entries,
                )),
            };
            (
                e.path.clone(),
                Entry {
                    content,
                    mode: e.mode & 0o7777,
                    uid: e.uid,
                    gid: e.gid,
                    origin: origin.to_string(),
                },
            )
        })
        .collect()
}
