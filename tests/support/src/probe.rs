//! Runs `qemu-tests/probe.py` (client probes a user would make: banner, EHLO, submission, relay,
//! certificate, DKIM signing and verification) and returns its one JSON object. See the header
//! of probe.py for the subcommands and their answers. [`probe_in`] runs it inside the test
//! network, where the guest and the internet's hosts are; [`verifier`] runs the second
//! verifier, `qemu-tests/verifier.py`, there.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::netns::Netns;

/// The probe script.
pub fn script() -> PathBuf {
    crate::repo().join("qemu-tests/probe.py")
}

/// Debian's interpreter, which has python3-dkim (a pyenv or venv `python3` on PATH may not).
pub const PYTHON: &str = "/usr/bin/python3";

/// `probe.py ARGS…`; the parsed JSON on success, otherwise the exit status, stdout and stderr.
pub fn probe(args: &[&str]) -> Result<serde_json::Value, String> {
    probe_with_stdin(args, &[])
}

/// `probe.py ARGS…` with `stdin` piped in (for `dkim-verify`).
pub fn probe_with_stdin(args: &[&str], stdin: &[u8]) -> Result<serde_json::Value, String> {
    let mut cmd = Command::new(PYTHON);
    cmd.arg(script());
    json_of(cmd, "probe.py", args, stdin)
}

/// `probe.py ARGS…` inside the test network.
pub fn probe_in(net: &Netns, args: &[&str]) -> Result<serde_json::Value, String> {
    probe_in_with_stdin(net, args, &[])
}

/// `probe.py ARGS…` inside the test network, with `stdin` piped in.
pub fn probe_in_with_stdin(
    net: &Netns,
    args: &[&str],
    stdin: &[u8],
) -> Result<serde_json::Value, String> {
    let mut cmd = net.command(PYTHON);
    cmd.arg(script());
    json_of(cmd, "probe.py", args, stdin)
}

/// `verifier.py ARGS…` inside the test network (its DNS answers there).
pub fn verifier(net: &Netns, args: &[&str], stdin: &[u8]) -> Result<serde_json::Value, String> {
    let mut cmd = net.command(PYTHON);
    cmd.arg(crate::repo().join("qemu-tests/verifier.py"));
    json_of(cmd, "verifier.py", args, stdin)
}

/// Runs `cmd ARGS…` with `stdin`; its one JSON object on success, otherwise the exit status,
/// stdout and stderr.
fn json_of(
    mut cmd: Command,
    name: &str,
    args: &[&str],
    stdin: &[u8],
) -> Result<serde_json::Value, String> {
    let shown = format!("{name} {}", args.join(" "));
    let mut child = cmd
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {PYTHON} {shown}: {e}"))?;
    if let Some(mut i) = child.stdin.take() {
        // A probe that exits early closes its stdin; its exit status tells why.
        let _ = i.write_all(stdin);
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{shown}: {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!(
            "{shown} failed ({}):\nstdout: {stdout}\nstderr: {stderr}",
            out.status
        ));
    }
    serde_json::from_str(stdout.trim()).map_err(|e| {
        format!("{shown}: stdout is not one JSON object ({e}):\n{stdout}\nstderr: {stderr}")
    })
}
