//! The walkthrough's promises, proven on a booted image on the test network.
//!
//! A site is baked into an overlay, a seed and DNS records; the image is built on the Debian 12
//! test base and booted **through SeaBIOS and GRUB** under TCG with the host's seed attached,
//! on a tap of the test network's bridge (no user network), with the site's own addresses
//! 203.0.113.10 and 2001:db8:1::10 from its seed. The namespace plays the internet (see
//! `testkit::topology`): BIND serves the zones and PTRs `mailbake` wrote and the other test
//! domains, Postfix with rspamd stands in for Gmail (gmail4.test over IPv4 only, gmail6.test
//! over IPv6 only), and sender.test sends into the site. Then, from outside, as a user would:
//! banner, EHLO, STARTTLS with the seed's certificate, AUTH refused before TLS, AUTH on 587 and
//! 465, no open relay, the receiver's SPF, DKIM (RSA and Ed25519), DMARC and iprev verdicts
//! over IPv4 and over IPv6, the catch-all forwarding of a sender.test message, a second
//! verifier agreeing, testssl on 25, 587 and 465; inside over SSH: IPv6, sysctl, hostname,
//! modes, no failed units; no secret in the disk image; docs/security.md's promises from the
//! test network (`mail_flow/hardening.rs`: TLS 1.0 and 1.1 refused on every port, chasquid's
//! running GODEBUG, the auth guard banning an address that keeps failing logins);
//! `mailbake verify` all green from inside the test network, then failing, with the fix, on
//! each fault injected in turn (a DNSBL listing, a wrong IPv6 PTR, SPF without the IPv6
//! address, a stale DKIM key, DMARC removed, a certificate for another name, an expired one);
//! `mailbake send-test` on 465 and 587 judged pass by the receiver; a clean reboot that keeps
//! queue and secrets without re-applying the seed and delivers a burst queued while the
//! receiver was down; a changed seed that is applied. Last, what a 250 is worth: bursts of
//! uniquely named messages counted at the receiver across a `systemctl restart chasquid` and
//! a power cut (QEMU killed right after the last 250): none lost.
//!
//! One guest, one topology, the checks as phases: add one as `testkit`'s docs say. Phases
//! that later ones need (`Phases::run`) stop the test when they fail; the rest are checks
//! (`Phases::check`), reported one by one, so a broken promise does not hide the others.
//!
//! Needs root (a network namespace, mke2fs of a root-owned tree) and takes about twenty-five
//! minutes, most of it TCG boots. It never skips: a missing piece fails with the reason.

#[path = "mail_flow/durability.rs"]
mod durability;
#[path = "mail_flow/hardening.rs"]
mod hardening;
#[path = "mail_flow/live_checks.rs"]
mod live_checks;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use mailbake::boot::{DiskCache, Firmware};
use mailbake::site::DkimAlgorithm;
use serde_json::Value;
use testkit::guest::{GuestOptions, Machine, build_image, writable_layer};
use testkit::internet::{Internet, SENDER_SELECTOR, Verdicts, site_dns};
use testkit::site::{FQDN, TestSite, hosts_yaml};
use testkit::tls_scan::testssl;
use testkit::topology::*;
use testkit::{Guest, Phases, TestNet, ok, probe_in, probe_with_stdin};

const PASSWORD: &str = "submission password 42";
const SELECTORS: [(&str, &str); 2] = [("example.com", "2026a-rsa"), ("example.com", "2026a-ed")];
/// The Gmail stand-in addresses of each family, and the catch-all's destination.
const TO4: &str = "someone@gmail4.test";
const TO6: &str = "someone@gmail6.test";
const CATCHALL: &str = "catchall@gmail4.test";
const UNITS: [&str; 3] = [
    "chasquid.service",
    "mailbake-apply-seed.service",
    "systemd-networkd.service",
];

