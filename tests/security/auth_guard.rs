//! Posture: a rate limit on SMTP AUTH across connections. The real chasquid and the shipped
//! auth guard run in a network namespace the test creates, with a journald of their own (in
//! a private mount namespace: chasquid logs to it over syslog, as on a host, and the guard
//! reads it with journalctl). Clients in a second namespace fail logins from documentation
//! addresses over a veth pair: the failing address gets a blackhole route and can no longer
//! connect while other addresses still log in, the ban lifts after its time, and a forged
//! log line smuggled in a user name bans nobody.
//!
//! Nothing here depends on how fast the machine is. The ban that the test probes lasts an hour,
//! so no load can lift it under the probes; the lifting is checked with a second guard whose
//! ban is short, by waiting for the guard's own "banned" and then "lifted" lines (with bounds
//! far above any load) and only then looking at the routes and logging in again.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{self, ChasquidOptions};
use crate::fixture;
use crate::netns::Netns;

const PASSWORD: &str = "correct horse battery staple";
const SITE: &str = "\
site: guard
domains:
  example.com:
    users: [i]
hosts:
  mx1: {fqdn: smtp.example.com, ipv4: 203.0.113.10}
auth_guard:
  allow: [198.51.100.20, 2001:db8:7::/48]
";

/// The drop-in's worth of settings for the test: 3 failures within an hour ban (for an hour:
/// longer than any test runs, so a probe of a ban never races its end), the journal is read
/// every second.
const FAILURES: usize = 3;
const WINDOW_SECONDS: u64 = 3600;
const BAN_SECONDS: u64 = 3600;
/// The second guard's ban, which the test waits out.
const SHORT_BAN_SECONDS: u64 = 2;
/// How long the test waits for the guard to act: far above the guard's one-second tick on
/// any machine, loaded or not; a bound on waiting, never an expected time.
const PATIENCE: Duration = Duration::from_secs(120);

const SERVER_V4: &str = "192.0.2.1";
const SERVER_V6: &str = "2001:db8:ffff::1";
const ATTACKER: &str = "198.51.100.10";
const BYSTANDER: &str = "198.51.100.11";
const SMUGGLER: &str = "198.51.100.12";
/// Only ever in journal entries the test writes itself, as chasquid would if it logged a
/// user name with control characters and forged lines (chasquid 1.19 refuses such names).
const FORGER: &str = "198.51.100.13";
/// On the site's allowlist (auth_guard.allow): never banned, however often it fails.
const OPERATOR: &str = "198.51.100.20";
const OPERATOR_V6: &str = "2001:db8:7:1::20";
/// Banned by the short-ban guard, then free again.
const PATIENT: &str = "198.51.100.14";
const ATTACKER_V6: &str = "2001:db8:1::10";
const BYSTANDER_V6: &str = "2001:db8:2::11";
/// Neighbours in the server's own /64 (its connected network): a ban of that /64 would do
/// nothing, so the guard bans the single address.
const NEIGHBOUR_V6: &str = "2001:db8:ffff::66";
const OTHER_NEIGHBOUR_V6: &str = "2001:db8:ffff::67";
/// Five /64s of one /48, each failing less than the per-/64 budget; and a sixth /64 of it.
const SPRAYERS_V6: [&str; 5] = [
    "2001:db8:5:1::1",
    "2001:db8:5:2::1",
    "2001:db8:5:3::1",
    "2001:db8:5:4::1",
    "2001:db8:5:5::1",
];
const SPRAY_SIBLING_V6: &str = "2001:db8:5:99::1";

/// `auth SRC DST PORT USER PASSWORD`: one connection from SRC, STARTTLS, AUTH PLAIN; prints
/// whether it connected and the AUTH reply code. `raw SRC DST PORT IDENTITY_HEX`: the same
/// with an AUTH PLAIN identity given as bytes (hex), for user names no client would send.
const CLIENT_PY: &str = r#"
import base64, json, smtplib, socket, ssl, sys
mode, src, dst, port = sys.argv[1:5]
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
result = {"connected": False, "code": None}
try:
    s = smtplib.SMTP(dst, int(port), local_hostname="client.example.net", timeout=3,
                     source_address=(src, 0))
    result["connected"] = True
    s.starttls(context=ctx)
    s.ehlo()
    if mode == "auth":
        user, password = sys.argv[5:7]
        creds = ("\0" + user + "\0" + password).encode()
    else:
        creds = b"\0" + bytes.fromhex(sys.argv[5]) + b"\0wrong password"
    code, _ = s.docmd("AUTH", "PLAIN " + base64.b64encode(creds).decode())
    result["code"] = code
    s.close()
