//! `mailbake build`: from a site file to every artifact of the site: the overlay every host
//! shares (`overlay.tar`, its zstd copy `overlay.tar.zst` and `MANIFEST`), each host's seed (`hosts/<host>/`), the
//! DNS records (`dns/`) and `SHA256SUMS` over all of them.
//!
//! The order is the point: everything that can be wrong with the inputs is checked first and
//! cheaply (`--out`, the site file, the secrets store, the lock file, the layers and their
//! templates, every secret the seeds carry, the DKIM keys behind the DNS records), so a
//! mistake costs a second, not the fetching, reading and compressing of tens of megabytes of
//! packages. Each stage is handed what it needs once: the loaded site, the opened store.
//!
//! Pure in the sense that matters: the outputs depend only on the site file, the secrets, the
//! layers, the pinned packages and SOURCE_DATE_EPOCH; never on the clock, the working
//! directory, the umask or the time zone.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;

use crate::fetch::{self, Cache, Lock};
use crate::output::{self, OutputFile, ReusedFile, Written};
use crate::overlay::reuse::{OverlayKey, Record, RecordedFile, Verified};
use crate::overlay::{self, PackagePayload, archive};
use crate::shipped;
use crate::template::SiteContext;
use crate::{dns, secrets, seed, site};

#[derive(Clone, Debug)]
pub struct BuildOptions {
    pub site: PathBuf,
    pub out: PathBuf,
    /// The lock file; `None`: the one built into mailbake ([`crate::shipped`]).
    pub lock: Option<PathBuf>,
    pub cache: Option<PathBuf>,
    /// The layers directory; `None`: the layers built into mailbake.
    pub layers: Option<PathBuf>,
    /// The secrets store the seeds copy users, DKIM keys and credentials from
    /// (usually [`crate::secrets::SecretStore::default_path`] of the site file).
    pub secrets: PathBuf,
    pub source_date_epoch: u64,
}

/// What a build wrote: each file with its size and sha256 (the digests of `SHA256SUMS`).
#[derive(Clone, Debug)]
pub struct BuildReport {
    pub files: Vec<Written>,
    pub overlay_entries: usize,
}

