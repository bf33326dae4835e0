//! Loopback ports for programs that must be told a port number (chasquid, BIND, openssl
//! s_server), reserved so that no other test takes them before the program binds.
//!
//! Asking the kernel for a free port (bind to port 0, read it, close) races: the port goes back
//! to the ephemeral pool at once, where another test's bind or any outgoing connection may get
//! it before our program binds it. A reserved port instead comes from below the kernel's
//! ephemeral range (`net.ipv4.ip_local_port_range`), which the kernel never hands out by
//! itself, and is locked for the holder: an open-file-description lock on byte `port` of one
//! lock file that every test process shares. The lock goes with the [`Port`] (or with the
//! process, however it dies), so a killed run leaves nothing to clean up. A port that some
//! other program already uses is skipped: each candidate must bind on TCP and UDP first.

use std::fs::{File, OpenOptions};
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::Path;

/// The lock file shared by every test process on the machine.
const LOCK_FILE: &str = "/tmp/mailbake-test-ports.lock";
/// How many ports below the ephemeral range the tests use.
const SPAN: u16 = 8000;

/// A loopback port held for one test; free for others again when dropped.
#[derive(Debug)]
pub struct Port {
    number: u16,
    _lock: File,
}

impl Port {
    pub fn number(&self) -> u16 {
        self.number
    }
}

/// The ports the tests reserve from: the `SPAN` ports just below the ephemeral range.
fn range() -> std::ops::Range<u16> {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let end = low.max(1024 + SPAN);
    end - SPAN..end
}

/// Locks byte `port` of the shared lock file through a new open file description; the lock
/// lasts as long as the returned file. None when another holder has it.
fn lock(port: u16) -> Option<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(Path::new(LOCK_FILE))
        .unwrap_or_else(|e| panic!("cannot open {LOCK_FILE}: {e}"));
    // SAFETY: a zeroed flock is a valid value for every field; the ones that matter are set.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as _;
    fl.l_whence = libc::SEEK_SET as _;
    fl.l_start = port.into();
    fl.l_len = 1;
    // SAFETY: fcntl on an fd we own with a valid flock; F_OFD_SETLK does not block.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &fl) };
    (rc == 0).then_some(file)
}

/// Whether nothing on this machine uses `port` on loopback, TCP or UDP, right now.
fn unused(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
        && UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

/// A loopback port that is free for TCP and UDP and that no other test can reserve until the
/// returned [`Port`] is dropped. Searching starts at a place given by the pid, so concurrent
/// test binaries rarely even try the same ports.
pub fn reserve() -> Port {
    let range = range();
    let span = u32::from(range.end - range.start);
    let start = std::process::id() * 7 % span;
    for i in 0..span {
        let port = range.start + ((start + i) % span) as u16;
        if let Some(reserved) = try_reserve(port) {
            return reserved;
        }
    }
    panic!("no port of {range:?} is both unreserved and unused on loopback");
}

/// `port` reserved, if no other holder has it and nothing uses it on loopback.
pub fn try_reserve(port: u16) -> Option<Port> {
    let lock = lock(port)?;
    unused(port).then_some(Port {
        number: port,
        _lock: lock,
    })
}

/// Whether `port` is where [`reserve`] takes ports from: below the kernel's ephemeral range,
/// so never handed out by the kernel to a `bind(0)` or an outgoing connection.
pub fn in_reserved_range(port: u16) -> bool {
    range().contains(&port)
}
