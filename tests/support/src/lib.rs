//! Host side of the QEMU end-to-end tests: the pieces that "play the internet" for a booted mail
//! server, and client probes.
//!
//! - [`Dns`]: the real BIND `named`, authoritative only, for the test domains (MX, A, AAAA, TXT),
//!   optionally accepting RFC 2136 updates signed with a TSIG key (for an ACME DNS-01 test).
//! - [`Inbox`]: a plain receiving SMTP server standing in for Gmail; records every message.
//! - [`probe`]: runs `qemu-tests/probe.py` (banner, EHLO, AUTH before TLS, submission, relay,
//!   served certificate, DKIM verification) and returns its JSON answer.
//!
//! Wiring with a guest under QEMU's user-mode network: the guest reaches the host's loopback as
//! `10.0.2.2`, so start `Dns` on `127.0.0.1:53` and `Inbox` on `127.0.0.1:25`, point the guest's
//! resolver at `10.0.2.2` and publish the stand-in MX host with an A record `10.0.2.2` (no AAAA:
//! slirp's IPv6 path would not reach the host's IPv4 loopback and the MTA would first time out
//! on it). Connections from the guest arrive from `127.0.0.1`.
//!
//! Use from an integration test with `#[path = "../qemu-tests/support/mod.rs"] mod support;`
//! (or the path relative to a test under `qemu-tests/`). Errors are `String`s that say what
//! failed and carry the relevant log, so a test can `unwrap_or_else(|e| panic!("{e}"))`.
#![allow(dead_code)]

pub mod dns;
pub mod inbox;
pub mod probe;

#[allow(unused_imports)] // re-exports for whichever test uses them
pub use dns::{Dns, TsigKey, Zone, zone_text};
#[allow(unused_imports)]
pub use inbox::{Inbox, InboxOptions, Message};
#[allow(unused_imports)]
pub use probe::{probe, probe_with_stdin};

use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};

/// A loopback port free for both UDP and TCP right now (for self-tests that must not take the
/// real 25/53). Another process may still take it before the caller binds it; good enough for
/// tests, which fail clearly if that happens.
pub fn free_port() -> Result<u16, String> {
    for _ in 0..50 {
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
            .map_err(|e| format!("cannot bind a UDP socket on 127.0.0.1: {e}"))?;
        let port = udp
            .local_addr()
            .map_err(|e| format!("local address of a UDP socket: {e}"))?
            .port();
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok() {
            return Ok(port);
        }
    }
    Err("no loopback port free for both UDP and TCP after 50 tries".into())
}

/// `127.0.0.1:port`.
pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// `ssh` into a guest through its forwarded port 22 as `user`, ready to run `command`:
/// non-interactive, host keys not recorded (they change when a seed is applied), and bounded:
/// a session opened while first boot restarts sshd can die without a FIN through QEMU's user
/// network, so dead servers are noticed within 30 s, and `timeout` stops any command after
/// 10 minutes (exit 124). ssh's own failures exit 255: the caller may retry those.
pub fn guest_ssh(
    key: &std::path::Path,
    port: u16,
    user: &str,
    command: &str,
) -> std::process::Command {
    let mut cmd = std::process::Command::new("timeout");
    cmd.args([
        "600",
        "ssh",
        "-q",
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=no",
    ])
    .args([
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "ConnectTimeout=10",
    ])
    .args([
        "-o",
        "ServerAliveInterval=10",
        "-o",
        "ServerAliveCountMax=3",
        "-i",
    ])
    .arg(key)
    .args([
        "-p",
        &port.to_string(),
        &format!("{user}@127.0.0.1"),
        command,
    ]);
    cmd
}
