//! Which Debian mirror to fetch from.
//!
//! The lock file pins *what* (names, versions, digests); *where* is a property of the machine.
//! In order: `$MAILBAKE_DEBIAN_MIRROR`, the lock's optional `archive.mirror`, the Debian
//! archive this host's apt already uses (a `deb` line or `URIs:` field whose path ends in
//! `/debian`), and otherwise [`DEFAULT_MIRROR`], Debian's own redirector: an Ubuntu host has
//! no Debian source at all, and the digests make any mirror as good as any other.
//!
//! A snapshot of the archive (`https://snapshot.debian.org/archive/debian/<YYYYMMDDTHHMMSSZ>`)
//! is a mirror too, frozen at that time: it still serves a version the suite has since
//! dropped. Its signed indexes are past their `Valid-Until`, which apt is told to accept for
//! such a URL only ([`is_snapshot`]).

use std::fmt;
use std::path::PathBuf;

use super::FetchError;

pub const MIRROR_ENV: &str = "MAILBAKE_DEBIAN_MIRROR";

/// The mirror used when neither the environment, the lock nor the host's apt names one.
pub const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";

const SOURCES: &str = "/etc/apt/sources.list";
const SOURCES_DIR: &str = "/etc/apt/sources.list.d";

/// A mirror and where it was chosen from (shown in fetch's progress lines).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    pub url: String,
    pub origin: Origin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Env,
    Lock,
    HostApt,
    Default,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Origin::Env => MIRROR_ENV,
            Origin::Lock => "the lock's archive.mirror",
            Origin::HostApt => "this host's apt sources",
            Origin::Default => {
                "mailbake's default: this host's apt names no Debian mirror; set \
                 MAILBAKE_DEBIAN_MIRROR to use another"
            }
        })
    }
}

/// The mirror for this host: see the module documentation for the order.
pub fn resolve(lock_mirror: Option<&str>) -> Result<Mirror, FetchError> {
    resolve_with(
        lock_mirror,
        std::env::var(MIRROR_ENV).ok(),
        &HostSources::system(),
    )
}

/// Where the host's apt sources are read from: `/etc/apt` on a real host, a test's
/// directory otherwise.
pub struct HostSources {
    pub list: PathBuf,
    pub dir: PathBuf,
}

impl HostSources {
    pub fn system() -> HostSources {
        HostSources {
            list: SOURCES.into(),
            dir: SOURCES_DIR.into(),
        }
    }
}

pub fn resolve_with(
    lock_mirror: Option<&str>,
    env: Option<String>,
    host: &HostSources,
) -> Result<Mirror, FetchError> {
    if let Some(url) = env.filter(|u| !u.trim().is_empty()) {
        return Ok(Mirror {
            url: checked(url.trim(), MIRROR_ENV)?,
            origin: Origin::Env,
        });
    }
    if let Some(url) = lock_mirror {
        return Ok(Mirror {
            url: url.to_string(),
            origin: Origin::Lock,
        });
    }
    Ok(match host_debian_mirror(host) {
        Some(url) => Mirror {
            url,
            origin: Origin::HostApt,
        },
        None => Mirror {
            url: DEFAULT_MIRROR.into(),
            origin: Origin::Default,
        },
    })
}

/// Whether `url` is a snapshot archive: a path segment that is a snapshot timestamp
/// (`20261201T000000Z`) after an `archive/` segment, as snapshot.debian.org and its
/// stand-ins lay it out.
pub fn is_snapshot(url: &str) -> bool {
    let segments: Vec<&str> = url.trim_end_matches('/').split('/').collect();
    segments.windows(3).any(|w| {
        w[0] == "archive"
            && !w[1].is_empty()
            && w[2].len() == 16
            && w[2].as_bytes()[8] == b'T'
            && w[2].ends_with('Z')
            && w[2][..8]
                .bytes()
                .chain(w[2][9..15].bytes())
                .all(|b| b.is_ascii_digit())
    })
}

/// The site's URL rule ([`crate::site::url_problem`]), and no white space: a mirror URL is
/// printed in progress lines and written into apt's sources.
fn checked(url: &str, origin: &str) -> Result<String, FetchError> {
    let problem = if url.contains(char::is_whitespace) {
        Some("holds white space".to_string())
    } else {
        crate::site::url_problem(url, &["http://", "https://"])
    };
    match problem {
        None => Ok(url.trim_end_matches('/').to_string()),
        Some(reason) => Err(FetchError::BadMirror {
            origin: origin.to_string(),
            url: if reason.contains("user information") {
                "(not shown: it holds credentials)".into()
            } else {
                url.to_string()
            },
            reason,
        }),
    }
}

