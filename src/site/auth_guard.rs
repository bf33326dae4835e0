//! The auth guard's site settings: networks whose failed logins the guard never counts, so
//! that an operator's own address (or a shared NAT in front of it) cannot be banned by
//! someone else's failures, or by the operator's own typos.

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, de};

#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AuthGuard {
    /// Networks (`203.0.113.0/24`, `2001:db8:ffff::/48`) or single addresses, never banned.
    #[serde(default, deserialize_with = "allow_list")]
    pub allow: Vec<IpNet>,
}

/// Enough for an operator's offices and VPNs; a longer list is a sign of a wrong idea (the
/// guard is not a firewall).
pub const MAX_ALLOW: usize = 64;

fn allow_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    let items = Vec::<String>::deserialize(d)?;
    if items.len() > MAX_ALLOW {
        return Err(de::Error::custom(format!(
            "{} networks; the allowlist takes at most {MAX_ALLOW} (write wider networks)",
            items.len()
        )));
    }
    items
        .iter()
        .map(|i| network(i).map_err(de::Error::custom))
        .collect()
}

/// One allowlist entry: a network in CIDR form, or an address (its /32 or /128).
pub fn network(text: &str) -> Result<IpNet, String> {
    let shown = crate::site::bound_message(text);
    let net = match text.parse::<IpNet>() {
        Ok(net) => net,
        Err(_) => match text.parse::<std::net::IpAddr>() {
            Ok(addr) => IpNet::from(addr),
            Err(_) => {
                return Err(format!(
                    "`{shown}` is not an IP network or address; write it like 203.0.113.0/24, 2001:db8:ffff::/48 or 203.0.113.7"
                ));
            }
        },
    };
    if net.prefix_len() == 0 {
        return Err(format!(
            "`{shown}` allows every address, so the guard would never ban; list the operator's own networks"
        ));
    }
    if net.trunc() != net {
        return Err(format!(
            "`{shown}` has bits set past its /{}; write the network {} (or the single address {})",
            net.prefix_len(),
            net.trunc(),
            net.addr()
        ));
    }
    Ok(net)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_and_addresses_are_allowed_in_their_canonical_form() {
        for (text, shown) in [
            ("203.0.113.0/24", "203.0.113.0/24"),
            ("203.0.113.7", "203.0.113.7/32"),
            ("2001:db8:ffff::/48", "2001:db8:ffff::/48"),
            ("2001:DB8::1", "2001:db8::1/128"),
        ] {
            assert_eq!(network(text).map(|n| n.to_string()), Ok(shown.to_string()));
        }
    }

    #[test]
    fn wrong_entries_say_what_to_write_instead() {
        for (text, says) in [
            ("203.0.113.5/24", "write the network 203.0.113.0/24"),
            ("2001:db8::1/64", "write the network 2001:db8::/64"),
            ("0.0.0.0/0", "allows every address"),
            ("::/0", "allows every address"),
            ("203.0.113.0/33", "is not an IP network"),
            ("example.com", "is not an IP network"),
            ("203.0.113.0/24 # office", "is not an IP network"),
            ("\u{1b}[2J", "is not an IP network"),
        ] {
            let err = network(text).expect_err(text);
            assert!(err.contains(says), "{text}: {err}");
            assert!(!err.contains('\u{1b}'), "{err:?}");
        }
    }

    #[test]
    fn the_list_is_bounded() {
        let many: Vec<String> = (0..=MAX_ALLOW).map(|i| format!("10.0.{i}.0/24")).collect();
        let yaml = format!("allow: [{}]", many.join(", "));
        let err = serde_norway::from_str::<AuthGuard>(&yaml).expect_err("too many");
        assert!(err.to_string().contains("at most 64"), "{err}");
        let ok: AuthGuard = serde_norway::from_str("allow: [203.0.113.0/24]").expect("one");
        assert_eq!(ok.allow.len(), 1);
        assert_eq!(
            serde_norway::from_str::<AuthGuard>("{}").expect("none"),
            AuthGuard::default()
        );
    }
}
