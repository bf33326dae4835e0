//! The test network: a network namespace per test run with a bridge for the guest and the
//! internet's hosts as local addresses (see [`crate::topology`]). Nothing in it routes out: it
//! has no uplink and no default route, so no packet of a test can leave it.
//!
//! Programs run inside it through [`Netns::command`] (`ip netns exec`, which also gives them
//! the namespace's own `/etc/resolv.conf`, pointing at the test DNS), and in-process sockets
//! through [`Netns::enter`] (a thread that `setns(2)`s into it).
//!
//! Dropping a [`TestNet`] kills every process still in the namespace and deletes it. A run
//! that crashed before that (SIGKILL, abort) leaves `mbtest-<pid>-<n>` behind, perhaps with
//! daemons that forked away from the test (Postfix's master): the next [`TestNet::create`]
//! (and every other namespace the tests create, see [`sweep_stale`]) first removes every
//! test namespace whose owner pid is gone, with everything still running in it.

use std::fs;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::topology::*;

/// Prefix of the test network's namespaces.
const PREFIX: &str = "mbtest-";
/// Prefixes of every namespace the tests create; each name ends in `-<owner pid>-<n>`.
/// (`mbk-` are the security tests' own namespaces.)
pub const PREFIXES: [&str; 2] = [PREFIX, "mbk-"];
/// Where `ip netns` keeps its namespaces and the per-namespace `/etc` overrides.
const NETNS_RUN: &str = "/run/netns";
const NETNS_ETC: &str = "/etc/netns";
/// The bridge inside the namespace (names are per namespace: no clash between runs).
pub const BRIDGE: &str = "br0";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A handle on a namespace to run things in (cheap to clone; does not own it).
#[derive(Debug, Clone)]
pub struct Netns {
    name: String,
}

