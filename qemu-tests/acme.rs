//! TLS from ACME DNS-01, proven on a booted image against a real ACME server.
//!
//! The host plays the internet: pebble (the ACME test server, Debian package) serves its
//! directory over HTTPS with a certificate from a throw-away CA that the site lists in
//! `tls.acme.ca_certificates`, and BIND serves example.com accepting RFC 2136 updates signed
//! with a TSIG key from the secrets store's `acme.env`. The guest (reaching the host as
//! 10.0.2.2) boots on its bootstrap certificate; lego obtains the real one through DNS-01 and
//! chasquid serves it on 25 (STARTTLS), 587 and 465. A forced renewal brings a new serial
//! without any manual restart; with pebble down, renewal fails and retries, and chasquid keeps
//! serving the previous certificate.
//!
//! Needs root (ports 53 on 127.0.0.1, mke2fs of a root-owned tree), pebble, and about ten
//! minutes under TCG. It never skips: a missing piece fails with the reason.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mailbake::boot::{Vm, VmOptions};
use mailbake::secrets::{Password, SecretStore};
use serde_json::Value;
use support::{Dns, TsigKey, Zone, probe, zone_text};

const FQDN: &str = "smtp.example.com";
const OPERATOR: &str = "admin";
/// What the guest calls the host's loopback on QEMU's user network.
const HOST: &str = "10.0.2.2";
/// Far beyond pebble's certificate lifetime (5 years): `lego renew --days` then always renews.
const FORCE_DAYS: &str = "100000";

use common::run;

fn mailbake(args: &[&str]) -> String {
    run(Command::new(env!("CARGO_BIN_EXE_mailbake")).args(args))
}

fn openssl(dir: &Path, args: &[&str]) {
    run(Command::new("openssl").current_dir(dir).args(args));
}

fn site_yaml(ssh_key: &str, pebble_port: u16) -> String {
    format!(
        r#"site: acmetest
domains:
  example.com:
    users: [i]
hosts:
  mx1:
    fqdn: {FQDN}
    ipv4: 10.0.2.15
    nameservers: [{HOST}]
tls:
  acme:
    provider: rfc2136
    email: ops@example.com
    directory: https://{HOST}:{pebble_port}/dir
    ca_certificates: [pebble/ca.pem]
    resolvers: ["{HOST}:53"]
ssh:
  authorized_keys: ["{ssh_key}"]
"#
    )
}

/// pebble on 127.0.0.1 with its own CA for the directory's HTTPS; dropping it stops pebble.
struct Pebble {
    child: Option<Child>,
    dir: PathBuf,
    port: u16,
    management: u16,
}

impl Pebble {
    /// Makes the CA (`dir/ca.pem`) and pebble's server certificate for 10.0.2.2 and 127.0.0.1.
    fn prepare(dir: &Path) -> Pebble {
        fs::create_dir_all(dir).unwrap();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let mut ca = vec!["req", "-x509"];
        ca.extend(ec);
        ca.extend([
            "-days",
            "2",
            "-subj",
            "/CN=mailbake test ACME directory CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ]);
        openssl(dir, &ca);
        let mut csr = vec!["req"];
        csr.extend(ec);
        csr.extend([
            "-subj",
            "/CN=pebble",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ]);
        openssl(dir, &csr);
        fs::write(
            dir.join("server.ext"),
            format!(
                "subjectAltName=IP:{HOST},IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
            ),
        )
        .unwrap();
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "server.ext",
                "-out",
                "server.pem",
            ],
        );
        Pebble {
            child: None,
            dir: dir.to_path_buf(),
            port: support::free_port().unwrap(),
            management: support::free_port().unwrap(),
        }
    }

