//! The provider path, booted: user-data alone makes the whole host, static IPv6 included.
//!
//! A VPS provider's API passes only user-data (Contabo's `userData`); its own datasource
//! supplies the meta-data and the network configuration, IPv4 only, with its own interface
//! names. So this test, not mailbake, builds each NoCloud seed the way a provider's datasource
//! presents it: mailbake's `user-data` byte for byte, the provider's own `meta-data` (its own
//! instance-id and host name) and the provider's own `network-config`. One guest, its disk on
//! **virtio-scsi** as Contabo attaches it, boots once per provider variant with the next seed
//! (a new instance-id each time, so cloud-init applies the user-data again):
//!
//! - (b) IPv4 by DHCP from dnsmasq on the test network, which also sends router
//!   advertisements for the guest's /64 (a SLAAC address would appear if the host took them);
//!   the site says DHCP too. This is the first boot, on a fresh disk.
//! - (a) static IPv4 on interface id `eth0`, matched by MAC and renamed to `eth0`;
//! - (c) static IPv4 on id `net0` that also carries the host's own IPv6 address and route.
//!
//! After each boot: the site's IPv6 address and default route and no other global IPv6
//! address (`ip -6 addr`, `ip -6 route` printed), the fqdn of the user-data as host name
//! (not the provider's), a submission delivered over IPv6 and judged pass by the receiver
//! (SPF, DKIM with both selectors, DMARC, and the IPv6 `Received` line), `mailbake verify`
//! all green from inside the test network, and the boot report on the serial console.
//!
//! Needs root (a network namespace, mke2fs of a root-owned tree) and dnsmasq. It never skips.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use mailbake::site::DkimAlgorithm;
use serde_json::Value;
use testkit::certs::{Ca, San};
use testkit::guest::{GuestOptions, Machine, build_image, writable_layer};
use testkit::internet::{Internet, Verdicts, site_dns};
use testkit::site::{FQDN, TestSite};
use testkit::topology::*;
use testkit::{Guest, Phases, TestNet, Zone, mailbake_bin, ok, probe_in, zone_text};

const PASSWORD: &str = "provider path password 7";
const SELECTORS: [(&str, &str); 2] = [("example.com", "2026a-rsa"), ("example.com", "2026a-ed")];
const TO6: &str = "someone@gmail6.test";
/// The MAC QEMU gives the harness's only NIC (`-device virtio-net-pci` without `mac=`): the
/// one a provider's configuration matches on.
const MAC: &str = "52:54:00:12:34:56";
const DNSBL: &str = "dnsbl.test";
const UNITS: [&str; 5] = [
    "mailbake-apply-seed.service",
    "mailbake-network-ready.service",
    "systemd-networkd.service",
    "chasquid.service",
    "cloud-init-local.service",
];

/// One way a provider configures the instance.
struct Variant {
    label: &'static str,
    /// The site says IPv4 by DHCP (a bare address) rather than static.
    site_dhcp: bool,
    meta_data: String,
    network_config: String,
}

fn variants() -> [Variant; 3] {
    let meta = |id: &str| {
        format!("instance-id: provider-{id}-4711\nlocal-hostname: vmi4711{id}.provider.test\n")
    };
    [
        Variant {
            label: "(b) IPv4 by DHCP, router advertisements on the link",
            site_dhcp: true,
            meta_data: meta("b"),
            network_config: format!(
                "version: 2\nethernets:\n  id0:\n    match:\n      macaddress: \"{MAC}\"\n    dhcp4: true\n"
            ),
        },
        Variant {
            label: "(a) static IPv4 on eth0, matched by MAC",
            site_dhcp: false,
            meta_data: meta("a"),
            network_config: format!(
                "version: 2\nethernets:\n  eth0:\n    match:\n      macaddress: \"{MAC}\"\n    set-name: eth0\n    \
                 addresses: [{GUEST4}/{GUEST4_PREFIX}]\n    routes:\n      - {{to: 0.0.0.0/0, via: {ROUTER4}}}\n    \
                 nameservers: {{addresses: [{DNS4}]}}\n"
            ),
        },
        Variant {
            label: "(c) static IPv4 with the same IPv6 on net0",
            site_dhcp: false,
            meta_data: meta("c"),
            network_config: format!(
                "version: 2\nethernets:\n  net0:\n    match:\n      macaddress: \"{MAC}\"\n    \
                 addresses: [{GUEST4}/{GUEST4_PREFIX}, \"{GUEST6}/64\"]\n    routes:\n      - {{to: 0.0.0.0/0, via: {ROUTER4}}}\n      \
                 - {{to: \"::/0\", via: \"{ROUTER6_LINK_LOCAL}\", on-link: true}}\n    nameservers: {{addresses: [{DNS4}]}}\n"
            ),
        },
    ]
}

