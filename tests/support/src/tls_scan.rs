//! TLS quality from outside with testssl.sh (Debian package `testssl.sh`, command `testssl`),
//! run inside the test network: protocols offered, cipher categories (NULL, anonymous,
//! export, …) and the served certificate, read from its JSON report.
//!
//! Bounded: only the protocol (`-p`), cipher-category (`-s`) and server-default (`-S`, which
//! includes the certificate) checks, no DNS lookups (`--nodns none`), and `timeout` ends a
//! scan after five minutes.

use std::path::Path;
use std::time::Instant;

use serde_json::Value;

use crate::netns::Netns;

/// One testssl finding: its id (`TLS1_2`, `cipherlist_NULL`, `cert_fingerprintSHA256`, …) and
/// what it found.
#[derive(Debug, Clone)]
pub struct Finding {
    pub id: String,
    pub severity: String,
    pub finding: String,
}

/// A testssl report on one port.
#[derive(Debug)]
pub struct TlsReport {
    pub target: String,
    pub findings: Vec<Finding>,
    pub seconds: f64,
}

impl TlsReport {
    /// The finding of `id` (the first one).
    pub fn get(&self, id: &str) -> Option<&str> {
        self.findings
            .iter()
            .find(|f| f.id == id)
            .map(|f| f.finding.as_str())
    }

    /// The protocols testssl found offered, in its order (`SSLv2` … `TLS1_3`).
    pub fn offered_protocols(&self) -> Vec<String> {
        ["SSLv2", "SSLv3", "TLS1", "TLS1_1", "TLS1_2", "TLS1_3"]
            .iter()
            .filter(|p| {
                self.get(p)
                    .is_some_and(|f| f.starts_with("offered") || f.contains(" offered"))
                    && !self.get(p).is_some_and(|f| f.starts_with("not offered"))
            })
            .map(|p| p.to_string())
            .collect()
    }

    /// The served leaf certificate's SHA-256 fingerprint, upper case without colons.
    pub fn cert_sha256(&self) -> Option<String> {
        let f = self.get("cert_fingerprintSHA256")?;
        Some(f.replace(':', "").to_uppercase())
    }
}

/// Scans `host:port` from inside `net`; `starttls` for SMTP's STARTTLS on 25 and 587,
/// implicit TLS otherwise. `dir` keeps the JSON report.
pub fn testssl(
    net: &Netns,
    host: &str,
    port: u16,
    starttls: bool,
    dir: &Path,
) -> Result<TlsReport, String> {
    let target = format!("{host}:{port}");
    let json = dir.join(format!("testssl-{port}.json"));
    let _ = std::fs::remove_file(&json);
    let mut cmd = net.command("timeout");
    cmd.args([
        "300",
        "testssl",
        "--quiet",
        "--color",
        "0",
        "--warnings",
        "off",
    ])
    .args(["--nodns", "none", "-p", "-s", "-S", "--jsonfile"])
    .arg(&json);
    if starttls {
        cmd.args(["--starttls", "smtp"]);
    }
    cmd.arg(&target);
    let t = Instant::now();
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run testssl (apt-get install testssl.sh): {e}"))?;
    let seconds = t.elapsed().as_secs_f64();
    let text = std::fs::read_to_string(&json).map_err(|e| {
        format!(
            "testssl {target} wrote no report ({e}); exit {}:\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    let parsed: Value = serde_json::from_str(&text)
        .map_err(|e| format!("testssl's report {} is not JSON: {e}", json.display()))?;
    let findings = parsed
        .as_array()
        .ok_or_else(|| format!("testssl's report {} is not an array", json.display()))?
        .iter()
        .map(|f| Finding {
            id: f["id"].as_str().unwrap_or_default().to_string(),
            severity: f["severity"].as_str().unwrap_or_default().to_string(),
            finding: f["finding"].as_str().unwrap_or_default().to_string(),
        })
        .collect();
    Ok(TlsReport {
        target,
        findings,
        seconds,
    })
}
