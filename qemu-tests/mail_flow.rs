//! The walkthrough's promises, proven on a booted image.
//!
//! A site is baked into an overlay, a seed and DNS records; the image is built on the Debian 12
//! test base and booted **through SeaBIOS and GRUB** under TCG with the host's seed attached.
//! The host side plays the internet: BIND serves the zones `mailbake` wrote (the guest reaches it
//! as 10.0.2.2), and a receiving MTA stands in for Gmail. Then, from outside, as a user would:
//! banner, EHLO, STARTTLS with the seed's certificate, AUTH refused before TLS, AUTH on 587 and
//! 465, no open relay, DKIM signatures that verify against the published records, the catch-all
//! with sender rewriting; inside over SSH: IPv6, sysctl, hostname, modes, no failed units; no
//! secret in the disk image; a reboot that keeps queue and secrets without re-applying the seed;
//! a changed seed that is applied.
//!
//! Needs root (ports 25 and 53 on 127.0.0.1, mke2fs of a root-owned tree) and takes about ten
//! minutes, most of it TCG boots. It never skips: a missing piece fails with the reason.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/mod.rs"]
mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use mailbake::boot::{Vm, VmOptions};
use mailbake::secrets::{Password, SecretStore};
use serde_json::Value;
use support::{Dns, Inbox, InboxOptions, Zone, probe, probe_with_stdin, zone_text};

const FQDN: &str = "smtp.example.com";
const PASSWORD: &str = "submission password 42";
const OPERATOR: &str = "admin";
/// The guest's static IPv6 address on QEMU's user network (prefix fec0::/64, router fec0::2).
const GUEST_IPV6: &str = "fec0::10/64";

fn site_yaml(ssh_key: &str, users: &str) -> String {
    format!(
        r#"site: qemutest
domains:
  example.com:
    users: [{users}]
    aliases:
      postmaster: i
      "*": catchall@gmail.test
    dkim:
      selectors:
        2026a-rsa: rsa-2048
        2026a-ed: ed25519
    spf: {{ policy: "~all" }}
    dmarc: {{ p: quarantine, rua: "mailto:postmaster@example.com" }}
hosts:
  mx1:
    fqdn: {FQDN}
    ipv4: 10.0.2.15
    ipv6: {{ address: "{GUEST_IPV6}", gateway: "fec0::2" }}
    nameservers: [10.0.2.2]
tls:
  files: true
ssh:
  authorized_keys: ["{ssh_key}"]
"#
    )
}

use common::run;

fn mailbake(args: &[&str]) -> String {
    run(Command::new(env!("CARGO_BIN_EXE_mailbake")).args(args))
}

fn sha256_file(path: &Path) -> String {
    mailbake::image::digest(path).unwrap_or_else(|e| panic!("digest of {}: {e}", path.display()))
}

/// The site directory: site.yaml, a secrets store, an SSH key for the operator, a certificate.
struct Site {
    dir: PathBuf,
    ssh_key: PathBuf,
    cert_fingerprint: String,
}

