//! `mailbake fetch`: download and verify the pinned packages.

use std::path::PathBuf;

use anyhow::Context;

use super::{Cache, Sources, fetch_all_from};

/// Download the packages pinned in the lock file into the cache, verify their sha256, and
/// print their cached paths (one per line, in lock order).
#[derive(Debug, clap::Args)]
pub struct FetchArgs {
    /// Lock file listing the pinned packages [default: the packages.lock built into mailbake].
    #[arg(long, value_name = "FILE")]
    pub lock: Option<PathBuf>,

    /// Cache directory [default: $MAILBAKE_CACHE, else $XDG_CACHE_HOME/mailbake, else
    /// $HOME/.cache/mailbake].
    #[arg(long, value_name = "DIR")]
    pub cache: Option<PathBuf>,

    /// Directory of saved .deb files to take packages from before the archive (named
    /// <sha256>.deb, as in a cache's debs/, or as apt names them); each is checked against
    /// the lock's sha256 [default: $MAILBAKE_DEBS]. For a snapshot of the archive, set
    /// MAILBAKE_DEBIAN_MIRROR to its URL.
    #[arg(long, value_name = "DIR")]
    pub debs: Option<PathBuf>,
}

pub fn run(args: &FetchArgs) -> anyhow::Result<()> {
    let lock = crate::shipped::lock(args.lock.as_deref())?;
    let cache = match &args.cache {
        Some(dir) => Cache::open(dir)?,
        None => Cache::open_default()?,
    };
    let sources = match &args.debs {
        Some(dir) => Sources {
            saved_debs: Some((dir.clone(), "--debs".into())),
        },
        None => Sources::from_env(),
    };
    let debs = fetch_all_from(&lock, &cache, &sources, &mut std::io::stderr().lock())?;
    let mut out = String::new();
    for deb in &debs {
        out.push_str(&format!("{}\n", deb.path.display()));
    }
    use std::io::Write;
    std::io::stdout()
        .lock()
        .write_all(out.as_bytes())
        .context("writing the list of cached packages to stdout")?;
    Ok(())
}
