//! Which Debian mirror to fetch from.
//!
//! The lock file pins *what* (names, versions, digests); *where* is a property of the machine.
//! In order: `$MAILBAKE_DEBIAN_MIRROR`, the lock's optional `archive.mirror`, and otherwise
//! the Debian archive this host's apt already uses (a `deb` line or `URIs:` field whose path
//! ends in `/debian`). The digests make any mirror as good as any other.

use std::path::Path;

use super::FetchError;

pub const MIRROR_ENV: &str = "MAILBAKE_DEBIAN_MIRROR";

const SOURCES: &str = "/etc/apt/sources.list";
const SOURCES_DIR: &str = "/etc/apt/sources.list.d";

pub fn resolve(lock_mirror: Option<&str>) -> Result<String, FetchError> {
    if let Some(url) = std::env::var(MIRROR_ENV)
        .ok()
        .filter(|u| !u.trim().is_empty())
    {
        return checked(url.trim(), MIRROR_ENV);
    }
    if let Some(url) = lock_mirror {
        return Ok(url.to_string());
    }
    host_debian_mirror().ok_or(FetchError::NoMirror)
}

fn checked(url: &str, origin: &str) -> Result<String, FetchError> {
    if (url.starts_with("http://") || url.starts_with("https://"))
        && !url.contains(char::is_whitespace)
    {
        Ok(url.trim_end_matches('/').to_string())
    } else {
        Err(FetchError::BadMirror {
            origin: origin.to_string(),
            url: url.to_string(),
        })
    }
}

/// The first Debian archive URL in this host's apt sources, if any.
fn host_debian_mirror() -> Option<String> {
    let mut files = vec![Path::new(SOURCES).to_path_buf()];
    if let Ok(entries) = std::fs::read_dir(SOURCES_DIR) {
        let mut more: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        more.sort();
        files.extend(more);
    }
    files
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|text| uris(&text))
        .find(|uri| is_debian_archive(uri))
}

/// URIs named by one-line (`deb [opts] URI suite …`) and deb822 (`URIs: …`) sources.
fn uris(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix("URIs:") {
            out.extend(rest.split_whitespace().map(str::to_string));
        } else if let Some(rest) = line.strip_prefix("deb ") {
            let rest = rest.trim_start();
            let rest = match rest.strip_prefix('[') {
                Some(opts) => opts.split_once(']').map_or("", |(_, r)| r),
                None => rest,
            };
            if let Some(uri) = rest.split_whitespace().next() {
                out.push(uri.to_string());
            }
        }
    }
    out
}

fn is_debian_archive(uri: &str) -> bool {
    (uri.starts_with("http://") || uri.starts_with("https://"))
        && uri.trim_end_matches('/').ends_with("/debian")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_archives_are_found_in_both_source_formats() {
        let one_line = "# comment\ndeb [signed-by=/k.gpg] http://mirror.example/debian bookworm main\ndeb http://other.example/ubuntu jammy main\n";
        let found: Vec<String> = uris(one_line)
            .into_iter()
            .filter(|u| is_debian_archive(u))
            .collect();
        assert_eq!(found, ["http://mirror.example/debian"]);
        let deb822 = "Types: deb\nURIs: https://mirror.example/debian/\nSuites: bookworm\n\nTypes: deb\nURIs: http://mirror.example/debian-security\n";
        let found: Vec<String> = uris(deb822)
            .into_iter()
            .filter(|u| is_debian_archive(u))
            .collect();
        assert_eq!(found, ["https://mirror.example/debian/"]);
    }

    #[test]
    fn a_mirror_must_be_an_http_url() {
        assert!(checked("ftp://x/debian", MIRROR_ENV).is_err());
        assert_eq!(
            checked("http://x/debian/", MIRROR_ENV).unwrap(),
            "http://x/debian"
        );
    }
}
