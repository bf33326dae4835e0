//! Validated names: every string the site file gives a meaning to is parsed into one of these
//! types during deserialization, so a bad value is reported by the YAML parser itself, at the
//! line and column where it was written.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Defines a string newtype whose only constructor is a validating `TryFrom<String>`.
macro_rules! validated_string {
    ($(#[$doc:meta])* $name:ident, $check:path) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(value: String) -> Result<Self, String> {
                $check(&value).map($name)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = String;
            fn try_from(value: &str) -> Result<Self, String> {
                $check(value).map($name)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

validated_string!(
    /// A fully qualified domain name in its ASCII (IDNA/punycode) form, lowercase, without the
    /// trailing dot. Unicode names are accepted and converted, because that is what DNS and
    /// chasquid's `domains/` directory need.
    DomainName,
    check_domain
);

validated_string!(
    /// A DNS name that is not necessarily a host name, such as an SPF include
    /// (`_spf.google.com`): like [`DomainName`] but labels may also contain `_`.
    DnsName,
    check_dns_name
);

validated_string!(
    /// The local part of a mailbox address (`i` in `i@example.com`), restricted to the ASCII
    /// subset chasquid's PRECIS normalization leaves unchanged: lowercase `[a-z0-9._-]`.
    LocalPart,
    check_local_part
);

validated_string!(
    /// The left-hand side of an alias: a local part or `*`, the catch-all (chasquid >= 1.10).
    AliasName,
    check_alias_name
);

validated_string!(
    /// A DKIM selector: one or more DNS labels (`2026a-rsa`), used in
    /// `<selector>._domainkey.<domain>` and in chasquid's `dkim:<selector>.pem` file name.
    Selector,
    check_selector
);

validated_string!(
    /// The short name of a host in the site (`mx1`): used for output directories and the
    /// `--host` option, so it is a single lowercase DNS label.
    HostName,
    check_host_name
);

validated_string!(
    /// A site name: a single lowercase DNS label, used to name artifacts.
    SiteName,
    check_host_name
);

validated_string!(
    /// A complete mailbox address `local@domain`, with the domain in ASCII form.
    MailAddress,
    check_mail_address
);

impl AliasName {
    pub fn is_catch_all(&self) -> bool {
        self.0 == "*"
    }
}

impl MailAddress {
    pub fn local_part(&self) -> &str {
        self.0.rsplit_once('@').map_or("", |(local, _)| local)
    }

    pub fn domain(&self) -> &str {
        self.0.rsplit_once('@').map_or("", |(_, domain)| domain)
    }
}

fn check_domain(value: &str) -> Result<String, String> {
    let trimmed = value.strip_suffix('.').unwrap_or(value);
    if trimmed.is_empty() {
        return Err("a domain name cannot be empty".into());
    }
    // ASCII names get the precise label checks below; only Unicode names need IDNA.
    let ascii = if trimmed.is_ascii() {
        trimmed.to_ascii_lowercase()
    } else {
        idna::domain_to_ascii_strict(trimmed).map_err(|_| {
            format!("`{value}` is not a valid internationalized domain name (IDNA); use letters, digits and hyphens in dot-separated labels, e.g. `example.com`")
        })?
    };
    if ascii.len() > 253 {
        return Err(format!(
            "`{value}` is {} characters long; a domain name has at most 253",
            ascii.len()
        ));
    }
    let labels: Vec<&str> = ascii.split('.').collect();
    if labels.len() < 2 {
        return Err(format!(
            "`{value}` has a single label; mail domains and host names must be fully qualified, e.g. `example.com` or `smtp.example.com`"
        ));
    }
    for label in &labels {
        check_label(label).map_err(|why| format!("`{value}`: {why}"))?;
        check_idna_label(label).map_err(|why| format!("`{value}`: {why}"))?;
    }
    if labels
        .last()
        .is_some_and(|tld| tld.chars().all(|c| c.is_ascii_digit()))
    {
        return Err(format!(
            "`{value}` looks like an IP address; a domain name is expected here"
        ));
    }
    Ok(ascii)
}

/// An `xn--` label must be the punycode of a valid IDNA2008 label: it decodes, encodes back
/// to itself, and its characters are letters, digits, combining marks or hyphens (RFC 5892's
/// rule; `☃` or emoji are symbols, which registries refuse and mail software mangles).
fn check_idna_label(label: &str) -> Result<(), String> {
    use icu_properties::{CodePointMapData, props::GeneralCategory as Gc};
    if !label.starts_with("xn--") {
        return Ok(());
    }
    let (unicode, decoded) = idna::domain_to_unicode(label);
    if decoded.is_err() || idna::domain_to_ascii_strict(&unicode).ok().as_deref() != Some(label) {
        return Err(format!(
            "label `{label}` is not valid punycode (IDNA); write the name in Unicode, or copy its ASCII form from the registrar"
        ));
    }
    let categories = CodePointMapData::<Gc>::new();
    if let Some(bad) = unicode.chars().find(|c| {
        *c != '-'
            && !matches!(
                categories.get(*c),
                Gc::LowercaseLetter
                    | Gc::OtherLetter
                    | Gc::ModifierLetter
                    | Gc::DecimalNumber
                    | Gc::NonspacingMark
                    | Gc::SpacingMark
            )
    }) {
        return Err(format!(
            "label `{unicode}` ({label}) contains `{bad}` (U+{:04X}), which is not a letter, digit or mark; IDNA2008 does not allow it in domain names",
            u32::from(bad)
        ));
    }
    Ok(())
}

/// An LDH label: letters, digits and hyphens, 1 to 63 characters, no hyphen at either end.
fn check_label(label: &str) -> Result<(), String> {
    if label.is_empty() {
        return Err("empty label (two dots in a row?)".into());
    }
    if label.len() > 63 {
        return Err(format!(
            "label `{label}` is {} characters long; at most 63 are allowed",
            label.len()
        ));
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err(format!(
            "label `{label}` starts or ends with a hyphen, which DNS does not allow"
        ));
    }
    if let Some(bad) = label
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
    {
        return Err(format!(
            "label `{label}` contains `{bad}`; only letters, digits and hyphens are allowed"
        ));
    }
    Ok(())
}

fn check_dns_name(value: &str) -> Result<String, String> {
    // Underscore labels are service names (`_spf`, `_dmarc`); validate the rest as a domain.
    let lowered = value
        .strip_suffix('.')
        .unwrap_or(value)
        .to_ascii_lowercase();
    let stand_in = lowered.replace('_', "u");
    check_domain(&stand_in).map_err(|why| why.replace(&stand_in, value))?;
    if !lowered.is_ascii() {
        return Err(format!(
            "`{value}`: write this name in its ASCII (punycode) form"
        ));
    }
    Ok(lowered)
}

fn check_local_part(value: &str) -> Result<String, String> {
    if value.is_empty() {
        return Err("a user name (local part) cannot be empty".into());
    }
    if value.len() > 64 {
        return Err(format!(
            "`{value}` is {} characters long; a local part has at most 64",
            value.len()
        ));
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')))
    {
        let hint = if bad.is_ascii_uppercase() {
            format!(", write `{}`", value.to_ascii_lowercase())
        } else {
            String::new()
        };
        return Err(format!(
            "`{value}` contains `{bad}`; user names use lowercase letters, digits, `.`, `_` and `-`{hint}"
        ));
    }
    if value.starts_with('.') || value.ends_with('.') || value.contains("..") {
        return Err(format!(
            "`{value}`: a dot may not start or end a user name, nor follow another dot"
        ));
    }
    Ok(value.to_string())
}

fn check_alias_name(value: &str) -> Result<String, String> {
    if value == "*" {
        return Ok(value.to_string());
    }
    if value.contains('@') {
        return Err(format!(
            "alias `{value}` contains `@`; write only the local part, the domain is the one the alias is listed under"
        ));
    }
    if value.contains('+') {
        return Err(format!(
            "alias `{value}` contains the suffix separator `+`; chasquid strips suffixes before looking up aliases, so write the name without it"
        ));
    }
    check_local_part(value).map_err(|why| format!("{why} (or `*` for the catch-all)"))
}

fn check_selector(value: &str) -> Result<String, String> {
    if value.is_empty() {
        return Err("a DKIM selector cannot be empty".into());
    }
    for label in value.split('.') {
        check_label(label).map_err(|why| format!("DKIM selector `{value}`: {why}"))?;
    }
    if value.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(format!(
            "DKIM selector `{value}` has uppercase letters; write `{}`",
            value.to_ascii_lowercase()
        ));
    }
    Ok(value.to_string())
}

fn check_host_name(value: &str) -> Result<String, String> {
    check_label(value).map_err(|why| format!("`{value}`: {why}"))?;
    if value.chars().any(|c| c.is_ascii_uppercase()) {
        return Err(format!(
            "`{value}` has uppercase letters; write `{}`",
            value.to_ascii_lowercase()
        ));
    }
    Ok(value.to_string())
}

/// Why `email` cannot be the ACME account's address, or `None`. One rule for `check`, `build`
/// and `cert`: lego uses the address as a directory name in its state (and the store's), and
/// it goes into the overlay's `acme.conf`, read by a shell. So beyond a valid address: the
/// local part is letters, digits, `.`, `_`, `+` and `-` only.
pub fn acme_email_problem(email: &str) -> Option<String> {
    if let Err(why) = check_mail_address(email) {
        return Some(why);
    }
    let local = email.rsplit_once('@').map_or(email, |(local, _)| local);
    let bad = local
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-')))?;
    Some(format!(
        "`{}` has {bad:?} before the `@`; an ACME account e-mail uses only letters, digits, `.`, `_`, `+` and `-` there (lego names a directory after it)",
        email.escape_debug(),
    ))
}

fn check_mail_address(value: &str) -> Result<String, String> {
    let Some((local, domain)) = value.rsplit_once('@') else {
        return Err(format!(
            "`{value}` is not a mail address; write `user@domain`"
        ));
    };
    if local.len() > 64 {
        return Err(format!(
            "the part before `@` of `{}…` is {} characters long; SMTP allows at most 64 (RFC 5321)",
            value.chars().take(20).collect::<String>(),
            local.len()
        ));
    }
    // A dot-atom (RFC 5322) neither starts nor ends with a dot and has no two in a row.
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return Err(format!(
            "`{value}`: the part before `@` starts or ends with `.` or has `..`, which no mail address may (RFC 5322)"
        ));
    }
    // Remote mailboxes (a Gmail address, say) may use characters we do not allow for our own
    // users, so only reject what can never be in a dot-atom local part.
    if local.is_empty()
        || local.chars().any(|c| {
            c.is_whitespace()
                || c.is_control()
                || matches!(
                    c,
                    '<' | '>' | ',' | ':' | ';' | '"' | '(' | ')' | '[' | ']' | '\\' | '@'
                )
        })
    {
        return Err(format!(
            "`{value}`: the part before `@` is not a valid local part"
        ));
    }
    let domain = check_domain(domain)?;
    Ok(format!("{local}@{domain}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unicode_domains_become_punycode() {
        let d = DomainName::try_from("bücher.example").unwrap();
        assert_eq!(d.as_str(), "xn--bcher-kva.example");
    }

    #[test]
    fn idna_labels_must_be_valid_idna2008() {
        for (bad, why) in [
            ("☃.com", "`☃` (U+2603)"),
            ("xn--n3h.com", "`☃` (U+2603)"),
            ("💩.la", "not a letter, digit or mark"),
            ("xn--zz.com", "not valid punycode"),
            ("xn--a.com", "not valid punycode"),
        ] {
            let err = DomainName::try_from(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
        for good in [
            "xn--bcher-kva.example",
            "हिन्दी.example",
            "例え.テスト",
            "ab--cd.com",
        ] {
            assert!(DomainName::try_from(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn domains_are_lowercased_and_lose_the_trailing_dot() {
        assert_eq!(
            DomainName::try_from("Example.COM.").unwrap().as_str(),
            "example.com"
        );
    }

    #[test]
    fn bad_domains_are_refused_with_a_reason() {
        for (bad, why) in [
            ("localhost", "single label"),
            ("exa_mple.com", "`_`"),
            ("-a.example.com", "hyphen"),
            ("a..example.com", "empty label"),
            ("203.0.113.10", "IP address"),
        ] {
            let err = DomainName::try_from(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn local_parts_must_be_lowercase_ascii() {
        assert!(LocalPart::try_from("first.last-2").is_ok());
        let err = LocalPart::try_from("Alice").unwrap_err();
        assert!(err.contains("write `alice`"), "{err}");
        assert!(LocalPart::try_from(".a").is_err());
    }

    #[test]
    fn alias_names_allow_the_catch_all_only_alone() {
        assert!(AliasName::try_from("*").unwrap().is_catch_all());
        assert!(AliasName::try_from("a*").is_err());
        assert!(
            AliasName::try_from("a@b.com")
                .unwrap_err()
                .contains("only the local part")
        );
    }

    #[test]
    fn mail_addresses_split_into_parts() {
        let a = MailAddress::try_from("I.Example.Com@GMAIL.com").unwrap();
        assert_eq!(a.local_part(), "I.Example.Com");
        assert_eq!(a.domain(), "gmail.com");
        assert!(MailAddress::try_from("no-at-sign").is_err());
    }
}
