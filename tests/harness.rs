//! The test harness's own guarantees (tests/support): a killed test leaves no daemon and no
//! namespace behind, a reserved port is nobody else's, and a hung test ends its binary with a
//! summary instead of hanging CI.
//!
//! Each check needs a test process that is killed or hangs: the test runs this binary again
//! (`--exact` its own name) with `MBK_HARNESS_ROLE` set, and the copy plays that part.

use std::fs;
use std::io::Read as _;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use testkit::{netns, ports, process};

const ROLE: &str = "MBK_HARNESS_ROLE";
/// Where a copy writes what the test needs to know (a pid, a port).
const REPORT: &str = "MBK_HARNESS_REPORT";

fn role() -> Option<String> {
    std::env::var(ROLE).ok()
}

/// This binary, running only test `name`, as `role`, reporting into `report`.
fn copy(name: &str, role: &str, report: &Path) -> Command {
    let mut cmd = Command::new(std::env::current_exe().expect("own path"));
    cmd.args(["--exact", name, "--nocapture", "--test-threads", "1"])
        .env(ROLE, role)
        .env(REPORT, report)
        .stdin(Stdio::null());
    cmd
}

/// Waits (bounded) until `report` holds a line, and returns it.
fn wait_report(report: &Path, child: &mut Child) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(text) = fs::read_to_string(report)
            && text.ends_with('\n')
        {
            return text.trim().to_string();
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the copy exited ({status}) before it reported");
        }
        assert!(Instant::now() < deadline, "the copy never reported");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn write_report(text: &str) {
    let path = std::env::var(REPORT).expect("report path");
    fs::write(path, format!("{text}\n")).expect("write the report");
}

