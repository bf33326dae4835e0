//! The network boundary of the probes: every TCP connection goes through a [`Dialer`], so the
//! live path dials exactly the addresses the site and DNS give, and tests can route those
//! addresses to servers of their own on loopback while the protocol above stays real.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};

use tokio::net::TcpStream;

pub trait Dialer: Send + Sync + 'static {
    fn connect(&self, addr: SocketAddr) -> impl Future<Output = io::Result<TcpStream>> + Send;
}

/// True when a connection failed because this machine cannot reach that address family at
/// all (typically a laptop without IPv6), as opposed to the server refusing or not answering.
pub fn no_route(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::NetworkUnreachable | io::ErrorKind::AddrNotAvailable
    ) || matches!(
        error.raw_os_error(),
        Some(libc::ENETUNREACH | libc::EADDRNOTAVAIL)
    )
}

/// `203.0.113.10:25` or `[2001:db8::1]:25`.
pub fn endpoint(ip: IpAddr, port: u16) -> String {
    SocketAddr::new(ip, port).to_string()
}