fn site_yaml(ssh_key: &str, users: &str) -> String {
    format!(
        r#"site: qemutest
domains:
  example.com:
    users: [{users}]
    aliases:
      postmaster: i
      "*": {CATCHALL}
    dkim:
      selectors:
        2026a-rsa: rsa-2048
        2026a-ed: ed25519
    spf: {{ policy: "~all" }}
    dmarc: {{ p: quarantine, np: reject, rua: "mailto:postmaster@example.com" }}
{hosts}tls:
  files: true
ssh:
  authorized_keys: ["{ssh_key}"]
"#,
        hosts = hosts_yaml()
    )
}

/// Everything the phases share once the guest is up.
struct MailFlow {
    tmp: PathBuf,
    site: TestSite,
    out: PathBuf,
    disk: PathBuf,
    /// The seed the guest boots with now.
    seed: PathBuf,
    cert_fingerprint: String,
    pki: live_checks::SitePki,
    guest: Guest,
    internet: Internet,
    net: TestNet,
}

impl MailFlow {
    fn probe(&self, args: &[&str]) -> Value {
        probe_in(&self.net, args).unwrap_or_else(|e| panic!("probe {args:?} failed: {e}"))
    }

    /// Submits a message as `user` on `port` (587 STARTTLS, 465 TLS).
    fn submit(&self, port: &str, user: &str, password: &str, to: &str, subject: &str) -> Value {
        let mode = if port == "465" { "tls" } else { "starttls" };
        self.probe(&[
            "submit",
            GUEST4,
            port,
            "--mode",
            mode,
            "--user",
            user,
            "--password",
            password,
            "--from",
            user,
            "--to",
            to,
            "--subject",
            subject,
        ])
    }
}

#[test]
fn mail_flows_through_a_booted_image_on_the_test_network() {
    assert!(
        testkit::is_root(),
        "this test needs root: a network namespace, and mke2fs of a root-owned tree"
    );
    let mut phases = Phases::new("mail_flow");
    let tmp = tempfile::tempdir().unwrap();
    let (site, out, pki) = phases.run("site and build", || build_site(tmp.path()));
    let disk = phases.run("image, no secret in it", || image(tmp.path(), &site, &out));
    let (net, internet) = phases.run("test network and its internet", || {
        internet(tmp.path(), &out)
    });
    let guest = phases.run("first boot on the test network", || {
        first_boot(&net, &site, &out, &disk, tmp.path())
    });
    phases.watch(guest.evidence_source());
    let mut t = MailFlow {
        tmp: tmp.path().to_path_buf(),
        seed: out.join("hosts/mx1/seed.img"),
        site,
        out,
        disk,
        cert_fingerprint: pki.good.fingerprint.clone(),
        pki,
        guest,
        internet,
        net,
    };

    // From here on, a phase that nothing later needs is a check: a failure is reported and
    // the test goes on, so one broken promise does not hide the others.
    phases.check("no way out: no default route, no user network", || {
        isolated(&t)
    });
    phases.check("banner and EHLO", || banner_and_ehlo(&t));
    phases.check("the seed's certificate on 25, 587, 465", || {
        certificates(&t)
    });
    phases.check("AUTH refused before TLS and with a wrong password", || {
        auth_refusals(&t)
    });
    phases.check("no open relay", || no_open_relay(&t));
    phases.check("submission delivered over IPv4", || delivered_over_ipv4(&t));
    phases.check("submission delivered over IPv6", || delivered_over_ipv6(&t));
    phases.check("catch-all forwarding of a sender.test message", || {
        catch_all_forwarding(&t)
    });
    phases.check("inside: IPv6, sysctl, hostname, modes, units", || {
        inside(&t)
    });
    phases.check("testssl on 25, 587 and 465", || tls_quality(&t));
    hardening::phases(&mut phases, &t);
    live_checks::phases(&mut phases, &t);
    let queued = phases.run(
        "a clean reboot keeps queue and secrets, applies no seed, delivers the 20 queued",
        || reboot(&mut t),
    );
    phases.run("a changed seed is applied, booting through UEFI", || {
        reseed(&mut t, &queued)
    });
    // These end the guest's life: a power cut last.
    durability::phases(&mut phases, &mut t);
    phases.summary();
}

