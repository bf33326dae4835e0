//! A bound on every test: a test that runs longer than its bound ends its test binary with a
//! summary (which test, what it was waiting for, which programs it was waiting on) instead of
//! hanging until CI's own limit ends the whole run without saying where.
//!
//! Every test binary that links this crate gets the watchdog: a constructor starts one thread
//! before `main`, so no test has to ask for it. libtest runs each test on a thread named after
//! the test; the kernel keeps the first 15 bytes of that name (`/proc/self/task/*/comm`). The
//! watchdog lists the binary's tests once (the binary itself, with `--list`), then every
//! second looks for threads whose name is a test's, and notes when it first saw each. A test
//! thread older than its bound is reported on stderr, and the binary exits with status 101
//! (libtest's own for failed tests): `cargo test --no-fail-fast` goes on with the next binary.
//! A test that finishes within its bound is never touched: its thread is gone before the bound.
//!
//! Bounds: [`BOOT_BOUND`] for the binaries that boot guests or build images, [`BOUND`] for the
//! others; `MAILBAKE_TEST_BOUND_SECS` replaces both (the watchdog's own test uses it).
//! A test can say what it waits for with [`note`] (`Phases` notes each phase), which the
//! summary shows.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The bound of a test in a binary that boots no guest.
pub const BOUND: Duration = Duration::from_secs(20 * 60);
/// The bound of a test in a binary that boots guests, builds images or a release binary.
pub const BOOT_BOUND: Duration = Duration::from_secs(60 * 60);
/// Those binaries (cargo's test target names).
const BOOT_BINARIES: [&str; 10] = [
    "qemu_mail_flow",
    "qemu_acme",
    "qemu_cert",
    "qemu_provider",
    "qemu_receiver",
    "image",
    "boot_cli",
    "ci",
    "fetch",
    "seed",
];
/// Replaces every bound, in whole seconds.
pub const BOUND_ENV: &str = "MAILBAKE_TEST_BOUND_SECS";
/// Set for the copy of the binary that only lists the tests.
const LISTING_ENV: &str = "MAILBAKE_WATCHDOG_LISTING";
/// The kernel's limit on a thread name, without the NUL.
const COMM_LEN: usize = 15;

/// What each test thread (by kernel thread id) said it waits for.
static NOTES: Mutex<Vec<(i32, String)>> = Mutex::new(Vec::new());

/// Records what the calling test is waiting for now, for the summary if it hangs.
pub fn note(what: &str) {
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    let mut notes = NOTES.lock().unwrap_or_else(|p| p.into_inner());
    notes.retain(|(t, _)| *t != tid);
    notes.push((tid, what.to_string()));
}

#[used]
#[unsafe(link_section = ".init_array")]
static START: extern "C" fn() = start;

extern "C" fn start() {
    if std::env::var_os(LISTING_ENV).is_some() {
        return;
    }
    // std's own argument list may not be set up yet in a constructor; the kernel's is.
    let cmdline = std::fs::read("/proc/self/cmdline").unwrap_or_default();
    if cmdline.split(|b| *b == 0).any(|a| a == b"--list") {
        return;
    }
    let _ = std::thread::Builder::new()
        .name("mbk-watchdog".into())
        .spawn(watch);
}

/// The cargo target name of this binary (`security` for `target/debug/deps/security-0a1b…`).
fn binary_name() -> String {
    let exe = std::env::current_exe().unwrap_or_default();
    let stem = exe
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match stem.rsplit_once('-') {
        Some((name, hash)) if hash.chars().all(|c| c.is_ascii_hexdigit()) => name.to_string(),
        _ => stem,
    }
}

fn bound() -> Duration {
    if let Some(secs) = std::env::var(BOUND_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        return Duration::from_secs(secs);
    }
    if BOOT_BINARIES.contains(&binary_name().as_str()) {
        BOOT_BOUND
    } else {
        BOUND
    }
}

/// The binary's tests, by the name the kernel keeps for their threads.
fn tests_by_comm() -> HashMap<Vec<u8>, Vec<String>> {
    let mut by_comm: HashMap<Vec<u8>, Vec<String>> = HashMap::new();
    let Ok(exe) = std::env::current_exe() else {
        return by_comm;
    };
    let Ok(out) = std::process::Command::new(exe)
        .args(["--list", "--format", "terse"])
        .env(LISTING_ENV, "1")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
    else {
        return by_comm;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some(name) = line.strip_suffix(": test") {
            let comm = name.as_bytes()[..name.len().min(COMM_LEN)].to_vec();
            by_comm.entry(comm).or_default().push(name.to_string());
        }
    }
    by_comm
}