    fn start(&mut self) {
        assert!(self.child.is_none(), "pebble already runs");
        // http-01/tls-alpn-01 ports are unused (DNS-01 only) but pebble wants them set.
        let config = serde_json::json!({
            "pebble": {
                "listenAddress": format!("127.0.0.1:{}", self.port),
                "managementListenAddress": format!("127.0.0.1:{}", self.management),
                "certificate": self.dir.join("server.pem"),
                "privateKey": self.dir.join("server.key"),
                "httpPort": support::free_port().unwrap(),
                "tlsPort": support::free_port().unwrap(),
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false,
            }
        });
        let config_path = self.dir.join("pebble.json");
        fs::write(&config_path, config.to_string()).unwrap();
        let log = fs::File::create(self.dir.join("pebble.log")).unwrap();
        let child = Command::new("pebble")
            .arg("-config")
            .arg(&config_path)
            // Challenge records are checked at our BIND, which the guest's lego updates.
            .args(["-dnsserver", "127.0.0.1:53"])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start pebble (apt install pebble): {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if self.get(self.port, "/dir").is_some() {
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

    /// GET over HTTPS trusting only our CA (so this also checks the directory's certificate).
    fn get(&self, port: u16, path: &str) -> Option<String> {
        let out = Command::new("curl")
            .args(["-sf", "--max-time", "5", "--cacert"])
            .arg(self.dir.join("ca.pem"))
            .arg(format!("https://127.0.0.1:{port}{path}"))
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The subject of pebble's issuing (intermediate) CA, in the RFC 2253 form probe.py gives.
    fn issuer(&self) -> String {
        let pem = self
            .get(self.management, "/intermediates/0")
            .unwrap_or_else(|| panic!("pebble's management API\n{}", self.log()));
        fs::write(self.dir.join("intermediate.pem"), pem).unwrap();
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

struct Guest {
    vm: Vm,
    ssh_key: PathBuf,
}

impl Guest {
    fn port(&self, guest_port: u16) -> String {
        self.vm.forwarded(guest_port).unwrap().port().to_string()
    }

    fn evidence(&self) -> String {
        let serial = self.vm.serial_text();
        let tail: Vec<&str> = serial.lines().rev().take(40).collect();
        let journal = self.try_ssh(
            "sudo journalctl -b --no-pager -o short-monotonic -u mailbake-acme.service -u chasquid.service | tail -80",
        );
        format!(
            "--- acme and chasquid journal ---\n{}\n--- last serial lines ({}) ---\n{}",
            String::from_utf8_lossy(&journal.stdout),
            self.vm.serial_log().display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
    }

    fn try_ssh(&self, command: &str) -> std::process::Output {
        let port = self.vm.forwarded(22).unwrap().port();
        support::guest_ssh(&self.ssh_key, port, OPERATOR, command)
            .output()
            .expect("ssh runs")
    }

    /// Runs `command` in the guest as the operator; panics with the evidence if it fails.
    fn ssh(&self, command: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let out = self.try_ssh(command);
            if out.status.success() {
                return String::from_utf8_lossy(&out.stdout).into_owned();
            }
            // 255 is ssh's own failure (not up yet); anything else is the command's answer.
            if out.status.code() != Some(255) || Instant::now() > deadline {
                panic!(
                    "in the guest, `{command}` failed ({}):\n{}{}\n{}",
                    out.status,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr),
                    self.evidence()
                );
            }
            std::thread::sleep(Duration::from_secs(3));
        }
    }

    /// The certificate served on 25 (STARTTLS), 587 (STARTTLS) and 465 (TLS); they must agree.
    fn served(&self) -> Value {
        let mut seen: Option<Value> = None;
        for (port, mode) in [(25, "starttls"), (587, "starttls"), (465, "tls")] {
            let cert = probe(&["cert", "127.0.0.1", &self.port(port), "--mode", mode])
                .unwrap_or_else(|e| panic!("port {port}: {e}\n{}", self.evidence()));
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
        probe(&["cert", "127.0.0.1", &self.port(465), "--mode", "tls"]).ok()
    }

    /// Starts the renewal service with `env` in a runtime drop-in and waits for its result.
    fn renew_with(&self, env: &str) -> std::process::Output {
        self.ssh(&format!(
            "sudo mkdir -p /run/systemd/system/mailbake-acme.service.d && \
             printf '[Service]\\nEnvironment={env}\\n' | sudo tee /run/systemd/system/mailbake-acme.service.d/test.conf >/dev/null && \
             sudo systemctl daemon-reload"
        ));
        self.try_ssh("sudo systemctl start mailbake-acme.service")
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
        run(Command::new("id").arg("-u")).trim() == "0",
        "this test needs root: port 53 on 127.0.0.1, and mke2fs of a root-owned tree"
    );
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("site");
    fs::create_dir(&dir).unwrap();

    // --- The site: ACME through rfc2136 against pebble, trusting pebble's directory CA.
    let mut pebble = Pebble::prepare(&dir.join("pebble"));
    let ssh_key = dir.join("id_ed25519");
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "qemu-test", "-f"])
        .arg(&ssh_key));
    let public = fs::read_to_string(ssh_key.with_extension("pub")).unwrap();
    fs::write(dir.join("site.yaml"), site_yaml(public.trim(), pebble.port)).unwrap();
    let store = SecretStore::create(dir.join("secrets")).unwrap();
    store
        .add_user(
            &"example.com".try_into().unwrap(),
            &"i".try_into().unwrap(),
            &Password::new("submission password 42".into()).unwrap(),
        )
        .unwrap();
    let tsig = TsigKey::generate("acme-key").unwrap();
    // Short propagation and sequence intervals: lego's rfc2136 defaults wait a minute between
    // the names of one certificate, which only makes the test slower.
    let acme_env = format!(
        "RFC2136_NAMESERVER={HOST}:53\nRFC2136_TSIG_KEY={}\nRFC2136_TSIG_SECRET={}\nRFC2136_TSIG_ALGORITHM={}.\n\
         RFC2136_PROPAGATION_TIMEOUT=120\nRFC2136_POLLING_INTERVAL=2\nRFC2136_SEQUENCE_INTERVAL=1\nRFC2136_TTL=30\n",
        tsig.name, tsig.secret, tsig.algorithm
    );
    store
        .write_secret(mailbake::secrets::ACME_ENV, acme_env.as_bytes())
        .unwrap();
    let out = tmp.path().join("out");
    mailbake(&[
        "build",
        dir.join("site.yaml").to_str().unwrap(),
        "--secrets",
        dir.join("secrets").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);

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

    // --- The internet: example.com open to signed updates, and pebble checking it.
    let example_zone: Vec<String> = fs::read_to_string(out.join("dns/example.com.zone"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let zones =
        [Zone::new("example.com", zone_text("example.com", &example_zone)).allow_update(tsig)];
    let dns = Dns::start(support::loopback(53), &zones).unwrap_or_else(|e| panic!("{e}"));
    pebble.start();
    let pebble_issuer = pebble.issuer();

    // --- The image and the first boot.
    let base = PathBuf::from(
        run(Command::new("bash").arg(common::repo().join("qemu-tests/base/build.sh")))
            .trim()
            .to_string(),
    );
    let image = out.join("mail.qcow2");
    mailbake(&[
        "image",
        "--base",
        base.to_str().unwrap(),
        "--base-sha256",
        &mailbake::image::digest(&base).unwrap(),
        "--overlay",
        out.join("overlay.tar").to_str().unwrap(),
        "--out",
        image.to_str().unwrap(),
    ]);
    let mut opts = VmOptions::new(&image);
    opts.seed = Some(out.join("hosts/mx1/seed.img"));
    opts.serial_log = Some(tmp.path().join("serial.log"));
    opts.memory_mib = 1536;
    let booted = Instant::now();
    let vm = Vm::start(&opts).unwrap_or_else(|e| panic!("QEMU does not start: {e}"));
    let mut guest = Guest { vm, ssh_key };
    let to_smtp = match guest.vm.wait_for_smtp(Duration::from_secs(600)) {
        Ok((took, _)) => took,
        Err(e) => panic!("SMTP never answered: {e}\n{}", guest.evidence()),
    };
    // chasquid first runs on the bootstrap certificate: mail is not held up by the CA.
    eprintln!("acme: SMTP up {:.0} s after boot", to_smtp.as_secs_f64());

    // --- The ACME certificate replaces it, without anyone touching the host.
    let deadline = Instant::now() + Duration::from_secs(600);
    let to_acme = loop {
        if let Some(cert) = guest.served_465()
            && cert["issuer"] == pebble_issuer.as_str()
        {
            break booted.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "no ACME certificate served 10 minutes after boot\n--- pebble ---\n{}\n--- named ---\n{}\n{}",
            pebble.log(),
            dns.log(),
            guest.evidence()
        );
        std::thread::sleep(Duration::from_secs(3));
    };
    eprintln!(
        "acme: boot -> ACME certificate served under TCG: {:.0} s",
        to_acme.as_secs_f64()
    );
    let first = guest.served();
    assert_eq!(as_str(&first, "issuer"), pebble_issuer, "{first}");
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
    let journal = guest.ssh("sudo journalctl -b --no-pager -o cat -u mailbake-acme.service");
    assert!(
        journal.contains("acme-deploy: installed a new certificate"),
        "the deploy hook ran:\n{journal}"
    );
    let timers = guest.ssh("systemctl list-timers --all --no-legend --plain mailbake-acme.timer");
    assert!(
        timers.contains("mailbake-acme.timer"),
        "the renewal timer is scheduled: {timers}"
    );
    let serial_1 = as_str(&first, "serial").to_string();

    // --- A forced renewal: a new certificate, and chasquid serves it with no manual step.
    let renewed = guest.renew_with(&format!("ACME_RENEW_DAYS={FORCE_DAYS}"));
    assert!(
        renewed.status.success(),
        "the forced renewal failed: {}\n{}",
        String::from_utf8_lossy(&renewed.stderr),
        guest.evidence()
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let second = loop {
        // chasquid may be restarting for a moment.
        if guest
            .served_465()
            .is_some_and(|c| c["serial"].as_str() != Some(serial_1.as_str()))
        {
            break guest.served();
        }
        assert!(
            Instant::now() < deadline,
            "still the old certificate after renewal\n{}",
            guest.evidence()
        );
        std::thread::sleep(Duration::from_secs(2));
    };
    let serial_2 = as_str(&second, "serial").to_string();
    assert_ne!(serial_1, serial_2);
    assert_eq!(as_str(&second, "issuer"), pebble_issuer, "{second}");
    eprintln!("acme: renewal: serial {serial_1} -> {serial_2}");

    // --- The CA down: renewal fails and retries, the journal says so, the certificate stays.
    pebble.stop();
    let failed = guest.renew_with(&format!(
        "ACME_RENEW_DAYS={FORCE_DAYS} \"ACME_RETRY_DELAYS=3 3\""
    ));
    assert!(
        !failed.status.success(),
        "renewal with the CA down must fail"
    );
    let journal = guest.ssh("sudo journalctl -b --no-pager -o cat -u mailbake-acme.service");
    for line in [
        "acme-renew: attempt 1 failed; the installed certificate stays; retrying in 3s",
        "acme-renew: attempt 2 failed; the installed certificate stays; retrying in 3s",
        "acme-renew: attempt 3 failed; giving up until the next timer run",
    ] {
        assert!(journal.contains(line), "journal lacks `{line}`:\n{journal}");
    }
    assert_eq!(
        guest
            .ssh("systemctl is-failed mailbake-acme.service || true")
            .trim(),
        "failed"
    );
    let after = guest.served();
    assert_eq!(
        as_str(&after, "serial"),
        serial_2,
        "with the CA down chasquid keeps serving the last certificate"
    );
    assert_eq!(
        guest.ssh("systemctl is-active chasquid.service").trim(),
        "active"
    );

    guest.vm.shutdown().unwrap();
    drop(dns);
    eprintln!(
        "acme: test passed in {:.0} s (boot -> SMTP {:.0} s, boot -> ACME certificate {:.0} s, serials {serial_1} -> {serial_2})",
        started.elapsed().as_secs_f64(),
        to_smtp.as_secs_f64(),
        to_acme.as_secs_f64()
    );
}
