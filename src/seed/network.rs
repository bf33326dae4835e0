//! `network-config`: what the host's netplan v2 document says, for
//! `cloud-init/network-config.j2` (which has the shape and the reasons for it).

use crate::site::{Host, Ipv4Assignment};
use crate::template::context::{NetworkContext, RouteContext};

/// The netplan id of the uplink (a label only; the match decides which device it is).
pub const INTERFACE_ID: &str = "uplink";

/// The network facts of `host`: IPv4 by DHCP or static, the static IPv6 /64, resolvers.
pub fn context(host: &Host) -> NetworkContext {
    let mut addresses = Vec::new();
    let mut routes = Vec::new();
    let dhcp4 = match &host.ipv4.assignment {
        Ipv4Assignment::Dhcp => true,
        Ipv4Assignment::Static { network, gateway } => {
            addresses.push(network.to_string());
            routes.push(RouteContext {
                to: "0.0.0.0/0".into(),
                via: gateway.to_string(),
                on_link: false,
            });
            false
        }
    };
    if let Some(v6) = &host.ipv6 {
        addresses.push(v6.address.to_string());
        routes.push(RouteContext {
            to: "::/0".into(),
            via: v6.gateway.to_string(),
            on_link: v6.gateway_needs_on_link(),
        });
    }
    NetworkContext {
        interface: INTERFACE_ID,
        dhcp4,
        ipv6: host.ipv6.is_some(),
        addresses,
        routes,
        nameservers: host.nameservers.iter().map(ToString::to_string).collect(),
    }
}
