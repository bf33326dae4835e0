//! The image's security promises (docs/security.md), each checked against the real consumer:
//! the shipped scripts under `sh`, the pinned chasquid on loopback or in a network namespace,
//! openssl as the TLS client, systemd-analyze for the units.

use testkit as common;

mod acme_quoting;
mod auth_guard;
mod auth_guard_rules;
mod fixture;
mod hook_functions;
mod netns;
mod post_data_hook;
mod shellcheck;
mod tls;
mod units;
