//! A small reader for the protobuf text format, enough for chasquid's users database.
//!
//! It turns text into a tree of named fields without knowing any schema; `userdb` then checks
//! the tree against the users schema. It accepts what chasquid-util itself writes (strings with
//! raw UTF-8 bytes and C-style escapes), not only what mailbake writes, so a database made with
//! `chasquid-util user-add` can be adopted. Lists (`[a, b]`), `Any` expansions and extensions are
//! not part of that schema and are reported as errors.

/// A parsed field: `name: value` or `name { ... }`.
#[derive(Debug)]
pub struct Field {
    pub name: String,
    pub line: usize,
    pub value: Value,
}

#[derive(Debug)]
pub enum Value {
    /// A quoted string (adjacent strings concatenated), as bytes after unescaping.
    Bytes(Vec<u8>),
    /// A bare token: a number, an enum name, `true`/`false`.
    Bare(String),
    Message(Vec<Field>),
}

/// Syntax error with the 1-based line where it was found.
#[derive(Debug)]
pub struct SyntaxError {
    pub line: usize,
    pub message: String,
}

struct Parser<'a> {
    src: &'a [u8],
    pos: usize,
    line: usize,
}

pub fn parse(src: &[u8]) -> Result<Vec<Field>, SyntaxError> {
    let mut p = Parser {
        src,
        pos: 0,
        line: 1,
    };
    let fields = p.message_body(None)?;
    Ok(fields)
}

