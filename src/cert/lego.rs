//! The pinned lego on the operator's machine: the binary of the very `.deb` the overlay ships
//! (fetched into the package cache and verified by digest, never a lego from the host's
//! PATH), run with the same arguments the host's `acme-renew` gives it, so a certificate
//! and account made here are ones the host's lego can renew.

use std::fs;
use std::io::{Read as _, Write};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::CertError;
use crate::fetch::{self, Cache, Lock};

/// The name of lego's package in `packages.lock`, and its binary inside it.
const PACKAGE: &str = "lego";
const BINARY: &str = "usr/bin/lego";

/// Variables of the operator's environment lego keeps: how to reach the network and which
/// roots to trust. Everything else it gets from `acme.env`, as on the host, where systemd
/// starts it with a clean environment.
const PASSED_ENV: [&str; 11] = [
    "PATH",
    "HOME",
    "TZ",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
];

/// lego unpacked from its pinned package into a private directory, removed on drop.
pub struct PinnedLego {
    dir: tempfile::TempDir,
    pub label: String,
}

impl PinnedLego {
    /// Fetches (or finds in `cache`) lego's pinned package and unpacks its binary into `dir`,
    /// a private directory ([`crate::secrets::SecretStore::lego_dir`]) that also takes lego's
    /// log and temporary files.
    pub fn unpack(
        lock: &Lock,
        lock_path: &Path,
        cache: &Cache,
        dir: tempfile::TempDir,
        progress: &mut dyn Write,
    ) -> Result<PinnedLego, CertError> {
        let pinned = lock
            .packages
            .iter()
            .find(|p| p.name == PACKAGE)
            .ok_or_else(|| CertError::LegoNotPinned {
                lock: lock_path.to_path_buf(),
            })?;
        let only_lego = Lock {
            archive: lock.archive.clone(),
            packages: vec![pinned.clone()],
        };
        let debs = fetch::fetch_all(&only_lego, cache, progress)?;
        let deb = debs.first().ok_or_else(|| CertError::LegoNotPinned {
            lock: lock_path.to_path_buf(),
        })?;
        let payload = fetch::deb::read_payload(&deb.path).map_err(fetch::FetchError::from)?;
        let entry = payload.iter().find(|e| e.path == BINARY).ok_or_else(|| {
            CertError::LegoMissingFromPackage {
                package: pinned.label(),
                path: deb.path.clone(),
            }
        })?;
        let bin = dir.path().join("lego");
        fs::write(&bin, &entry.contents)
            .and_then(|()| fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)))
            .map_err(|e| CertError::io("write", &bin, e))?;
        Ok(PinnedLego {
            dir,
            label: pinned.label(),
        })
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("lego")
    }

    /// A private file in lego's temporary directory (its log, the CA bundle).
    pub fn scratch(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs lego for `request`, `action` on its state directory, for at most `limit`.
    /// Returns lego's combined output; an error carries it too.
    pub fn run(
        &self,
        request: &Request,
        action: Action,
        limit: Duration,
    ) -> Result<String, LegoFailed> {
        let log_path = self.scratch("lego.log");
        let mut cmd = Command::new(self.path());
        cmd.args(request.args(action));
        cmd.env_clear();
        for name in PASSED_ENV {
            if let Some(value) = std::env::var_os(name) {
                cmd.env(name, value);
            }
        }
        cmd.envs(request.env.iter().map(|(k, v)| (k, v)));
        if let Some(ca) = request.ca_file {
            cmd.env("LEGO_CA_CERTIFICATES", ca);
        }
        // Whatever lego puts in a temporary file stays in the private directory, which goes
        // with the run, and never in the shared /tmp.
        cmd.env("TMPDIR", self.dir.path());
        // A lego that outlived a killed mailbake would keep writing the new account and key
        // into a work directory that nothing owns any more.
        crate::child::die_with_parent(&mut cmd, "mailbake exited before lego started");
        let failed = |status: String, output: String| LegoFailed { status, output };
        let log = fs::File::create(&log_path)
            .and_then(|f| Ok((f.try_clone()?, f)))
            .map_err(|e| {
                failed(
                    format!("cannot create {}: {e}", log_path.display()),
                    String::new(),
                )
            })?;
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.0))
            .stderr(Stdio::from(log.1))
            .spawn()
            .map_err(|e| failed(format!("cannot start lego: {e}"), String::new()))?;
        let deadline = Instant::now() + limit;
        // Ok(true): exited 0; Err: how it ended otherwise.
        let ended: Result<(), String> = loop {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => break Ok(()),
                Ok(Some(status)) => break Err(status.to_string()),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(200))
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break Err(format!("stopped after {} s", limit.as_secs()));
                }
                Err(e) => break Err(format!("cannot wait for lego: {e}")),
            }
        };
        let mut output = String::new();
        let _ = fs::File::open(&log_path).and_then(|mut f| f.read_to_string(&mut output));
        match ended {
            Ok(()) => Ok(output),
            Err(status) => Err(failed(status, output)),
        }
    }
}

