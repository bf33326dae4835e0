//! docs/security.md's promises on the booted guest, from the test network, as an attacker
//! would meet them: TLS below 1.2 refused on every port (by openssl at security level 0 and
//! by testssl), the GODEBUG floor in chasquid's running environment, and the auth guard
//! banning an address that keeps failing logins while another address still gets in.

use std::time::{Duration, Instant};

use testkit::tls_scan::handshake;
use testkit::topology::*;
use testkit::{Phases, probe_in};

use super::{MailFlow, PASSWORD};

/// The image's chasquid drop-in, as the overlay ships it.
const DROP_IN: &str = "etc/systemd/system/chasquid.service.d/mailbake.conf";
/// The address that fails its logins, and one that does not.
const ATTACKER: &str = STRANGER4;
const BYSTANDER: &str = SENDER4;
/// The routing protocol of the guard's bans (layers/auth-guard/usr/lib/mailbake/auth-guard).
const BAN_PROTO: &str = "201";

pub fn phases(phases: &mut Phases, t: &MailFlow) {
    phases.check("TLS 1.0 and 1.1 refused on 25, 587 and 465", || {
        old_tls_refused(t)
    });
    phases.check("chasquid runs with the drop-in's TLS floor", || {
        running_environment(t)
    });
    phases.check(
        "the auth guard bans an address that keeps failing logins",
        || auth_guard_bans(t),
    );
}

/// The ports and whether each speaks STARTTLS first.
const PORTS: [(u16, bool); 3] = [(25, true), (587, true), (465, false)];

