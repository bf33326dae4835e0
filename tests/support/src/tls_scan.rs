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

/// The protocols testssl checks with `-p`, oldest first.
const PROTOCOLS: [&str; 6] = ["SSLv2", "SSLv3", "TLS1", "TLS1_1", "TLS1_2", "TLS1_3"];

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

    /// The protocols testssl found offered, in its order (`SSLv2` … `TLS1_3`): those whose
    /// first finding starts with "offered" ("offered", "offered (deprecated)", "offered with
    /// final"). Over STARTTLS testssl words a refusal "likely not offered" when the server
    /// answers a failed handshake with an SMTP error (chasquid says `554 5.5.0 Error in TLS
    /// handshake: … unsupported versions`), which is a refusal, not an offer.
    pub fn offered_protocols(&self) -> Vec<String> {
        PROTOCOLS
            .iter()
            .filter(|p| self.get(p).is_some_and(|f| f.starts_with("offered")))
            .map(|p| p.to_string())
            .collect()
    }

    /// Whether testssl found protocol `id` refused: "not offered", or "likely not offered"
    /// (see [`TlsReport::offered_protocols`]).
    pub fn refuses(&self, id: &str) -> bool {
        self.get(id)
            .is_some_and(|f| f.starts_with("not offered") || f.starts_with("likely not offered"))
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

/// How one `openssl s_client` handshake with `target` (`host:port`) went: the protocol it
/// negotiated (`TLSv1.2`), or the error and alert lines of why it did not. `starttls` speaks
/// SMTP's STARTTLS first; `version` is s_client's flag (`-tls1`, `-tls1_1`, `-tls1_2`,
/// `-tls1_3`); `cipher` limits the TLS ≤ 1.2 cipher list. Runs inside `net` if given, else
/// on the host. Bounded at 20 s.
pub fn handshake(
    net: Option<&Netns>,
    target: &str,
    starttls: bool,
    version: &str,
    cipher: Option<&str>,
) -> Result<String, String> {
    let mut cmd = match net {
        Some(net) => net.command("timeout"),
        None => std::process::Command::new("timeout"),
    };
    // -brief: one "Protocol version: TLSv1.x" line once the handshake succeeded.
    cmd.args([
        "20", "openssl", "s_client", "-brief", "-connect", target, version,
    ]);
    if starttls {
        cmd.args(["-starttls", "smtp"]);
    }
    // Debian's openssl offers TLS 1.0/1.1 (SHA-1 signatures) and RSA key exchange only at
    // security level 0; the point is to see what the server accepts.
    if version != "-tls1_3" {
        cmd.args([
            "-cipher",
            &format!("{}@SECLEVEL=0", cipher.unwrap_or("DEFAULT")),
        ]);
    }
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot run openssl s_client: {e}"))?;
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let negotiated = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Protocol version: "))
        .map(str::to_string);
    negotiated.ok_or_else(|| {
        let why: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("error") || l.contains("alert"))
            .collect();
        if why.is_empty() {
            format!("no handshake ({}): {}", out.status, text.trim())
        } else {
            why.join(" | ")
        }
    })
}
