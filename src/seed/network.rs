//! `network-config`: what the host's netplan v2 document says, for
//! `cloud-init/network-config.j2` (which has the shape and the reasons for it).

use crate::site::{Host, Ipv4Assignment};
use crate::template::context::{NetworkContext, RouteContext};

/// The netplan id of the uplink (a label only; the match decides which device it is).
pub const INTERFACE_ID: &str = "uplink";

/// Where apply-seed installs the host's uplink for systemd-networkd (`cloud-init/networkd.j2`).
/// "05-" sorts before netplan's `10-netplan-<id>.network`, and networkd applies only the first
/// file that matches an interface: see docs/seed.md.
pub const NETWORKD_FILE: &str = "/etc/systemd/network/05-mailbake-uplink.network";

/// Where apply-seed installs what the host's addresses must be (`cloud-init/host.conf.j2`),
/// for the image's network-ready and boot-report.
pub const HOST_CONF: &str = "/etc/mailbake/host.conf";

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
    let (ipv4_prefix, ipv4_gateway) = match &host.ipv4.assignment {
        Ipv4Assignment::Dhcp => (None, None),
        Ipv4Assignment::Static { network, gateway } => (
            Some(network.prefix_len().to_string()),
            Some(gateway.to_string()),
        ),
    };
    NetworkContext {
        interface: INTERFACE_ID,
        dhcp4,
        ipv6: host.ipv6.is_some(),
        addresses,
        routes,
        nameservers: host.nameservers.iter().map(ToString::to_string).collect(),
        ipv4_address: host.ipv4.address.to_string(),
        ipv4_prefix,
        ipv4_gateway,
        ipv6_address: host.ipv6.as_ref().map(|v6| v6.address.addr().to_string()),
        ipv6_prefix: host
            .ipv6
            .as_ref()
            .map(|v6| v6.address.prefix_len().to_string()),
        ipv6_gateway: host.ipv6.as_ref().map(|v6| v6.gateway.to_string()),
    }
}
