//! Host addressing: the IPv4 and IPv6 configuration of a host, validated while parsing.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

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

/// Refuses IPv4 addresses no interface can have. Private ranges are not refused here: a lab
/// site may use them (`allow_private`), which [`non_public`] and the site checks decide.
fn check_interface_ipv4(ip: Ipv4Addr) -> Result<Ipv4Addr, String> {
    let why = if ip.is_unspecified() {
        "the unspecified address"
    } else if ip.octets()[0] == 0 {
        "in 0.0.0.0/8 (\"this network\", RFC 1122)"
    } else if ip.is_loopback() {
        "a loopback address"
    } else if ip.is_multicast() {
        "a multicast address"
    } else if ip.is_broadcast() {
        "the broadcast address"
    } else if ip.is_link_local() {
        "a link-local address"
    } else if ip.octets()[0] >= 240 {
        "in the reserved range 240.0.0.0/4"
    } else {
        return Ok(ip);
    };
    Err(format!(
        "{ip} is {why}; give the address the host is reachable at, e.g. 203.0.113.10"
    ))
}

/// Why `ip` cannot be reached from the internet, for addresses an interface may still have
/// on a private network: RFC 1918, shared address space (CGNAT), benchmarking, IETF protocol
/// assignments, unique local and site-local IPv6. The documentation ranges (192.0.2.0/24,
/// 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32) are not in the list: examples and tests
/// use them as stand-ins for public addresses.
pub fn non_public(ip: IpAddr) -> Option<&'static str> {
    let in_v4 = |ip: Ipv4Addr, net: &str| net.parse::<Ipv4Net>().is_ok_and(|n| n.contains(&ip));
    let in_v6 = |ip: Ipv6Addr, net: &str| net.parse::<Ipv6Net>().is_ok_and(|n| n.contains(&ip));
    match ip {
        IpAddr::V4(v4) if v4.is_private() => Some("a private address (RFC 1918)"),
        IpAddr::V4(v4) if in_v4(v4, "100.64.0.0/10") => {
            Some("in the shared address space of carrier-grade NAT (100.64.0.0/10, RFC 6598)")
        }
        IpAddr::V4(v4) if in_v4(v4, "198.18.0.0/15") => {
            Some("in the benchmarking range 198.18.0.0/15 (RFC 2544)")
        }
        IpAddr::V4(v4) if in_v4(v4, "192.0.0.0/24") => {
            Some("in the IETF protocol assignments 192.0.0.0/24 (RFC 6890)")
        }
        IpAddr::V6(v6) if in_v6(v6, "fc00::/7") => Some("a unique local address (fc00::/7)"),
        IpAddr::V6(v6) if in_v6(v6, "fec0::/10") => {
            Some("a site-local address (fec0::/10, deprecated by RFC 3879)")
        }
        _ => None,
    }
}

/// `Some(v4)` when `ip` is an IPv4 address written in IPv6 form: mapped (`::ffff:a.b.c.d`) or
/// the deprecated compatible form (`::a.b.c.d`).
fn embedded_ipv4(ip: &Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = ip.segments();
    let compatible = s[..6].iter().all(|x| *x == 0) && (s[6] != 0 || s[7] > 1);
    compatible.then(|| {
        let [a, b, c, d] = [s[6] >> 8, s[6] & 0xff, s[7] >> 8, s[7] & 0xff].map(|x| x as u8);
        Ipv4Addr::new(a, b, c, d)
    })
}

fn refuse_embedded_ipv4_net(ip: &Ipv6Addr, role: &str) -> Result<(), String> {
    refuse_embedded_ipv4(ip, role).map_err(|e| e.replacen('`', "", 2))
}

/// Refuses an IPv4 address in IPv6 clothing, naming the IPv4 form.
fn refuse_embedded_ipv4(ip: &Ipv6Addr, role: &str) -> Result<(), String> {
    match embedded_ipv4(ip) {
        Some(v4) => Err(format!(
            "`{ip}` is the IPv4 address {v4} written as IPv6; {role}"
        )),
        None => Ok(()),
    }
}

fn check_ipv6_interface_address(net: Ipv6Net) -> Result<Ipv6Net, String> {
    let ip = net.addr();
    refuse_embedded_ipv4_net(
        &ip,
        "give the host's IPv4 address under `ipv4:` and its global IPv6 address here",
    )?;
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
    refuse_embedded_ipv4(
        &ip,
        "an IPv6 default route needs an IPv6 router, often `fe80::1`",
    )
    .map_err(de::Error::custom)?;
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
            address: check_interface_ipv4(ip)?,
            assignment: Ipv4Assignment::Dhcp,
        });
    };
    let network: Ipv4Net = address.parse().map_err(|_| {
        format!("`{address}` is not an IPv4 address with a prefix; a static address needs one, e.g. `203.0.113.10/24`")
    })?;
    let gateway: Ipv4Addr = gateway
        .parse()
        .map_err(|_| format!("gateway `{gateway}` is not an IPv4 address"))?;
    if network.prefix_len() < 8 {
        return Err(format!(
            "{network}: a /{} prefix is implausible for one host (it would claim {} as on-link); give the prefix the provider gives, e.g. /24",
            network.prefix_len(),
            network.trunc()
        ));
    }
    if gateway == network.addr() {
        return Err(format!(
            "gateway {gateway} is the host's own address; give the router's address"
        ));
    }
    if !network.contains(&gateway) {
        // Some providers give a /32 with an on-link gateway outside it. The network
        // configuration mailbake writes reaches an IPv4 gateway only through the address's
        // prefix, so such a gateway is refused rather than left unreachable.
        return Err(format!(
            "gateway {gateway} is outside {}; mailbake routes IPv4 only through a gateway inside the address's prefix (an on-link gateway outside it, as some providers give with a /32, is not supported): use the prefix that contains the gateway if the provider's network has one, or the bare address for DHCP",
            network.trunc()
        ));
    }
    // In a /31 (RFC 3021) and a /32 every address is a host; below that the first and last
    // addresses of the prefix are the network itself and its broadcast, never a host's.
    if network.prefix_len() < 31 {
        let edge = |ip: Ipv4Addr| {
            if ip == network.network() {
                Some("network")
            } else if ip == network.broadcast() {
                Some("broadcast")
            } else {
                None
            }
        };
        let hosts = format!(
            "{} to {}",
            Ipv4Addr::from(u32::from(network.network()) + 1),
            Ipv4Addr::from(u32::from(network.broadcast()) - 1)
        );
        if let Some(what) = edge(network.addr()) {
            return Err(format!(
                "{} is the {what} address of {}; a host address lies between them ({hosts}), check the address and the prefix length",
                network.addr(),
                network.trunc()
            ));
        }
        if let Some(what) = edge(gateway) {
            return Err(format!(
                "gateway {gateway} is the {what} address of {}; the router has a host address ({hosts})",
                network.trunc()
            ));
        }
    }
    Ok(Ipv4Config {
        address: check_interface_ipv4(network.addr())?,
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
                .contains(
                    "is outside 203.0.113.0/24; mailbake routes IPv4 only through a gateway inside"
                )
        );
        // A /32 with the provider's on-link gateway outside it: refused with the reason.
        let on_link = v4("{address: 203.0.113.10/32, gateway: 203.0.113.1}").unwrap_err();
        assert!(on_link.contains("on-link gateway outside it"), "{on_link}");
        assert!(
            v4("{address: 203.0.113.10/24, gateway: 203.0.113.10}")
                .unwrap_err()
                .contains("the host's own address")
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
