//! Who may send as whom, and how many copies one message may become: the site settings the
//! image's post-data hook enforces (see docs/security.md).
//!
//! By default an authenticated user may use as envelope sender and `From:` only their own
//! address (with a `+suffix`) and the addresses whose aliases deliver to them. A domain's
//! `send_as` widens that per user, for the walkthrough's Gmail "send mail as" case:
//!
//! ```yaml
//! domains:
//!   example.com:
//!     users: [i]
//!     send_as: { i: ["*@example.com"] }
//! ```

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer};

use super::model::Site;
use super::names::{DomainName, LocalPart};
use super::validate::Finding;

/// One `send_as` entry: an address of the site (`sales@example.com`) or all of a site
/// domain's addresses (`*@example.com`). The domain is normalized like every domain of the
/// site; whether it is one of the site's is checked with the whole site ([`check`]).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SendAs {
    /// `None` for `*`, every address of the domain.
    pub local: Option<LocalPart>,
    pub domain: DomainName,
}

impl fmt::Display for SendAs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.local {
            Some(local) => write!(f, "{local}@{}", self.domain),
            None => write!(f, "*@{}", self.domain),
        }
    }
}

impl<'de> Deserialize<'de> for SendAs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let bad = |why: String| {
            de::Error::custom(format!(
                "send_as `{text}`: {why}; write an address of the site (`sales@example.com`) or `*@example.com` for all of a domain's addresses"
            ))
        };
        let Some((local, domain)) = text.rsplit_once('@') else {
            return Err(bad("there is no `@`".into()));
        };
        let domain = DomainName::try_from(domain).map_err(bad)?;
        let local = match local {
            "*" => None,
            l => Some(LocalPart::try_from(l).map_err(bad)?),
        };
        Ok(SendAs { local, domain })
    }
}

/// Limits on what one message may turn into.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// The most copies of one message that may end up at one final destination (a mailbox
    /// of the site, a forwarding address, a pipe). Above it the message is refused (554):
    /// 40 random recipients at a catch-all would otherwise become 40 copies at one Gmail
    /// address, and the mailbox provider blames this server for the spam.
    #[serde(
        default = "default_copies_per_destination",
        deserialize_with = "copies_per_destination"
    )]
    pub copies_per_destination: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            copies_per_destination: default_copies_per_destination(),
        }
    }
}

/// Ten: a message to a few addresses of one person (info@, sales@, i@) still passes, a
/// dictionary run over a catch-all does not.
fn default_copies_per_destination() -> u32 {
    10
}

/// chasquid takes at most 100 recipients per message, so a larger limit would mean "none".
const MAX_COPIES_PER_DESTINATION: u64 = 100;

fn copies_per_destination<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let n = u64::deserialize(d)?;
    if (1..=MAX_COPIES_PER_DESTINATION).contains(&n) {
        Ok(n as u32)
    } else {
        Err(de::Error::custom(format!(
            "copies_per_destination {n} is out of range; use 1 to {MAX_COPIES_PER_DESTINATION} (chasquid takes at most 100 recipients per message)"
        )))
    }
}

/// Cross-checks of `send_as` against the rest of the site.
pub(super) fn check(site: &Site, out: &mut Vec<Finding>) {
    for (domain, d) in site.domains.iter() {
        for (user, entries) in d.send_as.iter() {
            let path = ["domains", domain.as_str(), "send_as", user.as_str()];
            if !d.users.contains(user) {
                out.push(Finding {
                    path: path.iter().map(|s| s.to_string()).collect(),
                    at_key: true,
                    message: format!(
                        "send_as names `{user}`, which is not a user of {domain}; only users can log in and send"
                    ),
                    help: Some(format!("add `{user}` to the users of {domain}, or fix the spelling")),
                });
            }
            for entry in entries {
                if !site.domains.contains_key(&entry.domain) {
                    out.push(Finding {
                        path: path.iter().map(|s| s.to_string()).collect(),
                        at_key: false,
                        message: format!(
                            "send_as `{entry}` is not in a domain of this site; this server signs only its own domains, so mail from {} would fail SPF and DMARC at the receiver",
                            entry.domain
                        ),
                        help: Some("list addresses of the site's domains only".into()),
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_as_takes_an_address_or_a_whole_domain() {
        let a: SendAs = serde_norway::from_str("sales@Example.COM").unwrap();
        assert_eq!(a.to_string(), "sales@example.com".to_string());
        let all: SendAs = serde_norway::from_str("'*@example.com'").unwrap();
        assert_eq!(all.local, None);
        for bad in [
            "example.com",
            "Sales@example.com",
            "a*@example.com",
            "*@*",
            "a b@example.com",
            "x@localhost",
        ] {
            let err = serde_norway::from_str::<SendAs>(&format!("'{bad}'"))
                .expect_err("refused")
                .to_string();
            assert!(err.contains("send_as"), "{bad}: {err}");
        }
    }

    fn problems(domains: &str) -> String {
        let text = format!(
            "site: t\ndomains:\n{domains}\nhosts:\n  mx1: {{fqdn: smtp.example.com, ipv4: 203.0.113.10}}\n"
        );
        match crate::site::parse(std::path::Path::new("site.yaml"), &text) {
            Ok(_) => String::new(),
            Err(e) => format!("{e:?}"),
        }
    }

    #[test]
    fn send_as_is_for_users_of_the_domain_and_addresses_of_the_site() {
        assert_eq!(
            problems(
                "  example.com:\n    users: [i]\n    send_as: {i: ['*@example.com', 'a@example.org']}\n  example.org: {}\n"
            ),
            ""
        );
        let not_a_user = problems(
            "  example.com:\n    users: [i]\n    aliases: {postmaster: i}\n    send_as: {postmaster: ['*@example.com']}\n",
        );
        assert!(
            not_a_user.contains("send_as names `postmaster`, which is not a user of example.com")
                && not_a_user.contains("line: 6"),
            "{not_a_user}"
        );
        let outside =
            problems("  example.com:\n    users: [i]\n    send_as: {i: ['*@gmail.com']}\n");
        assert!(
            outside.contains("send_as `*@gmail.com` is not in a domain of this site"),
            "{outside}"
        );
    }

    #[test]
    fn copies_per_destination_must_be_a_real_limit() {
        let l: Limits = serde_norway::from_str("{}").unwrap();
        assert_eq!(l.copies_per_destination, 10);
        let l: Limits = serde_norway::from_str("{copies_per_destination: 3}").unwrap();
        assert_eq!(l.copies_per_destination, 3);
        for bad in ["0", "101", "-1"] {
            assert!(
                serde_norway::from_str::<Limits>(&format!("{{copies_per_destination: {bad}}}"))
                    .is_err(),
                "{bad} accepted"
            );
        }
    }
}
