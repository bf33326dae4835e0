//! The addresses of the test network: one bridge in one namespace, documentation ranges only
//! (RFC 5737, RFC 3849), nothing routed anywhere else.
//!
//! ```text
//! netns mbtest-<pid>-<n> (no default route)
//!  ├─ br0: 203.0.113.1/24, 2001:db8:1::1/64, fe80::1/64   the guest's gateways (the "router")
//!  │   └─ tap0 ── guest 203.0.113.10/24, 2001:db8:1::10/64 (the site file's, from its seed)
//!  └─ lo: the internet's hosts, reached through the router
//!       192.0.2.53, 2001:db8:53::53     authoritative DNS (BIND)
//!       198.51.100.25                   MX of gmail4.test (IPv4 only)
//!       2001:db8:25::25                 MX of gmail6.test (IPv6 only)
//!       198.51.100.80, 2001:db8:80::80  the third-party sender sender.test
//!       198.51.100.66, 2001:db8:66::66  a stranger no SPF record lists
//!       198.51.100.67                   a host whose PTR does not confirm forward
//!       198.51.100.14                   the ACME CA (pebble)
//! ```
//! The internet's hosts sit on `lo` so they answer whether or not a guest is plugged in; the
//! kernel delivers what the guest sends to the router for them locally (no forwarding).

/// The guest's IPv4 address and prefix, as the site file gives it.
pub const GUEST4: &str = "203.0.113.10";
pub const GUEST4_PREFIX: u8 = 24;
/// The guest's IPv4 gateway: the bridge.
pub const ROUTER4: &str = "203.0.113.1";
/// The guest's static IPv6 address in its /64.
pub const GUEST6: &str = "2001:db8:1::10";
/// The bridge's address in the guest's /64 (the route back to it).
pub const ROUTER6: &str = "2001:db8:1::1";
/// The guest's IPv6 gateway, link-local as at Contabo: the bridge answers on it.
pub const ROUTER6_LINK_LOCAL: &str = "fe80::1";

pub const DNS4: &str = "192.0.2.53";
pub const DNS6: &str = "2001:db8:53::53";
pub const MX4: &str = "198.51.100.25";
pub const MX6: &str = "2001:db8:25::25";
pub const SENDER4: &str = "198.51.100.80";
pub const SENDER6: &str = "2001:db8:80::80";
pub const STRANGER4: &str = "198.51.100.66";
pub const STRANGER6: &str = "2001:db8:66::66";
pub const LIAR4: &str = "198.51.100.67";
pub const ACME4: &str = "198.51.100.14";

/// Every address of the internet's hosts (on the namespace's `lo`).
pub const INTERNET: [&str; 10] = [
    DNS4, DNS6, MX4, MX6, SENDER4, SENDER6, STRANGER4, STRANGER6, LIAR4, ACME4,
];

/// The Gmail stand-in reached over IPv4 only, and the one reached over IPv6 only.
pub const GMAIL4: &str = "gmail4.test";
pub const GMAIL6: &str = "gmail6.test";
/// The receiver's host names (MX targets, PTR names, its greeting).
pub const MX4_NAME: &str = "mx.gmail4.test";
pub const MX6_NAME: &str = "mx.gmail6.test";
/// The third-party sender's domain and its host.
pub const SENDER_DOMAIN: &str = "sender.test";
pub const SENDER_NAME: &str = "mta.sender.test";