fn old_tls_refused(t: &MailFlow) {
    let mut wrong = Vec::new();
    for (port, starttls) in PORTS {
        let target = format!("{GUEST4}:{port}");
        for (version, wanted) in [
            ("-tls1", None),
            ("-tls1_1", None),
            ("-tls1_2", Some("TLSv1.2")),
            ("-tls1_3", Some("TLSv1.3")),
        ] {
            let got = handshake(Some(&t.net), &target, starttls, version, None);
            eprintln!("mail_flow: openssl s_client {version} {target}: {got:?}");
            if got.as_deref().ok() != wanted {
                wrong.push(format!(
                    "{target} {version}: wanted {wanted:?}, got {got:?}"
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// `Environment=` of the drop-in in the overlay the guest was built from.
fn shipped_environment(t: &MailFlow) -> String {
    // Member names start with `./` or not; --no-anchored matches either.
    let tar = testkit::output(
        std::process::Command::new("tar")
            .args(["--extract", "--to-stdout", "--no-anchored", "--file"])
            .arg(t.out.join("overlay.tar"))
            .arg(DROP_IN),
    );
    assert!(
        tar.status.success(),
        "{DROP_IN} from overlay.tar: {}",
        String::from_utf8_lossy(&tar.stderr)
    );
    let unit = String::from_utf8_lossy(&tar.stdout).into_owned();
    let lines: Vec<&str> = unit
        .lines()
        .filter(|l| l.starts_with("Environment="))
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "one Environment= line in {DROP_IN}:\n{unit}"
    );
    lines[0].to_string()
}

fn running_environment(t: &MailFlow) {
    let shipped = shipped_environment(t);
    assert!(shipped.contains("tls10server=0"), "{shipped}");
    let running = t
        .guest
        .ssh("systemctl show chasquid.service -p Environment");
    assert_eq!(
        running.trim(),
        shipped,
        "chasquid.service's environment on the guest is the drop-in's"
    );
    let pid = t.guest.ssh("systemctl show -P MainPID chasquid.service");
    let pid = pid.trim();
    assert!(
        !pid.is_empty() && pid != "0" && pid.bytes().all(|b| b.is_ascii_digit()),
        "chasquid's main PID: {pid:?}"
    );
    // The environment of a process of another user is readable by root only: `sudo cat`.
    let process = t.guest.ssh(&format!(
        "sudo cat /proc/{pid}/environ | tr '\\0' '\\n' | grep '^GODEBUG=' || true"
    ));
    assert_eq!(
        process.trim(),
        shipped.trim_start_matches("Environment="),
        "the running chasquid process has it"
    );
}

/// Whether a banner arrives from the guest's port 25 when connecting from `source`.
fn answers_from(t: &MailFlow, source: &str) -> Result<(), String> {
    probe_in(
        &t.net,
        &[
            "--timeout",
            "10",
            "banner",
            GUEST4,
            "25",
            "--source",
            source,
        ],
    )
    .map(|_| ())
}

/// The guard's bans on the guest (`ip route` lines of its protocol).
fn bans(t: &MailFlow) -> String {
    t.guest.ssh(&format!(
        "ip -4 route show proto {BAN_PROTO}; ip -6 route show proto {BAN_PROTO}"
    ))
}

fn auth_guard_bans(t: &MailFlow) {
    assert_eq!(
        t.guest
            .ssh("systemctl is-active mailbake-auth-guard.service || true")
            .trim(),
        "active",
        "the auth guard runs on the guest"
    );
    assert_eq!(bans(t).trim(), "", "no ban before the attack");
    let failures: u32 = t
        .guest
        .ssh("systemctl show -P Environment mailbake-auth-guard.service")
        .split_whitespace()
        .find_map(|a| a.strip_prefix("AUTH_GUARD_FAILURES="))
        .and_then(|n| n.parse().ok())
        .expect("the guard's unit sets AUTH_GUARD_FAILURES");
    let ban = format!("blackhole {ATTACKER}");
    // One failed login per connection, as a password-guessing client reconnecting would;
    // the guard reads the journal every few seconds, so a few more may be needed.
    let started = Instant::now();
    let mut attempts = 0;
    let banned = loop {
        let current = bans(t);
        if current.contains(&ban) {
            break current;
        }
        assert!(
            attempts < failures + 10 && started.elapsed() < Duration::from_secs(300),
            "no ban of {ATTACKER} after {attempts} failed logins in {:.0} s (the guard bans \
             after {failures}):\n{current}\n{}",
            started.elapsed().as_secs_f64(),
            t.guest.ssh(
                "sudo journalctl -b -u mailbake-auth-guard.service --no-pager -o cat | tail -20"
            )
        );
        if attempts < failures {
            fail_login(t);
        } else {
            std::thread::sleep(Duration::from_secs(2));
        }
        attempts += 1;
    };
    eprintln!(
        "mail_flow: auth guard: after {attempts} rounds: {}",
        banned.trim()
    );
    let journal = t
        .guest
        .ssh("sudo journalctl -b -u mailbake-auth-guard.service --no-pager -o cat");
    assert!(
        journal.contains(&format!("banned {ATTACKER}")),
        "the guard says what it banned:\n{journal}"
    );
    let refused = answers_from(t, ATTACKER);
    assert!(
        refused.is_err(),
        "the banned address still connects: {refused:?}"
    );
    assert_eq!(
        answers_from(t, BYSTANDER),
        Ok(()),
        "another address still connects"
    );
    // A restart lifts every ban (the unit flushes them), and for good: the guard must not
    // count the same failures again. It reads the journal at once when it starts, then every
    // AUTH_GUARD_TICK (5 s): look after three reads. The later phases start clean.
    t.guest
        .ssh("sudo systemctl restart mailbake-auth-guard.service");
    std::thread::sleep(Duration::from_secs(12));
    assert_eq!(
        bans(t).trim(),
        "",
        "a restart lifts the ban for good:\n{}",
        t.guest
            .ssh("sudo journalctl -b -u mailbake-auth-guard.service --no-pager -o cat | tail -8")
    );
    assert_eq!(
        answers_from(t, ATTACKER),
        Ok(()),
        "the address connects again once the ban is lifted"
    );
}

/// One connection from [`ATTACKER`] that fails AUTH on 587 after STARTTLS.
fn fail_login(t: &MailFlow) {
    let r = probe_in(
        &t.net,
        &[
            "submit",
            GUEST4,
            "587",
            "--mode",
            "starttls",
            "--source",
            ATTACKER,
            "--user",
            "i@example.com",
            "--password",
            &format!("not {PASSWORD}"),
            "--from",
            "i@example.com",
            "--to",
            "someone@gmail4.test",
        ],
    );
    // Refused at AUTH; once the ban is in place the connection itself fails, which is fine.
    if let Ok(v) = &r {
        assert_eq!(
            (v["accepted"].as_bool(), v["stage"].as_str()),
            (Some(false), Some("auth")),
            "a wrong password is refused: {v}"
        );
    }
}
