//! mailbake: bake a reproducible chasquid mail server image, per-host cloud-init seeds and
//! DNS records from one site file.
//!
//! # The stages, in order
//!
//! ```text
//!            fetch ─┐     ┌─ secrets
//!                   ▼     ▼
//! site ──► overlay | seed | dns ──► image ──► boot
//! ```
//!
//! The overlay, the seeds and the DNS records are made side by side from the site (that is
//! `mailbake build`); the image is the overlay on a base system, and a boot attaches one host's
//! seed to it.
//!
//! - [`site`]: the site file, parsed and validated into the [`site::Site`] model and its
//!   typed names. Every stage reads it; nothing else describes the site.
//! - Inputs beside the site: [`secrets`] (the store of password hashes, DKIM keys and
//!   credentials, opened by one rule, [`secrets::open_for_site`]) and [`fetch`] (the pinned
//!   packages, verified by digest).
//! - [`overlay`] (what every host shares) and [`seed`] (what each host gets) render the data
//!   in `layers/` and `cloud-init/` with one engine and one typed context, [`template`]. That
//!   data and `packages.lock` are built into the binary ([`shipped`]).
//! - [`dns`]: the records the site must publish, DKIM from the store's keys.
//! - [`build`] runs site → overlay | seed | dns, checking every input first, and writes them
//!   with [`output`]; [`epoch`] is the one timestamp of every artifact.
//! - [`image`]: a pinned base root tarball ⊕ the overlay → a bootable disk; [`boot`] runs it
//!   in QEMU with a host's seed; [`terraform`] runs it on a provider, one instance per host.
//! - [`cert`] obtains each host's ACME certificate where mailbake runs and keeps it, with the
//!   account, in the store; the seeds carry it, so a reinstall re-issues nothing.
//! - [`drain`] empties a deployed host's outbound queue over SSH before a reinstall.
//! - [`verify`] checks a deployed site from outside, the way receivers judge it (DNS, PTR,
//!   SPF evaluated, DKIM against the store, TLS, SMTP policy, DNSBLs); [`send_test`] submits
//!   one test message.
//!
//! - Around the stages: [`init`] writes a starting site file, [`workdir`] makes the private
//!   staging directories every stage writes through, [`cert`] obtains certificates on the
//!   operator's machine and [`drain`] empties a host's queue before it is replaced.
//!
//! A stage shares with the others only the loaded site, the opened store and the template
//! context; it never reaches into another stage's internals.

// The unit tests get the test harness's watchdog too: a bound on every test
// (tests/support/src/watchdog.rs). Linked only into the unit-test binary.
#[cfg(test)]
use testkit as _;

pub mod boot;
pub mod build;
pub mod cert;
mod child;
pub mod dns;
pub mod drain;
pub mod epoch;
pub mod fetch;
pub mod image;
pub mod init;
pub mod output;
pub mod outside;
pub mod overlay;
pub mod secrets;
pub mod seed;
pub mod send_test;
pub mod shipped;
pub mod site;
pub mod template;
pub mod terraform;
pub mod verify;
pub mod workdir;
