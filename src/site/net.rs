//! Host addressing: the IPv4 and IPv6 configuration of a host, validated while parsing.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{Ipv4Net, Ipv6Net};
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// A host's IPv4 side. The address is the public one: it goes into A and PTR records and into
/// SPF. Without a gateway the interface is configured by DHCP (what most VPS providers hand
/// out); with one, statically.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ipv4Config {
    pub address: Ipv4Addr,
    pub assignment: Ipv4Assignment,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ipv4Assignment {
    Dhcp,
    Static { network: Ipv4Net, gateway: Ipv4Addr },
}

/// A host's static IPv6 address (with its prefix) and default gateway: the walkthrough's netplan
/// step. The gateway is often link-local (`fe80::1`) or outside the prefix, in which case the
/// route must be marked on-link.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ipv6Config {
    #[serde(deserialize_with = "ipv6_interface_address")]
    pub address: Ipv6Net,
    #[serde(deserialize_with = "ipv6_gateway")]
    pub gateway: Ipv6Addr,
}

impl Ipv6Config {
    /// True when the gateway cannot be reached through the address's own prefix, so the
    /// default route needs `on-link: true`.
    pub fn gateway_needs_on_link(&self) -> bool {
        is_ipv6_link_local(&self.gateway) || !self.address.contains(&self.gateway)
    }
}

fn is_ipv6_link_local(ip: &Ipv6Addr) -> bool {
    (ip.segments()[0] & 0xffc0) == 0xfe80
}

fn check_public_ipv4(ip: Ipv4Addr) -> Result<Ipv4Addr, String> {
    let why = if ip.is_unspecified() {
        "the unspecified address"
    } else if ip.is_loopback() {
        "a loopback address"
    } else if ip.is_multicast() {
        "a multicast address"
    } else if ip.is_broadcast() {
        "the broadcast address"
    } else if ip.is_link_local() {
        "a link-local address"
    } else {
        return Ok(ip);
    };
    Err(format!(
        "{ip} is {why}; give the address the host is reachable at, e.g. 203.0.113.10"
    ))
}

fn check_ipv6_interface_address(net: Ipv6Net) -> Result<Ipv6Net, String> {
    let ip = net.addr();
    let why = if ip.is_unspecified() {
        Some("the unspecified address")
    } else if ip.is_loopback() {
        Some("the loopback address")
    } else if ip.is_multicast() {
        Some("a multicast address")
    } else if is_ipv6_link_local(&ip) {
        Some("link-local; give the global address the provider assigned")
    } else {
        None
    };
    if let Some(why) = why {
        return Err(format!("{net} is {why}"));
    }
    if net.prefix_len() < 8 {
        return Err(format!(
            "{net}: a /{} prefix is implausible for one host; VPS providers hand out a /64",
            net.prefix_len()
        ));
    }
    if net.prefix_len() < 127 && ip == net.network() {
        return Err(format!(
            "{net} is the subnet's network (router anycast) address; pick a host address inside it, e.g. {}1/{}",
            net.network(),
            net.prefix_len()
        ));
    }
    Ok(net)
}

fn parse_ipv6_net(text: &str) -> Result<Ipv6Net, String> {
    if !text.contains('/') {
        return Err(format!(
            "`{text}` has no prefix length; write the address with its prefix, e.g. `{text}/64`"
        ));
    }
    text.parse::<Ipv6Net>().map_err(|_| {
        format!("`{text}` is not an IPv6 address with a prefix; expected e.g. `2001:db8:1::10/64`")
    })
}

fn ipv6_interface_address<'de, D: Deserializer<'de>>(d: D) -> Result<Ipv6Net, D::Error> {
    let text = String::deserialize(d)?;
    parse_ipv6_net(&text)
        .and_then(check_ipv6_interface_address)
        .map_err(de::Error::custom)
}

fn ipv6_gateway<'de, D: Deserializer<'de>>(d: D) -> Result<Ipv6Addr, D::Error> {
    let text = String::deserialize(d)?;
    let ip: Ipv6Addr = text.parse().map_err(|_| {
        de::Error::custom(format!(
            "`{text}` is not an IPv6 address; the gateway is a plain address such as `fe80::1`"
        ))
    })?;
    if ip.is_unspecified() || ip.is_multicast() || ip.is_loopback() {
        return Err(de::Error::custom(format!(
            "{ip} cannot be a gateway; use the router address the provider gives (often `fe80::1`)"
        )));
    }
    Ok(ip)
}

impl<'de> Deserialize<'de> for Ipv4Config {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Ipv4Visitor)
    }
}