/// The first Debian archive URL in this host's apt sources, if any.
fn host_debian_mirror(host: &HostSources) -> Option<String> {
    let mut files = vec![host.list.clone()];
    if let Ok(entries) = std::fs::read_dir(&host.dir) {
        let mut more: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        more.sort();
        files.extend(more);
    }
    files
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|text| uris(&text))
        .find(|uri| is_debian_archive(uri))
        .map(|uri| uri.trim_end_matches('/').to_string())
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
        for (bad, part) in [
            (
                "https://user:s3cret@mirror.example/debian",
                "user information",
            ),
            ("http://-x/debian", "starting with a letter or digit"),
            ("http://bücher.example/debian", "not ASCII"),
        ] {
            let said = checked(bad, MIRROR_ENV).unwrap_err().to_string();
            assert!(
                said.contains(part) && !said.contains("s3cret"),
                "{bad}: {said}"
            );
        }
        assert_eq!(
            checked("http://x/debian/", MIRROR_ENV).unwrap(),
            "http://x/debian"
        );
    }

    fn host_with(files: &[(&str, &str)]) -> (tempfile::TempDir, HostSources) {
        let dir = tempfile::tempdir().unwrap();
        let host = HostSources {
            list: dir.path().join("sources.list"),
            dir: dir.path().join("sources.list.d"),
        };
        std::fs::create_dir(&host.dir).unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        (dir, host)
    }

    /// Ubuntu 22.04's sources.list and 24.04's deb822 ubuntu.sources name no Debian archive:
    /// the default mirror is used, and says so.
    #[test]
    fn an_ubuntu_host_gets_the_default_mirror() {
        let (_dir, host) = host_with(&[
            (
                "sources.list",
                "deb http://archive.ubuntu.com/ubuntu/ jammy main restricted\n\
                 deb http://security.ubuntu.com/ubuntu jammy-security main\n",
            ),
            (
                "sources.list.d/ubuntu.sources",
                "Types: deb\nURIs: http://archive.ubuntu.com/ubuntu/\nSuites: noble noble-updates\n\
                 Components: main\nSigned-By: /usr/share/keyrings/ubuntu-archive-keyring.gpg\n",
            ),
        ]);
        let mirror = resolve_with(None, None, &host).unwrap();
        assert_eq!(mirror.url, DEFAULT_MIRROR);
        assert_eq!(mirror.origin, Origin::Default);
        assert!(
            mirror.origin.to_string().contains("MAILBAKE_DEBIAN_MIRROR"),
            "{}",
            mirror.origin
        );
        // No apt configuration at all is the same case.
        let (_dir, empty) = host_with(&[]);
        assert_eq!(
            resolve_with(None, None, &empty).unwrap().url,
            DEFAULT_MIRROR
        );
    }

    #[test]
    fn the_hosts_debian_mirror_then_the_lock_then_the_environment_win() {
        let (_dir, host) = host_with(&[(
            "sources.list.d/debian.sources",
            "Types: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm\n",
        )]);
        let m = resolve_with(None, None, &host).unwrap();
        assert_eq!(
            (m.url.as_str(), m.origin),
            ("http://mirror.example/debian", Origin::HostApt)
        );
        let m = resolve_with(Some("http://lock.example/debian"), None, &host).unwrap();
        assert_eq!(m.origin, Origin::Lock);
        let m = resolve_with(
            Some("http://lock.example/debian"),
            Some("https://env.example/debian/ ".into()),
            &host,
        )
        .unwrap();
        assert_eq!(
            (m.url.as_str(), m.origin),
            ("https://env.example/debian", Origin::Env)
        );
    }

    #[test]
    fn snapshot_urls_are_recognised() {
        assert!(is_snapshot(
            "https://snapshot.debian.org/archive/debian/20261201T000000Z/"
        ));
        assert!(is_snapshot(
            "http://127.0.0.1:8080/archive/debian/20261201T093015Z"
        ));
        assert!(!is_snapshot("http://deb.debian.org/debian"));
        assert!(!is_snapshot("http://x/archive/debian/latest"));
        assert!(!is_snapshot("http://x/archive/debian/2026120XT000000Z"));
    }
}
