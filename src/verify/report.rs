//! What `verify` found: one [`Check`] per thing looked at, rendered as text for people or as
//! stable JSON for tools (the schema is documented in docs/verify.md and tested against it).

use std::fmt::Write as _;

use serde::Serialize;

use super::Section;
use crate::outside;

/// The version of the JSON document; bumped only when a field changes meaning or goes away.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Warn,
    Fail,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }
}

/// One verdict: what was checked, how it came out, what was seen, and how to repair it.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    pub section: Section,
    /// The mail domain the check is about, if any.
    pub domain: Option<String>,
    /// The site's host the check is about, if any.
    pub host: Option<String>,
    /// What exactly was checked: a name, an address, `ip:port`.
    pub subject: String,
    pub status: Status,
    /// One sentence: the result.
    pub summary: String,
    /// What was looked up or connected to and what came back, one line each.
    pub evidence: Vec<String>,
    /// The exact record or setting that makes the check pass; absent when it passes.
    pub fix: Option<String>,
}

impl Check {
    pub fn of(section: Section, subject: impl Into<String>) -> CheckBuilder {
        CheckBuilder(Check {
            section,
            domain: None,
            host: None,
            subject: outside::line(&subject.into()),
            status: Status::Pass,
            summary: String::new(),
            evidence: Vec::new(),
            fix: None,
        })
    }
}

/// Builds a [`Check`] field by field; the status is decided by the terminal call.
pub struct CheckBuilder(Check);

impl CheckBuilder {
    pub fn domain(mut self, domain: impl ToString) -> Self {
        self.0.domain = Some(outside::line(&domain.to_string()));
        self
    }

    pub fn host(mut self, host: impl ToString) -> Self {
        self.0.host = Some(outside::line(&host.to_string()));
        self
    }

    pub fn evidence(mut self, lines: impl IntoIterator<Item = String>) -> Self {
        self.0
            .evidence
            .extend(lines.into_iter().map(|l| outside::line(&l)));
        self
    }

    pub fn pass(self, summary: impl Into<String>) -> Check {
        self.finish(Status::Pass, summary.into(), None)
    }

    pub fn warn(self, summary: impl Into<String>, fix: impl Into<String>) -> Check {
        self.finish(Status::Warn, summary.into(), Some(fix.into()))
    }

    pub fn fail(self, summary: impl Into<String>, fix: impl Into<String>) -> Check {
        self.finish(Status::Fail, summary.into(), Some(fix.into()))
    }

    pub fn verdict(self, status: Status, summary: impl Into<String>, fix: Option<String>) -> Check {
        let fix = if status == Status::Pass { None } else { fix };
        self.finish(status, summary.into(), fix)
    }

    /// Every text of a check may quote what a server sent (an SMTP reply, a TXT record, a
    /// policy file): it is escaped here, once, for the text report and the JSON alike. Only
    /// the fix, which mailbake writes, keeps its line breaks.
    fn finish(mut self, status: Status, summary: String, fix: Option<String>) -> Check {
        self.0.status = status;
        self.0.summary = outside::line(&summary);
        self.0.fix = fix.map(|f| outside::lines(&f));
        self.0
    }
}

/// Every check of one run, in section order.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub schema: u32,
    pub site: String,
    /// Where DNS questions went: `ADDR:PORT` from `--resolver`, or `system (...)`.
    pub resolver: String,
    /// The worst status of all checks (`pass` when there are none).
    pub status: Status,
    pub counts: Counts,
    pub checks: Vec<Check>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub pass: usize,
    pub warn: usize,
    pub fail: usize,
}

impl Report {
    pub fn new(site: String, resolver: String, checks: Vec<Check>) -> Report {
        let mut counts = Counts::default();
        for c in &checks {
            match c.status {
                Status::Pass => counts.pass += 1,
                Status::Warn => counts.warn += 1,
                Status::Fail => counts.fail += 1,
            }
        }
        let status = checks
            .iter()
            .map(|c| c.status)
            .max()
            .unwrap_or(Status::Pass);
        Report {
            schema: SCHEMA_VERSION,
            site: outside::line(&site),
            resolver: outside::line(&resolver),
            status,
            counts,
            checks,
        }
    }

