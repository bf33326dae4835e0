//! Checks that need the whole site: references between values, loops, duplicates across hosts.
//! Each finding carries the YAML path it is about, so it can be located in the file.

use std::collections::{BTreeSet, HashMap};

use super::alias_graph::{self, SiteAddresses};
use super::model::Site;

/// SPF allows ten DNS-querying mechanisms; `mx` is one, each `include` another.
const SPF_LOOKUP_LIMIT: usize = 10;

/// A finding before it is located: a path into the document and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub path: Vec<String>,
    /// Point at the key of `path` (the entry as a whole) rather than at its value.
    pub at_key: bool,
    pub message: String,
    pub help: Option<String>,
}

pub(super) fn finding(path: &[&str], message: String, help: Option<String>) -> Finding {
    Finding {
        path: path.iter().map(|s| s.to_string()).collect(),
        at_key: false,
        message,
        help,
    }
}

pub fn check(site: &Site) -> Vec<Finding> {
    let mut out = Vec::new();
    if site.domains.is_empty() {
        out.push(finding(
            &["domains"],
            "the site has no mail domains".into(),
            Some("add at least one domain under `domains:`".into()),
        ));
    }
    if site.hosts.is_empty() {
        out.push(finding(
            &["hosts"],
            "the site has no hosts".into(),
            Some("add at least one host under `hosts:`".into()),
        ));
    }
    let addresses = SiteAddresses::of(site);
    check_users(site, &addresses, &mut out);
    check_alias_targets(site, &addresses, &mut out);
    alias_graph::check(site, &addresses, &mut out);
    check_hosts_are_distinct(site, &mut out);
    check_spf(site, &mut out);
    check_dkim(site, &mut out);
    out
}

fn check_dkim(site: &Site, out: &mut Vec<Finding>) {
    for (domain, d) in site.domains.iter() {
        for selector in d.dkim.retired.keys() {
            if d.dkim.selectors.contains_key(selector) {
                out.push(finding(
                    &["domains", domain.as_str(), "dkim", "retired", selector.as_str()],
                    format!("DKIM selector `{selector}` of {domain} is both active and retired"),
                    Some("keep it under `selectors` while it signs, move it to `retired` after a rotation".into()),
                ));
            }
        }
    }
}

fn check_users(site: &Site, addresses: &SiteAddresses, out: &mut Vec<Finding>) {
    for (domain, d) in site.domains.iter() {
        let mut seen = BTreeSet::new();
        for (i, user) in d.users.iter().enumerate() {
            let index = i.to_string();
            if !seen.insert(user) {
                out.push(finding(
                    &["domains", domain.as_str(), "users", &index],
                    format!("user `{user}` is listed twice in {domain}"),
                    Some("remove the duplicate".into()),
                ));
            }
            if addresses.is_alias(domain, user.as_str()) {
                out.push(finding(
                    &["domains", domain.as_str(), "users", &index],
                    format!("`{user}@{domain}` is both a user and an alias"),
                    Some(
                        "an address is either a mailbox user or an alias; remove one of them"
                            .into(),
                    ),
                ));
            }
        }
    }
}

fn check_alias_targets(site: &Site, addresses: &SiteAddresses, out: &mut Vec<Finding>) {
    for (domain, d) in site.domains.iter() {
        for (alias, targets) in d.aliases.iter() {
            for target in &targets.0 {
                // Remote mailboxes and pipes: nothing to check offline.
                let Some((target_domain, local)) = addresses.site_target(domain, target) else {
                    continue;
                };
                if !addresses.resolves(&target_domain, &local) {
                    out.push(finding(
                        &["domains", domain.as_str(), "aliases", alias.as_str()],
                        format!(
                            "alias `{alias}@{domain}` forwards to `{local}@{target_domain}`, which is neither a user nor an alias of {target_domain}"
                        ),
                        Some(format!(
                            "add `{local}` to the users of {target_domain}, define an alias for it, or fix the spelling"
                        )),
                    ));
                }
            }
        }
    }
}

fn check_hosts_are_distinct(site: &Site, out: &mut Vec<Finding>) {
    let mut fqdns: HashMap<String, String> = HashMap::new();
    let mut addresses: HashMap<String, String> = HashMap::new();
    for (name, host) in site.hosts.iter() {
        if let Some(other) = fqdns.insert(host.fqdn.to_string(), name.to_string()) {
            out.push(finding(
                &["hosts", name.as_str(), "fqdn"],
                format!(
                    "hosts `{other}` and `{name}` have the same fqdn {}",
                    host.fqdn
                ),
                Some(
                    "each host needs its own name: it is the PTR name and chasquid's hostname"
                        .into(),
                ),
            ));
        }
        let mut ips = vec![(host.ipv4.address.to_string(), "ipv4")];
        if let Some(v6) = &host.ipv6 {
            ips.push((v6.address.addr().to_string(), "ipv6"));
        }
        for (ip, key) in ips {
            if let Some(other) = addresses.insert(ip.clone(), name.to_string()) {
                out.push(finding(
                    &["hosts", name.as_str(), key],
                    format!("hosts `{other}` and `{name}` both use {ip}"),
                    Some("each host needs its own addresses; reverse DNS maps one address to one name".into()),
                ));
            }
        }
    }
}

fn check_spf(site: &Site, out: &mut Vec<Finding>) {
    for (domain, d) in site.domains.iter() {
        let lookups = d.spf.include.len() + 1; // + `mx`
        if lookups > SPF_LOOKUP_LIMIT {
            out.push(finding(
                &["domains", domain.as_str(), "spf", "include"],
                format!(
                    "the SPF record of {domain} would need {lookups} DNS lookups; receivers give up after {SPF_LOOKUP_LIMIT} (permerror)"
                ),
                Some("include fewer senders".into()),
            ));
        }
    }
}