except (OSError, smtplib.SMTPException) as e:
    result["error"] = repr(e)
print(json.dumps(result))
"#;

/// Renames itself `chasquid` (journald takes `_COMM` from the kernel) and sends one syslog
/// datagram with the message given in hex.
const SYSLOG_AS_CHASQUID_PY: &str = r#"
import ctypes, socket, sys
ctypes.CDLL(None).prctl(15, b"chasquid", 0, 0, 0)
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.sendto(b"<22>Dec  1 00:00:00 chasquid[1]: " + bytes.fromhex(sys.argv[1]), "/run/systemd/journal/dev-log")
"#;

/// A journald of its own for a namespace: a private mount namespace in the server's
/// network namespace, tmpfs over /run and the journal directory so nothing of it
/// reaches the host, and /run/syslog (where Go's log/syslog looks after /dev/log) pointing
/// at its socket. Other processes join it with [`Journal::wrapper`].
struct Journal {
    child: Child,
}

impl Journal {
    fn start(netns: &Netns) -> Journal {
        let journald = Path::new("/lib/systemd/systemd-journald");
        assert!(
            journald.exists(),
            "{} is missing; the test needs systemd's journald (package systemd)",
            journald.display()
        );
        let setup = "set -eu\n\
            mount -t tmpfs tmpfs /run\n\
            if [ -d /var/log/journal ]; then mount -t tmpfs tmpfs /var/log/journal; fi\n\
            mkdir -p /run/systemd/journal\n\
            ln -s /run/systemd/journal/dev-log /run/syslog\n\
            exec /lib/systemd/systemd-journald\n";
        // nsenter rather than `ip netns exec`, which mounts a /sys without the cgroup
        // hierarchy journald needs.
        // unshare, nsenter and sh all exec in the same process, so journald itself dies with
        // the test.
        let child = common::process::dies_with_test(&mut Command::new("unshare"))
            .args(["--mount", "--propagation", "private", "nsenter"])
            .arg(format!("--net=/run/netns/{}", netns.name))
            .args(["sh", "-c", setup])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("journald starts");
        let journal = Journal { child };
        let socket = PathBuf::from(format!(
            "/proc/{}/root/run/systemd/journal/dev-log",
            journal.child.id()
        ));
        wait_until(PATIENCE, "journald's socket", || socket.exists());
        journal
    }

    /// The last entries of this journal, with the fields the guard matches on.
    fn tail(&self) -> String {
        let wrapper = self.wrapper();
        let out = Command::new(&wrapper[0])
            .args(&wrapper[1..])
            .args(["journalctl", "--no-pager", "-n", "15", "-o", "json"])
            .arg("--output-fields=MESSAGE,SYSLOG_IDENTIFIER,_COMM,_TRANSPORT")
            .output();
        match out {
            Ok(out) => String::from_utf8_lossy(&out.stdout).into_owned(),
            Err(e) => format!("journalctl: {e}\n"),
        }
    }

    /// Sends `message` to this journal's syslog socket from a process named `chasquid`, the
    /// way chasquid's mail log reaches journald (one datagram: one entry).
    fn log_as_chasquid(&self, message: &[u8]) {
        let wrapper = self.wrapper();
        common::run(
            Command::new(&wrapper[0])
                .args(&wrapper[1..])
                .args(["/usr/bin/python3", "-c", SYSLOG_AS_CHASQUID_PY])
                .arg(hex::encode(message)),
        );
    }

