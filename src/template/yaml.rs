//! YAML double-quoted scalars: the one way a value enters a YAML document mailbake writes
//! (the cloud-init seed: user-data, network-config, meta-data).
//!
//! A double-quoted scalar can hold any string once `"` and `\` are escaped and every
//! character YAML would not keep as it is is written as an escape: C0 and C1 control
//! characters (newline and tab included, and DEL), and the characters YAML 1.1 parsers such
//! as cloud-init's PyYAML treat as line breaks (NEL U+0085, LINE SEPARATOR U+2028, PARAGRAPH
//! SEPARATOR U+2029) or refuse as unprintable (U+FEFF, U+FFFE, U+FFFF). Every other
//! character, `#`, `: `, a leading `-`, `*` or `&`, `{{` and any printable Unicode included,
//! is plain text inside the quotes. All of these escapes are BMP `\uXXXX`, which YAML 1.1 and
//! 1.2 both read.

use std::fmt::Write as _;

/// `value` as a YAML double-quoted scalar that parses back to exactly `value`.
pub fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if c.is_control()
                || matches!(
                    c,
                    '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}'
                ) =>
            {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The `yaml` template filter: [`quote`]. Only strings are accepted, so a template cannot
/// quietly turn a number or a list into a string; structure is the template's to write.
pub fn filter(value: &str) -> String {
    quote(value)
}

/// `data` as text when a YAML literal block (`|`, clip chomping) gives back exactly these
/// bytes: printable UTF-8 ending in exactly one newline, no carriage returns or other YAML
/// line breaks, a first line that fixes the indentation (not empty, no leading blank), no
/// line of blanks only. PEM keys and chasquid's users database always qualify, and stay
/// readable in the document; anything else has to be written another way (base64).
pub fn literal_block_text(data: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(data).ok()?;
    let body = text.strip_suffix('\n')?;
    let first = body.lines().next()?;
    let ok = !body.ends_with('\n')
        && !first.is_empty()
        && !first.starts_with([' ', '\t'])
        && body
            .lines()
            .all(|l| !l.chars().all(|c| c == ' ' || c == '\t') || l.is_empty())
        && body.chars().all(|c| {
            c == '\n'
                || c == '\t'
                || !(c.is_control() || matches!(c, '\u{feff}' | '\u{2028}' | '\u{2029}'))
        });
    ok.then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_blocks_only_when_they_round_trip() {
        assert!(
            literal_block_text(b"-----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----\n")
                .is_some()
        );
        assert!(literal_block_text(b"users: {\n  key: \"i\"\n}\n").is_some());
        for bad in [
            &b""[..],
            b"no newline",
            b"two\n\n",
            b" leading\n",
            b"cr\r\n",
            b"a\n   \nb\n",
            b"\xff\n",
            b"\n\nlate start\n",
        ] {
            assert!(literal_block_text(bad).is_none(), "{bad:?}");
        }
    }

    /// Values that break YAML, or change meaning, when written without quoting.
    const HOSTILE: &[&str] = &[
        "",
        "plain",
        "\"quoted\" and 'single'",
        "back\\slash \\n not a newline",
        "line\nbreak\r\nand\rcarriage",
        "tab\there",
        "# not a comment",
        "key: value",
        "- not a list",
        "* not an alias",
        "&anchor",
        "!tag",
        "{{ not a template }}",
        "[flow, seq]",
        "{flow: map}",
        "| literal",
        "> folded",
        "%directive",
        "@reserved `backtick`",
        "yes",
        "null",
        "0x1F",
        "  leading and trailing spaces  ",
        "nel\u{85}ls\u{2028}ps\u{2029}",
        "bom\u{feff} nonchars\u{fffe}\u{ffff}",
        "nul\u{0}bell\u{7}esc\u{1b}del\u{7f}c1\u{9b}",
        "ünïcödé ✉ 𝄞 emoji 📬",
        "---\n...\n",
    ];

    #[test]
    fn every_hostile_value_parses_back_to_itself() {
        for value in HOSTILE {
            let doc = format!("key: {}\nlist:\n  - {}\n", quote(value), quote(value));
            let parsed: serde_json::Value = match serde_norway::from_str(&doc) {
                Ok(v) => v,
                Err(e) => panic!("{value:?} as {doc:?}: {e}"),
            };
            assert_eq!(parsed["key"], *value, "{doc}");
            assert_eq!(parsed["list"][0], *value, "{doc}");
        }
    }

    #[test]
    fn the_quoted_form_is_one_line_of_printable_text() {
        for value in HOSTILE {
            let q = quote(value);
            assert!(
                !q.chars()
                    .any(|c| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}')),
                "{q:?}"
            );
        }
    }
}
