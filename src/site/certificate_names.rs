//! The names on a host's certificate: one definition for the template context (the image's
//! `acme.conf`), `mailbake cert` and the seed, in the order the host's `acme-renew` asks lego
//! for them, so all three name the same certificate and lego's files after the same name.

use std::collections::BTreeSet;

use super::{DomainName, Site};

/// The names the site asks for: `tls.acme.names`, or every domain and its wildcard; each
/// once (compared without case; the first spelling stays), in the order written. Empty when
/// the site does not use ACME.
pub fn site_names(site: &Site) -> Vec<String> {
    let Some(acme) = &site.tls.acme else {
        return Vec::new();
    };
    let names: Vec<String> = if acme.names.is_empty() {
        site.domains
            .keys()
            .flat_map(|d| [d.to_string(), format!("*.{d}")])
            .collect()
    } else {
        acme.names.iter().map(ToString::to_string).collect()
    };
    // A name listed twice would be asked for twice (CAs reject duplicate identifiers).
    let mut seen = BTreeSet::new();
    names
        .into_iter()
        .filter(|n| seen.insert(n.to_ascii_lowercase()))
        .collect()
}

/// The names on `fqdn`'s certificate: the host's own name first (lego names its files after
/// the first one), then the site's, lowercase, each once. `acme-renew` builds the same list
/// from `hostname` and `ACME_NAMES`.
pub fn host_names(site: &Site, fqdn: &DomainName) -> Vec<String> {
    let mut seen = BTreeSet::new();
    std::iter::once(fqdn.to_string())
        .chain(site_names(site))
        .map(|n| n.to_ascii_lowercase())
        .filter(|n| seen.insert(n.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(tls: &str) -> Site {
        let yaml = format!(
            "site: s\ndomains:\n  example.com: {{}}\n  Example.NET: {{}}\nhosts:\n  mx1: {{ fqdn: smtp.example.com, ipv4: 192.0.2.1 }}\n{tls}"
        );
        match crate::site::parse(std::path::Path::new("site.yaml"), &yaml) {
            Ok(site) => site,
            Err(e) => panic!("{}", e.render(false)),
        }
    }

    #[test]
    fn by_default_every_domain_and_its_wildcard_after_the_host() {
        let s = site("tls: { acme: { provider: rfc2136, email: ops@example.com } }\n");
        let fqdn = DomainName::try_from("smtp.example.com").unwrap();
        assert_eq!(
            host_names(&s, &fqdn),
            [
                "smtp.example.com",
                "example.com",
                "*.example.com",
                "example.net",
                "*.example.net"
            ]
        );
    }

    #[test]
    fn listed_names_keep_their_order_and_appear_once() {
        let s = site(
            "tls: { acme: { provider: rfc2136, email: ops@example.com, names: [Example.com, smtp.example.com, example.COM, \"*.example.com\"] } }\n",
        );
        assert_eq!(
            site_names(&s),
            ["Example.com", "smtp.example.com", "*.example.com"]
        );
        let fqdn = DomainName::try_from("smtp.example.com").unwrap();
        assert_eq!(
            host_names(&s, &fqdn),
            ["smtp.example.com", "example.com", "*.example.com"]
        );
    }

    #[test]
    fn a_site_without_acme_names_nothing() {
        assert!(site_names(&site("")).is_empty());
    }
}
