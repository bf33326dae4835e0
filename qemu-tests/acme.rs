//! TLS from ACME DNS-01, proven on a booted image on the test network against a real ACME
//! server.
//!
//! The test network (see `testkit::topology`) plays the internet: pebble (the ACME test server,
//! Debian package) serves its directory over HTTPS on 198.51.100.14 with a certificate from a
//! throw-away CA that the site lists in `tls.acme.ca_certificates`, and BIND on 192.0.2.53
//! serves example.com accepting RFC 2136 updates signed with a TSIG key from the secrets
//! store's `acme.env`. The guest boots with the site's own addresses on its bootstrap
//! certificate; lego obtains the real one through DNS-01 and chasquid serves it on 25
//! (STARTTLS), 587 and 465. A forced renewal brings a new serial without any manual restart;
//! with pebble down, renewal fails and retries, and chasquid keeps serving the previous
//! certificate.
//!
//! One guest, the checks as phases: add one as `testkit`'s docs say.
//!
//! Needs root (a network namespace, mke2fs of a root-owned tree), pebble, and about ten
//! minutes under TCG. It never skips: a missing piece fails with the reason.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use testkit::certs::{Ca, San};
use testkit::guest::{GuestOptions, build_image, writable_layer};
use testkit::internet::{dns_addrs, site_dns};
use testkit::netns::Netns;
use testkit::site::{FQDN, TestSite, hosts_yaml};
use testkit::topology::*;
use testkit::{Dns, Guest, Phases, TestNet, TsigKey, ok, probe_in, run};

/// Far beyond pebble's certificate lifetime (5 years): `lego renew --days` then always renews.
const FORCE_DAYS: &str = "100000";
/// pebble's ports on its address in the test network.
const PEBBLE_PORT: u16 = 14000;
const PEBBLE_MANAGEMENT: u16 = 15000;
const UNITS: [&str; 2] = ["mailbake-acme.service", "chasquid.service"];

fn site_yaml(ssh_key: &str) -> String {
    format!(
        r#"site: acmetest
domains:
  example.com:
    users: [i]
{hosts}tls:
  acme:
    provider: rfc2136
    email: ops@example.com
    directory: https://{ACME4}:{PEBBLE_PORT}/dir
    ca_certificates: [pebble/ca.pem]
    resolvers: ["{DNS4}:53"]
ssh:
  authorized_keys: ["{ssh_key}"]
"#,
        hosts = hosts_yaml()
    )
}

/// pebble in the test network with its own CA for the directory's HTTPS; dropping it stops
/// pebble.
struct Pebble {
    child: Option<Child>,
    net: Netns,
    ca: Ca,
    dir: PathBuf,
}

impl Pebble {
    /// Makes the CA (`dir/ca.pem`) and pebble's server certificate for its address.
    fn prepare(net: &Netns, dir: &Path) -> Pebble {
        let ca = Ca::create(dir, "mailbake test ACME directory CA");
        ca.issue("server", &[San::Ip(ACME4)]);
        Pebble {
            child: None,
            net: net.clone(),
            ca,
            dir: dir.to_path_buf(),
        }
    }

