//! Strings in the protobuf text format, the format of chasquid.conf. chasquid refuses a file
//! it cannot parse, so a site value must reach it as one well-formed string literal whatever
//! it holds.

use crate::secrets::textproto::quote_text;

/// The `textproto` template filter: `value` as a double-quoted text-format string literal,
/// with quotes, backslashes and every non-printable or non-ASCII byte escaped as `\xNN`.
pub fn filter(value: &str) -> String {
    quote_text(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_become_one_string_literal() {
        assert_eq!(filter("20h"), "\"20h\"");
        assert_eq!(filter("[::1]:1099"), "\"[::1]:1099\"");
        assert_eq!(filter("a\"b\\c\nd"), "\"a\\x22b\\x5cc\\x0ad\"");
        assert_eq!(filter("ñ"), "\"\\xc3\\xb1\"");
    }
}