impl Parser<'_> {
    fn err<T>(&self, message: impl Into<String>) -> Result<T, SyntaxError> {
        Err(SyntaxError {
            line: self.line,
            message: message.into(),
        })
    }

    /// Skips whitespace and `#` comments, counting lines.
    fn skip_space(&mut self) {
        while let Some(&c) = self.src.get(self.pos) {
            match c {
                b'\n' => {
                    self.line += 1;
                    self.pos += 1;
                }
                b' ' | b'\t' | b'\r' | 0x0b | 0x0c => self.pos += 1,
                b'#' => {
                    while let Some(&c) = self.src.get(self.pos) {
                        if c == b'\n' {
                            break;
                        }
                        self.pos += 1;
                    }
                }
                _ => break,
            }
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_space();
        self.src.get(self.pos).copied()
    }

    fn bare_token(&mut self) -> String {
        let start = self.pos;
        while let Some(&c) = self.src.get(self.pos) {
            if c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'+' | b'.') {
                self.pos += 1;
            } else {
                break;
            }
        }
        // Only ASCII bytes were consumed, so this is valid UTF-8.
        String::from_utf8_lossy(&self.src[start..self.pos]).into_owned()
    }

    /// Fields until `close` (or end of input at top level).
    fn message_body(&mut self, close: Option<u8>) -> Result<Vec<Field>, SyntaxError> {
        let mut fields = Vec::new();
        loop {
            match (self.peek(), close) {
                (None, None) => return Ok(fields),
                (None, Some(c)) => return self.err(format!("missing '{}'", c as char)),
                (Some(c), Some(want)) if c == want => {
                    self.pos += 1;
                    return Ok(fields);
                }
                _ => {}
            }
            fields.push(self.field()?);
            // Fields may be separated by ',' or ';'.
            if matches!(self.peek(), Some(b',' | b';')) {
                self.pos += 1;
            }
        }
    }

    fn field(&mut self) -> Result<Field, SyntaxError> {
        let line = self.line;
        let first = self.src.get(self.pos).copied();
        if !first.is_some_and(|c| c.is_ascii_alphabetic() || c == b'_') {
            return self.err(format!(
                "expected a field name, found {}",
                self.describe_here()
            ));
        }
        let name = self.bare_token();
        let mut colon = false;
        if self.peek() == Some(b':') {
            self.pos += 1;
            colon = true;
        }
        let value = match self.peek() {
            Some(b'{') => {
                self.pos += 1;
                Value::Message(self.message_body(Some(b'}'))?)
            }
            Some(b'<') => {
                self.pos += 1;
                Value::Message(self.message_body(Some(b'>'))?)
            }
            Some(b'"' | b'\'') if colon => {
                let mut bytes = Vec::new();
                while let Some(q @ (b'"' | b'\'')) = self.peek() {
                    self.pos += 1;
                    self.string(q, &mut bytes)?;
                }
                Value::Bytes(bytes)
            }
            Some(c) if colon && (c.is_ascii_alphanumeric() || matches!(c, b'-' | b'+' | b'.')) => {
                Value::Bare(self.bare_token())
            }
            _ => {
                return self.err(format!(
                    "expected a value for field {name:?}, found {}",
                    self.describe_here()
                ));
            }
        };
        Ok(Field { name, line, value })
    }

    fn describe_here(&self) -> String {
        match self.src.get(self.pos) {
            None => "end of file".to_string(),
            Some(c) if c.is_ascii_graphic() => format!("'{}'", *c as char),
            Some(c) => format!("byte 0x{c:02x}"),
        }
    }

    /// Reads a quoted string body after the opening quote, unescaping into `out`.
    fn string(&mut self, quote: u8, out: &mut Vec<u8>) -> Result<(), SyntaxError> {
        loop {
            let Some(&c) = self.src.get(self.pos) else {
                return self.err("unterminated string");
            };
            self.pos += 1;
            match c {
                b'\n' => return self.err("line break inside a string"),
                b'\\' => self.escape(out)?,
                c if c == quote => return Ok(()),
                c => out.push(c),
            }
        }
    }

    fn escape(&mut self, out: &mut Vec<u8>) -> Result<(), SyntaxError> {
        let Some(&c) = self.src.get(self.pos) else {
            return self.err("unterminated escape");
        };
        self.pos += 1;
        let simple = match c {
            b'a' => Some(0x07),
            b'b' => Some(0x08),
            b'f' => Some(0x0c),
            b'n' => Some(b'\n'),
            b'r' => Some(b'\r'),
            b't' => Some(b'\t'),
            b'v' => Some(0x0b),
            b'\\' | b'\'' | b'"' | b'?' => Some(c),
            _ => None,
        };
        if let Some(b) = simple {
            out.push(b);
            return Ok(());
        }
        match c {
            b'0'..=b'7' => self.octal_escape(c, out),
            b'x' | b'X' => self.hex_escape(out),
            b'u' | b'U' => self.unicode_escape(c, out),
            other => self.err(format!("unknown escape \\{}", other as char)),
        }
    }

    /// `\NNN`: up to three octal digits, the first (`first`) already consumed.
    fn octal_escape(&mut self, first: u8, out: &mut Vec<u8>) -> Result<(), SyntaxError> {
        let mut v = u32::from(first - b'0');
        for _ in 0..2 {
            match self.src.get(self.pos) {
                Some(&d @ b'0'..=b'7') => {
                    v = v * 8 + u32::from(d - b'0');
                    self.pos += 1;
                }
                _ => break,
            }
        }
        match u8::try_from(v) {
            Ok(b) => {
                out.push(b);
                Ok(())
            }
            Err(_) => self.err("octal escape above \\377"),
        }
    }

    /// `\xN` or `\xNN`: one or two hex digits.
    fn hex_escape(&mut self, out: &mut Vec<u8>) -> Result<(), SyntaxError> {
        let mut v: u8 = 0;
        let mut n = 0;
        while n < 2 {
            match self
                .src
                .get(self.pos)
                .and_then(|d| (*d as char).to_digit(16))
            {
                Some(d) => {
                    // d < 16 and at most two digits, so this fits in a u8.
                    v = v * 16 + d as u8;
                    self.pos += 1;
                    n += 1;
                }
                None => break,
            }
        }
        if n == 0 {
            return self.err("\\x escape without hex digits");
        }
        out.push(v);
        Ok(())
    }

    /// `\uNNNN` or `\UNNNNNNNN` (`kind` is `u` or `U`): a Unicode scalar value, as UTF-8.
    fn unicode_escape(&mut self, kind: u8, out: &mut Vec<u8>) -> Result<(), SyntaxError> {
        let digits = if kind == b'u' { 4 } else { 8 };
        let hex = self
            .src
            .get(self.pos..self.pos + digits)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .and_then(char::from_u32);
        let Some(ch) = hex else {
            return self.err(format!("invalid \\{} escape", kind as char));
        };
        self.pos += digits;
        let mut buf = [0u8; 4];
        out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
        Ok(())
    }
}

