//! TLS from ACME DNS-01 and the upgrade procedure, proven on booted images on the test
//! network against a real ACME server.
//!
//! The test network (see `testkit::topology`) plays the internet: pebble (the ACME test server,
//! Debian package) serves its directory over HTTPS on 198.51.100.14 with a certificate from a
//! throw-away CA that the site lists in `tls.acme.ca_certificates`, and BIND on 192.0.2.53
//! serves example.com accepting RFC 2136 updates signed with a TSIG key from the secrets
//! store's `acme.env` (see `testkit::acme`).
//!
//! The order is docs/upgrade.md's: `mailbake cert` stores the certificate once (one
//! issuance), a build puts it into the seed, and the first boot serves it on 25 (STARTTLS),
//! 587 and 465 before the host's own renewal timer has run; the timer then renews nothing.
//! `mailbake drain` reports a message to a receiver that is down, exports it, and empties
//! the queue once the receiver is up, port 25 closed all along; the last run is `--all`,
//! which closes 587 and 465 too. A reinstall (a second build,
//! a wiped disk) boots on the same certificate: over two builds and two boots pebble issued
//! one certificate. The exported message, put into the new host's queue, is delivered.
//! Then the host's own ACME: with its lego state wiped it obtains a certificate itself, a
//! forced renewal brings a new serial without any manual restart, and with pebble down
//! renewal fails and retries while chasquid keeps serving the last certificate.
//!
//! One guest per boot, the checks as phases: add one as `testkit`'s docs say.
//!
//! Needs root (a network namespace, mke2fs of a root-owned tree), pebble, and about fifteen
//! minutes under TCG. It never skips: a missing piece fails with the reason.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use mailbake::drain::queue::QueueItem;
use mailbake::secrets::LegoCertificate;
use serde_json::Value;
use testkit::acme::{AcmeSite, PASSWORD};
use testkit::guest::{GuestOptions, build_image, writable_layer};
use testkit::site::FQDN;
use testkit::topology::*;
use testkit::{Dns, Guest, Inbox, Phases, TestNet, Zone, fingerprint, ok, probe_in};

/// Far beyond pebble's certificate lifetime (5 years): `lego renew --days` then always renews.
const FORCE_DAYS: &str = "100000";
const UNITS: [&str; 2] = ["mailbake-acme.service", "chasquid.service"];
/// The message `drain` has to deal with.
const DRAIN_SUBJECT: &str = "queued while the receiver is down";
const DRAIN_RCPT: &str = "someone@gmail4.test";

/// What the phases share once a guest is up.
struct Acme {
    pebble_issuer: String,
    guest: Guest,
    site: AcmeSite,
    _dns: Dns,
    net: TestNet,
    tmp: PathBuf,
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
        seen.expect("three ports probed")
    }

    /// Port 465's certificate, or None while chasquid restarts.
    fn served_465(&self) -> Option<Value> {
        probe_in(&self.net, &["cert", GUEST4, "465", "--mode", "tls"]).ok()
    }

    /// Starts the renewal service with `env` in a runtime drop-in and waits for its result.
    fn renew_with(&self, env: &str) -> Output {
        self.guest.ssh(&format!(
            "sudo mkdir -p /run/systemd/system/mailbake-acme.service.d && \
             printf '[Service]\\nEnvironment={env}\\n' | sudo tee /run/systemd/system/mailbake-acme.service.d/test.conf >/dev/null && \
             sudo systemctl daemon-reload"
        ));
        self.guest
            .try_ssh("sudo systemctl start mailbake-acme.service")
    }

    /// The SHA-256 fingerprint of the certificate the secrets store holds for the host.
    fn stored_fingerprint(&self) -> String {
        let fqdn = FQDN.try_into().expect("a domain");
        fingerprint(
            &self
                .site
                .site
                .secrets()
                .join("acme")
                .join(LegoCertificate::of(&fqdn).chain),
        )
    }

    /// `mailbake drain SITE --host mx1 ARGS…` from the test network, as the operator.
    fn drain(&self, args: &[&str]) -> Output {
        let key = self.site.site.ssh_key.display().to_string();
        let o = testkit::output(
            self.net
                .command(testkit::mailbake_bin())
                .arg("drain")
                .arg(self.site.site.path())
                .args(["--host", "mx1", "--connect", GUEST4, "--ssh-key", &key])
                .args(["--ssh-option", "StrictHostKeyChecking=no"])
                .args(["--ssh-option", "UserKnownHostsFile=/dev/null"])
                .args(args),
        );
        // The transcript docs/upgrade.md shows.
        eprintln!(
            "acme: $ mailbake drain site.yaml --host mx1 {}\n{}{}(exit {})",
            args.join(" "),
            String::from_utf8_lossy(&o.stderr),
            String::from_utf8_lossy(&o.stdout),
            o.status.code().unwrap_or(-1)
        );
        o
    }

    /// Whether port 25 accepts connections now.
    fn port_25_answers(&self) -> bool {
        self.port_answers(25)
    }

    /// Whether the guest's `port` greets now (465 over TLS, the others in plain text).
    fn port_answers(&self, port: u16) -> bool {
        let port = port.to_string();
        let mut args = vec!["--timeout", "5", "ehlo", GUEST4, &port];
        if port == "465" {
            args.extend(["--mode", "tls"]);
        }
        probe_in(&self.net, &args).is_ok()
    }
}

