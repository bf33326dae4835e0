//! Network namespaces the tests create: chasquid and its clients run inside, so their only
//! network is the namespace's own (loopback, or veth pairs between two namespaces) and
//! nothing a test does can reach the host's network or resolver. Removed on drop with
//! everything still running in it; a killed run's namespaces (named with its pid) are swept
//! by the next one before it makes its own (`common::netns::sweep_stale`).

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::common;

pub struct Netns {
    pub name: String,
}

impl Netns {
    /// A new namespace with its loopback up; `tag` goes into the name, for `ip netns list`.
    pub fn new(tag: &str) -> Netns {
        common::netns::sweep_stale();
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "mbk-{tag}-{}-{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::SeqCst)
        );
        common::run(Command::new("ip").args(["netns", "add", &name]));
        let netns = Netns { name };
        netns.ip(&["link", "set", "lo", "up"]);
        netns
    }

    /// Runs `ip -n NAME ARGS...` and panics with its output if it fails.
    pub fn ip(&self, args: &[&str]) -> String {
        common::run(Command::new("ip").args(["-n", &self.name]).args(args))
    }

    /// The command prefix that runs a program inside the namespace.
    pub fn wrapper(&self) -> Vec<String> {
        ["ip", "netns", "exec", &self.name]
            .map(String::from)
            .to_vec()
    }

    /// A command that runs `program` inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        common::netns::remove_namespace(&self.name);
    }
}
