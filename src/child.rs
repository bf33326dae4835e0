//! Child processes that cannot outlive mailbake.
//!
//! QEMU (a test boot) and lego (`mailbake cert`) run for minutes and work in mailbake's
//! private directories. If mailbake is killed, even with `kill -9`, they must go too: a
//! guest left running keeps its ports, and a lego left running keeps writing secrets into a
//! directory nothing will clean up.

use std::io;
use std::os::unix::process::CommandExt as _;
use std::process::Command;

/// Makes the kernel kill the program `cmd` starts when the thread that started it dies. If
/// mailbake died between fork and this call, the child has already been reparented: it exits
/// at once instead of running unowned, and the spawn fails with `too_late` as its error.
pub(crate) fn die_with_parent(cmd: &mut Command, too_late: &'static str) {
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the closure runs in the child between fork and exec and only makes
    // async-signal-safe system calls (prctl, getppid).
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                // The message is the caller's static text: nothing is formatted after fork.
                return Err(io::Error::other(too_late));
            }
            Ok(())
        });
    }
}