fn as_str<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("no `{key}` in {v}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn acme_certificate_survives_reinstalls_drain_empties_the_queue_and_renewal_works() {
    assert!(
        testkit::is_root(),
        "this test needs root: a network namespace, and mke2fs of a root-owned tree"
    );
    let mut phases = Phases::new("acme");
    let tmp = tempfile::tempdir().expect("tempdir");
    let net = phases.run("test network", || ok(TestNet::create()));
    let (mut site, out0) = phases.run("site, and a build for the DNS zones", || {
        let site = AcmeSite::create(&net, tmp.path());
        let out0 = tmp.path().join("out0");
        site.site.build(&out0);
        (site, out0)
    });
    let (dns, pebble_issuer) = phases.run("DNS open to signed updates, and pebble", || {
        let gmail4 = Zone::from_records(
            GMAIL4,
            &[format!("@ IN MX 10 {MX4_NAME}."), format!("mx IN A {MX4}")],
        );
        let dns = site.start_internet(&net, &out0, vec![gmail4]);
        (dns, site.pebble.issuer())
    });
    phases.run("mailbake cert: one issuance, kept in the store", || {
        let o = site.cert(&net, &[]);
        assert!(
            o.status.success(),
            "{}\n{}",
            text(&o.stdout),
            text(&o.stderr)
        );
        assert_eq!(site.pebble.issued(), 1, "{}", site.pebble.log());
    });
    let out1 = tmp.path().join("out1");
    let image = phases.run("build and image", || {
        site.site.build(&out1);
        let image = out1.join("mail.qcow2");
        build_image(&out1.join("overlay.tar"), &image);
        image
    });
    let guest = phases.run("first boot", || {
        boot(
            &net,
            &site,
            &image,
            &out1,
            &tmp.path().join("disk1.qcow2"),
            "serial1.log",
        )
    });
    phases.watch(guest.evidence_source());
    let mut t = Acme {
        pebble_issuer,
        guest,
        site,
        _dns: dns,
        net,
        tmp: tmp.path().to_path_buf(),
    };
    phases.run("no way out: no default route", || {
        assert_eq!(ok(t.net.default_routes()), Vec::<String>::new());
    });
    phases.run(
        "the stored certificate is served on 25, 587 and 465 before the host's timer ran",
        || served_before_the_timer(&t),
    );
    phases.run("the host's timer renews nothing", || {
        timer_renews_nothing(&t)
    });
    drain_phases(&mut phases, &t);
    t.guest.shutdown();

    let out2 = tmp.path().join("out2");
    phases.run(
        "reinstall: a second build, the same image, a wiped disk",
        || {
            t.site.site.build(&out2);
            for file in ["overlay.tar", "hosts/mx1/seed.img"] {
                assert_eq!(
                    fs::read(out1.join(file)).expect("first build"),
                    fs::read(out2.join(file)).expect("second build"),
                    "{file} differs between the builds: nothing may have been re-issued"
                );
            }
            t.guest = boot(
                &t.net,
                &t.site,
                &image,
                &out2,
                &t.tmp.join("disk2.qcow2"),
                "serial2.log",
            );
        },
    );
    phases.watch(t.guest.evidence_source());
    phases.run(
        "after the reinstall the same certificate, still one issuance",
        || {
            served_before_the_timer(&t);
            timer_renews_nothing(&t);
            eprintln!(
                "acme: pebble issuances over two builds and two boots: {}",
                t.site.pebble.issued()
            );
        },
    );
    phases.run(
        "the exported message, put into the new host's queue, is delivered",
        || reinject(&t),
    );
    let serial_1 = phases.run(
        "with no lego state the host obtains its own certificate",
        || own_certificate(&t),
    );
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

/// Boots `image` on a fresh writable layer `disk` (a wiped disk) with `out`'s seed of mx1 and
/// waits for SMTP.
fn boot(net: &TestNet, site: &AcmeSite, image: &Path, out: &Path, disk: &Path, log: &str) -> Guest {
    writable_layer(image, disk);
    let mut guest = Guest::boot(
        net,
        &GuestOptions {
            disk,
            seed: &out.join("hosts/mx1/seed.img"),
            ssh_key: &site.site.ssh_key,
            serial_log: disk.with_file_name(log),
            journal_units: &UNITS,
        },
    );
    let to_smtp = guest.wait_for_smtp(Duration::from_secs(600));
    eprintln!("acme: SMTP up {:.0} s after boot", to_smtp.as_secs_f64());
    guest
}

/// A unit property as a number (`systemctl show -p NAME --value`).
fn unit_number(t: &Acme, unit: &str, property: &str) -> u64 {
    let v = t
        .guest
        .ssh(&format!("systemctl show {unit} -p {property} --value"));
    v.trim()
        .parse()
        .unwrap_or_else(|_| panic!("{unit} {property} = {v:?}"))
}

/// The seed's certificate is what chasquid serves, and the chasquid serving it started before
/// the host's ACME service ever ran (chasquid reads certificates only at start-up, so what it
/// serves was installed before any renewal could have run).
fn served_before_the_timer(t: &Acme) {
    let served = t.served();
    assert_eq!(
        as_str(&served, "sha256"),
        t.stored_fingerprint(),
        "chasquid serves the certificate of the secrets store: {served}"
    );
    assert_eq!(as_str(&served, "issuer"), t.pebble_issuer, "{served}");
    let chasquid_up = unit_number(t, "chasquid.service", "ActiveEnterTimestampMonotonic");
    // The first start of the ACME service in this boot, in the journal's monotonic clock.
    let first_run = t.guest.ssh(
        "sudo journalctl -b -u mailbake-acme.service -o short-monotonic --no-pager | grep -m1 -o '^\\[ *[0-9.]*\\]' || true",
    );
    let first_run = first_run
        .trim()
        .trim_matches(['[', ']', ' '])
        .parse::<f64>()
        .ok();
    if let Some(first_run) = first_run {
        assert!(
            (chasquid_up as f64) / 1e6 < first_run,
            "chasquid started at {} s, after the ACME service's first run at {first_run} s",
            chasquid_up as f64 / 1e6
        );
    }
    eprintln!(
        "acme: chasquid up at {:.1} s serving the stored certificate; the ACME service first ran at {}",
        chasquid_up as f64 / 1e6,
        first_run.map_or("(not yet)".into(), |s| format!("{s:.1} s"))
    );
    let journal = t.guest.ssh("sudo journalctl -b --no-pager -o cat");
    assert!(
        !journal.contains("bootstrap-cert: made a self-signed certificate"),
        "with a stored certificate no bootstrap certificate is made"
    );
}

/// The boot timer's run finds lego's state from the seed and renews nothing.
fn timer_renews_nothing(t: &Acme) {
    let deadline = Instant::now() + Duration::from_secs(300);
    while unit_number(t, "mailbake-acme.service", "ExecMainExitTimestampMonotonic") == 0 {
        assert!(
            Instant::now() < deadline,
            "the boot timer never ran the ACME service"
        );
        std::thread::sleep(Duration::from_secs(3));
    }
    let journal = t
        .guest
        .ssh("sudo journalctl -b --no-pager -o cat -u mailbake-acme.service");
    assert!(
        journal.contains("the number of days defined to perform the renewal is 30: no renewal"),
        "lego renewed from the seed's state and found nothing to do:\n{journal}"
    );
    assert!(!journal.contains("acme-deploy: installed"), "{journal}");
    assert_eq!(
        t.guest
            .ssh("systemctl show mailbake-acme.service -p Result --value")
            .trim(),
        "success"
    );
    assert_eq!(t.site.pebble.issued(), 1, "{}", t.site.pebble.log());
    assert_eq!(as_str(&t.served(), "sha256"), t.stored_fingerprint());
}

fn drain_phases(phases: &mut Phases, t: &Acme) {
    phases.run("drain: a message for a receiver that is down is reported", || {
        let sent = probe_in(
            &t.net,
            &[
                "submit", GUEST4, "587", "--mode", "starttls", "--user", "i@example.com",
                "--password", PASSWORD, "--from", "i@example.com", "--to", DRAIN_RCPT,
                "--subject", DRAIN_SUBJECT,
            ],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(sent["accepted"], true, "{sent}");
        let o = t.drain(&["--timeout", "20s"]);
        let (said, err) = (text(&o.stdout), text(&o.stderr));
        assert_eq!(o.status.code(), Some(1), "{said}\n{err}");
        for part in [
            "smtp.example.com: port 25 closed, submission (587, 465) open; 1 message(s) still queued after 20 s:",
            "from <i@example.com>",
            &format!("to <{DRAIN_RCPT}>: pending; last error: "),
            "connection refused",
        ] {
            assert!(said.contains(part), "`{part}` missing:\n{said}");
        }
        assert!(err.contains("1 message(s) are still queued on smtp.example.com"), "{err}");
        assert!(!t.port_25_answers(), "port 25 is closed while draining");
        let banner = probe_in(&t.net, &["banner", GUEST4, "587"]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(banner["code"], 220, "submission stays up: {banner}");
    });
    phases.run("drain --export keeps what is left", || {
        let dir = t.tmp.join("exported");
        let o = t.drain(&["--timeout", "10s", "--export", &dir.display().to_string()]);
        assert!(
            o.status.success(),
            "{}\n{}",
            text(&o.stdout),
            text(&o.stderr)
        );
        let items: Vec<PathBuf> = fs::read_dir(&dir)
            .expect("the export directory")
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("m:"))
            })
            .collect();
        assert_eq!(items.len(), 1, "{items:?}");
        let item = QueueItem::parse("m:x", &fs::read(&items[0]).expect("item")).expect("parses");
        assert_eq!(item.to, [DRAIN_RCPT]);
    });
    phases.run(
        "drain --all: with the receiver up the queue empties, 25, 587 and 465 close",
        || {
            assert!(
                t.port_answers(587) && t.port_answers(465),
                "submission is open before drain --all"
            );
            let inbox = t
                .net
                .enter(|| ok(Inbox::start(SocketAddr::new(MX4.parse().expect("MX4"), 25))));
            let o = t.drain(&["--all", "--timeout", "120s"]);
            let said = text(&o.stdout);
            assert!(o.status.success(), "{said}\n{}", text(&o.stderr));
            assert!(
                said.contains("smtp.example.com: ports 25, 587 and 465 closed; the queue is empty"),
                "{said}"
            );
            let m = ok(inbox.wait_for(
                |m| m.header("Subject").as_deref() == Some(DRAIN_SUBJECT),
                Duration::from_secs(30),
            ));
            assert_eq!(m.rcpt_to, [DRAIN_RCPT]);
            for port in [25, 587, 465] {
                assert!(
                    !t.port_answers(port),
                    "port {port} is closed after drain --all"
                );
            }
            let empty = t.guest.ssh("sudo ls /var/lib/chasquid/queue");
            assert!(!empty.contains("m:"), "the guest's queue: {empty}");
        },
    );
}

