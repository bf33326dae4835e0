//! The site file: parsing, validation and the model every stage reads.
//!
//! Loading is strict: unknown keys, malformed names and addresses, dangling alias targets and
//! loops are all errors, reported with file, line and column, because a mail server that
//! starts with a half-understood configuration fails later and more quietly.

mod alias_graph;
mod auth_guard;
mod certificate_names;
mod chasquid;
mod deserialize;
mod diagnostic;
mod find;
mod hints;
mod local_key;
mod locate;
mod model;
mod names;
mod net;
mod policy;
mod sending;
mod system_names;
mod url;
mod validate;

use std::path::{Path, PathBuf};

pub use auth_guard::AuthGuard;
pub use chasquid::*;
pub use diagnostic::{Problem, SiteErrors};
pub use find::{UnknownHost, find_host};

/// Bounds and escapes an error message for the terminal (see [`SiteErrors`]).
pub fn bound_message(text: &str) -> String {
    diagnostic::bound_echo(text)
}
pub use certificate_names::{
    host_names as certificate_host_names, site_names as certificate_site_names,
};
pub use local_key::{DROP_CHARACTERS, SUFFIX_SEPARATORS, chasquid_local_key};
pub use locate::Position;
pub use model::*;
pub use names::*;
pub use net::*;
pub use policy::*;
pub use sending::*;
pub use url::url_problem;

use locate::Locations;

/// Largest site file read: a real one is a few kilobytes. The cap keeps `/dev/zero`, a
/// runaway generator or a wrong path from being read until memory runs out.
pub const MAX_SITE_BYTES: u64 = 1 << 20;

/// Why a site could not be loaded.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum LoadError {
    #[error("cannot read site file {}: {source}", path.display())]
    #[diagnostic(help("check the path; `mailbake init DOMAIN` writes a new site file"))]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("site file {} is not a regular file ({what})\n  fix: give the path of the YAML file itself", path.display())]
    NotAFile { path: PathBuf, what: &'static str },
    #[error("site file {} is larger than {} bytes; a site file is a few kilobytes\n  fix: check the path", path.display(), MAX_SITE_BYTES)]
    TooLarge { path: PathBuf },
    #[error("site file {} is not UTF-8 text (first bad byte at offset {offset})\n  fix: save it as UTF-8", path.display())]
    NotText { path: PathBuf, offset: usize },
    #[error(transparent)]
    #[diagnostic(transparent)]
    Invalid(#[from] Box<SiteErrors>),
}

/// A loaded, validated site and where it came from.
#[derive(Clone, Debug)]
pub struct LoadedSite {
    pub site: Site,
    /// The site file.
    pub path: PathBuf,
    /// The directory relative paths in the site are resolved against.
    pub dir: PathBuf,
}

/// Reads and validates a site file.
pub fn load(path: &Path) -> Result<LoadedSite, LoadError> {
    let text = read_capped(path)?;
    let site = parse(path, &text)?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    Ok(LoadedSite {
        site,
        path: path.to_path_buf(),
        dir,
    })
}

/// Reads at most [`MAX_SITE_BYTES`] of a regular file. Opened non-blocking, so a FIFO with
/// no writer is reported instead of waited on; the type is checked on the open handle.
fn read_capped(path: &Path) -> Result<String, LoadError> {
    use std::io::Read;
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let read_err = |source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(read_err)?;
    let kind = file.metadata().map_err(read_err)?.file_type();
    let what = if kind.is_dir() {
        Some("a directory")
    } else if kind.is_fifo() {
        Some("a named pipe")
    } else if kind.is_char_device() || kind.is_block_device() {
        Some("a device")
    } else if kind.is_socket() {
        Some("a socket")
    } else {
        None
    };
    if let Some(what) = what {
        return Err(LoadError::NotAFile {
            path: path.to_path_buf(),
            what,
        });
    }
    let mut bytes = Vec::new();
    file.take(MAX_SITE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_SITE_BYTES {
        return Err(LoadError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    String::from_utf8(bytes).map_err(|e| LoadError::NotText {
        path: path.to_path_buf(),
        offset: e.utf8_error().valid_up_to(),
    })
}

/// Parses and validates site text; `path` is only used in messages. A UTF-8 byte order mark
/// (which some editors write) is ignored.
pub fn parse(path: &Path, text: &str) -> Result<Site, Box<SiteErrors>> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let fail = |problems| {
        Box::new(SiteErrors::new(
            path.to_path_buf(),
            text.to_string(),
            problems,
        ))
    };
    let value: serde_norway::Value = match serde_norway::from_str(text) {
        Ok(value) => value,
        Err(err) => return Err(fail(syntax_problems(text, &err))),
    };
    let locations = Locations::index(text);
    let site = deserialize::site(value, &locations).map_err(fail)?;
    let findings = validate::check(&site);
    if findings.is_empty() {
        return Ok(site);
    }
    let problems = findings
        .into_iter()
        .map(|f| {
            let path: Vec<&str> = f.path.iter().map(String::as_str).collect();
            let at = if f.at_key {
                locations.key(&path)
            } else {
                locations.value(&path)
            };
            Problem {
                message: f.message,
                help: f.help,
                at,
            }
        })
        .collect();
    Err(fail(problems))
}

/// The YAML parser's error, and what most likely caused it when the parser's own words
/// mislead (a tab used for indentation, a `[` or `{` never closed).
fn syntax_problems(text: &str, err: &serde_norway::Error) -> Vec<Problem> {
    let at = err.location().map(|loc| Position {
        line: loc.line(),
        column: loc.column(),
        offset: loc.index().min(text.len()),
    });
    // serde_norway appends " at line L column C"; the position is shown separately.
    let message = err.to_string();
    let message = match message.rfind(" at line ") {
        Some(cut) => message[..cut].to_string(),
        None => message,
    };
    // A key written twice: say it the way the typed maps do for keys equal once normalized.
    let message = match message.split_once("duplicate entry with key \"") {
        Some((_, rest)) => format!(
            "`{}` is listed twice (names are compared lowercase, without a trailing dot); merge the two entries",
            rest.trim_end_matches('"')
        ),
        None => message,
    };
    let mut problems = hints::syntax(text, at.map_or(usize::MAX, |a| a.line));
    if problems.is_empty() {
        problems.push(Problem::new(message, at));
    }
    problems
}