fn build_site(tmp: &Path) -> (TestSite, PathBuf, live_checks::SitePki) {
    let site = TestSite::create(&tmp.join("site"));
    site.write(&site_yaml(&site.public_key(), "i"));
    site.add_user("example.com", "i", PASSWORD);
    site.dkim_keygen(
        "example.com",
        &[
            ("2026a-rsa", DkimAlgorithm::Rsa2048),
            ("2026a-ed", DkimAlgorithm::Ed25519),
        ],
    );
    let store = site.store();
    // The site's own certificate (tls.files), from a test CA that `verify --ca` and
    // `send-test --ca` trust: the seed carries it, chasquid must serve it.
    let pki = live_checks::SitePki::create(&tmp.join("cert"));
    store
        .write_secret(
            mailbake::secrets::TLS_FULLCHAIN,
            &fs::read(&pki.good.chain).unwrap(),
        )
        .unwrap();
    store
        .write_secret(
            mailbake::secrets::TLS_PRIVKEY,
            &fs::read(&pki.good.key).unwrap(),
        )
        .unwrap();
    let out = tmp.join("out");
    site.build(&out);
    (site, out, pki)
}

fn image(tmp: &Path, site: &TestSite, out: &Path) -> PathBuf {
    let image = out.join("mail.qcow2");
    build_image(&out.join("overlay.tar"), &image);
    assert_no_secret_in(&image, site);
    assert_no_secret_in(&out.join("overlay.tar"), site);
    let disk = tmp.join("disk.qcow2");
    writable_layer(&image, &disk);
    disk
}

fn internet(tmp: &Path, out: &Path) -> (TestNet, Internet) {
    let net = ok(TestNet::create());
    let (mut zones, ptrs) = site_dns(out);
    // A block list of the test network's own, so verify's DNSBL check really asks one.
    zones.push(live_checks::dnsbl_zone(&[]));
    assert!(
        ptrs.iter()
            .any(|(n, v)| n == "10.113.0.203.in-addr.arpa" && v == FQDN),
        "mailbake dns gives the IPv4 PTR: {ptrs:?}"
    );
    let internet = Internet::start(&net, &tmp.join("internet"), zones, &ptrs);
    let dns = &internet.dns;
    assert_eq!(
        ok(dns.dig(FQDN, "A")),
        [GUEST4],
        "the zone mailbake wrote is served"
    );
    assert_eq!(ok(dns.dig(FQDN, "AAAA")), [GUEST6]);
    let ptr6 = ok(dns.dig(&testkit::internet::ip6_arpa(GUEST6), "PTR"));
    assert_eq!(
        ptr6,
        [format!("{FQDN}.")],
        "the IPv6 PTR from mailbake dns is served"
    );
    (net, internet)
}

fn first_boot(net: &TestNet, site: &TestSite, out: &Path, disk: &Path, tmp: &Path) -> Guest {
    // As Contabo boots it: SeaBIOS, the disk on virtio-scsi.
    let mut guest = Guest::boot_on(
        net,
        &GuestOptions {
            disk,
            seed: &out.join("hosts/mx1/seed.img"),
            ssh_key: &site.ssh_key,
            serial_log: tmp.join("serial-1.log"),
            journal_units: &UNITS,
        },
        Machine::contabo(),
    );
    let to_smtp = guest.wait_for_smtp(Duration::from_secs(600));
    eprintln!(
        "qemu: first boot to SMTP banner under TCG, SeaBIOS, virtio-scsi: {:.0} s",
        to_smtp.as_secs_f64()
    );
    guest.wait_booted();
    guest
}

