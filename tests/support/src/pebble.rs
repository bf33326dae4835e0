//! pebble, the ACME test server (Debian package), in the test network on [`ACME4`], with
//! its directory's HTTPS signed by a throw-away CA the site lists in
//! `tls.acme.ca_certificates`. Challenges are checked at the test network's BIND, which lego
//! updates through RFC 2136.
//!
//! pebble keeps everything in memory: a restarted pebble knows no account, so a test that
//! stops it does so for good. [`Pebble::issued`] counts the certificates it issued, from its
//! own log line for each one.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::certs::{Ca, San};
use crate::netns::Netns;
use crate::run;
use crate::topology::{ACME4, DNS4};

/// pebble's ports on its address.
pub const PEBBLE_PORT: u16 = 14000;
pub const PEBBLE_MANAGEMENT: u16 = 15000;

/// What pebble 2.4 logs for every certificate it issues (`ca/ca.go`).
const ISSUED_LINE: &str = "Issued certificate serial";

/// pebble in the test network; dropping it stops pebble.
pub struct Pebble {
    child: Option<Child>,
    net: Netns,
    ca: Ca,
    dir: PathBuf,
}

impl Pebble {
    /// Makes the CA (`dir/ca.pem`) and pebble's server certificate for its address.
    pub fn prepare(net: &Netns, dir: &Path) -> Pebble {
        let ca = Ca::create(dir, "mailbake test ACME directory CA");
        ca.issue("server", &[San::Ip(ACME4)]);
        Pebble {
            child: None,
            net: net.clone(),
            ca,
            dir: dir.to_path_buf(),
        }
    }

    /// The directory URL, as the site's `tls.acme.directory`.
    pub fn directory() -> String {
        format!("https://{ACME4}:{PEBBLE_PORT}/dir")
    }

    /// The CA certificate pebble's HTTPS is signed with.
    pub fn ca_cert(&self) -> PathBuf {
        self.ca.cert()
    }

    pub fn start(&mut self) {
        assert!(self.child.is_none(), "pebble already runs");
        // http-01/tls-alpn-01 ports are unused (DNS-01 only) but pebble wants them set.
        let config = serde_json::json!({
            "pebble": {
                "listenAddress": format!("{ACME4}:{PEBBLE_PORT}"),
                "managementListenAddress": format!("{ACME4}:{PEBBLE_MANAGEMENT}"),
                "certificate": self.dir.join("server.pem"),
                "privateKey": self.dir.join("server.key"),
                "httpPort": 5002,
                "tlsPort": 5001,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false,
            }
        });
        let config_path = self.dir.join("pebble.json");
        fs::write(&config_path, config.to_string()).expect("write pebble.json");
        let log = fs::File::create(self.dir.join("pebble.log")).expect("pebble.log");
        let mut command = self.net.command("pebble");
        let child = crate::process::dies_with_test(&mut command)
            .arg("-config")
            .arg(&config_path)
            // Challenge records are checked at our BIND, which lego updates.
            .args(["-dnsserver", &format!("{DNS4}:53")])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdout(Stdio::from(log.try_clone().expect("log handle")))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start pebble (apt install pebble): {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.get(PEBBLE_PORT, "/dir").is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("pebble does not answer:\n{}", self.log());
    }

    /// Stops pebble (for good: it forgets every account).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("pebble.log")).unwrap_or_default()
    }

    /// How many certificates pebble has issued since it started.
    pub fn issued(&self) -> usize {
        self.log()
            .lines()
            .filter(|l| l.contains(ISSUED_LINE))
            .count()
    }

    /// GET over HTTPS from inside the test network, trusting only our CA (so this also
    /// checks the directory's certificate).
    pub fn get(&self, port: u16, path: &str) -> Option<String> {
        let out = self
            .net
            .command("curl")
            .args(["-sf", "--max-time", "5", "--cacert"])
            .arg(self.ca.cert())
            .arg(format!("https://{ACME4}:{port}{path}"))
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The subject of pebble's issuing (intermediate) CA, in the RFC 2253 form probe.py gives.
    pub fn issuer(&self) -> String {
        let pem = self
            .get(PEBBLE_MANAGEMENT, "/intermediates/0")
            .unwrap_or_else(|| panic!("pebble's management API\n{}", self.log()));
        fs::write(self.dir.join("intermediate.pem"), pem).expect("write intermediate.pem");
        let subject = run(Command::new("openssl")
            .args(["x509", "-noout", "-nameopt", "RFC2253", "-subject", "-in"])
            .arg(self.dir.join("intermediate.pem")));
        subject
            .trim()
            .strip_prefix("subject=")
            .unwrap_or(subject.trim())
            .to_string()
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        self.stop();
    }
}