/// lego did not succeed: how it ended and what it said.
#[derive(Debug)]
pub struct LegoFailed {
    pub status: String,
    pub output: String,
}

impl LegoFailed {
    /// The last lines of lego's output, where it says why.
    pub fn tail(&self, lines: usize) -> String {
        tail(&self.output, lines)
    }
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// `lego run` (obtain, registering the account when there is none) or `lego renew`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Run,
    Renew { days: i64 },
}

/// One host's certificate request, with the arguments `acme-renew` uses on the host.
pub struct Request<'a> {
    /// lego's state directory (`--path`).
    pub state: &'a Path,
    pub server: &'a str,
    pub email: &'a str,
    pub provider: &'a str,
    pub key_type: &'a str,
    pub resolvers: &'a [String],
    /// The host's names, its fqdn first ([`crate::site::certificate_host_names`]).
    pub names: &'a [String],
    /// `acme.env`'s variables.
    pub env: &'a [(String, String)],
    /// The site's extra CA bundle for the directory's HTTPS, written to a file.
    pub ca_file: Option<&'a Path>,
}

impl Request<'_> {
    /// lego's command line. Each value is one argument (no shell is involved).
    pub fn args(&self, action: Action) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "--accept-tos".into(),
            "--path".into(),
            self.state.display().to_string(),
            "--server".into(),
            self.server.into(),
            "--email".into(),
            self.email.into(),
            "--dns".into(),
            self.provider.into(),
            "--key-type".into(),
            self.key_type.into(),
        ];
        for r in self.resolvers {
            args.extend(["--dns.resolvers".into(), r.clone()]);
        }
        for n in self.names {
            args.extend(["--domains".into(), n.clone()]);
        }
        match action {
            Action::Run => args.push("run".into()),
            Action::Renew { days } => args.extend([
                "renew".into(),
                "--days".into(),
                days.to_string(),
                // An operator runs this by hand: lego's random delay (up to 8 minutes) is for
                // unattended fleets, which the host's timer already spreads.
                "--no-random-sleep".into(),
            ]),
        }
        args
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_acme_renews() {
        let names = vec!["smtp.example.com".to_string(), "*.example.com".to_string()];
        let resolvers = vec!["192.0.2.53:53".to_string()];
        let req = Request {
            state: Path::new("/s"),
            server: "https://ca.test/dir",
            email: "ops@example.com",
            provider: "rfc2136",
            key_type: "ec256",
            resolvers: &resolvers,
            names: &names,
            env: &[],
            ca_file: None,
        };
        assert_eq!(
            req.args(Action::Run).join(" "),
            "--accept-tos --path /s --server https://ca.test/dir --email ops@example.com --dns rfc2136 \
             --key-type ec256 --dns.resolvers 192.0.2.53:53 --domains smtp.example.com --domains *.example.com run"
        );
        assert!(
            req.args(Action::Renew { days: 30 })
                .join(" ")
                .ends_with("--domains *.example.com renew --days 30 --no-random-sleep")
        );
    }
}
