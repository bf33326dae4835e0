//! Words for the remote shell. `ssh HOST COMMAND` hands COMMAND to the login shell of the
//! remote account as one string, so every word mailbake sends (the script, the host's name,
//! the timeout) is quoted here, by this one function, and nowhere else.

/// A word the remote shell cannot carry: a NUL byte ends a C string, so it would be cut.
#[derive(Debug, thiserror::Error)]
#[error("cannot send {what} to the remote shell: it contains a NUL byte")]
pub struct Unquotable {
    pub what: String,
}

/// `word` as exactly one word for a POSIX shell (sh, dash, bash): inside single quotes
/// nothing is special, and a single quote itself is written `'\''` (close, escaped quote,
/// reopen). Always quoted, even when it would not need it, so no word is ever read as
/// an option, a glob, a variable or a command.
pub fn quote(word: &str) -> Result<String, Unquotable> {
    if word.contains('\0') {
        return Err(Unquotable {
            what: format!("{:?}", word.chars().take(40).collect::<String>()),
        });
    }
    Ok(format!("'{}'", word.replace('\'', r"'\''")))
}

/// The command line running `words` (program first), every word quoted.
pub fn command_line(words: &[&str]) -> Result<String, Unquotable> {
    words
        .iter()
        .map(|w| quote(w))
        .collect::<Result<Vec<_>, _>>()
        .map(|q| q.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    const HOSTILE: [&str; 14] = [
        "plain",
        "",
        "two words",
        "it's",
        "'",
        "''\\'",
        "$(touch pwned-by-substitution)",
        "`id`",
        "$HOME ${PATH}",
        "a\nb\n",
        "*",
        "-n",
        "\\\"back\\slash\"",
        "ünïcödé; touch pwned-by-separator #",
    ];

    /// The real shells the remote side may run (dash as sh, bash as the operator's login
    /// shell) read every quoted word back as exactly the original. They run in an empty
    /// directory of their own, where a word that escaped its quotes would leave a file.
    #[test]
    fn real_shells_read_each_word_back_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let line =
            command_line(&["printf", "%s\\0"]).unwrap() + " " + &command_line(&HOSTILE).unwrap();
        for shell in ["sh", "bash"] {
            let out = Command::new(shell)
                .arg("-c")
                .arg(&line)
                .current_dir(dir.path())
                .output()
                .unwrap_or_else(|e| panic!("{shell}: {e}"));
            assert!(out.status.success(), "{shell}: {out:?}");
            let words: Vec<&[u8]> = out.stdout.split(|b| *b == 0).collect();
            // printf's format ends every word with NUL: one empty piece after the last.
            assert_eq!(words.len(), HOSTILE.len() + 1, "{shell}: {out:?}");
            for (got, want) in words.iter().zip(HOSTILE) {
                assert_eq!(*got, want.as_bytes(), "{shell} changed {want:?}");
            }
        }
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(
            left.is_empty(),
            "a quoted word was run as a command: {left:?}"
        );
    }

    #[test]
    fn a_nul_byte_is_refused() {
        assert!(quote("a\0b").is_err());
        assert_eq!(quote("it's").unwrap(), r"'it'\''s'");
    }
}
