//! `network-config`: netplan version 2, as NoCloud hands it to cloud-init, which passes it on
//! to netplan (`/etc/netplan/50-cloud-init.yaml`) and netplan to systemd-networkd.
//!
//! The interface is matched by name glob `e*` (`eth0` on most VPS, `ens3`/`enp0s3` under
//! QEMU and newer kernels) rather than by MAC, which the site does not know and a provider
//! may change when it moves the VM. It is not renamed: `set-name` needs a MAC match to be
//! reliable. A VPS has one ethernet; with several, each would get the host's addresses, so
//! such a host needs a hand-written configuration.

use std::fmt::Write as _;

use super::user_data::q;
use crate::site::{Host, HostName, Ipv4Assignment};

/// The netplan id of the uplink (a label only; the match decides which device it is).
pub const INTERFACE_ID: &str = "uplink";

pub fn render(name: &HostName, host: &Host) -> String {
    let mut y = String::new();
    let _ = writeln!(
        y,
        "# mailbake network-config (netplan v2) of host {name} ({})",
        host.fqdn
    );
    y.push_str("version: 2\n");
    y.push_str("ethernets:\n");
    let _ = writeln!(y, "  {INTERFACE_ID}:");
    y.push_str("    match:\n");
    y.push_str("      name: \"e*\"\n");

    let mut addresses = Vec::new();
    let mut routes: Vec<(String, String, bool)> = Vec::new();
    match &host.ipv4.assignment {
        Ipv4Assignment::Dhcp => {
            y.push_str("    dhcp4: true\n");
            if !host.nameservers.is_empty() {
                // The site named its resolvers: use only those, not the ones DHCP offers too.
                y.push_str("    dhcp4-overrides:\n      use-dns: false\n");
            }
        }
        Ipv4Assignment::Static { network, gateway } => {
            y.push_str("    dhcp4: false\n");
            addresses.push(network.to_string());
            routes.push(("0.0.0.0/0".into(), gateway.to_string(), false));
        }
    }
    if let Some(v6) = &host.ipv6 {
        // Static only: router advertisements could add a second, SLAAC address that has no
        // PTR record, and mail sent from it would fail reverse-DNS checks.
        y.push_str("    dhcp6: false\n");
        y.push_str("    accept-ra: false\n");
        addresses.push(v6.address.to_string());
        routes.push((
            "::/0".into(),
            v6.gateway.to_string(),
            v6.gateway_needs_on_link(),
        ));
    }
    if !addresses.is_empty() {
        y.push_str("    addresses:\n");
        for a in &addresses {
            let _ = writeln!(y, "      - {}", q(a));
        }
    }
    if !routes.is_empty() {
        y.push_str("    routes:\n");
        for (to, via, on_link) in &routes {
            let _ = writeln!(y, "      - to: {}", q(to));
            let _ = writeln!(y, "        via: {}", q(via));
            if *on_link {
                // The gateway (typically fe80::1) is not inside the /64: without on-link the
                // kernel has no route to reach it and refuses the default route.
                y.push_str("        on-link: true\n");
            }
        }
    }
    if !host.nameservers.is_empty() {
        y.push_str("    nameservers:\n");
        y.push_str("      addresses:\n");
        for ns in &host.nameservers {
            let _ = writeln!(y, "        - {}", q(&ns.to_string()));
        }
    }
    y
}