fn site_yaml(ssh_key: &str, dhcp: bool) -> String {
    let ipv4 = if dhcp {
        GUEST4.to_string()
    } else {
        format!("{{ address: {GUEST4}/{GUEST4_PREFIX}, gateway: {ROUTER4} }}")
    };
    format!(
        r#"site: provider
domains:
  example.com:
    users: [i]
    aliases:
      postmaster: i
    dkim:
      selectors:
        2026a-rsa: rsa-2048
        2026a-ed: ed25519
    spf: {{ policy: "~all" }}
    dmarc: {{ p: quarantine, rua: "mailto:postmaster@example.com" }}
hosts:
  mx1:
    fqdn: {FQDN}
    ipv4: {ipv4}
    ipv6: {{ address: "{GUEST6}/64", gateway: "{ROUTER6_LINK_LOCAL}" }}
    nameservers: [{DNS4}, "{DNS6}"]
tls:
  files: true
ssh:
  authorized_keys: ["{ssh_key}"]
"#
    )
}

/// The site built twice, as the site says static IPv4 and as it says DHCP; the secrets and
/// so the DKIM keys and the certificate are the same.
struct Built {
    site: TestSite,
    ca: PathBuf,
    static_out: PathBuf,
    dhcp_out: PathBuf,
}

fn build(tmp: &Path) -> Built {
    let site = TestSite::create(&tmp.join("site"));
    site.write(&site_yaml(&site.public_key(), false));
    site.add_user("example.com", "i", PASSWORD);
    site.dkim_keygen(
        "example.com",
        &[
            ("2026a-rsa", DkimAlgorithm::Rsa2048),
            ("2026a-ed", DkimAlgorithm::Ed25519),
        ],
    );
    let store = site.store();
    let ca = Ca::create(&tmp.join("ca"), "mailbake provider test site CA");
    let (cert, key) = ca.issue("site", &[San::Dns(FQDN)]);
    let mut chain = fs::read(&cert).unwrap();
    chain.extend(fs::read(ca.cert()).unwrap());
    store
        .write_secret(mailbake::secrets::TLS_FULLCHAIN, &chain)
        .unwrap();
    store
        .write_secret(mailbake::secrets::TLS_PRIVKEY, &fs::read(&key).unwrap())
        .unwrap();
    let static_out = tmp.join("out-static");
    site.build(&static_out);
    site.write(&site_yaml(&site.public_key(), true));
    let dhcp_out = tmp.join("out-dhcp");
    site.build(&dhcp_out);
    // verify reads the site as the host runs it now; each variant writes it back.
    site.write(&site_yaml(&site.public_key(), false));
    Built {
        site,
        ca: ca.cert(),
        static_out,
        dhcp_out,
    }
}

/// The NoCloud seed as the provider's datasource presents it: mailbake's user-data byte for
/// byte, the provider's meta-data and network-config.
fn provider_seed(user_data: &[u8], v: &Variant, path: &Path) {
    let image = mailbake::seed::image::build(&[
        ("meta-data", v.meta_data.as_bytes()),
        ("network-config", v.network_config.as_bytes()),
        ("user-data", user_data),
    ])
    .unwrap();
    fs::write(path, image).unwrap();
}

