//! Where things are in the site file.
//!
//! serde reports *syntax and type* errors with a position, but checks that span several values
//! (an alias pointing at a missing user, a loop, two hosts with one name) run after parsing, on
//! the typed model, where positions are gone. This index maps each value's path in the
//! document (`domains / example.com / aliases / *`) back to the line and column where it was
//! written, so those errors can point at the source too.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, Parser};
use yaml_rust2::scanner::Marker;

/// A position in the file: 1-based line and column, and the byte offset for snippets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub column: usize,
    pub offset: usize,
}

/// Path of a value in the document: mapping keys and sequence indices as strings.
pub type YamlPath = Vec<String>;

#[derive(Debug, Default)]
pub struct Locations {
    /// Position of each value (its first character).
    values: HashMap<YamlPath, Position>,
    /// Position of each mapping key, for errors about the entry as a whole.
    keys: HashMap<YamlPath, Position>,
    /// Every scalar (keys and values) in document order, with its text.
    scalars: Vec<(String, Position)>,
}

impl Locations {
    /// Indexes `text`. A document the YAML parser rejects gives an empty index: serde reports
    /// that error itself, with its own position.
    pub fn index(text: &str) -> Locations {
        let mut walker = Walker {
            parser: Parser::new_from_str(text),
            text,
            found: Locations::default(),
            cursor: (0, 0),
        };
        let _ = walker.document();
        walker.found
    }

    /// The position of the value at `path`, or of the nearest ancestor that was found.
    pub fn value(&self, path: &[&str]) -> Option<Position> {
        self.nearest(path, &self.values)
    }

    /// The position of the key that introduces `path`, or of the nearest ancestor's key.
    pub fn key(&self, path: &[&str]) -> Option<Position> {
        self.nearest(path, &self.keys).or_else(|| self.value(path))
    }

    /// The first scalar written as `text` at or after byte `offset`.
    ///
    /// serde reports a bad value at the start of the mapping that holds it; the value itself is
    /// the first scalar with that text from there on.
    pub fn scalar_after(&self, offset: usize, text: &str) -> Option<Position> {
        self.scalars
            .iter()
            .find(|(t, at)| at.offset >= offset && t == text)
            .map(|(_, at)| *at)
    }

    fn nearest(&self, path: &[&str], map: &HashMap<YamlPath, Position>) -> Option<Position> {
        (0..=path.len()).rev().find_map(|len| {
            let probe: YamlPath = path[..len].iter().map(|s| normalize_key(s)).collect();
            map.get(&probe).copied()
        })
    }
}

/// Keys are compared the way the model normalizes names: lowercase, no trailing dot.
fn normalize_key(key: &str) -> String {
    key.strip_suffix('.').unwrap_or(key).to_lowercase()
}

struct Walker<'a> {
    parser: Parser<std::str::Chars<'a>>,
    text: &'a str,
    found: Locations,
    /// The last marker converted: (character index, byte offset).
    cursor: (usize, usize),
}

/// Stops the walk: the YAML did not parse or ended early.
struct Stop;

impl Walker<'_> {
    fn next(&mut self) -> Result<(Event, Marker), Stop> {
        self.parser.next_token().map_err(|_| Stop)
    }

    fn position(&mut self, marker: Marker) -> Position {
        // The marker counts characters; snippets need bytes. Markers come in document order,
        // so the conversion resumes from the previous one: linear in the file, not quadratic.
        let (mut chars, mut bytes) = self.cursor;
        if marker.index() < chars {
            (chars, bytes) = (0, 0);
        }
        let skip = marker.index() - chars;
        let offset = match self.text[bytes..].char_indices().nth(skip) {
            Some((byte, _)) => bytes + byte,
            None => self.text.len(),
        };
        self.cursor = (marker.index(), offset);
        Position {
            line: marker.line(),
            column: marker.col() + 1,
            offset,
        }
    }

    fn document(&mut self) -> Result<(), Stop> {
        loop {
            let (event, marker) = self.next()?;
            match event {
                Event::StreamEnd => return Ok(()),
                Event::StreamStart | Event::DocumentStart | Event::DocumentEnd => {}
                other => {
                    // Only the first document matters: the site file has one.
                    self.node(other, marker, &mut Vec::new())?;
                    return Ok(());
                }
            }
        }
    }

    fn node(&mut self, event: Event, marker: Marker, path: &mut YamlPath) -> Result<(), Stop> {
        let at = self.position(marker);
        self.found.values.insert(path.clone(), at);
        match event {
            Event::MappingStart(..) => loop {
                let (key_event, key_marker) = self.next()?;
                let key = match key_event {
                    Event::MappingEnd => return Ok(()),
                    Event::Scalar(text, ..) => {
                        let at = self.position(key_marker);
                        self.found.scalars.push((text.clone(), at));
                        text
                    }
                    // Complex keys do not occur in a valid site file; skip their contents.
                    other => {
                        self.skip(other)?;
                        String::from("?")
                    }
                };
                path.push(normalize_key(&key));
                let key_at = self.position(key_marker);
                self.found.keys.entry(path.clone()).or_insert(key_at);
                let (value_event, value_marker) = self.next()?;
                self.node(value_event, value_marker, path)?;
                path.pop();
            },
            Event::SequenceStart(..) => {
                let mut index = 0usize;
                loop {
                    let (item, item_marker) = self.next()?;
                    if matches!(item, Event::SequenceEnd) {
                        return Ok(());
                    }
                    path.push(index.to_string());
                    self.node(item, item_marker, path)?;
                    path.pop();
                    index += 1;
                }
            }
            Event::Scalar(text, ..) => {
                self.found.scalars.push((text, at));
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn skip(&mut self, event: Event) -> Result<(), Stop> {
        let mut depth = match event {
            Event::MappingStart(..) | Event::SequenceStart(..) => 1,
            _ => return Ok(()),
        };
        while depth > 0 {
            match self.next()?.0 {
                Event::MappingStart(..) | Event::SequenceStart(..) => depth += 1,
                Event::MappingEnd | Event::SequenceEnd => depth -= 1,
                Event::StreamEnd => return Err(Stop),
                _ => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str =
        "site: s\ndomains:\n  Example.com:\n    users: [i, j]\n    aliases:\n      \"*\": i\n";

    #[test]
    fn values_and_keys_are_found_by_path() {
        let loc = Locations::index(DOC);
        let star = loc
            .value(&["domains", "example.com", "aliases", "*"])
            .unwrap();
        assert_eq!((star.line, star.column), (6, 12));
        assert_eq!(&DOC[star.offset..star.offset + 1], "i");
        let key = loc
            .key(&["domains", "example.com", "aliases", "*"])
            .unwrap();
        assert_eq!((key.line, key.column), (6, 7));
        let j = loc
            .value(&["domains", "example.com", "users", "1"])
            .unwrap();
        assert_eq!((j.line, j.column), (4, 16));
    }

    #[test]
    fn scalars_are_found_after_an_offset() {
        let loc = Locations::index(DOC);
        let users = loc.value(&["domains", "example.com"]).unwrap();
        let j = loc.scalar_after(users.offset, "j").unwrap();
        assert_eq!((j.line, j.column), (4, 16));
        assert!(loc.scalar_after(j.offset + 1, "j").is_none());
    }

    #[test]
    fn missing_paths_fall_back_to_the_nearest_ancestor() {
        let loc = Locations::index(DOC);
        let near = loc.key(&["domains", "example.com", "dkim"]).unwrap();
        assert_eq!(near.line, 3);
    }
}
