//! `mailbake drain`: empty a host's outbound queue before its disk is wiped by a reinstall.
//!
//! Over the operator's SSH (the seed's operator account, passwordless sudo), the host-side
//! script [`REMOTE_SCRIPT`] closes port 25 (and with `--all` 587 and 465 too): senders then
//! get a refused connection and retry later, as SMTP intends. It restarts chasquid, which is
//! the one way to make chasquid try every queued message at once (it has no flush command;
//! a start loads the whole queue and sends it), and waits until the queue is empty or the
//! timeout passes. What is left comes back as a tar of chasquid's own queue item files
//! ([`queue`]), which mailbake prints (recipients, last error) and with `--export` keeps, so
//! they can be put into the next host's queue.
//!
//! Every word sent to the remote shell goes through [`shell::quote`].

pub mod cli;
pub mod queue;
pub mod shell;

/// The host's side of a drain; see the file itself for what it does and why.
pub const REMOTE_SCRIPT: &str = include_str!("remote.sh");

/// Why a drain did not end with an empty (or exported) queue.
#[derive(Debug, thiserror::Error)]
pub enum DrainError {
    #[error(transparent)]
    UnknownHost(#[from] crate::site::UnknownHost),

    #[error(
        "--connect {value}: not an IP address or host name\n  fix: give the address SSH should connect to, e.g. 203.0.113.10"
    )]
    BadConnect { value: String },

    #[error(
        "cannot reach {target} over SSH as {user} (ssh exited with {status})\n  fix: check that `ssh {user}@{target}` works (key: --ssh-key or ssh-agent; host key in known_hosts, or --ssh-option StrictHostKeyChecking=accept-new)"
    )]
    Ssh {
        target: String,
        user: String,
        status: String,
    },

    #[error(
        "the drain on {target} stopped with {status} (its reason is above, from the host)\n  fix: follow the host's message; `--connect` must name the host given by --host"
    )]
    Remote { target: String, status: String },

    #[error(
        "no answer from {target} within {seconds} s; ssh was stopped\n  fix: check the connection, or give a shorter --timeout"
    )]
    Stalled { target: String, seconds: u64 },

    #[error(transparent)]
    Unquotable(#[from] shell::Unquotable),

    #[error("the host's list of remaining queue items cannot be read: {0}")]
    BadListing(String),

    #[error(
        "{count} message(s) are still queued on {fqdn} (listed above)\n  fix: run `mailbake drain` again once their receivers answer, or add --export DIR to take them to the next host (docs/upgrade.md)"
    )]
    NotEmpty { count: usize, fqdn: String },

    #[error("cannot run ssh: {0}\n  fix: install an OpenSSH client")]
    NoSsh(std::io::Error),

    #[error(transparent)]
    Output(#[from] crate::output::OutputError),
}