/// docs/upgrade.md's re-injection: the exported item into the new host's queue, a restart.
fn reinject(t: &Acme) {
    let dir = t.tmp.join("exported");
    let item = fs::read_dir(&dir)
        .expect("the export directory")
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("m:"))
        })
        .expect("an exported item");
    let name = item
        .file_name()
        .expect("a name")
        .to_string_lossy()
        .into_owned();
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(fs::read(&item).expect("item"));
    let inbox = t
        .net
        .enter(|| ok(Inbox::start(SocketAddr::new(MX4.parse().expect("MX4"), 25))));
    t.guest.ssh(&format!(
        "printf %s {b64} | base64 -d > /tmp/{name} && \
         sudo install -o chasquid -g chasquid -m 0600 /tmp/{name} /var/lib/chasquid/queue/ && \
         sudo systemctl restart chasquid.service"
    ));
    let m = ok(inbox.wait_for(
        |m| m.header("Subject").as_deref() == Some(DRAIN_SUBJECT),
        Duration::from_secs(120),
    ));
    assert_eq!(m.rcpt_to, [DRAIN_RCPT]);
}

/// Without the seed's state (as on a host whose operator never ran `mailbake cert`), lego
/// registers an account and obtains a certificate on its own.
fn own_certificate(t: &Acme) -> String {
    let before = t.served();
    t.guest
        .ssh("sudo rm -rf /var/lib/mailbake/acme/accounts /var/lib/mailbake/acme/certificates");
    let renewed = t.renew_with("ACME_RENEW_DAYS=30");
    assert!(
        renewed.status.success(),
        "the host's own issuance failed: {}",
        text(&renewed.stderr)
    );
    let serial = wait_for_new_serial(t, as_str(&before, "serial"));
    let journal = t
        .guest
        .ssh("sudo journalctl -b --no-pager -o cat -u mailbake-acme.service");
    assert!(
        journal.contains("acme-deploy: installed a new certificate"),
        "the deploy hook ran:\n{journal}"
    );
    assert_eq!(t.site.pebble.issued(), 2, "{}", t.site.pebble.log());
    serial
}

