//! Plain words for the YAML mistakes whose parser messages mislead: a tab used for
//! indentation ("found character that cannot start any token") and a `[` or `{` left open,
//! which makes the parser read the following lines as list items and fail far below.

use super::diagnostic::Problem;
use super::locate::Position;

/// Problems explaining a syntax error reported at `error_line`, looking at the lines up to
/// it; empty when neither mistake is there.
pub fn syntax(text: &str, error_line: usize) -> Vec<Problem> {
    let mut offset = 0;
    let lines: Vec<(usize, &str)> = text
        .split_inclusive('\n')
        .map(|line| {
            let start = offset;
            offset += line.len();
            (start, line.trim_end_matches(['\n', '\r']))
        })
        .collect();
    for (index, (start, line)) in lines.iter().enumerate().take(error_line) {
        let number = index + 1;
        let indent = line.len() - line.trim_start_matches([' ', '\t']).len();
        let content = &line[indent..];
        if let Some(tab) = line[..indent].find('\t')
            && !content.is_empty()
            && !content.starts_with('#')
        {
            return vec![
                Problem::new(
                    format!("line {number} is indented with a tab; YAML indents with spaces only"),
                    Some(Position {
                        line: number,
                        column: tab + 1,
                        offset: start + tab,
                    }),
                )
                .help("replace the tab with spaces (this file uses two per level)"),
            ];
        }
        if let Some((column, bracket)) = unclosed_flow(line) {
            let close = if bracket == '[' { ']' } else { '}' };
            return vec![
                Problem::new(
                    format!(
                        "`{bracket}` on line {number} is never closed, so the lines after it are read as part of it"
                    ),
                    Some(Position {
                        line: number,
                        column: column + 1,
                        offset: start + column,
                    }),
                )
                .help(format!("close it with `{close}` on the same line")),
            ];
        }
    }
    Vec::new()
}

/// The byte column and kind of the first `[` or `{` on `line` that the line does not close
/// (outside quotes, before a comment).
fn unclosed_flow(line: &str) -> Option<(usize, char)> {
    let mut open: Vec<(usize, char)> = Vec::new();
    let mut quote: Option<char> = None;
    let mut previous = ' ';
    for (i, c) in line.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None => match c {
                '"' | '\'' => quote = Some(c),
                '#' if previous == ' ' => break,
                '[' | '{' => open.push((i, c)),
                ']' | '}' => {
                    open.pop();
                }
                _ => {}
            },
        }
        previous = c;
    }
    open.first().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tab_in_the_indentation_is_named() {
        let text = "site: s\ndomains:\n\texample.com: {}\n";
        let found = syntax(text, 3);
        assert_eq!(found.len(), 1);
        assert!(found[0].message.contains("line 3 is indented with a tab"));
        assert_eq!(found[0].at.map(|a| (a.line, a.column)), Some((3, 1)));
        assert!(syntax("a: 1\n\t# a comment\nb: \"x\ty\"\n", 3).is_empty());
    }

    #[test]
    fn an_unclosed_bracket_is_named_where_it_opens() {
        let text = "users: [i\naliases:\n  a: b\n";
        let found = syntax(text, 3);
        assert_eq!(found[0].at.map(|a| (a.line, a.column)), Some((1, 8)));
        assert!(found[0].message.contains("`[` on line 1 is never closed"));
        assert!(syntax("users: [i, \"[\"] # [\nx: {a: 1}\n", 2).is_empty());
    }
}