fn read(path: &str) -> Option<Vec<u8>> {
    std::fs::read(path).ok()
}

/// A thread's start time (clock ticks since boot, field 22 of its stat): with the thread id,
/// it names one thread even if the id is reused.
fn start_time(tid: i32) -> Option<u64> {
    let stat = String::from_utf8(read(&format!("/proc/self/task/{tid}/stat"))?).ok()?;
    // The name (field 2) is in parentheses and may hold spaces: count from after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn watch() {
    let bound = bound();
    let tests = tests_by_comm();
    if tests.is_empty() {
        return;
    }
    let mut first_seen: HashMap<(i32, u64), Instant> = HashMap::new();
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
            continue;
        };
        let now = Instant::now();
        let mut alive = Vec::new();
        for task in tasks.flatten() {
            let Some(tid) = task
                .file_name()
                .to_str()
                .and_then(|t| t.parse::<i32>().ok())
            else {
                continue;
            };
            let Some(comm) = read(&format!("/proc/self/task/{tid}/comm")) else {
                continue;
            };
            let comm = comm.strip_suffix(b"\n").unwrap_or(&comm).to_vec();
            let (Some(names), Some(started)) = (tests.get(&comm), start_time(tid)) else {
                continue;
            };
            let seen = *first_seen.entry((tid, started)).or_insert(now);
            alive.push((tid, started));
            if now.duration_since(seen) > bound {
                report(tid, names, bound, &tests);
                // SAFETY: _exit ends the process without running anything more; another
                // thread may hold stdout's lock, which exit() would wait for.
                unsafe { libc::_exit(101) };
            }
        }
        first_seen.retain(|key, _| alive.contains(key));
    }
}

/// Bytes from a program or the kernel, made safe to print on a terminal.
fn shown(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .trim_end()
        .chars()
        .flat_map(char::escape_debug)
        .collect()
}

fn report(tid: i32, names: &[String], bound: Duration, tests: &HashMap<Vec<u8>, Vec<String>>) {
    let mut text = String::new();
    let name = if names.len() == 1 {
        format!("`{}`", names[0])
    } else {
        format!("one of `{}`", names.join("`, `"))
    };
    let _ = writeln!(
        text,
        "\nwatchdog: test {name} has run for more than its bound of {} s; ending the test \
         binary `{}` (a bound for every test: tests/support/src/watchdog.rs; {BOUND_ENV} \
         changes it)",
        bound.as_secs(),
        binary_name()
    );
    let noted = NOTES
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .find(|(t, _)| *t == tid)
        .map(|(_, what)| what.clone());
    let _ = writeln!(
        text,
        "watchdog:   waiting for: {}",
        noted
            .as_deref()
            .map_or("(the test noted nothing)".into(), |w| shown(w.as_bytes()))
    );
    let wchan = read(&format!("/proc/self/task/{tid}/wchan")).unwrap_or_default();
    let _ = writeln!(
        text,
        "watchdog:   its thread sleeps in the kernel at: {}",
        shown(&wchan)
    );
    let children = read(&format!("/proc/self/task/{tid}/children")).unwrap_or_default();
    let children: Vec<String> = String::from_utf8_lossy(&children)
        .split_whitespace()
        .map(|pid| {
            let cmd = read(&format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let words: Vec<String> = cmd
                .split(|b| *b == 0)
                .filter(|w| !w.is_empty())
                .map(shown)
                .collect();
            format!("pid {pid}: {}", words.join(" "))
        })
        .collect();
    if children.is_empty() {
        let _ = writeln!(text, "watchdog:   programs it started that still run: none");
    } else {
        let _ = writeln!(text, "watchdog:   programs it started that still run:");
        for c in children {
            let _ = writeln!(text, "watchdog:     {c}");
        }
    }
    let others: Vec<String> = std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|t| {
            let other: i32 = t.file_name().to_str()?.parse().ok()?;
            let comm = read(&format!("/proc/self/task/{other}/comm"))?;
            let comm = comm.strip_suffix(b"\n").unwrap_or(&comm).to_vec();
            (other != tid).then(|| tests.get(&comm)).flatten()
        })
        .map(|names| names.join(" or "))
        .collect();
    let _ = writeln!(
        text,
        "watchdog:   other tests still running (ended with it): {}",
        if others.is_empty() {
            "none".into()
        } else {
            others.join(", ")
        }
    );
    // One write straight to stderr: libtest's capture is for test threads, and this must
    // reach the log even if the process is wedged elsewhere.
    // SAFETY: write(2) from a valid buffer to fd 2.
    unsafe {
        libc::write(2, text.as_ptr().cast(), text.len());
    }
}