fn isolated(t: &MailFlow) {
    assert_eq!(
        ok(t.net.default_routes()),
        Vec::<String>::new(),
        "the test network has no default route"
    );
    let cmdline = t.guest.qemu_command_line();
    let netdevs: Vec<&String> = cmdline
        .iter()
        .zip(cmdline.iter().skip(1))
        .filter(|(flag, _)| *flag == "-netdev" || *flag == "-nic")
        .map(|(_, value)| value)
        .collect();
    assert!(
        netdevs.len() == 1 && netdevs[0].starts_with("tap,"),
        "QEMU has one tap and no user network: {cmdline:?}"
    );
    assert!(
        !cmdline
            .iter()
            .any(|a| a.starts_with("user,") || a.contains("hostfwd")),
        "{cmdline:?}"
    );
}

fn banner_and_ehlo(t: &MailFlow) {
    let banner = t.probe(&["banner", GUEST4, "25"]);
    assert!(
        banner["line"]
            .as_str()
            .unwrap()
            .starts_with(&format!("220 {FQDN} ")),
        "banner names the fqdn: {banner}"
    );
    let ehlo = t.probe(&["ehlo", GUEST4, "25"]);
    assert!(
        ehlo["extensions"].get("STARTTLS").is_some(),
        "EHLO offers STARTTLS: {ehlo}"
    );
}

fn certificates(t: &MailFlow) {
    for (port, mode) in [("25", "starttls"), ("587", "starttls"), ("465", "tls")] {
        let cert = t.probe(&["cert", GUEST4, port, "--mode", mode]);
        assert_eq!(
            cert["sha256"].as_str().unwrap(),
            t.cert_fingerprint,
            "port {port} serves the seed's certificate: {cert}"
        );
    }
}

fn auth_refusals(t: &MailFlow) {
    let before = t.probe(&["auth-before-tls", GUEST4, "587", "i@example.com", PASSWORD]);
    assert_eq!(
        before["refused"], true,
        "AUTH without TLS must be refused: {before}"
    );
    let wrong = t.submit(
        "587",
        "i@example.com",
        "not the password at all",
        TO4,
        "wrong",
    );
    assert_eq!(
        (wrong["accepted"].as_bool(), wrong["stage"].as_str()),
        (Some(false), Some("auth")),
        "a wrong password fails: {wrong}"
    );
}

fn no_open_relay(t: &MailFlow) {
    let relay = t.probe(&[
        "relay",
        GUEST4,
        "25",
        "--from",
        "spammer@elsewhere.test",
        "--to",
        "victim@gmail4.test",
    ]);
    assert_eq!(relay["refused"], true, "relaying must be refused: {relay}");
}