impl Site {
    fn create(dir: &Path) -> Site {
        let ssh_key = dir.join("id_ed25519");
        run(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "qemu-test", "-f"])
            .arg(&ssh_key));
        let public = fs::read_to_string(ssh_key.with_extension("pub")).unwrap();
        fs::write(dir.join("site.yaml"), site_yaml(public.trim(), "i")).unwrap();

        let store = SecretStore::create(dir.join("secrets")).unwrap();
        store
            .add_user(
                &"example.com".try_into().unwrap(),
                &"i".try_into().unwrap(),
                &Password::new(PASSWORD.into()).unwrap(),
            )
            .unwrap();
        for (selector, algorithm) in [
            ("2026a-rsa", mailbake::site::DkimAlgorithm::Rsa2048),
            ("2026a-ed", mailbake::site::DkimAlgorithm::Ed25519),
        ] {
            store
                .dkim_keygen(
                    &"example.com".try_into().unwrap(),
                    &selector.try_into().unwrap(),
                    algorithm,
                    false,
                )
                .unwrap();
        }
        // The site's own certificate (tls.files): the seed carries it, chasquid must serve it.
        let certs = dir.join("cert");
        fs::create_dir(&certs).unwrap();
        common::self_signed_certificate(
            &certs.join("cert.pem"),
            &certs.join("key.pem"),
            &[FQDN, "example.com"],
            30,
        );
        store
            .write_secret(
                mailbake::secrets::TLS_FULLCHAIN,
                &fs::read(certs.join("cert.pem")).unwrap(),
            )
            .unwrap();
        store
            .write_secret(
                mailbake::secrets::TLS_PRIVKEY,
                &fs::read(certs.join("key.pem")).unwrap(),
            )
            .unwrap();
        let fingerprint = run(Command::new("openssl")
            .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
            .arg(certs.join("cert.pem")));
        let cert_fingerprint = fingerprint.trim().rsplit('=').next().unwrap().to_string();
        Site {
            dir: dir.to_path_buf(),
            ssh_key,
            cert_fingerprint,
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.join("site.yaml")
    }

    fn build(&self, out: &Path) {
        mailbake(&[
            "build",
            self.path().to_str().unwrap(),
            "--secrets",
            self.dir.join("secrets").to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
    }

    /// Every secret's bytes that must never reach the image: the users database, DKIM keys,
    /// the TLS key.
    fn secrets(&self) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        let store = self.dir.join("secrets");
        for entry in walk(&store) {
            let data = fs::read(&entry).unwrap();
            if data.is_empty() || entry.file_name().is_some_and(|n| n == ".lock") {
                continue;
            }
            out.push((entry.display().to_string(), data));
        }
        out
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// Distinctive lines of a secret file (PEM body lines, hash lines) to look for in the image.
fn needles(data: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(data)
        .lines()
        .map(str::trim)
        .filter(|l| l.len() >= 24 && !l.starts_with("-----"))
        .map(str::to_string)
        .collect()
}

struct Guest {
    vm: Vm,
    ssh_key: PathBuf,
}

impl Guest {
    fn boot(image: &Path, seed: &Path, ssh_key: &Path, serial: &Path) -> Guest {
        let mut opts = VmOptions::new(image);
        opts.seed = Some(seed.to_path_buf());
        opts.serial_log = Some(serial.to_path_buf());
        opts.memory_mib = 1536;
        // The disk is a throw-away qcow2 overlay of the built image; keep guest writes in it so
        // a later boot sees them (queue, installed secrets).
        opts.snapshot = false;
        let vm = Vm::start(&opts).unwrap_or_else(|e| panic!("QEMU does not start: {e}"));
        Guest {
            vm,
            ssh_key: ssh_key.to_path_buf(),
        }
    }

    fn port(&self, guest_port: u16) -> String {
        self.vm.forwarded(guest_port).unwrap().port().to_string()
    }

    fn evidence(&self) -> String {
        let serial = self.vm.serial_text();
        let tail: Vec<&str> = serial.lines().rev().take(60).collect();
        format!(
            "--- last serial lines ({}) ---\n{}",
            self.vm.serial_log().display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
    }

    fn wait_for_smtp(&mut self) -> Duration {
        match self.vm.wait_for_smtp(Duration::from_secs(600)) {
            Ok((took, banner)) => {
                eprintln!(
                    "qemu: SMTP answered after {:.0} s: {}",
                    took.as_secs_f64(),
                    banner.trim()
                );
                took
            }
            Err(e) => panic!("SMTP never answered: {e}\n{}", self.evidence()),
        }
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

    /// Waits until the guest answers SSH from a boot other than `boot_id`.
    fn wait_for_new_boot(&self, boot_id: &str) {
        let deadline = Instant::now() + Duration::from_secs(600);
        while Instant::now() < deadline {
            let out = self.try_ssh("cat /proc/sys/kernel/random/boot_id");
            if out.status.success() && String::from_utf8_lossy(&out.stdout) != boot_id {
                return;
            }
            std::thread::sleep(Duration::from_secs(5));
        }
        panic!(
            "the guest did not come back from the reboot\n{}",
            self.evidence()
        );
    }

    /// Waits until cloud-init and the boot are finished, so later checks see the final state.
    fn wait_booted(&self) {
        self.ssh("cloud-init status --wait >/dev/null; systemctl is-system-running --wait >/dev/null || true");
    }
}

fn probe_ok(args: &[&str]) -> Value {
    probe(args).unwrap_or_else(|e| panic!("probe {args:?} failed: {e}"))
}

#[test]
fn mail_flows_through_a_booted_image() {
    assert!(
        unsafe_is_root(),
        "this test needs root: ports 25 and 53 on 127.0.0.1, and mke2fs of a root-owned tree"
    );
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let site = Site::create(tmp.path());
    let out = tmp.path().join("out");
    site.build(&out);
    let seed = out.join("hosts/mx1/seed.img");
    let records = out.join("dns/records.json");

    // --- The internet: authoritative DNS for our domain and the Gmail stand-in, and its MTA.
    let example_zone: Vec<String> = fs::read_to_string(out.join("dns/example.com.zone"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let zones = [
        Zone::new("example.com", zone_text("example.com", &example_zone)),
        Zone::new(
            "gmail.test",
            zone_text(
                "gmail.test",
                &["@ IN MX 10 mx.gmail.test.", "mx IN A 10.0.2.2"],
            ),
        ),
        // A domain whose MX answers nowhere: mail for it waits in the queue.
        Zone::new(
            "deferred.test",
            zone_text(
                "deferred.test",
                &["@ IN MX 10 mx.deferred.test.", "mx IN A 10.0.2.99"],
            ),
        ),
    ];
    let dns = Dns::start(support::loopback(53), &zones).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        dns.dig("smtp.example.com", "A").unwrap(),
        ["10.0.2.15"],
        "the zone mailbake wrote is served"
    );
    let inbox = Inbox::start_with(
        support::loopback(25),
        InboxOptions {
            hostname: "mx.gmail.test".into(),
            accept_domains: vec!["gmail.test".into()],
            ..InboxOptions::default()
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));

    // --- The image, and no secret in it.
    let base = base_tarball();
    let image = out.join("mail.qcow2");
    let t = Instant::now();
    mailbake(&[
        "image",
        "--base",
        base.to_str().unwrap(),
        "--base-sha256",
        &sha256_file(&base),
        "--overlay",
        out.join("overlay.tar").to_str().unwrap(),
        "--out",
        image.to_str().unwrap(),
    ]);
    eprintln!(
        "qemu: image built in {:.0} s, {} bytes",
        t.elapsed().as_secs_f64(),
        fs::metadata(&image).unwrap().len()
    );
    assert_no_secret_in(&image, &site);
    assert_no_secret_in(&out.join("overlay.tar"), &site);

    // A writable layer over the image, kept across boots of this test.
    let disk = tmp.path().join("disk.qcow2");
    run(Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
        .arg(&image)
        .arg(&disk));

    // --- First boot.
    let mut guest = Guest::boot(
        &disk,
        &seed,
        &site.ssh_key,
        &tmp.path().join("serial-1.log"),
    );
    let to_smtp = guest.wait_for_smtp();
    eprintln!(
        "qemu: boot to SMTP banner under TCG: {:.0} s",
        to_smtp.as_secs_f64()
    );
    guest.wait_booted();
    let (smtp, submission, submissions) = (guest.port(25), guest.port(587), guest.port(465));

    // Banner and EHLO on 25, as a sending MTA sees them.
    let banner = probe_ok(&["banner", "127.0.0.1", &smtp]);
    assert!(
        banner["line"]
            .as_str()
            .unwrap()
            .starts_with(&format!("220 {FQDN} ")),
        "banner names the fqdn: {banner}"
    );
    let ehlo = probe_ok(&["ehlo", "127.0.0.1", &smtp]);
    assert!(
        ehlo["extensions"].get("STARTTLS").is_some(),
        "EHLO offers STARTTLS: {ehlo}"
    );

    // The certificate served on every port is the seed's.
    for (port, mode) in [
        (&smtp, "starttls"),
        (&submission, "starttls"),
        (&submissions, "tls"),
    ] {
        let cert = probe_ok(&["cert", "127.0.0.1", port, "--mode", mode]);
        assert_eq!(
            cert["sha256"].as_str().unwrap(),
            site.cert_fingerprint,
            "port {port} serves the seed's certificate: {cert}"
        );
    }

    // AUTH: refused before TLS; the seeded user on 587 (STARTTLS) and 465 (TLS); a wrong password fails.
    let before = probe_ok(&[
        "auth-before-tls",
        "127.0.0.1",
        &submission,
        "i@example.com",
        PASSWORD,
    ]);
    assert_eq!(
        before["refused"], true,
        "AUTH without TLS must be refused: {before}"
    );
    let wrong = probe_ok(&[
        "submit",
        "127.0.0.1",
        &submission,
        "--mode",
        "starttls",
        "--user",
        "i@example.com",
        "--password",
        "not the password at all",
        "--from",
        "i@example.com",
        "--to",
        "someone@gmail.test",
    ]);
    assert_eq!(
        (wrong["accepted"].as_bool(), wrong["stage"].as_str()),
        (Some(false), Some("auth")),
        "a wrong password fails: {wrong}"
    );

    // No open relay: unauthenticated mail for an external domain is refused.
    let relay = probe_ok(&[
        "relay",
        "127.0.0.1",
        &smtp,
        "--from",
        "spammer@elsewhere.test",
        "--to",
        "victim@gmail.test",
    ]);
    assert_eq!(relay["refused"], true, "relaying must be refused: {relay}");

    // Authenticated submission to an external address: delivered through our DNS to the
    // Gmail stand-in, signed with RSA and Ed25519 keys that verify against the published records.
    for (port, mode, subject) in [
        (&submission, "starttls", "via 587"),
        (&submissions, "tls", "via 465"),
    ] {
        let sent = probe_ok(&[
            "submit",
            "127.0.0.1",
            port,
            "--mode",
            mode,
            "--user",
            "i@example.com",
            "--password",
            PASSWORD,
            "--from",
            "i@example.com",
            "--to",
            "someone@gmail.test",
            "--subject",
            subject,
        ]);
        assert_eq!(sent["accepted"], true, "submission {subject}: {sent}");
        let arrived = inbox
            .wait_for(
                |m| {
                    m.rcpt_to.iter().any(|r| r == "someone@gmail.test")
                        && m.header("Subject").as_deref() == Some(subject)
                },
                Duration::from_secs(180),
            )
            .unwrap_or_else(|e| panic!("{e}\n{}", guest.evidence()));
        assert_eq!(arrived.mail_from, "i@example.com");
        let verified = probe_with_stdin(
            &["dkim-verify", "--records", records.to_str().unwrap()],
            &arrived.data,
        )
        .unwrap_or_else(|e| {
            panic!(
                "DKIM does not verify for the message {subject}: {e}\n{}",
                arrived.text()
            )
        });
        let algorithms: Vec<&str> = verified["signatures"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["algorithm"].as_str().unwrap())
            .collect();
        assert!(
            algorithms.contains(&"rsa-sha256") && algorithms.contains(&"ed25519-sha256"),
            "both signatures: {verified}"
        );
    }

    // The catch-all: mail to any address of the domain goes to the Gmail stand-in, with the
    // envelope sender rewritten so SPF is checked against our domain.
    let random = "no-such-user-7f3a@example.com";
    let inbound = probe_ok(&[
        "submit",
        "127.0.0.1",
        &smtp,
        "--mode",
        "plain",
        "--from",
        "friend@gmail.test",
        "--to",
        random,
        "--subject",
        "catch-all",
    ]);
    assert_eq!(
        inbound["accepted"], true,
        "inbound mail for the domain is accepted: {inbound}"
    );
    let forwarded = inbox
        .wait_for(
            |m| m.rcpt_to.iter().any(|r| r == "catchall@gmail.test"),
            Duration::from_secs(180),
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", guest.evidence()));
    assert!(
        forwarded
            .mail_from
            .contains("+fwd_from=friend=gmail.test@example.com"),
        "sender rewritten: {}",
        forwarded.mail_from
    );

    // Inside, as the operator: IPv6, sysctl, hostname, secrets' owners and modes, no failed unit.
    // fec0::/10 (QEMU's user network) has site scope, so list every scope.
    let addresses = guest.ssh("ip -6 addr show");
    assert!(
        addresses.contains(&format!("inet6 {GUEST_IPV6}")),
        "static IPv6 configured:\n{addresses}"
    );
    let sysctl = guest.ssh("cat /proc/sys/net/ipv6/conf/all/disable_ipv6 /proc/sys/net/ipv6/conf/default/disable_ipv6 /proc/sys/net/ipv6/conf/lo/disable_ipv6");
    assert_eq!(
        sysctl.split_whitespace().collect::<Vec<_>>(),
        ["0", "0", "0"],
        "IPv6 enabled by sysctl"
    );
    assert_eq!(guest.ssh("hostname").trim(), FQDN);
    let modes = guest.ssh(&format!(
        "sudo stat -c '%a %U %G %n' /etc/chasquid/domains/example.com/users '/etc/chasquid/domains/example.com/dkim:2026a-rsa.pem' \
         '/etc/chasquid/domains/example.com/dkim:2026a-ed.pem' /etc/chasquid/certs/{FQDN}/privkey.pem /etc/chasquid/certs/{FQDN}/fullchain.pem"
    ));
    for line in modes.lines() {
        assert!(
            line.starts_with("640 root chasquid "),
            "secret readable by root and chasquid only: {line}"
        );
    }
    let failed = guest.ssh("systemctl --failed --no-legend --plain");
    assert!(
        failed.trim().is_empty(),
        "failed units:\n{failed}\n--- cloud-init warnings ---\n{}\n--- journal warnings ---\n{}",
        guest.ssh(
            "sudo grep -E 'WARNING|ERROR|Traceback' /var/log/cloud-init.log | tail -40 || true"
        ),
        guest.ssh("sudo journalctl -b -p warning --no-pager | tail -40")
    );
    assert_eq!(
        guest.ssh("systemctl is-active chasquid.service").trim(),
        "active"
    );

    // --- Reboot: queued mail and secrets stay, the unchanged seed is not applied again.
    let queued = probe_ok(&[
        "submit",
        "127.0.0.1",
        &submission,
        "--mode",
        "starttls",
        "--user",
        "i@example.com",
        "--password",
        PASSWORD,
        "--from",
        "i@example.com",
        "--to",
        "someone@deferred.test",
        "--subject",
        "queued",
    ]);
    assert_eq!(queued["accepted"], true, "{queued}");
    let queue_before = guest.ssh("sleep 5; sudo ls /var/lib/chasquid/queue");
    assert!(
        queue_before.lines().any(|l| l.starts_with("m:")),
        "a message waits in the queue: {queue_before}"
    );
    let secrets_before = guest.ssh("sudo sha256sum /etc/chasquid/domains/example.com/users; sudo stat -c %Y /etc/chasquid/domains/example.com/users");
    let boot_id = guest.ssh("cat /proc/sys/kernel/random/boot_id");
    let _ = guest.try_ssh("sudo systemctl reboot");
    guest.wait_for_new_boot(&boot_id);
    guest.wait_booted();
    let queue_after = guest.ssh("sudo ls /var/lib/chasquid/queue");
    assert!(
        queue_before
            .lines()
            .filter(|l| l.starts_with("m:"))
            .all(|m| queue_after.contains(m)),
        "queue kept across the reboot:\nbefore {queue_before}\nafter {queue_after}"
    );
    let secrets_after = guest.ssh("sudo sha256sum /etc/chasquid/domains/example.com/users; sudo stat -c %Y /etc/chasquid/domains/example.com/users");
    assert_eq!(
        secrets_before, secrets_after,
        "secrets untouched by the reboot"
    );
    let applied = guest.ssh("sudo journalctl -b -u mailbake-apply-seed.service --no-pager -o cat");
    assert!(
        !applied.contains("apply-seed: installed"),
        "an unchanged seed is not applied again:\n{applied}"
    );
    guest.vm.shutdown().unwrap();

    // --- A changed seed (a new user) is applied at the next boot.
    let public = fs::read_to_string(site.ssh_key.with_extension("pub")).unwrap();
    fs::write(site.path(), site_yaml(public.trim(), "i, j")).unwrap();
    SecretStore::open(site.dir.join("secrets"))
        .unwrap()
        .add_user(
            &"example.com".try_into().unwrap(),
            &"j".try_into().unwrap(),
            &Password::new("second user password".into()).unwrap(),
        )
        .unwrap();
    let out2 = tmp.path().join("out2");
    site.build(&out2);
    assert_ne!(
        fs::read_to_string(out.join("hosts/mx1/seed/meta-data")).unwrap(),
        fs::read_to_string(out2.join("hosts/mx1/seed/meta-data")).unwrap(),
        "a changed seed has a new instance-id"
    );
    let mut guest = Guest::boot(
        &disk,
        &out2.join("hosts/mx1/seed.img"),
        &site.ssh_key,
        &tmp.path().join("serial-3.log"),
    );
    guest.wait_for_smtp();
    guest.wait_booted();
    let applied = guest.ssh("sudo journalctl -b -u mailbake-apply-seed.service --no-pager -o cat");
    assert!(
        applied.contains("apply-seed: installed"),
        "the changed seed is applied:\n{applied}"
    );
    let sent = probe_ok(&[
        "submit",
        "127.0.0.1",
        &guest.port(465),
        "--mode",
        "tls",
        "--user",
        "j@example.com",
        "--password",
        "second user password",
        "--from",
        "j@example.com",
        "--to",
        "someone@gmail.test",
        "--subject",
        "new user",
    ]);
    assert_eq!(sent["accepted"], true, "the new user authenticates: {sent}");
    let queue_now = guest.ssh("sudo ls /var/lib/chasquid/queue");
    assert!(
        queue_before
            .lines()
            .filter(|l| l.starts_with("m:"))
            .all(|m| queue_now.contains(m)),
        "queue kept across reseeding: {queue_now}"
    );
    guest.vm.shutdown().unwrap();
    drop(dns);
    eprintln!(
        "qemu: mail flow test passed in {:.0} s",
        started.elapsed().as_secs_f64()
    );
}

fn unsafe_is_root() -> bool {
    run(Command::new("id").arg("-u")).trim() == "0"
}

/// Builds (or reuses) the cached Debian 12 test base; returns its path.
fn base_tarball() -> PathBuf {
    let out = run(Command::new("bash").arg(common::repo().join("qemu-tests/base/build.sh")));
    PathBuf::from(out.trim())
}

/// No line of any secret appears anywhere in `file` (the whole disk image or the overlay).
fn assert_no_secret_in(file: &Path, site: &Site) {
    let mut patterns = Vec::new();
    for (name, data) in site.secrets() {
        let lines = needles(&data);
        assert!(!lines.is_empty(), "secret {name} has lines to look for");
        patterns.extend(lines);
    }
    let list = file.with_extension("needles");
    fs::write(&list, patterns.join("\n") + "\n").unwrap();
    // grep -F over the raw bytes: an uncompressed qcow2 keeps file contents as they are.
    let found = Command::new("grep")
        .args(["-a", "-F", "-o", "-f"])
        .arg(&list)
        .arg(file)
        .output()
        .unwrap();
    assert_eq!(
        found.status.code(),
        Some(1),
        "secret bytes found in {}:\n{}",
        file.display(),
        String::from_utf8_lossy(&found.stdout)
    );
    // A positive control: the same search finds them where they belong, in the seed.
    let seed = file.parent().unwrap().join("hosts/mx1/seed/user-data");
    let control = Command::new("grep")
        .args(["-a", "-F", "-c", "-f"])
        .arg(&list)
        .arg(&seed)
        .output()
        .unwrap();
    assert_eq!(
        control.status.code(),
        Some(0),
        "the search must find the secrets in {}",
        seed.display()
    );
}
