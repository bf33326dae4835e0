//! The `tag=value; tag=value` syntax of DKIM key records (RFC 6376 §3.2), which DMARC,
//! MTA-STS and TLS-RPT records share.

/// Splits a tag list into `(tag, value)` pairs, whitespace around both trimmed. Errors on a
/// pair without `=` or a tag given twice (RFC 6376 §3.2: "MUST be treated as an error").
pub fn parse(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out: Vec<(String, String)> = Vec::new();
    for part in text.split(';') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let Some((tag, value)) = part.split_once('=') else {
            return Err(format!("`{part}` is not a tag=value pair"));
        };
        let tag = tag.trim().to_string();
        if tag.is_empty() || !tag.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("`{tag}` is not a tag name"));
        }
        if out.iter().any(|(t, _)| *t == tag) {
            return Err(format!("tag `{tag}` appears twice"));
        }
        out.push((tag, value.trim().to_string()));
    }
    Ok(out)
}

/// The value of `tag`, if present.
pub fn get<'a>(tags: &'a [(String, String)], tag: &str) -> Option<&'a str> {
    tags.iter().find(|(t, _)| t == tag).map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_split_and_trim() {
        let tags = parse(" v=DKIM1 ;k=rsa; p=AB CD ;").unwrap();
        assert_eq!(get(&tags, "v"), Some("DKIM1"));
        assert_eq!(get(&tags, "p"), Some("AB CD"));
        assert_eq!(get(&tags, "h"), None);
    }

    #[test]
    fn duplicates_and_garbage_are_errors() {
        assert!(parse("v=DKIM1; p=a; p=b").unwrap_err().contains("twice"));
        assert!(
            parse("v=DKIM1; nonsense")
                .unwrap_err()
                .contains("tag=value")
        );
    }
}