/// dnsmasq on the test network's bridge: a DHCP lease of the site's address for the guest's
/// MAC, and router advertisements of the guest's /64 with the autonomous flag (SLAAC).
struct Dnsmasq {
    child: Child,
}

impl Dnsmasq {
    fn start(net: &TestNet, dir: &Path) -> Dnsmasq {
        let log = dir.join("dnsmasq.log");
        let mut command = net.command("dnsmasq");
        let child = testkit::process::dies_with_test(&mut command)
            .args(["--keep-in-foreground", "--conf-file=/dev/null", "--port=0"])
            .args(["--interface=br0", "--bind-interfaces", "--log-dhcp"])
            .arg(format!("--dhcp-leasefile={}", dir.join("leases").display()))
            .arg(format!("--pid-file={}", dir.join("dnsmasq.pid").display()))
            .arg(format!("--log-facility={}", log.display()))
            .arg(format!("--dhcp-range={GUEST4},{GUEST4},255.255.255.0,1h"))
            .arg(format!("--dhcp-host={MAC},{GUEST4}"))
            .arg(format!("--dhcp-option=option:router,{ROUTER4}"))
            .arg(format!("--dhcp-option=option:dns-server,{DNS4}"))
            .args([
                "--enable-ra",
                "--dhcp-range=::,constructor:br0,ra-only,64,1h",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq runs (package dnsmasq-base)");
        Dnsmasq { child }
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn internet(tmp: &Path, out: &Path) -> (TestNet, Internet, Dnsmasq) {
    let net = ok(TestNet::create());
    let (mut zones, ptrs) = site_dns(out);
    zones.push(Zone::new(DNSBL, zone_text::<&str>(DNSBL, &[])));
    let internet = Internet::start(&net, &tmp.join("internet"), zones, &ptrs);
    let dnsmasq = Dnsmasq::start(&net, tmp);
    (net, internet, dnsmasq)
}

/// Boots the disk with `seed` on virtio-scsi and waits for SMTP and the end of the boot.
fn boot(net: &TestNet, built: &Built, disk: &Path, seed: &Path, serial: PathBuf) -> Guest {
    let mut guest = Guest::boot_on(
        net,
        &GuestOptions {
            disk,
            seed,
            ssh_key: &built.site.ssh_key,
            serial_log: serial,
            journal_units: &UNITS,
        },
        Machine::contabo(),
    );
    let took = guest.wait_for_smtp(Duration::from_secs(600));
    eprintln!(
        "provider: SMTP answered {:.0} s after QEMU started",
        took.as_secs_f64()
    );
    guest.wait_booted();
    let cmdline = guest.qemu_command_line().join(" ");
    assert!(
        cmdline.contains("virtio-scsi-pci") && cmdline.contains("scsi-hd,drive=disk0"),
        "the disk is on virtio-scsi: {cmdline}"
    );
    guest
}

/// The host's IPv6: its address and default route, no other global address; IPv4 and the
/// host name of the user-data.
fn addresses(guest: &Guest, label: &str) {
    // One SSH round trip (each costs seconds under TCG). NETWORK_FILE is networkd's own
    // record of the file it configured the uplink with.
    let all = guest.ssh(
        "ip -6 addr; echo @@; ip -6 route; echo @@; ip -4 -o addr show scope global; echo @@; \
         ip -4 route show default; echo @@; hostname -f; echo @@; \
         cat /run/systemd/netif/links/* | sed -n 's/^NETWORK_FILE=//p'",
    );
    let parts: Vec<&str> = all.split("@@\n").collect();
    let [addr6, route6, addr4, route4, hostname, file] = parts[..] else {
        panic!("{label}: unexpected output:\n{all}");
    };
    eprintln!("provider {label}: ip -6 addr:\n{addr6}provider {label}: ip -6 route:\n{route6}");
    let global: Vec<&str> = addr6
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("inet6 ") && l.contains("scope global"))
        .collect();
    assert_eq!(
        global,
        [format!("inet6 {GUEST6}/64 scope global")],
        "{label}: the site's IPv6 address and no other global one:\n{addr6}"
    );
    assert!(
        route6
            .lines()
            .any(|l| l.starts_with(&format!("default via {ROUTER6_LINK_LOCAL} "))),
        "{label}: IPv6 default route via {ROUTER6_LINK_LOCAL}:\n{route6}"
    );
    assert!(
        addr4.contains(&format!("inet {GUEST4}/{GUEST4_PREFIX} ")),
        "{label}: IPv4 {GUEST4}:\n{addr4}"
    );
    assert!(
        route4.starts_with(&format!("default via {ROUTER4} ")),
        "{label}: IPv4 default route:\n{route4}"
    );
    assert_eq!(
        hostname.trim(),
        FQDN,
        "{label}: the user-data's fqdn, not the provider's local-hostname"
    );
    assert_eq!(
        file.trim(),
        "/etc/systemd/network/05-mailbake-uplink.network",
        "{label}: networkd configured the uplink from the seed's file"
    );
}

/// A submission on 587 to the IPv6-only receiver, judged pass there.
fn delivered_over_ipv6(net: &TestNet, internet: &Internet, label: &str) -> String {
    let subject = format!("provider {label} over IPv6");
    let sent = ok(probe_in(
        net,
        &[
            "submit",
            GUEST4,
            "587",
            "--mode",
            "starttls",
            "--user",
            "i@example.com",
            "--password",
            PASSWORD,
            "--from",
            "i@example.com",
            "--to",
            TO6,
            "--subject",
            &subject,
        ],
    ));
    assert_eq!(sent["accepted"], true, "{label}: submission: {sent}");
    let arrived = internet.delivered(TO6, &subject);
    let (name, addr) = arrived.client();
    assert_eq!(
        (name.as_str(), addr.as_str()),
        (FQDN, GUEST6),
        "{label}: the receiver saw the guest's IPv6 address with its confirmed name: {}",
        arrived.received()
    );
    let v = Verdicts::of(net, &arrived);
    eprintln!(
        "provider {label}:\n  Received: {}\n  Authentication-Results: {}",
        v.received, v.authentication_results
    );
    v.assert_all_pass(&SELECTORS);
    assert!(
        v.received.contains(&format!("[IPv6:{GUEST6}]")),
        "{label}: Received names the guest's IPv6 address: {}",
        v.received
    );
    v.received
}

/// `mailbake verify` from inside the test network: exit 0, no failing check.
fn verify(net: &TestNet, built: &Built, label: &str) {
    let out = testkit::output(
        net.command(mailbake_bin())
            .arg("verify")
            .arg(built.site.path())
            .arg("--secrets")
            .arg(built.site.secrets())
            .args(["--resolver", DNS4, "--dnsbl", DNSBL, "--format", "json"])
            .arg("--ca")
            .arg(&built.ca),
    );
    let json: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{label}: verify printed no JSON ({e}):\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let failing: Vec<String> = json["checks"]
        .as_array()
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .filter(|c| c["status"] == "fail")
        .map(|c| format!("{} {}: {}", c["section"], c["subject"], c["summary"]))
        .collect();
    assert!(
        out.status.success() && failing.is_empty(),
        "{label}: verify exited {} with failures {failing:#?}",
        out.status
    );
    eprintln!(
        "provider {label}: verify passed ({} checks)",
        json["checks"].as_array().map_or(0, Vec::len)
    );
}

/// The boot report's lines on the serial console; waits for its last line.
fn serial_report(serial: &Path, label: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let text = String::from_utf8_lossy(&fs::read(serial).unwrap_or_default()).into_owned();
        let lines: Vec<String> = text
            .lines()
            .filter_map(|l| {
                l.find("mailbake-report: ")
                    .map(|i| l[i..].trim_end().to_string())
            })
            .collect();
        let done = lines
            .iter()
            .any(|l| l.ends_with("all checks ok") || l.ends_with("problem(s)"));
        if done {
            eprintln!(
                "provider {label}: boot report on the serial console:\n{}",
                lines.join("\n")
            );
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "{label}: no complete boot report on the serial console ({}):\n{}",
            serial.display(),
            lines.join("\n")
        );
        std::thread::sleep(Duration::from_secs(2));
    }
}

fn check_report(lines: &[String], label: &str) {
    let has = |s: &str| lines.iter().any(|l| l.contains(s));
    for expected in [
        "datasource: nocloud".to_string(),
        "ok   mailbake seed: found and applied at this boot".to_string(),
        "ok   IPv4 address".to_string(),
        format!("ok   IPv6 address: {GUEST6}/64"),
        format!("ok   IPv6 default route: via {ROUTER6_LINK_LOCAL}"),
        "ok   no other global IPv6 address".to_string(),
        "ok   chasquid.service: active".to_string(),
        "ok   listening on 25".to_string(),
        "ok   listening on 465".to_string(),
        "ok   listening on 587".to_string(),
        format!("ok   A {FQDN}: {GUEST4}"),
        format!("ok   AAAA {FQDN}: {GUEST6}"),
        format!("ok   PTR {GUEST4}: {FQDN}"),
        format!("ok   PTR {GUEST6}: {FQDN}"),
        "mailbake-report: all checks ok".to_string(),
    ] {
        assert!(
            has(&expected),
            "{label}: the boot report lacks `{expected}`:\n{}",
            lines.join("\n")
        );
    }
}

#[test]
fn user_data_alone_makes_the_host_whatever_the_provider_configures() {
    assert!(
        testkit::is_root(),
        "this test needs root: a network namespace, and mke2fs of a root-owned tree"
    );
    let started = Instant::now();
    let mut phases = Phases::new("provider");
    let tmp = tempfile::tempdir().unwrap();
    let built = phases.run("site built, static and DHCP", || build(tmp.path()));
    let disk = phases.run("image", || {
        let image = tmp.path().join("mail.qcow2");
        build_image(&built.static_out.join("overlay.tar"), &image);
        let disk = tmp.path().join("disk.qcow2");
        writable_layer(&image, &disk);
        disk
    });
    let (net, internet, _dnsmasq) = phases.run("test network, DNS, receiver, dnsmasq", || {
        internet(tmp.path(), &built.static_out)
    });
    let mut received = Vec::new();
    for (i, v) in variants().iter().enumerate() {
        let out = if v.site_dhcp {
            &built.dhcp_out
        } else {
            &built.static_out
        };
        built
            .site
            .write(&site_yaml(&built.site.public_key(), v.site_dhcp));
        let user_data = fs::read(out.join("hosts/mx1/seed/user-data")).unwrap();
        let seed = tmp.path().join(format!("provider-seed-{i}.img"));
        provider_seed(&user_data, v, &seed);
        let serial = tmp.path().join(format!("serial-{i}.log"));
        let mut guest = phases.run(&format!("{}: boot", v.label), || {
            boot(&net, &built, &disk, &seed, serial.clone())
        });
        phases.watch(guest.evidence_source());
        phases.run(&format!("{}: addresses and routes", v.label), || {
            addresses(&guest, v.label)
        });
        let line = phases.run(&format!("{}: delivered over IPv6", v.label), || {
            delivered_over_ipv6(&net, &internet, v.label)
        });
        received.push((v.label, line));
        phases.run(&format!("{}: mailbake verify", v.label), || {
            verify(&net, &built, v.label)
        });
        phases.run(&format!("{}: boot report on the console", v.label), || {
            check_report(&serial_report(&serial, v.label), v.label)
        });
        phases.run(&format!("{}: shut down", v.label), || {
            // QMP quit drops the guest's page cache: write it out first, so the next boot
            // starts from what this one installed (the network file, the secrets).
            guest.ssh("sync");
            guest.shutdown()
        });
    }
    for (label, line) in &received {
        eprintln!("provider {label}: Received: {line}");
    }
    phases.summary();
    eprintln!(
        "provider: whole test {:.0} s",
        started.elapsed().as_secs_f64()
    );
}