/// Waits until port 465 serves a serial other than `old`; returns the new one.
fn wait_for_new_serial(t: &Acme, old: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    let new = loop {
        // chasquid may be restarting for a moment.
        if t.served_465()
            .is_some_and(|c| c["serial"].as_str() != Some(old))
        {
            break t.served();
        }
        assert!(
            Instant::now() < deadline,
            "still the old certificate after renewal"
        );
        std::thread::sleep(Duration::from_secs(2));
    };
    assert_eq!(as_str(&new, "issuer"), t.pebble_issuer, "{new}");
    let mut sans: Vec<&str> = new["sans"]
        .as_array()
        .expect("sans")
        .iter()
        .map(|s| s.as_str().expect("a name"))
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
    as_str(&new, "serial").to_string()
}

fn forced_renewal(t: &Acme, serial_1: &str) -> String {
    let renewed = t.renew_with(&format!("ACME_RENEW_DAYS={FORCE_DAYS}"));
    assert!(
        renewed.status.success(),
        "the forced renewal failed: {}",
        text(&renewed.stderr),
    );
    let serial_2 = wait_for_new_serial(t, serial_1);
    assert_ne!(serial_1, serial_2);
    let timers = t
        .guest
        .ssh("systemctl list-timers --all --no-legend --plain mailbake-acme.timer");
    assert!(
        timers.contains("mailbake-acme.timer"),
        "the renewal timer is scheduled: {timers}"
    );
    serial_2
}

fn ca_down(t: &mut Acme, serial_2: &str) {
    t.site.pebble.stop();
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