    fn start(&mut self) {
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
        fs::write(&config_path, config.to_string()).unwrap();
        let log = fs::File::create(self.dir.join("pebble.log")).unwrap();
        let child = self
            .net
            .command("pebble")
            .arg("-config")
            .arg(&config_path)
            // Challenge records are checked at our BIND, which the guest's lego updates.
            .args(["-dnsserver", &format!("{DNS4}:53")])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdout(Stdio::from(log.try_clone().unwrap()))
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

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.join("pebble.log")).unwrap_or_default()
    }

    /// GET over HTTPS from inside the test network, trusting only our CA (so this also
    /// checks the directory's certificate).
    fn get(&self, port: u16, path: &str) -> Option<String> {
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
    fn issuer(&self) -> String {
        let pem = self
            .get(PEBBLE_MANAGEMENT, "/intermediates/0")
            .unwrap_or_else(|| panic!("pebble's management API\n{}", self.log()));
        fs::write(self.dir.join("intermediate.pem"), pem).unwrap();
        let subject = run(std::process::Command::new("openssl")
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

/// What the phases share once the guest is up.
struct Acme {
    pebble_issuer: String,
    guest: Guest,
    pebble: Pebble,
    dns: Dns,
    net: TestNet,
}

impl Acme {
    /// The certificate served on 25 (STARTTLS), 587 (STARTTLS) and 465 (TLS); they must agree.
    fn served(&self) -> Value {
        let mut seen: Option<Value> = None;
        for (port, mode) in [("25", "starttls"), ("587", "starttls"), ("465", "tls")] {
            let cert = probe_in(&self.net, &["cert", GUEST4, port, "--mode", mode])
                .unwrap_or_else(|e| panic!("port {port}: {e}\n{}", self.guest.evidence()));
            if let Some(first) = &seen {
                assert_eq!(
                    first["sha256"], cert["sha256"],
                    "port {port} serves another certificate than port 25:\n{first}\n{cert}"
                );
            } else {
                seen = Some(cert);
            }
        }
        seen.unwrap()
    }

    /// Port 465's certificate, or None while chasquid restarts.
    fn served_465(&self) -> Option<Value> {
        probe_in(&self.net, &["cert", GUEST4, "465", "--mode", "tls"]).ok()
    }

    /// Starts the renewal service with `env` in a runtime drop-in and waits for its result.
    fn renew_with(&self, env: &str) -> std::process::Output {
        self.guest.ssh(&format!(
            "sudo mkdir -p /run/systemd/system/mailbake-acme.service.d && \
             printf '[Service]\\nEnvironment={env}\\n' | sudo tee /run/systemd/system/mailbake-acme.service.d/test.conf >/dev/null && \
             sudo systemctl daemon-reload"
        ));
        self.guest
            .try_ssh("sudo systemctl start mailbake-acme.service")
    }
}

fn as_str<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("no `{key}` in {v}"))
}

#[test]
fn acme_certificate_is_obtained_served_and_renewed() {
    assert!(
        testkit::is_root(),
        "this test needs root: a network namespace, and mke2fs of a root-owned tree"
    );
    let mut phases = Phases::new("acme");
    let tmp = tempfile::tempdir().unwrap();
    let net = phases.run("test network", || ok(TestNet::create()));
    let (site, out, tsig, pebble) = phases.run("site and build", || build_site(&net, tmp.path()));
    let (dns, pebble, pebble_issuer) = phases.run("DNS open to signed updates, and pebble", || {
        internet(&net, &out, tsig, pebble)
    });
    let disk = phases.run("image", || {
        let image = out.join("mail.qcow2");
        build_image(&out.join("overlay.tar"), &image);
        let disk = tmp.path().join("disk.qcow2");
        writable_layer(&image, &disk);
        disk
    });
    let booted = Instant::now();
    let guest = phases.run("first boot on the bootstrap certificate", || {
        let mut guest = Guest::boot(
            &net,
            &GuestOptions {
                disk: &disk,
                seed: &out.join("hosts/mx1/seed.img"),
                ssh_key: &site.ssh_key,
                serial_log: tmp.path().join("serial.log"),
                journal_units: &UNITS,
            },
        );
        // chasquid first runs on the bootstrap certificate: mail is not held up by the CA.
        let to_smtp = guest.wait_for_smtp(Duration::from_secs(600));
        eprintln!("acme: SMTP up {:.0} s after boot", to_smtp.as_secs_f64());
        guest
    });
    phases.watch(guest.evidence_source());
    let mut t = Acme {
        pebble_issuer,
        guest,
        pebble,
        dns,
        net,
    };
    phases.run("no way out: no default route", || {
        assert_eq!(ok(t.net.default_routes()), Vec::<String>::new());
    });
    let serial_1 = phases.run("the ACME certificate replaces the bootstrap one", || {
        first_certificate(&t, booted)
    });
    let serial_2 = phases.run("a forced renewal is served with no manual step", || {
        forced_renewal(&t, &serial_1)
    });
    phases.run(
        "with the CA down renewal retries and the certificate stays",
        || ca_down(&mut t, &serial_2),
    );
    t.guest.shutdown();
    eprintln!("acme: serials {serial_1} -> {serial_2}");
    phases.summary();
}

fn build_site(net: &Netns, tmp: &Path) -> (TestSite, PathBuf, TsigKey, Pebble) {
    // --- The site: ACME through rfc2136 against pebble, trusting pebble's directory CA.
    let site = TestSite::create(&tmp.join("site"));
    let pebble = Pebble::prepare(net, &site.dir.join("pebble"));
    site.write(&site_yaml(&site.public_key()));
    site.add_user("example.com", "i", "submission password 42");
    let tsig = ok(TsigKey::generate("acme-key"));
    // Short propagation and sequence intervals: lego's rfc2136 defaults wait a minute between
    // the names of one certificate, which only makes the test slower.
    let acme_env = format!(
        "RFC2136_NAMESERVER={DNS4}:53\nRFC2136_TSIG_KEY={}\nRFC2136_TSIG_SECRET={}\nRFC2136_TSIG_ALGORITHM={}.\n\
         RFC2136_PROPAGATION_TIMEOUT=120\nRFC2136_POLLING_INTERVAL=2\nRFC2136_SEQUENCE_INTERVAL=1\nRFC2136_TTL=30\n",
        tsig.name, tsig.secret, tsig.algorithm
    );
    site.store()
        .write_secret(mailbake::secrets::ACME_ENV, acme_env.as_bytes())
        .unwrap();
    let out = tmp.join("out");
    site.build(&out);

    // The CA bundle is in the overlay (public), the credentials are not.
    let manifest = fs::read_to_string(out.join("MANIFEST")).unwrap();
    assert!(
        manifest.contains("etc/mailbake/acme-ca.pem"),
        "the overlay ships the site's ACME CA:\n{manifest}"
    );
    let overlay = fs::read(out.join("overlay.tar")).unwrap();
    assert!(
        !overlay
            .windows(tsig.secret.len())
            .any(|w| w == tsig.secret.as_bytes()),
        "the TSIG secret must not be in the overlay"
    );
    (site, out, tsig, pebble)
}

fn internet(net: &Netns, out: &Path, tsig: TsigKey, mut pebble: Pebble) -> (Dns, Pebble, String) {
    let (zones, _) = site_dns(out);
    let zones: Vec<_> = zones
        .into_iter()
        .map(|z| {
            if z.origin == "example.com" {
                z.allow_update(tsig.clone())
            } else {
                z
            }
        })
        .collect();
    let dns = ok(Dns::start_in(net, &dns_addrs(), &zones));
    assert_eq!(
        ok(dns.dig(FQDN, "A")),
        [GUEST4],
        "the zone mailbake wrote is served"
    );
    pebble.start();
    let issuer = pebble.issuer();
    (dns, pebble, issuer)
}

fn first_certificate(t: &Acme, booted: Instant) -> String {
    let deadline = Instant::now() + Duration::from_secs(600);
    let to_acme = loop {
        if let Some(cert) = t.served_465()
            && cert["issuer"] == t.pebble_issuer.as_str()
        {
            break booted.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "no ACME certificate served 10 minutes after boot\n--- pebble ---\n{}\n--- named ---\n{}",
            t.pebble.log(),
            t.dns.log(),
        );
        std::thread::sleep(Duration::from_secs(3));
    };
    eprintln!(
        "acme: boot -> ACME certificate served under TCG: {:.0} s",
        to_acme.as_secs_f64()
    );
    let first = t.served();
    assert_eq!(as_str(&first, "issuer"), t.pebble_issuer, "{first}");
    let mut sans: Vec<&str> = first["sans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    sans.sort();
    assert_eq!(
        sans,
        [
            "DNS:*.example.com",
            "DNS:example.com",
            &format!("DNS:{FQDN}")
        ],
        "the default names: host fqdn, the domain and its wildcard"
    );
    let journal = t
        .guest
        .ssh("sudo journalctl -b --no-pager -o cat -u mailbake-acme.service");
    assert!(
        journal.contains("acme-deploy: installed a new certificate"),
        "the deploy hook ran:\n{journal}"
    );
    let timers = t
        .guest
        .ssh("systemctl list-timers --all --no-legend --plain mailbake-acme.timer");
    assert!(
        timers.contains("mailbake-acme.timer"),
        "the renewal timer is scheduled: {timers}"
    );
    as_str(&first, "serial").to_string()
}

fn forced_renewal(t: &Acme, serial_1: &str) -> String {
    let renewed = t.renew_with(&format!("ACME_RENEW_DAYS={FORCE_DAYS}"));
    assert!(
        renewed.status.success(),
        "the forced renewal failed: {}",
        String::from_utf8_lossy(&renewed.stderr),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let second = loop {
        // chasquid may be restarting for a moment.
        if t.served_465()
            .is_some_and(|c| c["serial"].as_str() != Some(serial_1))
        {
            break t.served();
        }
        assert!(
            Instant::now() < deadline,
            "still the old certificate after renewal"
        );
        std::thread::sleep(Duration::from_secs(2));
    };
    let serial_2 = as_str(&second, "serial").to_string();
    assert_ne!(serial_1, serial_2);
    assert_eq!(as_str(&second, "issuer"), t.pebble_issuer, "{second}");
    serial_2
}

fn ca_down(t: &mut Acme, serial_2: &str) {
    t.pebble.stop();
    let failed = t.renew_with(&format!(
        "ACME_RENEW_DAYS={FORCE_DAYS} \"ACME_RETRY_DELAYS=3 3\""
    ));
    assert!(
        !failed.status.success(),
        "renewal with the CA down must fail"
    );
    let journal = t
        .guest
        .ssh("sudo journalctl -b --no-pager -o cat -u mailbake-acme.service");
    for line in [
        "acme-renew: attempt 1 failed; the installed certificate stays; retrying in 3s",
        "acme-renew: attempt 2 failed; the installed certificate stays; retrying in 3s",
        "acme-renew: attempt 3 failed; giving up until the next timer run",
    ] {
        assert!(journal.contains(line), "journal lacks `{line}`:\n{journal}");
    }
    assert_eq!(
        t.guest
            .ssh("systemctl is-failed mailbake-acme.service || true")
            .trim(),
        "failed"
    );
    let after = t.served();
    assert_eq!(
        as_str(&after, "serial"),
        serial_2,
        "with the CA down chasquid keeps serving the last certificate"
    );
    assert_eq!(
        t.guest.ssh("systemctl is-active chasquid.service").trim(),
        "active"
    );
}
