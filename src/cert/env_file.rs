//! The store's `acme.env` as lego's environment on the operator's machine.
//!
//! On the host, systemd reads the file (`EnvironmentFile=`), with its own quoting and escaping
//! rules. `mailbake cert` must hand lego the very same values, so it reads only the part of
//! that syntax on which there is no doubt: `NAME=value` lines, `#`/`;` comments, blank lines,
//! and a value either bare or wrapped whole in one kind of quotes, with no backslash and no
//! quote inside. Anything else is refused with the line and the fix, rather than guessed.

use std::path::{Path, PathBuf};

/// A line of `acme.env` that `mailbake cert` does not pass on.
#[derive(Debug, thiserror::Error)]
#[error("{}:{line}: {reason}\n  fix: {fix}", path.display())]
pub struct EnvFileError {
    pub path: PathBuf,
    pub line: usize,
    pub reason: &'static str,
    pub fix: &'static str,
}

/// The variables of `text`, in file order (a later assignment of a name wins, as in systemd).
pub fn parse(text: &[u8], path: &Path) -> Result<Vec<(String, String)>, EnvFileError> {
    let err = |line: usize, reason: &'static str, fix: &'static str| EnvFileError {
        path: path.to_path_buf(),
        line,
        reason,
        fix,
    };
    let text = std::str::from_utf8(text).map_err(|_| {
        err(
            0,
            "not UTF-8 text",
            "write the credentials as plain NAME=value lines",
        )
    })?;
    let mut vars: Vec<(String, String)> = Vec::new();
    // Split on `\n` alone, so a CR is seen wherever it is (`lines()` would drop one before
    // each `\n` and keep the others inside values).
    for (n, raw) in text.split_terminator('\n').enumerate() {
        let line = n + 1;
        // systemd ends a line at CR as at LF (so `A=x\rB=y` is two variables there and one
        // value here) and a C string at NUL: refuse both rather than read the file otherwise.
        if raw.contains(['\r', '\0']) {
            return Err(err(
                line,
                "the line holds a carriage return (CR) or a NUL byte, which systemd reads as the end of the line or the value",
                "save the file with plain LF line ends and no control characters (e.g. `sed -i 's/\\r$//' acme.env`)",
            ));
        }
        let trimmed = raw.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        let Some((name, value)) = trimmed.split_once('=') else {
            return Err(err(
                line,
                "not a NAME=value line",
                "write one NAME=value per line (`#` starts a comment)",
            ));
        };
        let name = name.trim_end();
        let name_ok = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !name_ok {
            return Err(err(
                line,
                "the name is not an environment variable name",
                "use letters, digits and `_`, starting with a letter (e.g. RFC2136_TSIG_KEY)",
            ));
        }
        let value = unquote(value.trim()).ok_or_else(|| {
            err(
                line,
                "the value has a backslash or a quote inside, which systemd and mailbake could read differently",
                "write the value bare, or wrapped whole in \"...\" or '...' with no quote or backslash inside",
            )
        })?;
        vars.retain(|(n, _)| n != name);
        vars.push((name.to_string(), value.to_string()));
    }
    Ok(vars)
}

/// The value systemd reads from `value` (already trimmed), when there is no doubt about it.
fn unquote(value: &str) -> Option<&str> {
    for quote in ['"', '\''] {
        if let Some(inner) = value
            .strip_prefix(quote)
            .and_then(|v| v.strip_suffix(quote))
        {
            return (!inner.contains(['"', '\'', '\\'])).then_some(inner);
        }
    }
    (!value.contains(['"', '\'', '\\'])).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(text: &str) -> Vec<(String, String)> {
        parse(text.as_bytes(), Path::new("acme.env")).unwrap_or_else(|e| panic!("{e}"))
    }

    fn refused(text: &str) -> String {
        parse(text.as_bytes(), Path::new("acme.env"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn names_values_comments_and_whole_quotes() {
        assert_eq!(
            vars(
                "# Cloudflare\n\nCF_DNS_API_TOKEN=abc/def+==\n ; old\nA = spaced value \nB=\"quoted value\"\nC='single'\nD=\nB=later\n"
            ),
            [
                ("CF_DNS_API_TOKEN".into(), "abc/def+==".into()),
                ("A".into(), "spaced value".into()),
                ("C".into(), "single".into()),
                ("D".into(), String::new()),
                ("B".into(), "later".into()),
            ]
        );
    }

    #[test]
    fn doubtful_lines_are_refused_with_their_line() {
        for (text, line, part) in [
            ("A=1\nnot a line\n", 2, "NAME=value"),
            ("export A=1\n", 1, "variable name"),
            ("1A=x\n", 1, "variable name"),
            ("A=a\\b\n", 1, "backslash"),
            ("A=\"a\"b\"\n", 1, "quote"),
            ("A=it's\n", 1, "quote"),
            ("A=\"unterminated\n", 1, "quote"),
            ("A=x\rB=y\n", 1, "carriage return"),
            ("A=1\r\n", 1, "carriage return"),
            ("A=1\nB=x\0y\n", 2, "NUL"),
            ("A=1\n\r\n", 2, "carriage return"),
        ] {
            let msg = refused(text);
            assert!(
                msg.starts_with(&format!("acme.env:{line}:")),
                "{text:?}: {msg}"
            );
            assert!(msg.contains(part), "{text:?}: {msg}");
            assert!(msg.contains("fix:"), "{msg}");
        }
    }
}
