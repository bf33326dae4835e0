//! The site file: parsing, validation and the model every stage reads.
//!
//! Loading is strict: unknown keys, malformed names and addresses, dangling alias targets and
//! loops are all errors, reported with file, line and column, because a mail server that
//! starts with a half-understood configuration fails later and more quietly.

mod chasquid;
mod diagnostic;
mod locate;
mod model;
mod names;
mod net;
mod policy;
mod sending;
mod validate;

use std::path::{Path, PathBuf};

pub use chasquid::*;
pub use diagnostic::{Problem, SiteErrors};
pub use locate::Position;
pub use model::*;
pub use names::*;
pub use net::*;
pub use policy::*;
pub use sending::*;

use locate::Locations;

/// Why a site could not be loaded.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum LoadError {
    #[error("cannot read site file {}: {source}", path.display())]
    #[diagnostic(help("check the path; `mailbake init DOMAIN` writes a new site file"))]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
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
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    })?;
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

/// Parses and validates site text; `path` is only used in messages.
pub fn parse(path: &Path, text: &str) -> Result<Site, Box<SiteErrors>> {
    let fail = |problems| {
        Box::new(SiteErrors::new(
            path.to_path_buf(),
            text.to_string(),
            problems,
        ))
    };
    let site: Site = match serde_norway::from_str(text) {
        Ok(site) => site,
        Err(err) => return Err(fail(vec![problem_from_serde(text, &err)])),
    };
    let findings = validate::check(&site);
    if findings.is_empty() {
        return Ok(site);
    }
    let locations = Locations::index(text);
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

fn problem_from_serde(text: &str, err: &serde_norway::Error) -> Problem {
    let mut at = err.location().map(|loc| Position {
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
    // serde_norway locates errors raised inside a mapping at the mapping's start. Our messages
    // quote the offending value in backticks; point at that value itself when it can be found.
    if let (Some(start), Some(quoted)) = (at, first_quoted(&message))
        && let Some(exact) = Locations::index(text).scalar_after(start.offset, quoted)
    {
        at = Some(exact);
    }
    let help = if message.contains("unknown field") {
        Some(
            "remove or rename the key; the accepted keys are listed above and in docs/site.md"
                .to_string(),
        )
    } else if message.contains("missing field") {
        Some("add the key; docs/site.md describes it".to_string())
    } else {
        None
    };
    Problem { message, help, at }
}

/// The first text between backticks in `message`.
fn first_quoted(message: &str) -> Option<&str> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(&message[start..start + len])
}
