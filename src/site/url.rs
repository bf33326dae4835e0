//! The one rule for the http(s) URLs mailbake takes (the ACME directory, the image's base URL,
//! the Debian mirror): each is copied into public files (the overlay's `acme.conf`, the
//! Terraform values, a host's user-data) and printed, so it must hold no credentials, and its
//! host must be one every consumer reads the same way.

/// Why `url` is refused, as a sentence fragment for the caller's message; `None` when it
/// starts with one of `schemes` (e.g. `"https://"`) and has a plain host:
///
/// - no user information (`user:password@`): it would land in public artifacts and output;
/// - an ASCII host: a letter, digit or `[` first (never `-`, which a program could take for
///   an option), then letters, digits, `-` and `.`, or an IPv6 literal in brackets;
/// - a port, if any, of 1 to 65535.
pub fn url_problem(url: &str, schemes: &[&str]) -> Option<String> {
    let Some(rest) = schemes.iter().find_map(|s| url.strip_prefix(s)) else {
        return Some(format!("must start with {}", schemes.join(" or ")));
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.contains('@') {
        return Some(
            "holds user information (`user:password@`), which would be copied into public files and printed; give the credentials another way (e.g. the provider's token in the secrets store)"
                .into(),
        );
    }
    if authority.is_empty() {
        return Some("has no host name".into());
    }
    let (host, port) = split_port(authority);
    if let Some(port) = port
        && port.parse::<u16>().map_or(true, |p| p == 0)
    {
        return Some(format!("has port `{port}`; give a port from 1 to 65535"));
    }
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return v6
            .parse::<std::net::Ipv6Addr>()
            .is_err()
            .then(|| format!("has `{host}`, which is not an IPv6 address in brackets"));
    }
    if !host.is_ascii() {
        return Some(format!(
            "has the host `{host}`, which is not ASCII; write it in its ASCII (punycode, `xn--…`) form"
        ));
    }
    let first_ok = host.starts_with(|c: char| c.is_ascii_alphanumeric());
    let rest_ok = host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if !first_ok || !rest_ok || host.contains("..") {
        return Some(format!(
            "has the host `{host}`; a host name is letters, digits, `-` and `.`, starting with a letter or digit"
        ));
    }
    None
}

/// `host[:port]` split at the port's colon (an IPv6 literal keeps its own colons).
fn split_port(authority: &str) -> (&str, Option<&str>) {
    let split = if authority.starts_with('[') {
        authority
            .rsplit_once("]:")
            .map(|(host, port)| (&authority[..host.len() + 1], port))
    } else {
        authority.rsplit_once(':')
    };
    match split {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_urls_pass() {
        for url in [
            "https://acme-v02.api.letsencrypt.org/directory",
            "https://198.51.100.14:14000/dir",
            "https://[2001:db8::14]:14000/dir",
            "https://xn--bcher-kva.example/",
            "http://mirror.example/debian",
        ] {
            assert_eq!(url_problem(url, &["https://", "http://"]), None, "{url}");
        }
    }

    #[test]
    fn credentials_odd_hosts_and_ports_are_named() {
        for (url, part) in [
            ("https://user:s3cret@ca.example/dir", "user information"),
            ("https://user@ca.example/dir", "user information"),
            ("https://ca.example@evil.example/", "user information"),
            ("https://bücher.example/", "not ASCII"),
            ("https://-x/", "starting with a letter or digit"),
            ("https://a..b/", "starting with a letter or digit"),
            ("https://a_b.example/", "starting with a letter or digit"),
            ("https://ca.example:0/", "port `0`"),
            ("https://ca.example:65536/", "port `65536`"),
            ("https://ca.example:x/", "port `x`"),
            ("https://[2001:db8::zz]/", "not an IPv6 address"),
            ("https:///dir", "no host name"),
            ("ftp://ca.example/", "must start with https://"),
        ] {
            let said = url_problem(url, &["https://"]).unwrap_or_else(|| panic!("{url} passed"));
            assert!(said.contains(part), "{url}: {said}");
        }
    }
}
