//! Children that cannot outlive the test that started them.
//!
//! A test killed by SIGKILL, an abort or a hung-test watchdog runs no `Drop`: without this, a
//! daemon it started (chasquid, Postfix, rspamd, pebble, BIND, dnsmasq, journald) keeps its
//! ports and files and breaks the next run. [`dies_with_test`] asks the kernel to SIGKILL the
//! child when its parent goes (`PR_SET_PDEATHSIG`); the setting survives `exec`, so it holds
//! through wrappers that exec their program in the same process (`ip netns exec`, `nsenter`
//! and `unshare` without `--fork`, `sh -c 'exec …'`).
//!
//! Two limits, and what covers them:
//! - the signal fires when the *thread* that spawned the child ends, so start a daemon on the
//!   test's own thread (not in a short-lived helper thread such as `Netns::enter`'s) and keep
//!   its handle there;
//! - only the direct child gets it. A daemon that forks away from it (Postfix's master under
//!   `postfix start-fg`, rspamd's and Postfix's workers, the auth guard's journalctl) lives
//!   in a network namespace the test owns, named with the test's pid: the next run sweeps
//!   every process in a namespace whose owner is gone (see [`crate::netns::sweep_stale`]).

use std::os::unix::process::CommandExt;
use std::process::Command;

/// Makes the process `cmd` spawns die with SIGKILL when the spawning thread or the whole test
/// process ends, however it ends. Returns `cmd` for chaining.
pub fn dies_with_test(cmd: &mut Command) -> &mut Command {
    // SAFETY: getpid has no preconditions.
    let test = unsafe { libc::getpid() };
    // SAFETY: the closure runs between fork and exec and calls only async-signal-safe
    // functions (prctl, getppid); it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The test died between fork and prctl: the signal will never come, so do not
            // start at all.
            if libc::getppid() != test {
                return Err(std::io::Error::other("the test process is already gone"));
            }
            Ok(())
        })
    }
}
