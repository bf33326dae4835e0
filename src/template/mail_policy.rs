//! The mail policy the post-data hook enforces, computed at build time from the site.
//!
//! For every local address: where chasquid will deliver it in the end (after aliases and the
//! catch-all, the way chasquid resolves them), so that the hook can count the copies of one
//! message per final destination and know which addresses deliver to which user (sender
//! ownership). Plus each user's `send_as` widening and the copies limit. It is part of the
//! [`super::SiteContext`]; the chasquid layer renders it (`hooks/mailbake/policy.j2`, every
//! field through the `word` filter) as whitespace-separated records that
//! `hooks/mailbake/post-data.awk` reads as data: nothing in it is ever evaluated.
//!
//! Addresses are written the way chasquid hands them to the hook: local parts lowercased,
//! without `+suffix` and without dots (chasquid's `suffix_separators` and `drop_characters`,
//! mailbake leaves them at chasquid's defaults), domains in Unicode (chasquid converts IDNs);
//! an IDN domain is listed in its ASCII spelling too, for `From:` headers that use it.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::site::{
    AliasTarget, DROP_CHARACTERS, DomainName, SUFFIX_SEPARATORS, Site, chasquid_local_key,
};

/// chasquid gives up expanding aliases after this many levels (the site check refuses deeper
/// chains, so this only bounds the recursion).
const ALIAS_DEPTH_LIMIT: usize = 10;

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MailPolicy {
    pub suffix_separators: &'static str,
    pub drop_characters: &'static str,
    pub copies_per_destination: u32,
    /// Every spelling of every local domain.
    pub domains: Vec<String>,
    /// Local addresses (`*@domain` for a catch-all) and their final destinations: mailboxes
    /// of the site as `user@domain`, remote addresses, pipes as `|alias@domain`. A destination
    /// reached twice is listed twice: chasquid delivers it twice.
    pub addresses: Vec<Address>,
    /// Widening of sender ownership: `user@domain` may also send as `pattern`
    /// (an address, or `*@domain`).
    pub send_as: Vec<SendAsEntry>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Address {
    pub key: String,
    pub destinations: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SendAsEntry {
    pub user: String,
    pub pattern: String,
}

/// The domain as chasquid writes it (Unicode), then its ASCII form when that differs.
fn spellings(domain: &DomainName) -> Vec<String> {
    let (unicode, result) = idna::domain_to_unicode(domain.as_str());
    if result.is_ok() && unicode != domain.as_str() {
        vec![unicode, domain.to_string()]
    } else {
        vec![domain.to_string()]
    }
}

fn chasquid_form(domain: &DomainName) -> String {
    spellings(domain).swap_remove(0)
}

pub fn for_site(site: &Site) -> MailPolicy {
    let mut domains = Vec::new();
    let mut addresses: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, domain) in site.domains.iter() {
        let mut by_local: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for user in &domain.users {
            by_local.insert(
                chasquid_local_key(user.as_str()),
                vec![format!("{user}@{}", chasquid_form(name))],
            );
        }
        // Aliases after users: chasquid looks an address up among the aliases first.
        for alias in domain.aliases.keys() {
            let key = if alias.is_catch_all() {
                "*".to_string()
            } else {
                chasquid_local_key(alias.as_str())
            };
            let mut out = Vec::new();
            resolve(site, name, alias.as_str(), 0, &mut out);
            by_local.insert(key, out);
        }
        for spelling in spellings(name) {
            for (local, destinations) in &by_local {
                addresses.insert(format!("{local}@{spelling}"), destinations.clone());
            }
            domains.push(spelling);
        }
    }
    let mut send_as = Vec::new();
    for (name, domain) in site.domains.iter() {
        for (user, entries) in domain.send_as.iter() {
            let user = format!("{user}@{}", chasquid_form(name));
            for entry in entries {
                let local = entry
                    .local
                    .as_ref()
                    .map_or_else(|| "*".to_string(), |l| chasquid_local_key(l.as_str()));
                for spelling in spellings(&entry.domain) {
                    send_as.push(SendAsEntry {
                        user: user.clone(),
                        pattern: format!("{local}@{spelling}"),
                    });
                }
            }
        }
    }
    MailPolicy {
        suffix_separators: SUFFIX_SEPARATORS,
        drop_characters: DROP_CHARACTERS,
        copies_per_destination: site.limits.copies_per_destination,
        domains,
        addresses: addresses
            .into_iter()
            .map(|(key, destinations)| Address { key, destinations })
            .collect(),
        send_as,
    }
}

/// Appends the final destinations of `local@domain` to `out`, as chasquid resolves it: an
/// alias expands (recursively), else a user is a mailbox, else the catch-all expands, else
/// the address stays as it is.
fn resolve(site: &Site, domain: &DomainName, local: &str, depth: usize, out: &mut Vec<String>) {
    let Some(d) = site.domains.get(domain) else {
        return;
    };
    if depth > ALIAS_DEPTH_LIMIT {
        return;
    }
    let key = chasquid_local_key(local);
    let alias = if local == "*" {
        d.aliases.iter().find(|(a, _)| a.is_catch_all())
    } else {
        d.aliases
            .iter()
            .find(|(a, _)| !a.is_catch_all() && chasquid_local_key(a.as_str()) == key)
    };
    let targets = match alias {
        Some((name, targets)) => targets.0.iter().map(|t| (name.as_str(), t)).collect(),
        None => {
            if let Some(user) = d
                .users
                .iter()
                .find(|u| chasquid_local_key(u.as_str()) == key)
            {
                out.push(format!("{user}@{}", chasquid_form(domain)));
                return;
            }
            match d.aliases.iter().find(|(a, _)| a.is_catch_all()) {
                Some((name, targets)) => targets
                    .0
                    .iter()
                    .map(|t| (name.as_str(), t))
                    .collect::<Vec<_>>(),
                None => {
                    out.push(format!("{key}@{}", chasquid_form(domain)));
                    return;
                }
            }
        }
    };
    for (alias, target) in targets {
        match target {
            AliasTarget::Local(l) => resolve(site, domain, l.as_str(), depth + 1, out),
            AliasTarget::Address(a) => match DomainName::try_from(a.domain()) {
                Ok(td) if site.domains.contains_key(&td) => {
                    resolve(site, &td, a.local_part(), depth + 1, out)
                }
                _ => out.push(a.as_str().to_ascii_lowercase()),
            },
            AliasTarget::Pipe(_) => out.push(format!("|{alias}@{}", chasquid_form(domain))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(domains: &str, extra: &str) -> Site {
        let text = format!(
            "site: t\ndomains:\n{domains}\nhosts:\n  mx1: {{fqdn: smtp.example.com, ipv4: 203.0.113.10}}\n{extra}"
        );
        match crate::site::parse(std::path::Path::new("site.yaml"), &text) {
            Ok(site) => site,
            Err(e) => panic!("{e:?}"),
        }
    }

    fn destinations<'a>(policy: &'a MailPolicy, key: &str) -> Option<&'a [String]> {
        policy
            .addresses
            .iter()
            .find(|a| a.key == key)
            .map(|a| a.destinations.as_slice())
    }

    #[test]
    fn local_parts_compare_as_chasquid_compares_them() {
        assert_eq!(chasquid_local_key("I.Doe+tag+more"), "idoe");
        assert_eq!(chasquid_local_key("+x"), "");
        assert_eq!(chasquid_local_key("postmaster"), "postmaster");
    }

    #[test]
    fn every_local_address_resolves_to_its_final_destinations() {
        let policy = for_site(&site(
            "  example.com:\n    users: [i, j.k]\n    aliases:\n      postmaster: i\n      team: [i, j.k, postmaster, x@gmail.com]\n      deep: team\n      other: a@example.org\n      run: '| /usr/bin/true'\n      '*': [i.example.com@Gmail.com]\n  example.org:\n    users: [a]\n",
            "",
        ));
        assert_eq!(
            policy.domains,
            ["example.com".to_string(), "example.org".to_string()]
        );
        let d = |k| destinations(&policy, k).map(|d| d.to_vec());
        assert_eq!(d("i@example.com"), Some(vec!["i@example.com".into()]));
        assert_eq!(d("jk@example.com"), Some(vec!["j.k@example.com".into()]));
        assert_eq!(
            d("postmaster@example.com"),
            Some(vec!["i@example.com".into()])
        );
        let team: Vec<String> = [
            "i@example.com",
            "j.k@example.com",
            "i@example.com",
            "x@gmail.com",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(d("team@example.com"), Some(team.clone()));
        assert_eq!(d("deep@example.com"), Some(team));
        assert_eq!(d("other@example.com"), Some(vec!["a@example.org".into()]));
        assert_eq!(d("run@example.com"), Some(vec!["|run@example.com".into()]));
        assert_eq!(
            d("*@example.com"),
            Some(vec!["i.example.com@gmail.com".into()])
        );
        assert_eq!(d("*@example.org"), None, "no catch-all there");
        assert_eq!(policy.copies_per_destination, 10);
    }

    #[test]
    fn a_catch_all_to_a_user_makes_that_user_own_the_rest_of_the_domain() {
        let policy = for_site(&site(
            "  example.com:\n    users: [i]\n    aliases: {'*': i}\n",
            "",
        ));
        assert_eq!(
            destinations(&policy, "*@example.com"),
            Some(&["i@example.com".to_string()][..])
        );
    }

    #[test]
    fn send_as_and_limits_come_from_the_site() {
        let policy = for_site(&site(
            "  example.com:\n    users: [i, j]\n    send_as: {j: ['*@example.com', 'sa.les@Example.ORG']}\n  example.org: {}\n",
            "limits: {copies_per_destination: 3}\n",
        ));
        assert_eq!(policy.copies_per_destination, 3);
        let pairs: Vec<(String, String)> = policy
            .send_as
            .iter()
            .map(|e| (e.user.clone(), e.pattern.clone()))
            .collect();
        assert_eq!(
            pairs,
            [
                ("j@example.com".to_string(), "*@example.com".to_string()),
                ("j@example.com".to_string(), "sales@example.org".to_string()),
            ]
        );
    }

    #[test]
    fn idn_domains_are_listed_in_chasquid_s_unicode_form_and_in_ascii() {
        let policy = for_site(&site("  bücher.example:\n    users: [i]\n", ""));
        assert_eq!(
            policy.domains,
            [
                "bücher.example".to_string(),
                "xn--bcher-kva.example".to_string()
            ]
        );
        for key in ["i@bücher.example", "i@xn--bcher-kva.example"] {
            assert_eq!(
                destinations(&policy, key),
                Some(&["i@bücher.example".to_string()][..]),
                "{key}"
            );
        }
    }

    #[test]
    fn no_token_of_the_policy_can_split_a_record() {
        // Remote addresses are the loosest values the site allows: they may carry `#`, `|`,
        // `{`, `'`, but never white space or control characters.
        let policy = for_site(&site(
            "  example.com:\n    users: [i]\n    aliases:\n      a: \"we#ird|{x}'$@gmail.com\"\n",
            "",
        ));
        let tokens = policy
            .domains
            .iter()
            .chain(
                policy
                    .addresses
                    .iter()
                    .flat_map(|a| std::iter::once(&a.key).chain(a.destinations.iter())),
            )
            .chain(policy.send_as.iter().flat_map(|s| [&s.user, &s.pattern]));
        for token in tokens {
            assert!(
                !token.is_empty() && !token.chars().any(|c| c.is_whitespace() || c.is_control()),
                "{token:?}"
            );
        }
        assert_eq!(
            destinations(&policy, "a@example.com"),
            Some(&["we#ird|{x}'$@gmail.com".to_string()][..])
        );
    }
}
