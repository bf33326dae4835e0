//! From YAML text to the typed [`Site`], collecting a problem per independent part.
//!
//! serde stops at the first bad value, so a file with two broken hosts would be fixed one
//! error at a time. The document is first read as a plain YAML value; then every entry of
//! `domains` and `hosts` is deserialized on its own (its key and its body), and the rest of
//! the site with the broken entries left out. Each failure carries the path of the value that
//! failed (serde_path_to_error), which the locator turns into a line and column, so an error
//! deep inside a mapping points at the bad key and not at the mapping's first line.

use serde::Deserialize;
use serde_norway::Value;

use super::diagnostic::Problem;
use super::locate::Locations;
use super::model::{Domain, Host, Site};
use super::names::{DomainName, HostName};

/// The sections whose entries are independent of each other.
const ENTRY_SECTIONS: [&str; 2] = ["domains", "hosts"];

/// Deserializes `value` (the whole document) into a [`Site`], or every problem found.
pub fn site(mut value: Value, locations: &Locations) -> Result<Site, Vec<Problem>> {
    let mut problems = Vec::new();
    if let Some(top) = value.as_mapping_mut() {
        for section in ENTRY_SECTIONS {
            let Some(Value::Mapping(entries)) = top.get_mut(section) else {
                continue;
            };
            let mut broken = Vec::new();
            for (key, body) in entries.iter() {
                let name = key_text(key);
                let found = check_entry(section, &name, key, body, locations);
                if !found.is_empty() {
                    broken.push(key.clone());
                    problems.extend(found);
                }
            }
            for key in broken {
                entries.remove(&key);
            }
        }
    }
    match serde_path_to_error::deserialize::<_, Site>(value) {
        Ok(site) if problems.is_empty() => Ok(site),
        Ok(_) => Err(problems),
        Err(err) => {
            problems.push(problem_at(&[], &err, locations));
            Err(problems)
        }
    }
}

/// The problems of one entry of `section`: its key, then its body.
fn check_entry(
    section: &str,
    name: &str,
    key: &Value,
    body: &Value,
    locations: &Locations,
) -> Vec<Problem> {
    let mut found = Vec::new();
    let key_check = match section {
        "domains" => DomainName::deserialize(key.clone()).map(|_| ()),
        _ => HostName::deserialize(key.clone()).map(|_| ()),
    };
    if let Err(err) = key_check {
        let at = locations.key(&[section, name]);
        found.push(Problem::new(format!("{section}: {err}"), at));
    }
    let base = [section, name];
    let body_check = match section {
        "domains" => serde_path_to_error::deserialize::<_, Domain>(body.clone()).map(|_| ()),
        _ => serde_path_to_error::deserialize::<_, Host>(body.clone()).map(|_| ()),
    };
    if let Err(err) = body_check {
        found.push(problem_at(&base, &err, locations));
    }
    found
}

/// A YAML key as the locator indexes it.
fn key_text(key: &Value) -> String {
    match key {
        Value::String(s) => s.clone(),
        other => serde_norway::to_string(other)
            .map(|s| s.trim_end().to_string())
            .unwrap_or_default(),
    }
}

/// A problem for `err`, located at the value its path names below `base`.
fn problem_at(
    base: &[&str],
    err: &serde_path_to_error::Error<serde_norway::Error>,
    locations: &Locations,
) -> Problem {
    use serde_path_to_error::Segment;
    let mut path: Vec<String> = base.iter().map(|s| s.to_string()).collect();
    for segment in err.path().iter() {
        match segment {
            Segment::Map { key } => path.push(key.clone()),
            Segment::Seq { index } => path.push(index.to_string()),
            Segment::Enum { .. } | Segment::Unknown => {}
        }
    }
    let refs: Vec<&str> = path.iter().map(String::as_str).collect();
    let message = err.inner().to_string();
    let mut at = locations.value(&refs);
    // An unknown key or a duplicate is reported at its mapping; the key itself is the first
    // scalar with the quoted text from there on.
    if let (Some(start), Some(quoted)) = (at, first_quoted(&message))
        && let Some(exact) = locations.scalar_after(start.offset, quoted)
    {
        at = Some(exact);
    }
    let shown = dotted(&path);
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
    let message = if shown.is_empty() {
        message
    } else {
        format!("{shown}: {message}")
    };
    Problem { message, help, at }
}

/// `domains.example.com.users[0]`, the way serde_norway names a place.
fn dotted(path: &[String]) -> String {
    let mut out = String::new();
    for part in path {
        if part.bytes().all(|b| b.is_ascii_digit()) && !out.is_empty() {
            out.push_str(&format!("[{part}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(part);
        }
    }
    out
}

/// The first text between backticks in `message`.
pub fn first_quoted(message: &str) -> Option<&str> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(&message[start..start + len])
}