/// Submits on `port`, waits for the copy at `to`, and checks every verdict passes with both
/// selectors, that the receiver saw the guest's `source` address, and (as before the test
/// network) that both signatures verify against the published records with dkimpy alone.
fn submission(t: &MailFlow, port: &str, to: &str, subject: &str, source: &str) -> Verdicts {
    let sent = t.submit(port, "i@example.com", PASSWORD, to, subject);
    assert_eq!(sent["accepted"], true, "submission {subject}: {sent}");
    let arrived = t.internet.delivered(to, subject);
    assert_eq!(arrived.mail_from(), "i@example.com");
    let (name, addr) = arrived.client();
    assert_eq!(
        (name.as_str(), addr.as_str()),
        (FQDN, source),
        "the receiver saw the guest's own address with its confirmed name: {}",
        arrived.received()
    );
    let v = Verdicts::of(&t.net, &arrived);
    eprintln!(
        "mail_flow: {subject}:\n  Authentication-Results: {}\n  Received: {}\n  iprev: {}\n  second verifier: {}",
        v.authentication_results, v.received, v.iprev, v.second
    );
    v.assert_all_pass(&SELECTORS);
    let records = t.out.join("dns/records.json").display().to_string();
    let verified = probe_with_stdin(&["dkim-verify", "--records", &records], &arrived.data)
        .unwrap_or_else(|e| {
            panic!(
                "DKIM does not verify for {subject}: {e}\n{}",
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
    v
}

fn delivered_over_ipv4(t: &MailFlow) {
    for (port, subject) in [("587", "via 587 over IPv4"), ("465", "via 465 over IPv4")] {
        submission(t, port, TO4, subject, GUEST4);
    }
}

fn delivered_over_ipv6(t: &MailFlow) {
    for (port, subject) in [("587", "via 587 over IPv6"), ("465", "via 465 over IPv6")] {
        let v = submission(t, port, TO6, subject, GUEST6);
        // The walkthrough's last check: "show original" names the server's IPv6 address.
        assert!(
            v.received.contains(&format!("[IPv6:{GUEST6}]")),
            "the receiver's Received shows the guest's IPv6 source: {}",
            v.received
        );
        assert!(
            v.spf.contains(&format!("designates {GUEST6} as permitted")),
            "SPF was judged for the IPv6 address: {}",
            v.spf
        );
    }
}

fn catch_all_forwarding(t: &MailFlow) {
    let key = t.internet.sender.key.display().to_string();
    let inbound = t.probe(&[
        "--helo",
        SENDER_NAME,
        "submit",
        GUEST4,
        "25",
        "--mode",
        "starttls",
        "--source",
        SENDER4,
        "--from",
        "friend@sender.test",
        "--to",
        "random123@example.com",
        "--subject",
        "catch-all",
        "--dkim-key",
        &key,
        "--dkim-selector",
        SENDER_SELECTOR,
    ]);
    assert_eq!(
        inbound["accepted"], true,
        "inbound mail for the domain is accepted: {inbound}"
    );
    let forwarded = t.internet.delivered(CATCHALL, "catch-all");
    assert!(
        forwarded
            .mail_from()
            .contains("+fwd_from=friend=sender.test@example.com"),
        "sender rewritten: {}",
        forwarded.mail_from()
    );
    let v = Verdicts::of(&t.net, &forwarded);
    eprintln!(
        "mail_flow: catch-all:\n  Authentication-Results: {}\n  Received: {}\n  iprev: {}\n  ARC-Seal: {:?}\n  second verifier: {}",
        v.authentication_results,
        v.received,
        v.iprev,
        forwarded.header("ARC-Seal"),
        v.second
    );
    // SPF for the rewritten sender (our domain, our address), sender.test's own signature
    // still verifying, and DMARC for sender.test passing through that signature.
    assert!(
        v.spf.starts_with("pass")
            && v.spf.contains("smtp.mailfrom=")
            && v.spf.contains("@example.com"),
        "SPF passes for the rewritten envelope sender: {v:#?}"
    );
    assert!(
        v.dmarc.starts_with("pass") && v.dmarc.contains("header.from=sender.test"),
        "DMARC passes for sender.test: {v:#?}"
    );
    v.assert_all_pass(&[(SENDER_DOMAIN, SENDER_SELECTOR)]);
    eprintln!(
        "mail_flow: ARC on the forwarded copy: {}",
        match (&v.arc, forwarded.header("ARC-Seal")) {
            (Some(arc), Some(_)) => format!("sealed, rspamd says arc={arc}"),
            (None, None) => "none (the image does not seal forwarded mail)".to_string(),
            (arc, seal) => format!("rspamd arc={arc:?}, ARC-Seal {seal:?}"),
        }
    );
}

fn inside(t: &MailFlow) {
    let g = &t.guest;
    let addresses = g.ssh("ip -6 addr show");
    assert!(
        addresses.contains(&format!("inet6 {GUEST6}/64 scope global")),
        "static IPv6 configured:\n{addresses}"
    );
    let route = g.ssh("ip -6 route show default");
    assert!(
        route.contains(&format!("via {ROUTER6_LINK_LOCAL}")),
        "IPv6 default route through the link-local gateway: {route}"
    );
    let sysctl = g.ssh("cat /proc/sys/net/ipv6/conf/all/disable_ipv6 /proc/sys/net/ipv6/conf/default/disable_ipv6 /proc/sys/net/ipv6/conf/lo/disable_ipv6");
    assert_eq!(
        sysctl.split_whitespace().collect::<Vec<_>>(),
        ["0", "0", "0"],
        "IPv6 enabled by sysctl"
    );
    assert_eq!(g.ssh("hostname").trim(), FQDN);
    let modes = g.ssh(&format!(
        "sudo stat -c '%a %U %G %n' /etc/chasquid/domains/example.com/users '/etc/chasquid/domains/example.com/dkim:2026a-rsa.pem' \
         '/etc/chasquid/domains/example.com/dkim:2026a-ed.pem' /etc/chasquid/certs/{FQDN}/privkey.pem /etc/chasquid/certs/{FQDN}/fullchain.pem"
    ));
    for line in modes.lines() {
        assert!(
            line.starts_with("640 root chasquid "),
            "secret readable by root and chasquid only: {line}"
        );
    }
    let failed = g.ssh("systemctl --failed --no-legend --plain");
    assert!(
        failed.trim().is_empty(),
        "failed units:\n{failed}\n--- cloud-init warnings ---\n{}\n--- journal warnings ---\n{}",
        g.ssh("sudo grep -E 'WARNING|ERROR|Traceback' /var/log/cloud-init.log | tail -40 || true"),
        g.ssh("sudo journalctl -b -p warning --no-pager | tail -40")
    );
    assert_eq!(
        g.ssh("systemctl is-active chasquid.service").trim(),
        "active"
    );
    boots_only_what_the_image_needs(g);
    keeps_the_bases_own_files(g);
}

/// The image stage wrote the overlay into the base's own filesystem and kept the rest: the
/// base's file capability survived (an extended attribute), and the base's ESP is there and
/// mounted where its fstab says.
fn keeps_the_bases_own_files(g: &testkit::guest::Guest) {
    let caps = g.ssh("/usr/sbin/getcap /usr/bin/ping");
    assert!(
        caps.contains("cap_net_raw"),
        "the base's /usr/bin/ping lost its capability: {caps:?}"
    );
    let efi = g.ssh("findmnt -n -o SOURCE,FSTYPE,LABEL /boot/efi || true");
    assert!(
        efi.contains("vfat") && efi.contains("UEFI"),
        "/boot/efi is not the base's ESP (vfat, label UEFI): {efi:?}\n{}",
        g.ssh("cat /etc/fstab")
    );
    eprintln!("inside: {}; /boot/efi: {}", caps.trim(), efi.trim());
}

/// The overlay's boot-time trims took effect on the real first boot: cloud-init ran its short
/// module lists to the end, the masked unit stayed off and cloud-init's config stage waited
/// for chasquid (docs/image.md, "Boot time").
fn boots_only_what_the_image_needs(g: &testkit::guest::Guest) {
    let status = g.ssh("cloud-init status --long");
    assert!(
        status.contains("status: done"),
        "cloud-init did not finish:\n{status}"
    );
    let missing = g.ssh("sudo grep -E 'Could not find module|failed to run|Traceback' /var/log/cloud-init.log || true");
    assert!(
        missing.trim().is_empty(),
        "cloud-init module errors:\n{missing}"
    );
    assert_eq!(
        g.ssh("systemctl is-enabled e2scrub_reap.service || true")
            .trim(),
        "masked"
    );
    let host_keys = g.ssh("ls /etc/ssh");
    assert!(
        host_keys.contains("ssh_host_ed25519_key.pub") && !host_keys.contains("ssh_host_rsa_key"),
        "host keys are Ed25519 and ECDSA only:\n{host_keys}"
    );
    let started = |unit: &str| -> u64 {
        let v = g.ssh(&format!(
            "systemctl show -P ExecMainStartTimestampMonotonic {unit}"
        ));
        v.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{unit}: no start time in {v:?}"))
    };
    let (chasquid, config) = (started("chasquid.service"), started("cloud-config.service"));
    assert!(
        chasquid > 0 && config >= chasquid,
        "cloud-config.service started at {config} µs, before chasquid at {chasquid} µs"
    );
}

fn tls_quality(t: &MailFlow) {
    let expected = t.cert_fingerprint.replace(':', "").to_uppercase();
    for (port, starttls) in [(25, true), (587, true), (465, false)] {
        let r = ok(testssl(&t.net, GUEST4, port, starttls, &t.tmp));
        let offered = r.offered_protocols();
        eprintln!(
            "mail_flow: testssl {}: {:.0} s, protocols offered: {offered:?}",
            r.target, r.seconds
        );
        assert_eq!(
            r.cert_sha256().as_deref(),
            Some(expected.as_str()),
            "port {port} serves the seed's certificate: {r:#?}"
        );
        for old in ["SSLv2", "SSLv3", "TLS1", "TLS1_1"] {
            assert!(r.refuses(old), "{old} on {port}: {r:#?}");
        }
        assert_eq!(
            offered,
            ["TLS1_2", "TLS1_3"],
            "only TLS 1.2 and 1.3 on {port}: {r:#?}"
        );
        for weak in ["cipherlist_NULL", "cipherlist_aNULL", "cipherlist_EXPORT"] {
            assert_eq!(r.get(weak), Some("not offered"), "{weak} on {port}: {r:#?}");
        }
    }
}

/// Queues a message for a domain whose MX answers nowhere and, with the receiver down, a
/// burst; reboots (the receiver back meanwhile) and checks queue and secrets stayed, the
/// unchanged seed was not applied again, and the burst was delivered, none lost. Returns the
/// queued files.
fn reboot(t: &mut MailFlow) -> String {
    let queued = t.submit(
        "587",
        "i@example.com",
        PASSWORD,
        "someone@deferred.test",
        "queued",
    );
    assert_eq!(queued["accepted"], true, "{queued}");
    let burst = durability::queue_burst(t);
    let waiting_for_deferred = |g: &Guest| {
        g.ssh("sudo sh -c 'cd /var/lib/chasquid/queue && grep -l -F -- someone@deferred.test m:* || true'")
    };
    let deferred = waiting_for_deferred(&t.guest);
    assert_eq!(
        queued_files(&deferred).count(),
        1,
        "one queued message for deferred.test: {deferred}"
    );
    let secrets = "sudo sha256sum /etc/chasquid/domains/example.com/users; sudo stat -c %Y /etc/chasquid/domains/example.com/users";
    let secrets_before = t.guest.ssh(secrets);
    let receiver = &mut t.internet.receiver;
    t.guest.reboot_then(|| testkit::ok(receiver.resume()));
    let g = &t.guest;
    g.wait_booted();
    assert_eq!(
        waiting_for_deferred(g),
        deferred,
        "the deferred message's queue file is kept across the reboot"
    );
    assert_eq!(
        secrets_before,
        g.ssh(secrets),
        "secrets untouched by the reboot"
    );
    let applied = g.ssh("sudo journalctl -b -u mailbake-apply-seed.service --no-pager -o cat");
    assert!(
        !applied.contains("apply-seed: installed"),
        "an unchanged seed is not applied again:\n{applied}"
    );
    durability::burst_delivered(t, &burst);
    deferred
}

fn queued_files(listing: &str) -> impl Iterator<Item = &str> {
    listing.lines().filter(|l| l.starts_with("m:"))
}

/// A changed seed (a new user) is applied at the next boot, and the queue survives it.
fn reseed(t: &mut MailFlow, queue_before: &str) {
    t.guest.shutdown();
    t.site.write(&site_yaml(&t.site.public_key(), "i, j"));
    t.site.add_user("example.com", "j", "second user password");
    let out2 = t.tmp.join("out2");
    t.site.build(&out2);
    assert_ne!(
        fs::read_to_string(t.out.join("hosts/mx1/seed/meta-data")).unwrap(),
        fs::read_to_string(out2.join("hosts/mx1/seed/meta-data")).unwrap(),
        "a changed seed has a new instance-id"
    );
    t.seed = out2.join("hosts/mx1/seed.img");
    // The same disk through UEFI (OVMF): the base's own EFI GRUB in its ESP boots it too.
    // This guest's life ends in a power cut (the durability phases): its disk must honour
    // the guest's flushes from now on.
    t.guest = boot_again(t, "serial-3.log", Firmware::Uefi);
    let efi = t
        .guest
        .ssh("test -d /sys/firmware/efi && echo uefi || echo bios");
    assert_eq!(efi.trim(), "uefi", "the guest booted through UEFI");
    let applied = t
        .guest
        .ssh("sudo journalctl -b -u mailbake-apply-seed.service --no-pager -o cat");
    assert!(
        applied.contains("apply-seed: installed"),
        "the changed seed is applied:\n{applied}"
    );
    let sent = t.submit(
        "465",
        "j@example.com",
        "second user password",
        TO4,
        "new user",
    );
    assert_eq!(sent["accepted"], true, "the new user authenticates: {sent}");
    let queue_now = t.guest.ssh("sudo ls /var/lib/chasquid/queue");
    assert!(
        queued_files(queue_before).all(|m| queue_now.contains(m)),
        "queue kept across reseeding: {queue_now}"
    );
}

/// Boots the test's disk again with the current seed through `firmware`, on virtio-scsi, its
/// cache honouring flushes ([`DiskCache::Writeback`]), serial console into `serial_log`;
/// returns once the boot is finished and SMTP answers.
fn boot_again(t: &MailFlow, serial_log: &str, firmware: Firmware) -> Guest {
    let mut guest = Guest::boot_on(
        &t.net,
        &GuestOptions {
            disk: &t.disk,
            seed: &t.seed,
            ssh_key: &t.site.ssh_key,
            serial_log: t.tmp.join(serial_log),
            journal_units: &UNITS,
        },
        Machine {
            cache: DiskCache::Writeback,
            firmware,
            ..Machine::contabo()
        },
    );
    let to_smtp = guest.wait_for_smtp(Duration::from_secs(600));
    eprintln!(
        "qemu: boot to SMTP banner under TCG, {firmware:?}, virtio-scsi: {:.0} s",
        to_smtp.as_secs_f64()
    );
    guest.wait_booted();
    guest
}

/// Every secret's bytes that must never reach the image: the users database, DKIM keys,
/// the TLS key.
fn secrets(site: &TestSite) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for entry in walk(&site.secrets()) {
        let data = fs::read(&entry).unwrap();
        if data.is_empty() || entry.file_name().is_some_and(|n| n == ".lock") {
            continue;
        }
        out.push((entry.display().to_string(), data));
    }
    out
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

/// No line of any secret appears anywhere in `file` (the whole disk image or the overlay).
fn assert_no_secret_in(file: &Path, site: &TestSite) {
    let mut patterns = Vec::new();
    for (name, data) in secrets(site) {
        let lines = needles(&data);
        assert!(!lines.is_empty(), "secret {name} has lines to look for");
        patterns.extend(lines);
    }
    let list = file.with_extension("needles");
    fs::write(&list, patterns.join("\n") + "\n").unwrap();
    // grep -F over the raw bytes: an uncompressed qcow2 keeps file contents as they are.
    let found = testkit::output(
        Command::new("grep")
            .args(["-a", "-F", "-o", "-f"])
            .arg(&list)
            .arg(file),
    );
    assert_eq!(
        found.status.code(),
        Some(1),
        "secret bytes found in {}:\n{}",
        file.display(),
        String::from_utf8_lossy(&found.stdout)
    );
    // A positive control: the same search finds them where they belong, in the seed.
    let seed = file.parent().unwrap().join("hosts/mx1/seed/user-data");
    let control = testkit::output(
        Command::new("grep")
            .args(["-a", "-F", "-c", "-f"])
            .arg(&list)
            .arg(&seed),
    );
    assert_eq!(
        control.status.code(),
        Some(0),
        "the search must find the secrets in {}",
        seed.display()
    );
}
