//! QEMU's user network laid out as the site's IPv4 network, so that a guest booted with a
//! host's seed gets that host's address the way the provider gives it.
//!
//! Left at QEMU's defaults, slirp hands out 10.0.2.15 by DHCP; a seed for a host at
//! 203.0.113.10 then never sees its address, and the image's network-ready waits out its
//! whole bound before chasquid starts. Laid out as the site's network, slirp's DHCP gives the
//! host its own address (a site with DHCP IPv4), or slirp sits at the site's gateway (a static
//! one), and the seed is booted unchanged.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::site::{Host, Ipv4Assignment};

/// Where slirp puts itself and the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserNet {
    /// The virtual network (`net=`).
    pub net: Ipv4Net,
    /// slirp's own address, the guest's gateway (`host=`).
    pub gateway: Ipv4Addr,
    /// slirp's resolver (`dns=`).
    pub dns: Ipv4Addr,
    /// The guest's address: the first DHCP lease (`dhcpstart=`) and where forwards go.
    pub guest: Ipv4Addr,
}

impl UserNet {
    /// The layout for `host`, or why none fits slirp.
    pub fn for_host(host: &Host) -> Result<UserNet, String> {
        let guest = host.ipv4.address;
        let (net, gateway) = match &host.ipv4.assignment {
            // The provider's DHCP decides the prefix; a /24 around the address is as good as
            // any for a network with only slirp and the guest on it.
            Ipv4Assignment::Dhcp => {
                let net = Ipv4Net::new(guest, 24).map_err(|e| e.to_string())?.trunc();
                let gateway = usable(net)
                    .find(|a| *a != guest)
                    .ok_or_else(|| format!("{net} has no room for a gateway"))?;
                (net, gateway)
            }
            Ipv4Assignment::Static { network, gateway } => (network.trunc(), *gateway),
        };
        if !usable(net).any(|a| a == guest) {
            return Err(format!(
                "{guest} is not a host address of {net} (the network or broadcast address)"
            ));
        }
        if !usable(net).any(|a| a == gateway) {
            return Err(format!(
                "the gateway {gateway} is not a host address of {net}"
            ));
        }
        let dns = usable(net)
            .find(|a| *a != guest && *a != gateway)
            .ok_or_else(|| {
                format!("{net} has no room for slirp's resolver beside {guest} and {gateway}")
            })?;
        Ok(UserNet {
            net,
            gateway,
            dns,
            guest,
        })
    }

    /// The `-netdev user` options that lay the network out.
    pub fn netdev_options(&self) -> String {
        format!(
            ",net={},host={},dns={},dhcpstart={}",
            self.net, self.gateway, self.dns, self.guest
        )
    }
}

/// The addresses of `net` a machine can have: all but the network and broadcast addresses.
fn usable(net: Ipv4Net) -> impl Iterator<Item = Ipv4Addr> {
    let (network, broadcast) = (net.network(), net.broadcast());
    net.hosts()
        .filter(move |a| *a != network && *a != broadcast)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::site::Ipv4Config;

    fn host(address: &str, assignment: Ipv4Assignment) -> Host {
        let yaml = "fqdn: smtp.example.com\nipv4: 203.0.113.10\n";
        let mut host: Host = serde_norway::from_str(yaml).expect("host");
        host.ipv4 = Ipv4Config {
            address: address.parse().unwrap(),
            assignment,
        };
        host
    }

    #[test]
    fn a_dhcp_host_is_leased_its_own_address_on_a_24() {
        let layout = UserNet::for_host(&host("203.0.113.10", Ipv4Assignment::Dhcp)).unwrap();
        assert_eq!(
            layout.netdev_options(),
            ",net=203.0.113.0/24,host=203.0.113.1,dns=203.0.113.2,dhcpstart=203.0.113.10"
        );
    }

    #[test]
    fn slirp_steps_aside_for_a_host_at_the_first_addresses() {
        let layout = UserNet::for_host(&host("198.51.100.1", Ipv4Assignment::Dhcp)).unwrap();
        assert_eq!(
            (layout.gateway, layout.dns),
            (
                "198.51.100.2".parse().unwrap(),
                "198.51.100.3".parse().unwrap()
            )
        );
    }

    #[test]
    fn a_static_host_has_slirp_at_its_gateway_in_its_own_network() {
        let static_v4 = Ipv4Assignment::Static {
            network: "203.0.113.10/29".parse().unwrap(),
            gateway: "203.0.113.9".parse().unwrap(),
        };
        let layout = UserNet::for_host(&host("203.0.113.10", static_v4)).unwrap();
        assert_eq!(
            layout.netdev_options(),
            ",net=203.0.113.8/29,host=203.0.113.9,dns=203.0.113.11,dhcpstart=203.0.113.10"
        );
    }

    #[test]
    fn layouts_slirp_cannot_take_are_refused_with_the_reason() {
        let err = UserNet::for_host(&host("203.0.113.255", Ipv4Assignment::Dhcp)).unwrap_err();
        assert!(err.contains("broadcast"), "{err}");
        let outside = Ipv4Assignment::Static {
            network: "203.0.113.10/29".parse().unwrap(),
            gateway: "203.0.113.1".parse().unwrap(),
        };
        let err = UserNet::for_host(&host("203.0.113.10", outside)).unwrap_err();
        assert!(err.contains("gateway 203.0.113.1"), "{err}");
    }
}
