//! mailbake's test harness: one library every integration test uses (`tests/*.rs` and the boot
//! tests in `qemu-tests/*.rs`), a dev-dependency of the `mailbake` package.
//!
//! - [`consumers`]: the real programs generated files are checked with (the shipped chasquid
//!   and chasquid-util, `mailbake build`), and the example site.
//! - [`pebble`]: the ACME test server in the test network, counting what it issues;
//!   [`acme`]: a site whose certificates come from it by DNS-01 (RFC 2136 to the test DNS).
//! - [`certs`]: throw-away certificates and a small CA.
//! - [`netns`]: the test network, a "mini internet" in a network namespace of its own with the
//!   site's real addresses and no route out; [`topology`] names its addresses.
//! - [`dns`]: BIND as the authoritative server of the test zones (on loopback or in the netns).
//! - [`receiver`]: the independent receiver standing in for Gmail: Postfix with rspamd as its
//!   milter, judging SPF, DKIM, DMARC and ARC; Postfix verifies the client's reverse DNS.
//! - [`internet`]: the zones of that world, the receiver and the third-party sender together,
//!   and [`internet::Verdicts`], both verifiers' verdicts on one delivered message.
//! - [`inbox`]: a small recording SMTP sink (for tests that need no verdicts).
//! - [`burst`]: durability counts: a burst of uniquely named submissions, and the tally of
//!   what arrived (accepted, delivered, lost, duplicated).
//! - [`probe`]: `qemu-tests/probe.py`, client probes as a user would make them, and the
//!   second verifier `qemu-tests/verifier.py` (dkimpy, pyspf, dnspython).
//! - [`tls_scan`]: testssl.sh from inside the test network, its JSON report read back.
//! - [`site`]: a boot test's site directory (SSH key, secrets store) and its host on the
//!   test network.
//! - [`guest`]: a booted image on the test network: boot, wait, SSH, evidence on failure.
//! - [`process`]: children that die with the test that started them; [`ports`]: loopback
//!   ports reserved for one test, which no other test takes; [`watchdog`]: a bound on every
//!   test, which ends a hung test binary with a summary.
//! - [`phases`]: a long boot test as named phases whose failure says which phase broke.
//!
//! # Adding a phase to a boot test
//! A boot test boots one guest per topology and runs its checks as phases over one shared
//! state (see `qemu-tests/mail_flow.rs`). To add a check:
//! 1. write `fn my_check(t: &MailFlow)` (or `&mut` when it changes the state) next to the
//!    others, using `t.guest.ssh(..)` (a command in the guest as the operator),
//!    `t.probe(..)` / `probe_in(&t.net, ..)` (a client probe from inside the test network),
//!    `t.net.command(..)` (any program there, e.g. `mailbake verify --resolver 192.0.2.53`),
//!    `t.internet.delivered(rcpt, subject)` and `internet::Verdicts::of(..)` (what the
//!    receiver stored and both verifiers' verdicts on it), `t.internet.dns.replace_zone(..)`
//!    (serve a changed zone: a fault, then the original again), `t.internet.receiver.pause()`
//!    and `resume()` (the receiver unreachable, then back), [`burst::Burst`] and
//!    [`burst::Tally`] (many messages, counted at the receiver), `t.guest.power_cut()` (for a
//!    guest booted with `Guest::boot_with_cache(.., DiskCache::Writeback)`);
//! 2. call it from the test body as `phases.run("my check", || my_check(&t));` where it
//!    belongs in the order (phases that reboot the guest or change its seed come last).
//!
//! A failing phase prints `phase "my check" FAILED` with the phases that passed before it, the
//! guest's serial console and journal, then the assertion's own message; every phase's wall
//! time is printed as it ends.
//!
//! Errors of the helpers are `String`s that say what failed and carry the relevant log, so a
//! test can write `ok(result)` (or `unwrap_or_else(|e| panic!("{e}"))`).

