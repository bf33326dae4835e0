//! Reading and checking a new user's password. The plaintext lives only in a [`Password`],
//! which is wiped from memory on drop and never printed.

use std::fmt;
use std::io::Read;

use zeroize::Zeroizing;

use super::error::SecretsError;

/// Shortest password accepted. SMTP AUTH is exposed to the whole internet and scrypt only
/// slows guessing down; length is what makes guessing hopeless.
pub const MIN_PASSWORD_CHARS: usize = 12;

/// chasquid reads an SMTP command line of at most 1000 octets (RFC 5321 4.5.3.1.6, without
/// the CRLF) and refuses a longer one as "line too long" (`internal/smtpsrv/conn.go`,
/// `readLine`). AUTH PLAIN carries the credentials on one such line.
pub const SMTP_LINE_LIMIT: usize = 1000;

/// The longest password (in UTF-8 bytes) `address` can log in with: clients send
/// `AUTH PLAIN <base64 of "\0address\0password">` on one line (the initial response of RFC
/// 4954, what most clients do), so the base64 of the whole must fit in the line after
/// `AUTH PLAIN `.
pub fn max_password_bytes(address: &str) -> usize {
    let base64_room = SMTP_LINE_LIMIT - "AUTH PLAIN ".len();
    let decoded_room = base64_room / 4 * 3;
    decoded_room.saturating_sub(address.len() + 2)
}

/// A plaintext password that passed the policy checks. Zeroed on drop; `Debug` is redacted.
pub struct Password(Zeroizing<String>);

impl Password {
    /// Checks the policy: at least [`MIN_PASSWORD_CHARS`] characters, no NUL (the SASL PLAIN
    /// separator) and no line break (AUTH LOGIN is line-based).
    pub fn new(plain: String) -> Result<Self, SecretsError> {
        let plain = Zeroizing::new(plain);
        if plain.contains('\0') {
            return Err(SecretsError::PasswordInvalidChar {
                what: "NUL character",
            });
        }
        if plain.contains(['\n', '\r']) {
            return Err(SecretsError::PasswordInvalidChar { what: "line break" });
        }
        let got = plain.chars().count();
        if got < MIN_PASSWORD_CHARS {
            return Err(SecretsError::PasswordTooShort {
                got,
                min: MIN_PASSWORD_CHARS,
            });
        }
        Ok(Password(plain))
    }

    /// Refuses a password too long for `address` to log in with over SMTP
    /// ([`max_password_bytes`]).
    pub fn check_fits_auth(&self, address: &str) -> Result<(), SecretsError> {
        let max = max_password_bytes(address);
        if self.0.len() > max {
            return Err(SecretsError::PasswordTooLong {
                got: self.0.len(),
                max,
                address: address.to_string(),
            });
        }
        Ok(())
    }

    /// The plaintext, for hashing.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// Reads a password from `reader` (for `--password-stdin`): everything up to EOF, minus one
/// trailing newline (`\n` or `\r\n`), which `echo` and editors add but nobody means.
pub fn read_password_from(mut reader: impl Read) -> Result<Password, SecretsError> {
    let mut raw = Zeroizing::new(Vec::new());
    reader
        .read_to_end(&mut raw)
        .map_err(|source| SecretsError::PasswordInput {
            source_name: "standard input",
            source,
        })?;
    let keep = if raw.ends_with(b"\r\n") {
        raw.len() - 2
    } else if raw.ends_with(b"\n") {
        raw.len() - 1
    } else {
        raw.len()
    };
    raw.truncate(keep);
    let text = String::from_utf8(std::mem::take(&mut *raw)).map_err(|e| {
        // Wipe the bytes that failed to decode too.
        let _ = Zeroizing::new(e.into_bytes());
        SecretsError::PasswordInput {
            source_name: "standard input",
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, "not valid UTF-8"),
        }
    })?;
    Password::new(text)
}

/// Prompts for a password twice on the terminal (without echo) and checks both match, so a
/// typo cannot lock the user out.
pub fn read_password_twice_from_tty(prompt_for: &str) -> Result<Password, SecretsError> {
    let tty_err = |source| SecretsError::PasswordInput {
        source_name: "the terminal (use --password-stdin when not interactive)",
        source,
    };
    let first = Zeroizing::new(
        rpassword::prompt_password(format!("Password for {prompt_for}: ")).map_err(tty_err)?,
    );
    // Check the policy before asking again: no point retyping a password that will be refused.
    let password = Password::new(first.to_string())?;
    let second = Zeroizing::new(rpassword::prompt_password("Repeat password: ").map_err(tty_err)?);
    if *first != *second {
        return Err(SecretsError::PasswordMismatch);
    }
    Ok(password)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_exactly_one_newline() {
        let p = read_password_from(&b"correct horse battery\n"[..]).map(|p| p.expose().to_string());
        assert_eq!(p.ok().as_deref(), Some("correct horse battery"));
        let p =
            read_password_from(&b"correct horse battery\r\n"[..]).map(|p| p.expose().to_string());
        assert_eq!(p.ok().as_deref(), Some("correct horse battery"));
        // A second newline is part of the input, and line breaks are refused.
        assert!(matches!(
            read_password_from(&b"correct horse battery\n\n"[..]),
            Err(SecretsError::PasswordInvalidChar { .. })
        ));
    }

    #[test]
    fn the_longest_password_fills_one_auth_plain_line() {
        use base64::Engine as _;
        let address = "i@example.com";
        let max = max_password_bytes(address);
        let line = |pw: &str| {
            let response = format!("\0{address}\0{pw}");
            format!(
                "AUTH PLAIN {}",
                base64::engine::general_purpose::STANDARD.encode(response)
            )
        };
        assert!(line(&"x".repeat(max)).len() <= SMTP_LINE_LIMIT);
        assert!(line(&"x".repeat(max + 1)).len() > SMTP_LINE_LIMIT);
        let long = Password::new("x".repeat(max + 1)).unwrap();
        assert!(matches!(
            long.check_fits_auth(address),
            Err(SecretsError::PasswordTooLong { got, max: m, .. }) if got == max + 1 && m == max
        ));
    }

    #[test]
    fn policy() {
        assert!(matches!(
            Password::new("short".into()),
            Err(SecretsError::PasswordTooShort { got: 5, min: 12 })
        ));
        // Characters, not bytes: 11 two-byte characters are still too short.
        assert!(Password::new("é".repeat(11)).is_err());
        assert!(Password::new("é".repeat(12)).is_ok());
        assert!(Password::new("abcdefghijkl\0".into()).is_err());
        assert_eq!(
            format!("{:?}", Password::new("abcdefghijklm".into()).ok()),
            "Some(Password(<redacted>))"
        );
    }
}