    /// The prefix that runs a program in journald's mount and network namespaces.
    fn wrapper(&self) -> Vec<String> {
        let pid = self.child.id().to_string();
        ["nsenter", "-t", &pid, "-m", "-n", "--"]
            .map(String::from)
            .to_vec()
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The shipped guard (`auth-guard watch`) with the test's settings, its output in a file;
/// killed with its process group (journalctl, sleep) on drop.
struct Guard {
    child: Child,
    log: PathBuf,
}

impl Guard {
    /// A guard that bans for `ban_seconds`, logging to `dir/<name>.log`; guards of one test
    /// share the journal cursor, so a second one reads on where the first stopped.
    fn start(root: &Path, journal: &Journal, dir: &Path, name: &str, ban_seconds: u64) -> Guard {
        let log = dir.join(format!("{name}.log"));
        let wrapper = journal.wrapper();
        // awk dies with the test; its journalctl and sleep, in the server's namespace, go with
        // the namespace.
        let child = common::process::dies_with_test(&mut Command::new(&wrapper[0]))
            .args(&wrapper[1..])
            .arg("sh")
            .arg(root.join("usr/lib/mailbake/auth-guard"))
            .arg("watch")
            .env("AUTH_GUARD_FAILURES", FAILURES.to_string())
            .env("AUTH_GUARD_WINDOW", WINDOW_SECONDS.to_string())
            .env("AUTH_GUARD_BAN", ban_seconds.to_string())
            .env("AUTH_GUARD_TICK", "1")
            // No systemd unit here: chasquid's entries are the ones logged through syslog as
            // chasquid (the unit's default matches _SYSTEMD_UNIT=chasquid.service instead).
            // Not _COMM: journald reads it from /proc when it handles the datagram, and the
            // short-lived process that writes the forged entries may be gone by then (under
            // load those entries had no _COMM and never reached the guard).
            .env(
                "AUTH_GUARD_MATCH",
                "_TRANSPORT=syslog SYSLOG_IDENTIFIER=chasquid",
            )
            .env("RUNTIME_DIRECTORY", dir.join("guard-run"))
            // The allowlist the overlay carries from the site's auth_guard.allow.
            .env(
                "AUTH_GUARD_ALLOW",
                root.join("etc/mailbake/auth-guard-allow"),
            )
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).expect("guard log"))
            .process_group(0)
            .spawn()
            .expect("the guard starts");
        let guard = Guard { child, log };
        wait_until(PATIENCE, "the guard to start", || {
            guard.log_text().contains("auth-guard: watching")
        });
        guard
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the process group this guard leads; no memory is involved.
        unsafe {
            libc::kill(-(self.child.id() as i32), libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

fn wait_until(limit: Duration, what: &str, done: impl FnMut() -> bool) {
    wait_or(limit, what, done, String::new);
}

/// [`wait_until`], with `evidence` in the failure message.
fn wait_or(
    limit: Duration,
    what: &str,
    mut done: impl FnMut() -> bool,
    evidence: impl Fn() -> String,
) {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!(
        "timed out after {limit:?} waiting for {what}\n{}",
        evidence()
    );
}

/// Two namespaces joined by a veth pair: the server (192.0.2.1, 2001:db8:ffff::1) and the
/// clients with their documentation addresses, routed to each other and to nothing else.
fn network() -> (Netns, Netns) {
    let server = Netns::new("guard-srv");
    let clients = Netns::new("guard-cli");
    server.ip(&[
        "link",
        "add",
        "a0",
        "type",
        "veth",
        "peer",
        "name",
        "b0",
        "netns",
        &clients.name,
    ]);
    server.ip(&["addr", "add", &format!("{SERVER_V4}/24"), "dev", "a0"]);
    server.ip(&[
        "-6",
        "addr",
        "add",
        &format!("{SERVER_V6}/64"),
        "dev",
        "a0",
        "nodad",
    ]);
    server.ip(&["link", "set", "a0", "up"]);
    server.ip(&["route", "add", "198.51.100.0/24", "via", "192.0.2.2"]);
    server.ip(&[
        "-6",
        "route",
        "add",
        "2001:db8::/32",
        "via",
        "2001:db8:ffff::2",
    ]);
    clients.ip(&["addr", "add", "192.0.2.2/24", "dev", "b0"]);
    for a in [ATTACKER, BYSTANDER, SMUGGLER, PATIENT, OPERATOR] {
        clients.ip(&["addr", "add", &format!("{a}/32"), "dev", "b0"]);
    }
    clients.ip(&[
        "-6",
        "addr",
        "add",
        "2001:db8:ffff::2/64",
        "dev",
        "b0",
        "nodad",
    ]);
    let v6_clients = [
        ATTACKER_V6,
        BYSTANDER_V6,
        NEIGHBOUR_V6,
        OTHER_NEIGHBOUR_V6,
        OPERATOR_V6,
    ];
    for a in v6_clients
        .iter()
        .chain(&SPRAYERS_V6)
        .chain([&SPRAY_SIBLING_V6])
    {
        clients.ip(&[
            "-6",
            "addr",
            "add",
            &format!("{a}/128"),
            "dev",
            "b0",
            "nodad",
        ]);
    }
    clients.ip(&["link", "set", "b0", "up"]);
    clients.ip(&["route", "add", "default", "via", SERVER_V4]);
    clients.ip(&["-6", "route", "add", "default", "via", SERVER_V6]);
    (server, clients)
}

struct Client<'a> {
    netns: &'a Netns,
    script: PathBuf,
    port: u16,
}

impl Client<'_> {
    fn run(&self, args: &[&str]) -> Value {
        let out = self
            .netns
            .command("/usr/bin/python3")
            .arg(&self.script)
            .args(args)
            .output()
            .expect("python runs");
        assert!(
            out.status.success(),
            "client failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("client JSON")
    }

    /// Connects from `src` and logs in as i@example.com with `password`.
    fn login(&self, src: &str, password: &str) -> Value {
        let dst = if src.contains(':') {
            SERVER_V6
        } else {
            SERVER_V4
        };
        let port = self.port.to_string();
        self.run(&["auth", src, dst, &port, "i@example.com", password])
    }

    fn raw_identity(&self, src: &str, identity: &[u8]) -> Value {
        let port = self.port.to_string();
        self.run(&["raw", src, SERVER_V4, &port, &hex::encode(identity)])
    }
}

fn bans(server: &Netns) -> String {
    server.ip(&["-4", "route", "show", "proto", "201"])
        + &server.ip(&["-6", "route", "show", "proto", "201"])
}

#[test]
fn repeated_failed_logins_ban_the_address_for_a_while_and_only_that_address() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = fixture::chasquid_root(SITE, dir.path(), &[("i@example.com", PASSWORD)]);
    let (server, clients) = network();
    let journal = Journal::start(&server);
    // The guard first, as at boot: until chasquid has logged anything, journalctl finds
    // nothing to follow, which is not an error.
    let guard = Guard::start(&root, &journal, dir.path(), "guard", BAN_SECONDS);
    std::thread::sleep(Duration::from_secs(3));
    let chasquid = fixture::start_chasquid(
        &root,
        dir.path(),
        ChasquidOptions {
            wrapper: journal.wrapper(),
            all_addresses: true,
            keep_mail_log: true,
            ..ChasquidOptions::default()
        },
    );
    let script = dir.path().join("client.py");
    fs::write(&script, CLIENT_PY).expect("write client");
    let client = Client {
        netns: &clients,
        script,
        port: chasquid.submission,
    };
    let evidence = |what: &str| {
        format!(
            "{what}\n--- bans ---\n{}--- guard ---\n{}--- journal (last entries) ---\n{}--- chasquid ---\n{}",
            bans(&server),
            guard.log_text(),
            journal.tail(),
            chasquid.log_text()
        )
    };

    // Before anything fails, everyone logs in.
    assert_eq!(
        client.login(ATTACKER, PASSWORD)["code"],
        235,
        "{}",
        evidence("first login")
    );

    // Entries as chasquid would write them for a user name with a control character and
    // forged lines for the bystander: journalctl prints such a MESSAGE as an array of byte
    // values, the forged lines stay inside it, and only the leading address counts.
    let mut forged = format!("{FORGER}:1 auth failed for x\x01@example.com");
    for _ in 0..FAILURES {
        forged.push_str(&format!("\n{BYSTANDER}:1 auth failed for y@example.com"));
    }
    for _ in 0..FAILURES {
        journal.log_as_chasquid(forged.as_bytes());
    }
    // The same through the real chasquid: a user name with newlines and forged lines. Some
    // chasquid versions log it (under the smuggler's address), others refuse the name.
    let mut identity = b"x@example.com".to_vec();
    for _ in 0..FAILURES {
        identity
            .extend_from_slice(format!("\n{BYSTANDER}:1 auth failed for y@example.com").as_bytes());
    }
    for _ in 0..FAILURES {
        client.raw_identity(SMUGGLER, &identity);
    }

    // Failed logins from one address, each on a new connection, ban it.
    for _ in 0..FAILURES {
        let refused = client.login(ATTACKER, "wrong password");
        assert_eq!(refused["code"], 535, "{}", evidence(&refused.to_string()));
    }
    wait_or(
        PATIENCE,
        "the attacker's ban",
        || bans(&server).contains(&format!("blackhole {ATTACKER} ")),
        || evidence(""),
    );
    let blocked = client.login(ATTACKER, PASSWORD);
    assert_eq!(
        blocked["connected"],
        false,
        "{}",
        evidence(&format!("banned address connected: {blocked}"))
    );
    let other = client.login(BYSTANDER, PASSWORD);
    assert_eq!(
        other["code"],
        235,
        "{}",
        evidence(&format!("bystander: {other}"))
    );

    // IPv6: the attacker's /64 is banned, another /64 is not.
    for _ in 0..FAILURES {
        assert_eq!(client.login(ATTACKER_V6, "wrong password")["code"], 535);
    }
    wait_or(
        PATIENCE,
        "the IPv6 ban",
        || bans(&server).contains("blackhole 2001:db8:1::/64 "),
        || evidence(""),
    );
    assert_eq!(
        client.login(ATTACKER_V6, PASSWORD)["connected"],
        false,
        "{}",
        evidence("IPv6 attacker")
    );
    assert_eq!(
        client.login(BYSTANDER_V6, PASSWORD)["code"],
        235,
        "{}",
        evidence("IPv6 bystander")
    );

    // The operator's addresses on the site's allowlist fail more than anyone may (checked once
    // the guard has read past these failures: after the neighbour's ban below).
    for _ in 0..=FAILURES {
        for operator in [OPERATOR, OPERATOR_V6] {
            let refused = client.login(operator, "wrong password");
            assert_eq!(
                refused["code"],
                535,
                "{}",
                evidence(&format!(
                    "the allowlisted {operator} was cut off: {refused}"
                ))
            );
        }
    }

    // A neighbour in the server's own /64: its /64 cannot be banned (the connected route wins),
    // so the guard bans the address alone, and says so; never "banned" the /64.
    for _ in 0..FAILURES {
        assert_eq!(client.login(NEIGHBOUR_V6, "wrong password")["code"], 535);
    }
    wait_or(
        PATIENCE,
        "the neighbour's ban",
        || bans(&server).contains(&format!("blackhole {NEIGHBOUR_V6} ")),
        || evidence(""),
    );
    let neighbour = client.login(NEIGHBOUR_V6, PASSWORD);
    assert_eq!(
        neighbour["connected"],
        false,
        "{}",
        evidence(&format!("banned neighbour connected: {neighbour}"))
    );
    assert_eq!(
        client.login(OTHER_NEIGHBOUR_V6, PASSWORD)["code"],
        235,
        "{}",
        evidence("the other neighbour")
    );
    assert!(
        !guard.log_text().contains("banned 2001:db8:ffff:0::/64"),
        "{}",
        evidence("the guard logged a ban of the server's own /64, which cannot work")
    );

    // The guard has read the operator's failures (they came before the neighbour's): never
    // counted, so never banned.
    for operator in [OPERATOR, OPERATOR_V6] {
        let login = client.login(operator, PASSWORD);
        assert_eq!(
            login["code"],
            235,
            "{}",
            evidence(&format!("the allowlisted {operator}: {login}"))
        );
    }
    assert!(
        !guard.log_text().contains("banned 198.51.100.20/")
            && !guard.log_text().contains("banned 2001:db8:7:"),
        "{}",
        evidence("an allowlisted address was banned")
    );

    // One /48 spread over five /64s, none of them reaching the per-/64 budget: the /48's own
    // budget (three times as many) bans all of it, and only it.
    // Exactly the /48's budget (the guard's default, three times the per-address one), spread
    // so that no /64 gets more than two.
    for i in 0..3 * FAILURES {
        let sprayer = SPRAYERS_V6[i % SPRAYERS_V6.len()];
        assert_eq!(client.login(sprayer, "wrong password")["code"], 535);
    }
    wait_or(
        PATIENCE,
        "the /48's ban",
        || bans(&server).contains("blackhole 2001:db8:5::/48 "),
        || evidence(""),
    );
    assert_eq!(
        client.login(SPRAY_SIBLING_V6, PASSWORD)["connected"],
        false,
        "{}",
        evidence("another /64 of the banned /48 connected")
    );
    assert_eq!(
        client.login(BYSTANDER_V6, PASSWORD)["code"],
        235,
        "{}",
        evidence("IPv6 bystander after the /48 ban")
    );

    // The forged lines banned nobody; the forger's and the smuggler's own failures counted
    // (the guard's log is the record).
    let log = guard.log_text();
    assert!(
        !log.contains(&format!("banned {BYSTANDER}/")) && !bans(&server).contains(BYSTANDER),
        "{}",
        evidence("the bystander was banned by forged lines")
    );
    assert!(
        log.contains(&format!("banned {FORGER}/32 ")),
        "{}",
        evidence("the entries written as bytes were not counted")
    );
    let entries = common::run(
        Command::new(&journal.wrapper()[0])
            .args(&journal.wrapper()[1..])
            .args([
                "journalctl",
                "--no-pager",
                "-o",
                "json",
                "SYSLOG_IDENTIFIER=chasquid",
            ]),
    );
    assert!(
        entries.lines().any(|l| l.contains("\"MESSAGE\":[")),
        "{}",
        evidence("no journal entry with a MESSAGE in bytes")
    );
    let smuggler_logged = entries
        .lines()
        .any(|l| l.contains(&format!("\"MESSAGE\":\"{SMUGGLER}:")));
    assert!(
        !smuggler_logged || log.contains(&format!("banned {SMUGGLER}/32 ")),
        "{}",
        evidence("chasquid logged the smuggler's failures but they were not counted")
    );
    assert!(
        !log.contains("journalctl failed"),
        "{}",
        evidence("the guard reported journalctl failures")
    );

    // The ban lifts after its time, and the address logs in again: a guard with a short ban
    // takes over (the first one's bans flushed, as the service does when it stops), and the
    // test follows its log, not the clock.
    drop(guard);
    common::run(
        Command::new(&journal.wrapper()[0])
            .args(&journal.wrapper()[1..])
            .arg("sh")
            .arg(root.join("usr/lib/mailbake/auth-guard"))
            .arg("flush"),
    );
    assert_eq!(bans(&server), "", "auth-guard flush left bans");
    let guard = Guard::start(
        &root,
        &journal,
        dir.path(),
        "short-guard",
        SHORT_BAN_SECONDS,
    );
    let evidence = |what: &str| {
        format!(
            "{what}\n--- bans ---\n{}--- guard ---\n{}--- journal (last entries) ---\n{}",
            bans(&server),
            guard.log_text(),
            journal.tail(),
        )
    };
    for _ in 0..FAILURES {
        assert_eq!(client.login(PATIENT, "wrong password")["code"], 535);
    }
    wait_or(
        PATIENCE,
        "the short ban",
        || guard.log_text().contains(&format!("banned {PATIENT}/32 ")),
        || evidence(""),
    );
    wait_or(
        PATIENCE,
        "the guard to lift the short ban",
        || {
            guard
                .log_text()
                .contains(&format!("lifted the ban on {PATIENT}/32"))
        },
        || evidence(""),
    );
    assert!(
        !bans(&server).contains(PATIENT),
        "{}",
        evidence("the guard logged the ban as lifted, but its route is still there")
    );
    assert_eq!(
        client.login(PATIENT, PASSWORD)["code"],
        235,
        "{}",
        evidence("after the ban")
    );
}
