//! The template context: the site-wide facts layers may use. Hosts are deliberately absent:
//! the overlay is the same for every host of a site, and per-host identity comes from seeds.

use serde_json::{Value, json};

use crate::site::{AliasTarget, Site};

/// `acme_ca` is the checked PEM bundle of `tls.acme.ca_certificates` (see [`super::acme_ca`]).
pub fn for_site(site: &Site, acme_ca: Option<&str>) -> Value {
    let domains: Vec<Value> = site
        .domains
        .iter()
        .map(|(name, domain)| {
            let aliases: Vec<Value> = domain
                .aliases
                .iter()
                .map(|(alias, targets)| {
                    json!({
                        "name": alias.as_str(),
                        "targets": chasquid_targets(&targets.0),
                    })
                })
                .collect();
            json!({
                "name": name.as_str(),
                "users": domain.users.iter().map(|u| u.as_str()).collect::<Vec<_>>(),
                "aliases": aliases,
                "dkim_selectors": domain.dkim.selectors.keys().map(|s| s.as_str()).collect::<Vec<_>>(),
            })
        })
        .collect();
    let acme = site.tls.acme.as_ref().map(|acme| {
        let mut names: Vec<String> = if acme.names.is_empty() {
            site.domains
                .keys()
                .flat_map(|d| [d.to_string(), format!("*.{d}")])
                .collect()
        } else {
            acme.names.iter().map(|n| n.to_string()).collect()
        };
        // A name listed twice would be asked for twice (CAs reject duplicate identifiers);
        // keep the first, so the order the operator wrote stays.
        let mut seen = std::collections::BTreeSet::new();
        names.retain(|n| seen.insert(n.to_ascii_lowercase()));
        json!({
            "directory": acme.directory.to_string(),
            "email": acme.email.as_str(),
            "provider": acme.provider.to_string(),
            "key_type": acme.key_type.as_lego(),
            "names": names,
            "include_hostname": true,
            "resolvers": acme.resolvers.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "ca_bundle": acme_ca.unwrap_or(""),
        })
    });
    json!({
        "site": site.site.as_str(),
        "domains": domains,
        "chasquid": { "max_data_size_mb": site.chasquid.max_data_size_mb },
        "acme": acme,
        "mail_policy": super::mail_policy::for_site(site),
    })
}

/// The right-hand side of an aliases line in chasquid's syntax.
fn chasquid_targets(targets: &[AliasTarget]) -> String {
    targets
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