/// Whether `pid` still runs (a zombie does not: it is dead, only not yet reaped).
fn running(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Waits up to `limit` for `pid` to stop running; whether it did.
fn ends_within(pid: i32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while running(pid) {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// Waits for `child` with a bound, killing it if it does not end; its output.
fn finish(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("reap");
            panic!(
                "the copy did not end within {limit:?}; its stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut out = Output {
        status: child.wait().expect("status"),
        stdout: Vec::new(),
        stderr: Vec::new(),
    };
    if let Some(mut s) = child.stdout.take() {
        let _ = s.read_to_end(&mut out.stdout);
    }
    if let Some(mut s) = child.stderr.take() {
        let _ = s.read_to_end(&mut out.stderr);
    }
    out
}

/// The copy as `role` under a watchdog bound of `bound_secs`, to its end (killed after two
/// minutes: the watchdog's own failure to end it).
fn run_bounded(name: &str, role: &str, report: &Path, bound_secs: u64) -> Output {
    let child = copy(name, role, report)
        .env(testkit::watchdog::BOUND_ENV, bound_secs.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the copy runs");
    finish(child, Duration::from_secs(120))
}

#[test]
fn a_daemon_started_through_the_helper_dies_when_its_test_process_is_killed() {
    const NAME: &str = "a_daemon_started_through_the_helper_dies_when_its_test_process_is_killed";
    if role().as_deref() == Some("parent") {
        let mut daemon = process::dies_with_test(Command::new("sleep").arg("600"))
            .spawn()
            .expect("sleep runs");
        write_report(&daemon.id().to_string());
        // Killed here by the test; the daemon must not outlive this process.
        let _ = daemon.wait();
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let report = dir.path().join("pid");
    let mut parent = copy(NAME, "parent", &report)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the copy runs");
    let daemon: i32 = wait_report(&report, &mut parent).parse().expect("a pid");
    assert!(running(daemon), "the daemon {daemon} did not start");
    parent.kill().expect("SIGKILL the test process");
    parent.wait().expect("reap it");
    assert!(
        ends_within(daemon, Duration::from_secs(30)),
        "the daemon {daemon} still runs after its test process was killed"
    );
}

#[test]
fn a_stale_test_namespace_is_swept_with_what_runs_in_it() {
    assert!(testkit::is_root(), "network namespaces need root");
    // A pid that is certainly gone: a child that exited and was reaped.
    let mut gone = Command::new("true").spawn().expect("true runs");
    gone.wait().expect("reap");
    let owner = gone.id();
    let name = format!("mbk-stale-{owner}-0");
    testkit::run(Command::new("ip").args(["netns", "add", &name]));
    // What a killed run leaves running there: a daemon that outlived its test.
    let mut leftover = Command::new("ip")
        .args(["netns", "exec", &name, "sleep", "600"])
        .spawn()
        .expect("sleep runs in the namespace");
    let pid = leftover.id() as i32;
    let listed = || {
        fs::read_dir("/run/netns")
            .map(|d| d.flatten().any(|e| e.file_name().to_string_lossy() == name))
            .unwrap_or(false)
    };
    assert!(listed(), "{name} was not created");
    assert_eq!(netns::owner_of(&name), Some(owner));

    netns::sweep_stale();

    let swept = !listed();
    let ended = ends_within(pid, Duration::from_secs(30));
    if !swept {
        netns::remove_namespace(&name);
    }
    let _ = leftover.kill();
    let _ = leftover.wait();
    assert!(swept, "the sweep left {name}, whose owner {owner} is gone");
    assert!(ended, "the sweep left pid {pid} running in {name}");
}

#[test]
fn a_namespace_of_a_living_test_is_not_swept() {
    assert!(testkit::is_root(), "network namespaces need root");
    let name = format!("mbk-alive-{}-0", std::process::id());
    testkit::run(Command::new("ip").args(["netns", "add", &name]));
    netns::sweep_stale();
    let kept = Path::new("/run/netns").join(&name).exists();
    netns::remove_namespace(&name);
    assert!(
        kept,
        "the sweep removed {name}, whose owner (this test) runs"
    );
}

#[test]
fn a_reserved_port_is_nobody_elses_until_its_holder_ends() {
    const NAME: &str = "a_reserved_port_is_nobody_elses_until_its_holder_ends";
    if role().as_deref() == Some("holder") {
        let port = ports::reserve();
        write_report(&port.number().to_string());
        std::thread::sleep(Duration::from_secs(600));
        return;
    }
    // In this process: never the same port twice, never one the kernel hands out itself.
    let held: Vec<ports::Port> = (0..20).map(|_| ports::reserve()).collect();
    let mut numbers: Vec<u16> = held.iter().map(ports::Port::number).collect();
    numbers.sort_unstable();
    numbers.dedup();
    assert_eq!(
        numbers.len(),
        held.len(),
        "a port was reserved twice: {numbers:?}"
    );
    for n in &numbers {
        assert!(
            ports::in_reserved_range(*n),
            "{n} is in the ephemeral range"
        );
    }

    // Across processes: another test process's port is not reservable while it runs, and is
    // again once it was killed (the lock goes with the process: no leftover).
    let dir = tempfile::tempdir().expect("temp dir");
    let report = dir.path().join("port");
    let mut holder = copy(NAME, "holder", &report)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the copy runs");
    let port: u16 = wait_report(&report, &mut holder).parse().expect("a port");
    let while_held = ports::try_reserve(port).is_some();
    holder.kill().expect("SIGKILL the holder");
    holder.wait().expect("reap it");
    let after = ports::try_reserve(port).is_some();
    assert!(
        !while_held,
        "port {port} was reservable while another process held it"
    );
    assert!(
        after,
        "port {port} stayed reserved after its holder was killed"
    );
}

#[test]
fn a_hung_test_ends_its_binary_with_a_summary_of_what_it_waited_for() {
    const NAME: &str = "a_hung_test_ends_its_binary_with_a_summary_of_what_it_waited_for";
    if role().as_deref() == Some("hang") {
        testkit::watchdog::note("a reply that never comes");
        let mut child = process::dies_with_test(Command::new("sleep").arg("600"))
            .spawn()
            .expect("sleep runs");
        write_report(&child.id().to_string());
        let _ = child.wait();
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let report = dir.path().join("pid");
    let out = run_bounded(NAME, "hang", &report, 3);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let shown = format!("{}\n{stderr}", out.status);
    assert_eq!(out.status.code(), Some(101), "{shown}");
    for expected in [
        &format!("watchdog: test `{NAME}` has run for more than its bound of 3 s"),
        "waiting for: a reply that never comes",
        "sleep 600",
    ] {
        assert!(stderr.contains(expected), "no `{expected}` in:\n{shown}");
    }
    let sleeper: i32 = fs::read_to_string(&report)
        .expect("the copy reported")
        .trim()
        .parse()
        .expect("a pid");
    assert!(
        ends_within(sleeper, Duration::from_secs(30)),
        "the hung test's child {sleeper} outlived the binary"
    );
}

#[test]
fn a_test_that_finishes_within_its_bound_passes_untouched() {
    const NAME: &str = "a_test_that_finishes_within_its_bound_passes_untouched";
    if role().as_deref() == Some("quick") {
        // Long enough for the watchdog to see this thread several times.
        std::thread::sleep(Duration::from_secs(3));
        write_report("done");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let report = dir.path().join("done");
    let out = run_bounded(NAME, "quick", &report, 60);
    let all = format!(
        "{}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{all}");
    assert!(all.contains("test result: ok. 1 passed"), "{all}");
    assert!(!all.contains("watchdog"), "{all}");
}