pub mod acme;
pub mod burst;
pub mod certs;
pub mod consumers;
pub mod dns;
pub mod guest;
pub mod inbox;
pub mod internet;
pub mod netns;
pub mod pebble;
pub mod phases;
pub mod ports;
pub mod probe;
pub mod process;
pub mod receiver;
pub mod signing;
pub mod site;
pub mod tls_scan;
pub mod topology;
pub mod watchdog;

pub use certs::{fingerprint, self_signed_certificate, throwaway_certificate};
pub use consumers::{
    BuiltOverlay, Chasquid, ChasquidOptions, EXAMPLE_PASSWORD, built_overlay, chasquid,
    chasquid_bin_dir, chasquid_util, copy_of_layers, example_secrets, example_site, mailbake_build,
    test_tool, unpack_overlay,
};
pub use dns::{Dns, TsigKey, Zone, zone_text};
pub use guest::{Guest, GuestOptions};
pub use inbox::{Inbox, InboxOptions, Message};
pub use netns::TestNet;
pub use phases::Phases;
pub use probe::{probe, probe_in, probe_in_with_stdin, probe_with_stdin, verifier};
pub use receiver::{Delivered, Receiver, ReceiverOptions};

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Command, Output};

/// The repository root (where `packages.lock`, `layers/` and `examples/` live).
pub fn repo() -> PathBuf {
    // This crate lives in `tests/support/` of the repository.
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// The `mailbake` binary cargo built for the running integration test: tests run from
/// `target/<profile>/deps/`, the binary is `target/<profile>/mailbake`.
pub fn mailbake_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary knows its path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test binary lives in target/<profile>/deps");
    let bin = dir.join("mailbake");
    assert!(
        bin.is_file(),
        "{} is missing: run the tests with `cargo test` so cargo builds the binary",
        bin.display()
    );
    bin
}

/// `mailbake ARGS…`; panics with its output if it fails, returns its stdout.
pub fn mailbake(args: &[&str]) -> String {
    run(Command::new(mailbake_bin()).args(args))
}

/// Unwraps a helper's result, panicking with its message (which carries the evidence).
pub fn ok<T>(result: Result<T, String>) -> T {
    result.unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `cmd` and returns its output whatever its status; panics only if it cannot start.
pub fn output(cmd: &mut Command) -> Output {
    let shown = format!("{cmd:?}");
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"))
}

/// Runs `cmd`, panics with its status and output if it fails, returns its stdout.
pub fn run(cmd: &mut Command) -> String {
    let shown = format!("{cmd:?}");
    let out = output(cmd);
    assert!(
        out.status.success(),
        "{shown} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether the tests run as root (the boot tests need it: network namespaces, mke2fs of a
/// root-owned tree).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A loopback port reserved for the caller until the returned guard drops (see [`ports`]).
pub use ports::reserve as reserve_port;

/// `127.0.0.1:port`.
pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// `mailbake ARGS…` run in `dir` with `stdin` written to it; returns its output whatever its
/// exit status (the callers check refusals as well as successes).
pub fn mailbake_in(dir: &std::path::Path, args: &[&str], stdin: &str) -> Output {
    output_with_input(
        Command::new(mailbake_bin()).args(args).current_dir(dir),
        stdin.as_bytes(),
    )
}

/// Runs `cmd` with `input` on its standard input and returns its output whatever its exit
/// status. Programs that stop reading early (a filter that has seen enough, a command that
/// reads nothing) may close the pipe before all of it is written; their output and status
/// are what the tests check, so a broken pipe here is not an error.
pub fn output_with_input(cmd: &mut Command, input: &[u8]) -> Output {
    use std::io::Write as _;
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?} does not start: {e}"));
    let _ = child.stdin.take().expect("stdin").write_all(input);
    child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("{cmd:?} does not finish: {e}"))
}

/// A command's standard output then standard error, as text (for checks and messages).
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The names in `dir`, sorted (what a command left there).
pub fn names(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}
