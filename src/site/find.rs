//! Picking one host of a site by the name a command line gives (`--host`).

use std::path::PathBuf;

use super::{Host, HostName, LoadedSite};

/// `--host` names no host of the site.
#[derive(Debug, thiserror::Error)]
#[error("{} has no host `{host}`; its hosts: {known}\n  fix: pass one of them to --host", site.display())]
pub struct UnknownHost {
    pub site: PathBuf,
    pub host: String,
    /// The site's host names, comma-separated.
    pub known: String,
}

/// The host called `name` in `loaded`.
pub fn find_host<'a>(
    loaded: &'a LoadedSite,
    name: &str,
) -> Result<(&'a HostName, &'a Host), UnknownHost> {
    let hosts = &loaded.site.hosts;
    hosts
        .iter()
        .find(|(h, _)| h.as_str() == name)
        .ok_or_else(|| UnknownHost {
            site: loaded.path.clone(),
            host: name.to_string(),
            known: hosts
                .keys()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        })
}