    pub fn failed(&self) -> bool {
        self.status == Status::Fail
    }

    pub fn to_json(&self) -> String {
        // Serializing plain structs of strings and numbers cannot fail.
        let mut text = serde_json::to_string_pretty(self).unwrap_or_default();
        text.push('\n');
        text
    }

    /// The human form: checks grouped under their section, evidence indented below each, the fix
    /// after it, and a count at the end.
    pub fn to_text(&self) -> String {
        let mut out = format!(
            "mailbake verify: site `{}`, DNS from {}\n",
            self.site, self.resolver
        );
        let mut section = None;
        for c in &self.checks {
            if section != Some(c.section) {
                section = Some(c.section);
                let _ = write!(out, "\n{}\n", c.section.title());
            }
            let about = match (&c.domain, &c.host) {
                (_, Some(h)) => format!("{h} "),
                (Some(d), None) => format!("{d} "),
                (None, None) => String::new(),
            };
            let _ = writeln!(
                out,
                "  {:<4}  {about}{}: {}",
                c.status.as_str().to_uppercase(),
                c.subject,
                c.summary
            );
            for line in &c.evidence {
                let _ = writeln!(out, "        {line}");
            }
            if let Some(fix) = &c.fix {
                let mut lines = fix.lines();
                if let Some(first) = lines.next() {
                    let _ = writeln!(out, "        fix: {first}");
                }
                for line in lines {
                    let _ = writeln!(out, "             {line}");
                }
            }
        }
        let _ = write!(
            out,
            "\n{} passed, {} warning(s), {} failed\n",
            self.counts.pass, self.counts.warn, self.counts.fail
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worst_status_wins_and_counts_add_up() {
        let checks = vec![
            Check::of(Section::Mx, "example.com").pass("ok"),
            Check::of(Section::Spf, "example.com").warn("meh", "do x"),
            Check::of(Section::Dkim, "a").fail("bad", "do y"),
        ];
        let report = Report::new("s".into(), "system".into(), checks);
        assert_eq!(report.status, Status::Fail);
        assert_eq!(
            report.counts,
            Counts {
                pass: 1,
                warn: 1,
                fail: 1
            }
        );
        assert!(report.failed());
        let text = report.to_text();
        assert!(text.contains("FAIL  a: bad\n        fix: do y\n"), "{text}");
        assert!(
            text.ends_with("1 passed, 1 warning(s), 1 failed\n"),
            "{text}"
        );
    }

    #[test]
    fn a_passing_check_never_carries_a_fix() {
        let c = Check::of(Section::Mx, "x").verdict(Status::Pass, "ok", Some("unused".into()));
        assert_eq!(c.fix, None);
    }

    /// What a hostile server sends (an SMTP reply, a TXT record) that would retitle and clear
    /// the terminal and forge a line, fed through every field of a check.
    const HOSTILE: &str =
        "550 no\x1b]0;owned\x07\x1b[2J\r\n  PASS  all: ALL CHECKS PASSED\u{9b}1m\u{202e}";

    #[test]
    fn nothing_a_server_sent_reaches_the_report_raw() {
        let check = Check::of(Section::Smtp, HOSTILE)
            .domain(HOSTILE)
            .host(HOSTILE)
            .evidence([HOSTILE.to_string()])
            .fail(HOSTILE, format!("fix line one\n{HOSTILE}"));
        let report = Report::new(HOSTILE.into(), HOSTILE.into(), vec![check]);
        for (form, out) in [("text", report.to_text()), ("json", report.to_json())] {
            let raw: Vec<char> = out
                .chars()
                .filter(|c| (c.is_control() && *c != '\n') || ('\u{202a}'..='\u{202e}').contains(c))
                .collect();
            assert!(raw.is_empty(), "{form} holds {raw:?}:\n{out}");
            assert!(
                !out.contains("\n  PASS  all"),
                "{form} has a forged line:\n{out}"
            );
        }
        assert!(
            report.to_text().contains("550 no\\u{1b}]0;owned\\u{7}"),
            "{}",
            report.to_text()
        );
    }
}
