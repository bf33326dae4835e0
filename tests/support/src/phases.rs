//! A long test as named phases. Each phase's wall time is printed when it ends; a failing
//! phase prints its name, the phases that passed before it and the evidence of whatever the
//! test watches (the guest's serial console and journal), then the failure itself propagates
//! so the test fails with the assertion's own message.

use std::panic::{self, AssertUnwindSafe};
use std::time::{Duration, Instant};

use crate::guest::EvidenceSource;

pub struct Phases {
    test: String,
    started: Instant,
    passed: Vec<(String, Duration)>,
    watched: Vec<EvidenceSource>,
}

impl Phases {
    pub fn new(test: &str) -> Phases {
        Phases {
            test: test.to_string(),
            started: Instant::now(),
            passed: Vec::new(),
            watched: Vec::new(),
        }
    }

    /// Show this guest's evidence when a later phase fails (replaces an earlier guest's).
    pub fn watch(&mut self, source: EvidenceSource) {
        self.watched = vec![source];
    }

    /// Runs phase `name`.
    pub fn run<T>(&mut self, name: &str, f: impl FnOnce() -> T) -> T {
        eprintln!("{}: phase \"{name}\" ...", self.test);
        crate::watchdog::note(&format!("phase \"{name}\" of {}", self.test));
        let t = Instant::now();
        match panic::catch_unwind(AssertUnwindSafe(f)) {
            Ok(v) => {
                let took = t.elapsed();
                eprintln!(
                    "{}: phase \"{name}\" passed in {:.1} s",
                    self.test,
                    took.as_secs_f64()
                );
                self.passed.push((name.to_string(), took));
                v
            }
            Err(payload) => {
                let passed: Vec<&str> = self.passed.iter().map(|(n, _)| n.as_str()).collect();
                eprintln!(
                    "\n{}: phase \"{name}\" FAILED after {:.1} s (passed before it: {})",
                    self.test,
                    t.elapsed().as_secs_f64(),
                    if passed.is_empty() {
                        "none".to_string()
                    } else {
                        passed.join(", ")
                    }
                );
                for w in &self.watched {
                    eprintln!("{}", w.collect());
                }
                panic::resume_unwind(payload)
            }
        }
    }

    /// Prints every phase's time and the total.
    pub fn summary(&self) {
        eprintln!(
            "{}: all {} phases passed in {:.0} s",
            self.test,
            self.passed.len(),
            self.started.elapsed().as_secs_f64()
        );
        for (name, took) in &self.passed {
            eprintln!("  {:>7.1} s  {name}", took.as_secs_f64());
        }
    }
}
