//! Checks that need the whole site: references between values, loops, duplicates across hosts.
//! Each finding carries the YAML path it is about, so it can be located in the file.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::model::Site;
use super::names::{AliasName, DomainName};
use super::policy::AliasTarget;

/// chasquid stops expanding aliases after this many levels.
const ALIAS_RECURSION_LIMIT: usize = 10;

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

fn finding(path: &[&str], message: String, help: Option<String>) -> Finding {
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
    check_users(site, &mut out);
    check_alias_targets(site, &mut out);
    check_alias_loops(site, &mut out);
    check_hosts_are_distinct(site, &mut out);
    check_spf(site, &mut out);
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

fn check_users(site: &Site, out: &mut Vec<Finding>) {
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
            if d.aliases.keys().any(|a| a.as_str() == user.as_str()) {
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

/// Does `local@domain` name something the site delivers to (a user or an alias, or anything
/// when the domain has a catch-all)?
fn resolves_locally(site: &Site, domain: &DomainName, local: &str) -> bool {
    site.domains.get(domain).is_some_and(|d| {
        d.users.iter().any(|u| u.as_str() == local)
            || d.aliases
                .keys()
                .any(|a| a.as_str() == local || a.is_catch_all())
    })
}

/// The site address an alias target names (`i` in `domain`, or `x@other-site-domain`), or
/// None for remote mailboxes and pipes.
fn site_local_target(
    site: &Site,
    domain: &DomainName,
    target: &AliasTarget,
) -> Option<(DomainName, String)> {
    match target {
        AliasTarget::Local(l) => Some((domain.clone(), l.as_str().to_string())),
        AliasTarget::Address(a) => DomainName::try_from(a.domain())
            .ok()
            .filter(|d| site.domains.contains_key(d))
            .map(|d| (d, a.local_part().to_string())),
        AliasTarget::Pipe(_) => None,
    }
}

fn check_alias_targets(site: &Site, out: &mut Vec<Finding>) {
    for (domain, d) in site.domains.iter() {
        for (alias, targets) in d.aliases.iter() {
            for target in &targets.0 {
                // Remote mailboxes and pipes: nothing to check offline.
                let Some((target_domain, local)) = site_local_target(site, domain, target) else {
                    continue;
                };
                if !resolves_locally(site, &target_domain, &local) {
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

type Node = (DomainName, String);

/// The aliases as a graph: address -> the site-local addresses it expands to.
fn alias_graph(site: &Site) -> BTreeMap<Node, Vec<Node>> {
    let mut graph: BTreeMap<Node, Vec<Node>> = BTreeMap::new();
    for (domain, d) in site.domains.iter() {
        for (alias, targets) in d.aliases.iter() {
            let from = (domain.clone(), alias.as_str().to_string());
            let edges = graph.entry(from).or_default();
            for target in &targets.0 {
                let Some((td, local)) = site_local_target(site, domain, target) else {
                    continue;
                };
                let Some(target_domain) = site.domains.get(&td) else {
                    continue;
                };
                if target_domain.users.iter().any(|u| u.as_str() == local) {
                    continue; // a mailbox: expansion ends here
                }
                if target_domain.aliases.keys().any(|a| a.as_str() == local) {
                    edges.push((td, local));
                } else if target_domain.aliases.keys().any(AliasName::is_catch_all) {
                    edges.push((td, "*".to_string()));
                }
            }
        }
    }
    graph
}

fn check_alias_loops(site: &Site, out: &mut Vec<Finding>) {
    let graph = alias_graph(site);
    let mut reported: BTreeSet<Vec<Node>> = BTreeSet::new();
    for start in graph.keys() {
        // Depth-first search over expansion chains from `start`.
        let mut stack: Vec<(Node, Vec<Node>)> = vec![(start.clone(), vec![start.clone()])];
        let mut depth_reported = false;
        while let Some((node, chain)) = stack.pop() {
            for next in graph.get(&node).into_iter().flatten() {
                if let Some(pos) = chain.iter().position(|n| n == next) {
                    let mut cycle: Vec<Node> = chain[pos..].to_vec();
                    let min = cycle
                        .iter()
                        .enumerate()
                        .min_by(|a, b| a.1.cmp(b.1))
                        .map_or(0, |m| m.0);
                    cycle.rotate_left(min);
                    if reported.insert(cycle.clone()) {
                        let (d, a) = &cycle[0];
                        let shown: Vec<String> = cycle
                            .iter()
                            .chain(std::iter::once(&cycle[0]))
                            .map(|(d, a)| format!("{a}@{d}"))
                            .collect();
                        out.push(finding(
                            &["domains", d.as_str(), "aliases", a],
                            format!("aliases form a loop: {}", shown.join(" -> ")),
                            Some(
                                "make one alias in the loop deliver to a user or a remote address"
                                    .into(),
                            ),
                        ));
                    }
                    continue;
                }
                let mut longer = chain.clone();
                longer.push(next.clone());
                if longer.len() > ALIAS_RECURSION_LIMIT + 1 {
                    if !depth_reported {
                        depth_reported = true;
                        out.push(finding(
                            &["domains", start.0.as_str(), "aliases", &start.1],
                            format!(
                                "alias `{}@{}` expands through more than {ALIAS_RECURSION_LIMIT} levels; chasquid gives up at {ALIAS_RECURSION_LIMIT}",
                                start.1, start.0
                            ),
                            Some("point the alias closer to its final destination".into()),
                        ));
                    }
                    continue;
                }
                stack.push((next.clone(), longer));
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
