//! A long test as named phases. Each phase's wall time is printed when it ends.
//!
//! Two kinds of phase:
//! - [`Phases::run`]: later phases need what it makes (a network, a booted guest). When it
//!   fails, the test stops there: its name, the phases before it and the evidence of whatever
//!   the test watches (the guest's serial console and journal) are printed, then the failure
//!   propagates so the test fails with the assertion's own message.
//! - [`Phases::check`]: nothing later depends on it. When it fails, the same report is
//!   printed, the failure is recorded and the test goes on, so one broken check does not hide
//!   the others; [`Phases::summary`] then fails the test naming every failed check.

use std::panic::{self, AssertUnwindSafe};
use std::time::{Duration, Instant};

use crate::guest::EvidenceSource;

pub struct Phases {
    test: String,
    started: Instant,
    passed: Vec<(String, Duration)>,
    /// Checks that failed, with the first line of their failure.
    failed: Vec<(String, String)>,
    watched: Vec<EvidenceSource>,
}

impl Phases {
    pub fn new(test: &str) -> Phases {
        Phases {
            test: test.to_string(),
            started: Instant::now(),
            passed: Vec::new(),
            failed: Vec::new(),
            watched: Vec::new(),
        }
    }

    /// Show this guest's evidence when a later phase fails (replaces an earlier guest's).
    pub fn watch(&mut self, source: EvidenceSource) {
        self.watched = vec![source];
    }

    /// Runs phase `name`, which later phases depend on: a failure ends the test.
    pub fn run<T>(&mut self, name: &str, f: impl FnOnce() -> T) -> T {
        match self.attempt(name, f) {
            Ok(v) => v,
            Err(payload) => panic::resume_unwind(payload),
        }
    }

    /// Runs phase `name`, which no later phase depends on: a failure is reported and
    /// recorded, and the test goes on to the next phase.
    pub fn check(&mut self, name: &str, f: impl FnOnce()) {
        if let Err(payload) = self.attempt(name, f) {
            self.failed.push((name.to_string(), first_line(&payload)));
        }
    }

    fn attempt<T>(
        &mut self,
        name: &str,
        f: impl FnOnce() -> T,
    ) -> Result<T, Box<dyn std::any::Any + Send>> {
        eprintln!("{}: phase \"{name}\" ...", self.test);
        crate::watchdog::note(&format!("phase \"{name}\" of {}", self.test));
        let t = Instant::now();
        let result = panic::catch_unwind(AssertUnwindSafe(f));
        match &result {
            Ok(_) => {
                let took = t.elapsed();
                eprintln!(
                    "{}: phase \"{name}\" passed in {:.1} s",
                    self.test,
                    took.as_secs_f64()
                );
                self.passed.push((name.to_string(), took));
            }
            Err(_) => {
                eprintln!(
                    "\n{}: phase \"{name}\" FAILED after {:.1} s (passed before it: {}; failed before it: {})",
                    self.test,
                    t.elapsed().as_secs_f64(),
                    self.names_passed(),
                    self.names_failed(),
                );
                for w in &self.watched {
                    eprintln!("{}", w.collect());
                }
            }
        }
        result
    }

    fn names_passed(&self) -> String {
        list(self.passed.iter().map(|(n, _)| n.as_str()))
    }

    fn names_failed(&self) -> String {
        list(self.failed.iter().map(|(n, _)| n.as_str()))
    }

    /// Prints every phase's time and the total; fails the test if any check failed, naming
    /// each with the first line of its failure.
    pub fn summary(&self) {
        let verdict = if self.failed.is_empty() {
            format!("all {} phases passed", self.passed.len())
        } else {
            format!(
                "{} phases passed, {} failed",
                self.passed.len(),
                self.failed.len()
            )
        };
        eprintln!(
            "{}: {verdict} in {:.0} s",
            self.test,
            self.started.elapsed().as_secs_f64()
        );
        for (name, took) in &self.passed {
            eprintln!("  {:>7.1} s  {name}", took.as_secs_f64());
        }
        if !self.failed.is_empty() {
            let lines: Vec<String> = self
                .failed
                .iter()
                .map(|(name, why)| format!("  FAILED  {name}: {why}"))
                .collect();
            panic!(
                "{}: {} check(s) failed (each failure is printed in full above):\n{}",
                self.test,
                self.failed.len(),
                lines.join("\n")
            );
        }
    }
}

fn list<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let names: Vec<&str> = names.collect();
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}

/// The first line of a panic's message (the whole message was printed when it happened).
fn first_line(payload: &Box<dyn std::any::Any + Send>) -> String {
    let text = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("(a panic without a message)");
    text.lines().next().unwrap_or_default().to_string()
}
