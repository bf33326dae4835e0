//! Text from outside (SMTP replies, DNS TXT records, an MTA-STS policy, queue items, file
//! names, lego's output and with it the CA's and the DNS provider's words) made safe to show.
//!
//! Such text reaches the operator's terminal, and a terminal obeys control sequences: one
//! reply could retitle it, clear it and print "ALL CHECKS PASSED". Every report escapes these
//! values with the functions here, so what is shown is what was received, and nothing in it
//! acts on the terminal. The escapes are Rust's `\u{..}` form, readable and unambiguous.

/// `text` as one line: every control character (C0 with newline, CR and tab, DEL, C1) and
/// every invisible direction or formatting control (which can reorder what is shown) becomes
/// `\u{..}`.
pub fn line(text: &str) -> String {
    escape(text, false)
}

/// `text` keeping its line breaks and tabs, everything else as [`line`] escapes it (a CR is
/// escaped too: it would move the cursor back over the line).
pub fn lines(text: &str) -> String {
    escape(text, true)
}

fn escape(text: &str, keep_breaks: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if keep_breaks && matches!(c, '\n' | '\t') {
            out.push(c);
        } else if acts_on_the_terminal(c) {
            out.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

/// Control characters, and the format characters that change how text around them is laid
/// out (bidirectional overrides and isolates, marks, zero-width joiners, byte order mark).
fn acts_on_the_terminal(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_that_acts_on_a_terminal_is_left() {
        let hostile =
            "250 ok\x1b]0;owned\x07\x1b[2J\r\nALL CHECKS PASSED\u{9b}31m\u{202e}gnp.exe\x7f";
        let one = line(hostile);
        assert_eq!(
            one,
            "250 ok\\u{1b}]0;owned\\u{7}\\u{1b}[2J\\u{d}\\u{a}ALL CHECKS PASSED\\u{9b}31m\\u{202e}gnp.exe\\u{7f}"
        );
        assert!(!one.chars().any(acts_on_the_terminal));
        let kept = lines("a\tb\r\nc\x1b");
        assert_eq!(kept, "a\tb\\u{d}\nc\\u{1b}");
        assert_eq!(line("plain – ü ✓"), "plain – ü ✓");
    }
}