/// Quotes `bytes` as a text-format string, escaping every byte as `\xNN` (the form both
/// chasquid 1.11 and 1.15 parse, and which keeps the file plain ASCII).
pub fn quote_all_hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(2 + bytes.len() * 4);
    s.push('"');
    for b in bytes {
        s.push_str(&format!("\\x{b:02x}"));
    }
    s.push('"');
    s
}

/// Quotes a string whose printable ASCII characters can stay as they are (map keys, which
/// are validated local parts); anything else is hex-escaped.
pub fn quote_text(text: &str) -> String {
    let mut s = String::with_capacity(text.len() + 2);
    s.push('"');
    for b in text.bytes() {
        if (b.is_ascii_graphic() && !matches!(b, b'"' | b'\\' | b'\'')) || b == b' ' {
            s.push(b as char);
        } else {
            s.push_str(&format!("\\x{b:02x}"));
        }
    }
    s.push('"');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_of(fields: &[Field], name: &str) -> Option<Vec<u8>> {
        fields
            .iter()
            .find_map(|f| match (&f.value, f.name == name) {
                (Value::Bytes(b), true) => Some(b.clone()),
                _ => None,
            })
    }

    #[test]
    fn escapes_and_concatenation() {
        let src = br#"a: "\x41\102\n\"'\u00e9" 'x' b: 7 # comment
        c <d: "" >"#;
        let fields = match parse(src) {
            Ok(f) => f,
            Err(e) => panic!("line {}: {}", e.line, e.message),
        };
        assert_eq!(bytes_of(&fields, "a"), Some(b"AB\n\"'\xc3\xa9x".to_vec()));
        assert!(matches!(&fields[1].value, Value::Bare(v) if v == "7"));
        assert_eq!(fields[2].line, 2);
        assert!(matches!(&fields[2].value, Value::Message(m) if m.len() == 1));
    }

    #[test]
    fn raw_bytes_as_chasquid_util_writes_them() {
        let src = b"salt: \"\xf0\xa7\xb1\x97x\xdd\xbf\"";
        let fields = parse(src).map_err(|e| e.message);
        assert_eq!(
            fields.ok().and_then(|f| bytes_of(&f, "salt")),
            Some(b"\xf0\xa7\xb1\x97x\xdd\xbf".to_vec())
        );
    }

    #[test]
    fn errors_name_the_line() {
        for (src, line) in [
            (&b"a: {\n b: 1\n"[..], 3),
            (&b"a: 1\nb: \"x"[..], 2),
            (&b"a: \"\\q\""[..], 1),
            (&b"a 1"[..], 1),
            (&b"}"[..], 1),
        ] {
            match parse(src) {
                Ok(_) => panic!("{:?} accepted", String::from_utf8_lossy(src)),
                Err(e) => assert_eq!(e.line, line, "{}", e.message),
            }
        }
    }

    #[test]
    fn quoting_round_trips() {
        let all: Vec<u8> = (0..=255).collect();
        let text = format!("v: {}", quote_all_hex(&all));
        assert_eq!(
            parse(text.as_bytes()).ok().and_then(|f| bytes_of(&f, "v")),
            Some(all)
        );
        let text = format!("v: {}", quote_text("a'b\"c\\d e"));
        assert_eq!(
            parse(text.as_bytes()).ok().and_then(|f| bytes_of(&f, "v")),
            Some(b"a'b\"c\\d e".to_vec())
        );
    }
}
