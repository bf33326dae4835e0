//! Login and group names the system already uses, which `ssh.user` must not take.
//!
//! cloud-init does not re-create a user that exists, but still applies the operator's sudo
//! rule and SSH keys to it: naming a service account (`messagebus`, `www-data`) would give
//! that account passwordless root. And the user's group is created under the same name, so a
//! name like `shadow` or `disk` would make the operator a member of a privileged group.
//!
//! The list is what the Ubuntu 22.04 cloud image (the base mailbake builds on) has in
//! /etc/passwd and /etc/group, what the packages of the overlay and of later Ubuntu releases
//! add, and the prefixes Debian reserves for system accounts.

/// Users and groups of the base image and the overlay's packages.
const TAKEN: &[&str] = &[
    // Debian's base-passwd: fixed users and groups.
    "root",
    "daemon",
    "bin",
    "sys",
    "sync",
    "games",
    "man",
    "lp",
    "mail",
    "news",
    "uucp",
    "proxy",
    "www-data",
    "backup",
    "list",
    "irc",
    "gnats",
    "nobody",
    "nogroup",
    "adm",
    "tty",
    "disk",
    "kmem",
    "dialout",
    "fax",
    "voice",
    "cdrom",
    "floppy",
    "tape",
    "sudo",
    "audio",
    "dip",
    "operator",
    "src",
    "shadow",
    "utmp",
    "video",
    "sasl",
    "plugdev",
    "staff",
    "users",
    // Ubuntu 22.04 cloud image: system users and groups its packages create.
    "messagebus",
    "syslog",
    "uuidd",
    "tcpdump",
    "tss",
    "landscape",
    "pollinate",
    "sshd",
    "usbmux",
    "lxd",
    "fwupd-refresh",
    "dnsmasq",
    "netdev",
    "input",
    "sgx",
    "kvm",
    "render",
    "crontab",
    "lpadmin",
    "ssl-cert",
    "rdma",
    "polkitd",
    "dhcpcd",
    // The overlay's own service accounts.
    "chasquid",
];

/// Prefixes of names reserved for the system: systemd's dynamic and service users
/// (`systemd-network`, `systemd-resolve`, `systemd-timesync`, `systemd-journal`, ...) and
/// Debian's convention for system users (`_apt`, `_ssh`, `_chrony`, ...).
const RESERVED_PREFIXES: &[&str] = &["systemd-", "_"];

/// Why `name` cannot be the operator's login, or `None`.
pub fn system_name_problem(name: &str) -> Option<String> {
    if TAKEN.contains(&name) {
        return Some(format!(
            "`{name}` is a user or group the system already has; cloud-init would hand that account (or group) the operator's sudo rule and SSH keys"
        ));
    }
    RESERVED_PREFIXES
        .iter()
        .find(|p| name.starts_with(*p))
        .map(|p| format!("`{name}` starts with `{p}`, which is reserved for system accounts"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_accounts_groups_and_reserved_prefixes_are_refused() {
        for name in [
            "systemd-anything",
            "_x",
            "chasquid",
            "disk",
            "lpadmin",
            "nogroup",
        ] {
            assert!(system_name_problem(name).is_some(), "{name} passed");
        }
        for name in ["alice", "ops", "deploy", "mailadmin"] {
            assert_eq!(system_name_problem(name), None, "{name}");
        }
    }
}
