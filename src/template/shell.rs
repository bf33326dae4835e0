//! Values in files a shell reads, such as `acme.conf`, which the image's `acme-renew` (root)
//! sources. A site value that reaches a shell unquoted is code: `$(id)` runs, a backtick
//! runs, `o'brien@example.com` is a syntax error and `?a=1&b=2` starts a background job. So
//! every value such a template writes goes through the `shell` filter, and the site model's
//! own checks are never what keeps a value harmless.

/// Why a value cannot be written for a shell.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShellQuoteError {
    /// A POSIX shell cannot hold a NUL byte in a variable at all, quoted or not.
    #[error("a value for a shell script contains a NUL byte, which no shell variable can hold")]
    Nul,
}

/// `value` as one POSIX shell word that expands to exactly `value`, byte for byte.
///
/// Single quotes make every byte literal (`$`, backticks, `\`, `*`, newlines), except the
/// single quote itself, which cannot occur inside them: each one closes the quotes, adds an
/// escaped quote and reopens them (`'` becomes `'\''`). The empty string becomes `''`.
pub fn shell_quote(value: &str) -> Result<String, ShellQuoteError> {
    if value.contains('\0') {
        return Err(ShellQuoteError::Nul);
    }
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    Ok(out)
}

/// The `shell` template filter: `VAR={{ value | shell }}` ([`shell_quote`]; a NUL is an
/// error, so rendering fails and nothing is written).
pub fn filter(value: &str) -> Result<String, minijinja::Error> {
    shell_quote(value)
        .map_err(|e| minijinja::Error::new(minijinja::ErrorKind::InvalidOperation, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// Assigns `quoted` to a variable in `sh` and prints it back, as a sourced file would.
    fn through_sh(quoted: &str, canary: &std::path::Path) -> Vec<u8> {
        let script = format!("cd \"$1\" || exit 9\nV={quoted}\nprintf '%s' \"$V\"\n");
        let out = Command::new("sh")
            .arg("-c")
            .arg(&script)
            .arg("sh")
            .arg(canary.parent().expect("canary dir"))
            .output()
            .expect("sh runs");
        assert!(
            out.status.success(),
            "sh refused {quoted:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    #[test]
    fn quoted_values_come_back_byte_exact_and_never_run() {
        let dir = tempfile::tempdir().expect("temp dir");
        let canary = dir.path().join("canary");
        // A file a glob would match, to catch a value that expands as a pattern.
        std::fs::write(dir.path().join("a.example.com"), "").expect("glob bait");
        let table = [
            "",
            "plain",
            "o'brien@example.com",
            "''",
            "'\\''",
            "https://a.example/dir?a=1&b=2",
            "$(touch canary)",
            "`touch canary`",
            "${IFS}$HOME$1$@$*$?$$$!",
            "a; touch canary",
            "a && touch canary || touch canary",
            "a | touch canary",
            "\"double\" and 'single'",
            "back\\slash\\",
            "trailing newlines\n\n",
            "line one\nline two\r\n\ttab",
            "*.example.com",
            "*",
            "[a]?",
            "~root",
            "-n",
            "snow \u{2603} and \u{1F600}",
            "$'\\x41'",
        ];
        for value in table {
            let quoted = shell_quote(value).expect("no NUL");
            assert_eq!(
                through_sh(&quoted, &canary),
                value.as_bytes(),
                "{value:?} quoted as {quoted}"
            );
            assert!(!canary.exists(), "{value:?} ran a command");
        }
    }

    #[test]
    fn every_ascii_character_survives_quoting() {
        let dir = tempfile::tempdir().expect("temp dir");
        let canary = dir.path().join("canary");
        let all: String = (1u8..=127).map(char::from).collect();
        let quoted = shell_quote(&all).expect("no NUL");
        assert_eq!(through_sh(&quoted, &canary), all.as_bytes());
    }

    #[test]
    fn nul_is_refused_rather_than_truncated() {
        assert_eq!(shell_quote("a\0b"), Err(ShellQuoteError::Nul));
    }

    #[test]
    fn the_filter_is_registered_and_quotes_what_it_is_given() {
        let env = crate::template::environment();
        let out = env
            .render_str(
                "X={{ v | shell }} Y={{ l | join(' ') | shell }}",
                minijinja::context! { v => "it's", l => ["*.a", "b"] },
            )
            .expect("renders");
        assert_eq!(out, "X='it'\\''s' Y='*.a b'");
        let err = env
            .render_str("X={{ v | shell }}", minijinja::context! { v => "a\0b" })
            .expect_err("a NUL is refused");
        assert!(err.to_string().contains("NUL"), "{err}");
    }
}