impl Netns {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `program` to be run inside the namespace (`ip netns exec NAME program`). The program
    /// is exec'd by `ip` itself, so the child's pid is the program's.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Runs `f` on a thread that has entered the namespace: its sockets (and any child it
    /// spawns) live there. Panics in `f` propagate.
    pub fn enter<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        let path = Path::new(NETNS_RUN).join(&self.name);
        std::thread::scope(|s| {
            s.spawn(|| {
                let file = fs::File::open(&path)
                    .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
                // SAFETY: setns on a valid namespace fd; it changes only this thread's network
                // namespace, which ends with the thread.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(
                    rc,
                    0,
                    "setns into {}: {}",
                    path.display(),
                    std::io::Error::last_os_error()
                );
                f()
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }

    /// `ip -n NAME ARGS…`; Err with its output if it fails.
    pub fn ip(&self, args: &[&str]) -> Result<String, String> {
        ip(&[&["-n", &self.name], args].concat())
    }

    /// Every default route of the namespace, IPv4 and IPv6 (none is the point).
    pub fn default_routes(&self) -> Result<Vec<String>, String> {
        let mut routes = Vec::new();
        for family in ["-4", "-6"] {
            let out = self.ip(&[family, "route", "show", "table", "all", "default"])?;
            routes.extend(out.lines().map(str::to_string));
        }
        Ok(routes)
    }

    /// Adds a tap device `name` to the bridge, for a QEMU started in the namespace.
    pub fn add_tap(&self, name: &str) -> Result<(), String> {
        self.ip(&["tuntap", "add", "dev", name, "mode", "tap"])?;
        self.ip(&["link", "set", name, "master", BRIDGE])?;
        self.ip(&["link", "set", name, "up"])?;
        Ok(())
    }
}

/// An owned test network; dropping it tears it down.
#[derive(Debug)]
pub struct TestNet {
    ns: Netns,
}

impl std::ops::Deref for TestNet {
    type Target = Netns;
    fn deref(&self) -> &Netns {
        &self.ns
    }
}

impl TestNet {
    /// Creates the namespace with the bridge, the router's and the internet's addresses and
    /// a `resolv.conf` naming the test DNS. Removes stale namespaces of dead runs first.
    pub fn create() -> Result<TestNet, String> {
        sweep_stale();
        let name = format!(
            "{PREFIX}{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        ip(&["netns", "add", &name])?;
        let net = TestNet {
            ns: Netns { name: name.clone() },
        };
        net.configure()?;
        Ok(net)
    }

    fn configure(&self) -> Result<(), String> {
        let ns = &self.ns;
        ns.ip(&["link", "set", "lo", "up"])?;
        ns.ip(&["link", "add", BRIDGE, "type", "bridge"])?;
        ns.ip(&["link", "set", BRIDGE, "up"])?;
        // nodad: the addresses are usable at once, not after a second of duplicate detection.
        let router4 = format!("{ROUTER4}/{GUEST4_PREFIX}");
        let router6 = format!("{ROUTER6}/64");
        let link_local = format!("{ROUTER6_LINK_LOCAL}/64");
        ns.ip(&["addr", "add", &router4, "dev", BRIDGE])?;
        for a in [&router6, &link_local] {
            ns.ip(&["-6", "addr", "add", a, "dev", BRIDGE, "nodad"])?;
        }
        for a in INTERNET {
            let (host, extra): (String, &[&str]) = if a.contains(':') {
                (format!("{a}/128"), &["nodad"])
            } else {
                (format!("{a}/32"), &[])
            };
            ns.ip(&[&["addr", "add", &host, "dev", "lo"], extra].concat())?;
        }
        // `ip netns exec` bind-mounts this over /etc/resolv.conf for what it runs.
        let etc = etc_dir(&ns.name);
        fs::create_dir_all(&etc).map_err(|e| format!("mkdir {}: {e}", etc.display()))?;
        fs::write(
            etc.join("resolv.conf"),
            format!("nameserver {DNS4}\nnameserver {DNS6}\noptions timeout:2 attempts:2\n"),
        )
        .map_err(|e| format!("write {}/resolv.conf: {e}", etc.display()))?;
        Ok(())
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        remove_namespace(&self.ns.name);
    }
}

fn etc_dir(name: &str) -> PathBuf {
    Path::new(NETNS_ETC).join(name)
}

fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run ip (package iproute2): {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "ip {} failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Processes whose network namespace is `name`.
fn pids(name: &str) -> Vec<i32> {
    ip(&["netns", "pids", name])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Kills what still runs in namespace `name` (TERM, then KILL after 5 s), deletes it and its
/// `/etc/netns` directory.
pub fn remove_namespace(name: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut signal = libc::SIGTERM;
    loop {
        let left = pids(name);
        if left.is_empty() {
            break;
        }
        for pid in &left {
            // SAFETY: kill(2) on processes found in our own test namespace.
            unsafe {
                libc::kill(*pid, signal);
            }
        }
        if Instant::now() > deadline {
            if signal == libc::SIGKILL {
                break;
            }
            signal = libc::SIGKILL;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = ip(&["netns", "del", name]);
    let _ = fs::remove_dir_all(etc_dir(name));
}

/// The owner pid in a test namespace's name (`<prefix>[<tag>-]<pid>-<n>`), if it is one.
pub fn owner_of(name: &str) -> Option<u32> {
    PREFIXES.iter().find(|p| name.starts_with(*p))?;
    let mut parts = name.rsplit('-');
    let n = parts.next()?;
    let pid = parts.next()?;
    n.parse::<u32>().ok()?;
    pid.parse().ok()
}

/// Removes every test namespace (see [`PREFIXES`]) whose owner process is gone, killing what
/// still runs in it: what a killed run left behind. Called before any test namespace is made.
pub fn sweep_stale() {
    let Ok(entries) = fs::read_dir(NETNS_RUN) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = owner_of(&name) else {
            continue;
        };
        if !Path::new("/proc").join(pid.to_string()).exists() {
            eprintln!("netns: removing {name}, left by a test run (pid {pid}) that is gone");
            remove_namespace(&name);
        }
    }
}
