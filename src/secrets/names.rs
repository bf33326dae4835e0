//! Validation of the names that become path components in the store and keys in chasquid's
//! files. A strict ASCII subset keeps paths safe (no `/`, no `..`) and matches what chasquid
//! looks up after its own normalisation.

use super::error::SecretsError;

fn invalid(what: &'static str, value: &str, reason: impl Into<String>) -> SecretsError {
    SecretsError::InvalidName {
        what,
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// Lowercases and checks a user's local part (the key of chasquid's users database).
///
/// chasquid maps user names through PRECIS UsernameCaseMapped before lookup; lowercase ASCII
/// `[a-z0-9._-]` is a subset that survives that mapping unchanged, so what we store is exactly
/// what chasquid will look for. `+` is excluded because it is chasquid's suffix separator.
pub fn normalize_local_part(local: &str) -> Result<String, SecretsError> {
    const WHAT: &str = "local part";
    let lower = local.to_ascii_lowercase();
    if lower.is_empty() {
        return Err(invalid(WHAT, local, "it is empty"));
    }
    if lower.len() > 64 {
        return Err(invalid(WHAT, local, "longer than 64 characters (RFC 5321)"));
    }
    if let Some(c) = lower
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')))
    {
        return Err(invalid(
            WHAT,
            local,
            format!("character {c:?} not allowed; use a-z, 0-9, '.', '_' or '-'"),
        ));
    }
    if lower.starts_with('.') || lower.ends_with('.') || lower.contains("..") {
        return Err(invalid(
            WHAT,
            local,
            "dots may not lead, trail or repeat (RFC 5321)",
        ));
    }
    Ok(lower)
}

/// Lowercases and checks a domain name (ASCII; internationalised names in their `xn--` form).
pub fn normalize_domain(domain: &str) -> Result<String, SecretsError> {
    const WHAT: &str = "domain";
    let lower = domain.trim_end_matches('.').to_ascii_lowercase();
    if lower.is_empty() {
        return Err(invalid(WHAT, domain, "it is empty"));
    }
    if lower.len() > 253 {
        return Err(invalid(WHAT, domain, "longer than 253 characters"));
    }
    check_labels(
        WHAT,
        domain,
        &lower,
        "use letters, digits and '-' (internationalised names in their xn-- form)",
    )?;
    Ok(lower)
}

/// Checks the dot-separated DNS labels of `name` (already lowercased where that applies):
/// 1 to 63 characters of lowercase letters, digits and '-', no '-' at either end. `shown` is
/// what the user wrote, for the message; `charset_hint` says which characters are allowed.
fn check_labels(
    what: &'static str,
    shown: &str,
    name: &str,
    charset_hint: &'static str,
) -> Result<(), SecretsError> {
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(invalid(
                what,
                shown,
                "each dot-separated label must have 1 to 63 characters",
            ));
        }
        if !label
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(invalid(what, shown, charset_hint));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(invalid(
                what,
                shown,
                "a label may not start or end with '-'",
            ));
        }
    }
    Ok(())
}

/// Checks a DKIM selector: one or more DNS labels of lowercase letters, digits and '-'.
/// Lowercase only, so that `A` and `a` cannot become two files for one DNS name.
pub fn validate_selector(selector: &str) -> Result<(), SecretsError> {
    const WHAT: &str = "DKIM selector";
    if selector.is_empty() {
        return Err(invalid(WHAT, selector, "it is empty"));
    }
    check_labels(
        WHAT,
        selector,
        selector,
        "use lowercase letters, digits and '-' (e.g. 2026a-rsa)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_parts() {
        assert_eq!(
            normalize_local_part("I.Me-x_1").ok().as_deref(),
            Some("i.me-x_1")
        );
        for bad in ["", "a+b", "a/b", "..", ".a", "a.", "a..b", "ü", "a b", "*"] {
            assert!(normalize_local_part(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn domains() {
        assert_eq!(
            normalize_domain("Example.COM.").ok().as_deref(),
            Some("example.com")
        );
        for bad in ["", "a..b", "../x", "a/b", "-a.com", "a_b.com", "ü.com"] {
            assert!(normalize_domain(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn selectors() {
        assert!(validate_selector("2026a-rsa").is_ok());
        for bad in ["", "A", "a/b", "..", "a_b", "-a"] {
            assert!(validate_selector(bad).is_err(), "{bad:?} accepted");
        }
    }
}