pub fn run(opts: &BuildOptions, progress: &mut dyn Write) -> anyhow::Result<BuildReport> {
    let started = Instant::now();

    // --- Inputs, all checked before anything is fetched or written.
    output::check_destination(&opts.out, output::OutputKind::Build)?;
    let loaded = site::load(&opts.site)?;
    let _ = writeln!(
        progress,
        "site {}: {} domain(s), {} host(s)",
        opts.site.display(),
        loaded.site.domains.len(),
        loaded.site.hosts.len()
    );
    let store = secrets::open_for_site(&loaded, &opts.secrets)?;
    let lock = shipped::lock(opts.lock.as_deref())?;
    let context = SiteContext::for_site(&loaded)?;
    let layers_tree = shipped::layers(opts.layers.as_deref())?;
    let layers_dir = layers_tree.root();
    let layers = overlay::render(&context, &layers_tree)
        .with_context(|| format!("rendering the layers in {}", layers_dir.display()))?;
    let seeds = seed::build(&loaded, &context, store.as_ref())?;
    let _ = writeln!(
        progress,
        "seeds: {} host(s), secrets from {}",
        seeds.len(),
        store
            .as_ref()
            .map_or("nowhere (the site keeps none)".into(), |s| s
                .root()
                .display()
                .to_string())
    );
    for seed in &seeds {
        if let Some(note) = &seed.certificate {
            let _ = writeln!(progress, "seeds: {}: {note}", seed.host);
        }
    }
    let dns = dns_outputs(&loaded, store.as_ref(), progress)?;

    // --- The expensive part: packages, the overlay tree, its tar and zstd copy; skipped when the
    // previous output in --out already holds the overlay this key produced.
    let cache = match opts.cache.as_deref() {
        Some(dir) => Cache::open(dir)?,
        None => Cache::open_default()?,
    };
    let key = OverlayKey::compute(&layers, &lock, opts.source_date_epoch);
    let (overlay_files, reused, overlay_entries) = match warm_overlay(&cache, &key, &opts.out) {
        Some((record, verified)) => {
            let _ = writeln!(
                progress,
                "overlay: {} entries, unchanged (key {}): reusing {}",
                record.entries,
                &key.as_str()[..16],
                opts.out.display()
            );
            let reused = verified
                .into_iter()
                .map(|v| ReusedFile {
                    path: v.name,
                    source: v.path,
                    sha256: v.sha256,
                    size: v.size as usize,
                })
                .collect();
            (Vec::new(), reused, record.entries)
        }
        None => {
            let (files, entries) = cold_overlay(
                &layers,
                &lock,
                &cache,
                layers_dir,
                opts.source_date_epoch,
                progress,
            )?;
            let record = Record {
                files: files
                    .iter()
                    .map(|f| RecordedFile {
                        name: f.path.clone(),
                        sha256: archive::sha256_hex(&f.data),
                        size: f.data.len() as u64,
                    })
                    .collect(),
                entries,
            };
            if let Err(e) = record.store(cache.root(), &key) {
                let _ = writeln!(
                    progress,
                    "warning: cannot record the overlay key in {} ({e}); the next build will not reuse this overlay",
                    cache.root().display()
                );
            }
            (files, Vec::new(), entries)
        }
    };

    let mut files = overlay_files;
    files.extend(seed::output_files(&seeds));
    files.extend(dns);
    let written = output::write_dir_reusing(&opts.out, output::OutputKind::Build, &files, &reused)?;
    let _ = writeln!(
        progress,
        "wrote {} in {:.1}s",
        opts.out.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(BuildReport {
        files: written,
        overlay_entries,
    })
}

/// The DNS records of the site, with DKIM records from the build's secrets store.
fn dns_outputs(
    loaded: &site::LoadedSite,
    store: Option<&secrets::SecretStore>,
    progress: &mut dyn Write,
) -> anyhow::Result<Vec<OutputFile>> {
    let (files, warnings) =
        dns::build_outputs(loaded, store).context("writing the DNS records (dns/)")?;
    for warning in warnings {
        let _ = writeln!(progress, "warning: dns: {warning}");
    }
    Ok(files)
}

/// The record of `key` and the previous output's files it names, when they all still hash
/// to what it says.
fn warm_overlay(
    cache: &Cache,
    key: &OverlayKey,
    previous_out: &Path,
) -> Option<(Record, Vec<Verified>)> {
    let record = Record::load(cache.root(), key)?;
    let verified = record.verify(previous_out)?;
    Some((record, verified))
}

/// The overlay's files made from scratch: packages fetched and read, the tree assembled,
/// archived and compressed (zstd). Returns them with the tree's entry count.
fn cold_overlay(
    layers: &overlay::Rendered,
    lock: &Lock,
    cache: &Cache,
    layers_dir: &Path,
    source_date_epoch: u64,
    progress: &mut dyn Write,
) -> anyhow::Result<(Vec<OutputFile>, usize)> {
    let packages = load_packages(lock, cache, progress)?;
    let tree = layers
        .assemble(&packages)
        .with_context(|| format!("assembling the overlay from {}", layers_dir.display()))?;
    let tar = archive::tar(&tree, source_date_epoch).context("writing overlay.tar")?;
    let tar_zst = archive::zstd(&tar).context("compressing overlay.tar")?;
    let manifest = archive::manifest(&tree);
    let _ = writeln!(
        progress,
        "overlay: {} entries, {} bytes ({} compressed)",
        tree.len(),
        tar.len(),
        tar_zst.len()
    );
    let files = vec![
        OutputFile::public("overlay.tar", tar),
        OutputFile::public("overlay.tar.zst", tar_zst),
        OutputFile::public("MANIFEST", manifest.into_bytes()),
    ];
    Ok((files, tree.len()))
}

/// Fetches (or finds in the cache) every pinned package and reads its payload.
fn load_packages(
    lock: &Lock,
    cache: &Cache,
    progress: &mut dyn Write,
) -> anyhow::Result<Vec<PackagePayload>> {
    let debs = fetch::fetch_all(lock, cache, progress)?;
    debs.iter()
        .map(|deb| {
            let entries = fetch::deb::read_payload(&deb.path)
                .with_context(|| format!("reading {}", deb.path.display()))?;
            Ok(PackagePayload::new(
                &deb.package.name,
                &deb.package.version,
                entries,
            )?)
        })
        .collect()
}
