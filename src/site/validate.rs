//! Checks that need the whole site: references between values, loops, duplicates across hosts.
//! Each finding carries the YAML path it is about, so it can be located in the file.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use super::alias_graph::{self, SiteAddresses};
use super::local_key::{DROP_CHARACTERS, chasquid_local_key};
use super::model::{Host, Site};
use super::net::non_public;

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
    check_chasquid_keys(site, &mut out);
    check_alias_targets(site, &addresses, &mut out);
    alias_graph::check(site, &addresses, &mut out);
    check_hosts_are_distinct(site, &mut out);
    check_host_addresses(site, &mut out);
    check_spf(site, &mut out);
    check_acme(site, &mut out);
    check_dkim(site, &mut out);
    super::sending::check(site, &mut out);
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

/// chasquid looks users and aliases up by [`chasquid_local_key`] (without `.`), so two names
/// of one domain with the same key are one address to it: mail to one reaches the other's
/// target, and sender ownership follows whichever chasquid finds. Exact repeats are reported
/// by the checks above; this finds the spellings that differ only by dots. The finding points
/// at the name that has dots (the later one when both do).
fn check_chasquid_keys(site: &Site, out: &mut Vec<Finding>) {
    for (domain, d) in site.domains.iter() {
        // Key -> (name, what it is), for the first name seen with that key.
        let mut seen: HashMap<String, (&str, &str)> = HashMap::new();
        let users = d.users.iter().map(|u| (u.as_str(), "user"));
        let aliases = d
            .aliases
            .keys()
            .filter(|a| !a.is_catch_all())
            .map(|a| (a.as_str(), "alias"));
        for (name, what) in users.chain(aliases) {
            let key = chasquid_local_key(name);
            let Some(&(other, other_what)) = seen.get(&key) else {
                seen.insert(key, (name, what));
                continue;
            };
            if other == name {
                continue;
            }
            let ((shown, shown_what), (first, first_what)) = if name.contains(DROP_CHARACTERS) {
                ((name, what), (other, other_what))
            } else {
                ((other, other_what), (name, what))
            };
            let mut path = vec!["domains".to_string(), domain.to_string()];
            let at_key = if shown_what == "user" {
                let index = d.users.iter().position(|u| u.as_str() == shown);
                path.extend(["users".to_string(), index.unwrap_or_default().to_string()]);
                false
            } else {
                path.extend(["aliases".to_string(), shown.to_string()]);
                true
            };
            out.push(Finding {
                path,
                at_key,
                message: format!(
                    "`{shown}@{domain}` ({shown_what}) and `{first}@{domain}` ({first_what}) are one address to chasquid, which ignores `.` in local parts (both are `{key}@{domain}` to it)"
                ),
                help: Some(format!(
                    "rename or remove one of them: mail to either reaches one target, and its owner may send as both; write `{first}` alone if they are meant to be one address"
                )),
            });
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
    let mut addresses: HashMap<IpAddr, String> = HashMap::new();
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
        for (ip, key) in host_addresses(host) {
            // Canonical form: an IPv4 address compares equal to its `::ffff:` spelling.
            if let Some(other) = addresses.insert(ip.to_canonical(), name.to_string()) {
                out.push(finding(
                    &["hosts", name.as_str(), key],
                    format!("hosts `{other}` and `{name}` both use {ip}"),
                    Some("each host needs its own addresses; reverse DNS maps one address to one name".into()),
                ));
            }
        }
    }
}

/// A host's public addresses with the key each is written under.
fn host_addresses(host: &Host) -> Vec<(IpAddr, &'static str)> {
    let mut ips = vec![(IpAddr::V4(host.ipv4.address), "ipv4")];
    if let Some(v6) = &host.ipv6 {
        ips.push((IpAddr::V6(v6.address.addr()), "ipv6"));
    }
    ips
}

/// Addresses that parse but cannot work: a private address on a host that does not say it
/// lives on a lab network, an IPv6 gateway that is the host itself, a mapped resolver.
fn check_host_addresses(site: &Site, out: &mut Vec<Finding>) {
    for (name, host) in site.hosts.iter() {
        if !host.allow_private {
            for (ip, key) in host_addresses(host) {
                if let Some(why) = non_public(ip) {
                    out.push(finding(
                        &["hosts", name.as_str(), key, "address"],
                        format!(
                            "host `{name}`: {ip} is {why}; the internet cannot reach it, so it cannot be a public MX address (and its A, PTR and SPF records mean nothing outside your network)"
                        ),
                        Some(format!(
                            "give the host's public address, or add `allow_private: true` to host `{name}` for a lab or test network"
                        )),
                    ));
                }
            }
        }
        if let Some(v6) = &host.ipv6
            && v6.gateway == v6.address.addr()
        {
            out.push(finding(
                &["hosts", name.as_str(), "ipv6", "gateway"],
                format!(
                    "host `{name}`: the IPv6 gateway {} is the host's own address",
                    v6.gateway
                ),
                Some(
                    "give the router's address, often `fe80::1` (the provider's panel lists it)"
                        .into(),
                ),
            ));
        }
        for (i, ns) in host.nameservers.iter().enumerate() {
            if let IpAddr::V6(v6) = ns
                && let Some(v4) = v6.to_ipv4_mapped()
            {
                out.push(finding(
                    &["hosts", name.as_str(), "nameservers", &i.to_string()],
                    format!(
                        "host `{name}`: resolver {ns} is the IPv4 address {v4} written as IPv6"
                    ),
                    Some(format!("write `{v4}`")),
                ));
            }
        }
    }
}

/// The ACME account e-mail by the rule `build` and `cert` apply ([`acme_email_problem`]).
fn check_acme(site: &Site, out: &mut Vec<Finding>) {
    if let Some(acme) = &site.tls.acme
        && let Some(problem) = super::names::acme_email_problem(acme.email.as_str())
    {
        out.push(finding(
            &["tls", "acme", "email"],
            problem,
            Some("give an address such as ops@example.com".into()),
        ));
    }
}

fn check_spf(site: &Site, out: &mut Vec<Finding>) {
    for (domain, d) in site.domains.iter() {
        // An SPF record that includes its own domain includes itself: a loop receivers end
        // with permerror, failing every message.
        if let Some(own) = d.spf.include.iter().position(|i| {
            i.as_str()
                .trim_end_matches('.')
                .eq_ignore_ascii_case(domain.as_str())
        }) {
            out.push(finding(
                &["domains", domain.as_str(), "spf", "include", &own.to_string()],
                format!(
                    "the SPF record of {domain} would include {domain} itself, a loop that receivers end with permerror (every message fails SPF)"
                ),
                Some(format!(
                    "remove `{domain}` from the list: the site's hosts and `mx` are always in {domain}'s record"
                )),
            ));
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_and_its_ipv4_mapped_spelling_are_one_address() {
        // Parsing refuses mapped addresses; the duplicate check must still compare canonical
        // forms, so build the model by hand.
        let text = "site: s\ndomains:\n  example.com: {}\nhosts:\n  mx1: { fqdn: a.example.com, ipv4: 203.0.113.10 }\n  mx2: { fqdn: b.example.com, ipv4: 203.0.113.11, ipv6: { address: '2001:db8::1/64', gateway: 'fe80::1' } }\n";
        let mut site: Site = serde_norway::from_str(text).expect("parses");
        let mx2 = site
            .hosts
            .0
            .values_mut()
            .find(|h| h.ipv6.is_some())
            .expect("mx2");
        if let Some(v6) = mx2.ipv6.as_mut() {
            v6.address = "::ffff:203.0.113.10/64".parse().expect("a net");
        }
        let found = check(&site);
        assert!(
            found
                .iter()
                .any(|f| f.message == "hosts `mx1` and `mx2` both use ::ffff:203.0.113.10"),
            "{found:?}"
        );
    }
}
