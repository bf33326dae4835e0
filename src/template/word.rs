//! Fields of whitespace-separated lines, such as the seed manifest that apply-seed reads with
//! the shell's `read`. Such a format has no quoting, so the only safe escaping is refusal: a
//! value must be one non-empty run of printable, non-space characters.

/// The `word` template filter: `value` unchanged when it is one field, else an error naming
/// it (rendering fails, nothing is written).
pub fn filter(value: &str) -> Result<String, minijinja::Error> {
    if !value.is_empty() && value.chars().all(|c| !c.is_whitespace() && !c.is_control()) {
        return Ok(value.to_string());
    }
    Err(minijinja::Error::new(
        minijinja::ErrorKind::InvalidOperation,
        format!(
            "{value:?} cannot be a field of a whitespace-separated line (it is empty or holds white space or control characters)"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_field_passes_anything_else_is_refused() {
        assert_eq!(
            filter("/etc/chasquid/domains/example.com/dkim:s1.pem").unwrap(),
            "/etc/chasquid/domains/example.com/dkim:s1.pem"
        );
        for bad in [
            "",
            "a b",
            "a\nb",
            "a\tb",
            "a\u{85}b",
            "a\u{2028}b",
            "a\u{0}b",
        ] {
            assert!(filter(bad).is_err(), "{bad:?}");
        }
    }
}
