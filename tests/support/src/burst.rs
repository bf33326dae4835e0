//! Durability counts: a burst of uniquely named submissions (`probe.py burst`), and the tally
//! of what the receiver got of them: accepted, delivered, lost, duplicated. A message counts
//! as accepted only when the server answered its DATA with 250; one whose answer never came
//! (the connection broke in a restart) is counted apart, since the server may or may not have
//! taken it.
//!
//! The burst streams one line per message as the server answers, and the caller's callback
//! sees each at once, so it can act at an exact moment: restart the server after the tenth,
//! cut the guest's power right after the last 250.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{BufRead, BufReader, Read as _};
use std::process::{Child, Stdio};

use crate::netns::Netns;
use crate::probe::{PYTHON, script};
use crate::receiver::Delivered;

/// A burst: `count` messages from `from` (also the login) to `to` on `host:port`.
pub struct Burst<'a> {
    pub host: &'a str,
    /// 587 (STARTTLS) or 465 (implicit TLS).
    pub port: u16,
    pub password: &'a str,
    pub from: &'a str,
    pub to: &'a str,
    pub count: usize,
    /// Unique to this burst: subjects are `<tag> <k>`, Message-IDs `<<tag>.<k>@domain>`.
    pub tag: &'a str,
}

/// One message of a burst and the server's answer to it.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub k: u64,
    pub message_id: String,
    pub accepted: bool,
    /// The reply code, `None` when no answer came.
    pub code: Option<u64>,
    pub error: Option<String>,
}

impl Attempt {
    fn parse(line: &str) -> Result<Attempt, String> {
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| format!("probe.py burst printed a line that is not JSON ({e}): {line}"))?;
        Ok(Attempt {
            k: v["k"].as_u64().ok_or_else(|| format!("no k in {line}"))?,
            message_id: v["message_id"].as_str().unwrap_or_default().to_string(),
            accepted: v["accepted"].as_bool() == Some(true),
            code: v["code"].as_u64(),
            error: v["error"].as_str().map(str::to_string),
        })
    }
}

/// What the callback tells the burst after each answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Continue,
    /// Stop now: the probe is killed (its connection may be dead: no QUIT is waited for).
    Stop,
}

impl Burst<'_> {
    /// Runs the burst inside `net`; `on_answer` sees every message as soon as the server
    /// answered it, with the number accepted so far. Returns every attempt, in order.
    pub fn run(
        &self,
        net: &Netns,
        mut on_answer: impl FnMut(&Attempt, usize) -> Next,
    ) -> Result<Vec<Attempt>, String> {
        let mode = if self.port == 465 { "tls" } else { "starttls" };
        let mut child = net
            .command(PYTHON)
            .arg(script())
            .args(["burst", self.host, &self.port.to_string(), "--mode", mode])
            .args(["--user", self.from, "--password", self.password])
            .args(["--from", self.from, "--to", self.to])
            .args(["--count", &self.count.to_string(), "--tag", self.tag])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {PYTHON} probe.py burst: {e}"))?;
        let stdout = child.stdout.take().ok_or("probe.py burst has no stdout")?;
        let mut attempts = Vec::new();
        let mut accepted = 0;
        for line in BufReader::new(stdout).lines() {
            let line = line.map_err(|e| format!("reading probe.py burst: {e}"))?;
            let attempt = Attempt::parse(&line)?;
            accepted += usize::from(attempt.accepted);
            let next = on_answer(&attempt, accepted);
            attempts.push(attempt);
            if next == Next::Stop {
                let _ = child.kill();
                let _ = child.wait();
                return Ok(attempts);
            }
        }
        finish(child, &attempts)?;
        Ok(attempts)
    }
}

/// Waits for the probe and turns a failure into an error with its stderr and the attempts.
fn finish(mut child: Child, attempts: &[Attempt]) -> Result<(), String> {
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut stderr);
    }
    let status = child
        .wait()
        .map_err(|e| format!("waiting for probe.py burst: {e}"))?;
    if status.success() {
        return Ok(());
    }
    Err(format!(
        "probe.py burst failed ({status}): {stderr}\nattempts: {attempts:#?}"
    ))
}

/// What became of a burst: the messages the receiver holds, matched by Message-ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tally {
    /// Answered 250.
    pub accepted: usize,
    /// Accepted and delivered at least once.
    pub delivered: usize,
    /// Accepted and never delivered: the Message-IDs.
    pub lost: Vec<String>,
    /// Copies beyond the first, over every message of the burst.
    pub duplicated: usize,
    /// No answer came (the connection broke); and how many of those arrived anyway.
    pub unanswered: usize,
    pub unanswered_delivered: usize,
}

impl Tally {
    /// Counts `attempts` against every message the receiver stored (others are ignored).
    pub fn count(attempts: &[Attempt], stored: &[Delivered]) -> Tally {
        let mut copies: BTreeMap<&str, usize> = BTreeMap::new();
        let ids: Vec<Option<String>> = stored.iter().map(|m| m.header("Message-ID")).collect();
        for id in ids.iter().flatten() {
            *copies.entry(id.trim()).or_default() += 1;
        }
        let arrived = |a: &Attempt| copies.get(a.message_id.as_str()).copied().unwrap_or(0);
        let accepted: Vec<&Attempt> = attempts.iter().filter(|a| a.accepted).collect();
        let unanswered: Vec<&Attempt> = attempts.iter().filter(|a| a.code.is_none()).collect();
        Tally {
            accepted: accepted.len(),
            delivered: accepted.iter().filter(|a| arrived(a) > 0).count(),
            lost: accepted
                .iter()
                .filter(|a| arrived(a) == 0)
                .map(|a| a.message_id.clone())
                .collect(),
            duplicated: attempts.iter().map(|a| arrived(a).saturating_sub(1)).sum(),
            unanswered: unanswered.len(),
            unanswered_delivered: unanswered.iter().filter(|a| arrived(a) > 0).count(),
        }
    }

    /// Whether every accepted message has arrived.
    pub fn complete(&self) -> bool {
        self.lost.is_empty()
    }
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "accepted {} | delivered {} | lost {} | duplicated {}",
            self.accepted,
            self.delivered,
            self.lost.len(),
            self.duplicated
        )?;
        if self.unanswered > 0 {
            write!(
                f,
                " (and {} unanswered, {} of them delivered)",
                self.unanswered, self.unanswered_delivered
            )?;
        }
        if !self.lost.is_empty() {
            write!(f, "; lost: {}", self.lost.join(" "))?;
        }
        Ok(())
    }
}