/// The long form of `ipv4:`; the short form is the bare address.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Ipv4Map {
    address: String,
    #[serde(default)]
    gateway: Option<String>,
}

struct Ipv4Visitor;

impl<'de> Visitor<'de> for Ipv4Visitor {
    type Value = Ipv4Config;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(
            "an IPv4 address (DHCP) or a map { address: A.B.C.D/LEN, gateway: A.B.C.D } (static)",
        )
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Ipv4Config, E> {
        ipv4_from_parts(text, None).map_err(E::custom)
    }

    fn visit_map<M: MapAccess<'de>>(self, map: M) -> Result<Ipv4Config, M::Error> {
        let long = Ipv4Map::deserialize(de::value::MapAccessDeserializer::new(map))?;
        ipv4_from_parts(&long.address, long.gateway.as_deref()).map_err(de::Error::custom)
    }
}

fn ipv4_from_parts(address: &str, gateway: Option<&str>) -> Result<Ipv4Config, String> {
    let Some(gateway) = gateway else {
        if address.contains('/') {
            return Err(format!(
                "`{address}` has a prefix but no gateway; give `gateway:` for a static address, or the bare address for DHCP"
            ));
        }
        let ip: Ipv4Addr = address.parse().map_err(|_| {
            format!("`{address}` is not an IPv4 address; expected e.g. `203.0.113.10`")
        })?;
        return Ok(Ipv4Config {
            address: check_public_ipv4(ip)?,
            assignment: Ipv4Assignment::Dhcp,
        });
    };
    let network: Ipv4Net = address.parse().map_err(|_| {
        format!("`{address}` is not an IPv4 address with a prefix; a static address needs one, e.g. `203.0.113.10/24`")
    })?;
    let gateway: Ipv4Addr = gateway
        .parse()
        .map_err(|_| format!("gateway `{gateway}` is not an IPv4 address"))?;
    if !network.contains(&gateway) || gateway == network.addr() {
        return Err(format!(
            "gateway {gateway} is not another address inside {network}; check the prefix length"
        ));
    }
    Ok(Ipv4Config {
        address: check_public_ipv4(network.addr())?,
        assignment: Ipv4Assignment::Static { network, gateway },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(yaml: &str) -> Result<Ipv4Config, String> {
        serde_norway::from_str(yaml).map_err(|e| e.to_string())
    }

    fn v6(yaml: &str) -> Result<Ipv6Config, String> {
        serde_norway::from_str(yaml).map_err(|e| e.to_string())
    }

    #[test]
    fn a_bare_ipv4_address_means_dhcp() {
        let c = v4("203.0.113.10").unwrap();
        assert_eq!(c.assignment, Ipv4Assignment::Dhcp);
    }

    #[test]
    fn a_gateway_makes_ipv4_static() {
        let c = v4("{address: 203.0.113.10/24, gateway: 203.0.113.1}").unwrap();
        assert!(matches!(c.assignment, Ipv4Assignment::Static { .. }));
        assert!(
            v4("{address: 203.0.113.10/24, gateway: 198.51.100.1}")
                .unwrap_err()
                .contains("not another address inside")
        );
        assert!(
            v4("203.0.113.300")
                .unwrap_err()
                .contains("not an IPv4 address")
        );
        assert!(v4("127.0.0.1").unwrap_err().contains("loopback"));
    }

    #[test]
    fn ipv6_needs_a_prefix_and_a_host_address() {
        assert!(
            v6("{address: '2001:db8:1::10', gateway: 'fe80::1'}")
                .unwrap_err()
                .contains("no prefix length")
        );
        assert!(
            v6("{address: '2001:db8:1::/64', gateway: 'fe80::1'}")
                .unwrap_err()
                .contains("network")
        );
        assert!(
            v6("{address: 'fe80::5/64', gateway: 'fe80::1'}")
                .unwrap_err()
                .contains("link-local")
        );
    }

    #[test]
    fn on_link_is_needed_for_link_local_or_outside_gateways() {
        let inside = v6("{address: '2001:db8:1::10/64', gateway: '2001:db8:1::1'}").unwrap();
        assert!(!inside.gateway_needs_on_link());
        let ll = v6("{address: '2001:db8:1::10/64', gateway: 'fe80::1'}").unwrap();
        assert!(ll.gateway_needs_on_link());
        let outside = v6("{address: '2001:db8:1::10/64', gateway: '2001:db8:2::1'}").unwrap();
        assert!(outside.gateway_needs_on_link());
    }
}
