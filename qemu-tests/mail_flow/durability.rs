//! What a 250 is worth: bursts of uniquely named messages (`testkit::burst`), each counted
//! at the receiver by its Message-ID, across the three ways a host stops:
//!
//! - a clean reboot with the receiver unreachable, so all of them wait in the queue (queued
//!   here, rebooted by mail_flow.rs's reboot phase, which checks queue and secrets too);
//! - `systemctl restart chasquid` in the middle of a burst, while the earlier ones are being
//!   delivered;
//! - a power cut: the receiver unreachable, and QEMU killed (SIGKILL) the moment the last
//!   250 arrives, with no pause for the guest to write anything back. The guest runs with
//!   `cache=writeback` ([`mailbake::boot::DiskCache`]), so what it flushed is on the disk and
//!   what it had only in memory is gone, as in a real power cut.
//!
//! Each ends with the queue drained (bounded) and the tally: accepted, delivered, lost,
//! duplicated. Lost must be 0; duplicates are allowed by SMTP and reported. "The receiver
//! unreachable" is Postfix stopped: connections to its address are refused, so chasquid keeps
//! the mail queued and retries.

use std::time::{Duration, Instant};

use testkit::Phases;
use testkit::burst::{Attempt, Burst, Next, Tally};
use testkit::topology::GUEST4;

use mailbake::boot::Firmware;

use super::{MailFlow, PASSWORD, TO4, boot_again};

/// Messages per burst (docs/durability.md: at least 20).
const BURST: usize = 20;
/// How long a queue may take to drain once the receiver is back: a first attempt (all at
/// once, when chasquid starts or accepts), then, if that did not empty the queue, a retry the
/// test triggers itself (below), and as long again for that.
const DRAIN: Duration = Duration::from_secs(360);
/// When the test triggers the retry. chasquid's own next attempt comes minutes after a
/// failed one (with jitter), so a bound on it would report a timeout where the first
/// attempt's failure is the real cause; restarting chasquid makes it try every queued
/// message at once, and the first attempt's errors are printed before that.
const RETRY_AFTER: Duration = Duration::from_secs(120);

pub fn phases(phases: &mut Phases, t: &mut MailFlow) {
    phases.watch(t.guest.evidence_source());
    phases.run(
        "systemctl restart chasquid in a burst of 20 loses none",
        || restart_in_burst(t),
    );
    phases.run("power cut right after 20 x 250 loses none", || power_cut(t));
    t.guest.shutdown();
}

/// A burst queued while the receiver is down, to be counted after a clean reboot (the
/// reboot itself is `reboot` in mail_flow.rs, which checks queue and secrets too).
pub struct QueuedBurst {
    tag: String,
    attempts: Vec<Attempt>,
}

/// Pauses the receiver and submits a burst: every message answered 250, all of them queued,
/// none delivered.
pub fn queue_burst(t: &mut MailFlow) -> QueuedBurst {
    let tag = tag("reboot");
    testkit::ok(t.internet.receiver.pause());
    let attempts = testkit::ok(burst(&tag).run(&t.net, |_, _| Next::Continue));
    all_accepted("before the reboot", &attempts);
    assert_eq!(queued(t, &tag), BURST, "all of them wait in the queue");
    let before = Tally::count(&attempts, &t.internet.receiver.messages());
    assert_eq!(
        before.delivered, 0,
        "nothing got through while the receiver was down"
    );
    QueuedBurst { tag, attempts }
}

/// After the reboot (the receiver resumed): the burst drains, none lost.
pub fn burst_delivered(t: &MailFlow, queued: &QueuedBurst) {
    let tally = drained(t, &queued.tag, &queued.attempts);
    assert_none_lost("clean reboot", &tally, t);
    assert_eq!(tally.delivered, BURST);
}

/// A tag no earlier message of this test carries.
fn tag(what: &str) -> String {
    format!("{what}-{}", std::process::id())
}

/// The burst of `BURST` messages from i@example.com to the IPv4 Gmail stand-in over 587.
fn burst<'a>(tag: &'a str) -> Burst<'a> {
    Burst {
        host: GUEST4,
        port: 587,
        password: PASSWORD,
        from: "i@example.com",
        to: TO4,
        count: BURST,
        tag,
    }
}

/// How many of the guest's queue files hold a message of `tag` (0 when the queue has none).
fn queued(t: &MailFlow, tag: &str) -> usize {
    // `tag` is ours: letters, digits and dashes only. The queue is chasquid's (0700).
    let out = t.guest.ssh(&format!(
        "sudo sh -c 'grep -l -F -- {tag} /var/lib/chasquid/queue/m:* 2>/dev/null | wc -l'"
    ));
    out.trim()
        .parse()
        .unwrap_or_else(|e| panic!("queue count {out:?}: {e}"))
}

/// Waits until the guest's queue holds nothing of `tag` and the receiver every accepted
/// message (or, once the queue is empty, 30 s more for the receiver's own delivery), up to
/// [`DRAIN`]; returns the tally then.
fn drained(t: &MailFlow, tag: &str, attempts: &[Attempt]) -> Tally {
    let started = Instant::now();
    let mut empty_since: Option<Instant> = None;
    let mut retried = false;
    loop {
        let left = queued(t, tag);
        if left > 0 && !retried && started.elapsed() > RETRY_AFTER {
            retried = true;
            eprintln!(
                "mail_flow: {tag}: {left} message(s) still queued after {RETRY_AFTER:?}; \
                 chasquid's delivery errors so far:\n{}\nmail_flow: {tag}: restarting \
                 chasquid to retry them now",
                delivery_errors(t)
            );
            t.guest.ssh("sudo systemctl restart chasquid.service");
        }
        let tally = Tally::count(attempts, &t.internet.receiver.messages());
        if left == 0 {
            let since = *empty_since.get_or_insert_with(Instant::now);
            if tally.complete() || since.elapsed() > Duration::from_secs(30) {
                // A last look: a duplicate may still be on its way into the mailbox.
                std::thread::sleep(Duration::from_secs(3));
                let tally = Tally::count(attempts, &t.internet.receiver.messages());
                eprintln!(
                    "mail_flow: {tag}: queue drained in {:.0} s: {tally}",
                    started.elapsed().as_secs_f64()
                );
                return tally;
            }
        }
        assert!(
            started.elapsed() < DRAIN,
            "{tag}: {left} message(s) still queued after {DRAIN:?}, retried once \
             ({tally})\ndelivery errors:\n{}\n{}\n{}",
            delivery_errors(t),
            queue_evidence(t),
            t.internet.receiver.logs()
        );
        std::thread::sleep(Duration::from_secs(5));
    }
}

/// chasquid's log lines of this boot about failed or deferred deliveries.
fn delivery_errors(t: &MailFlow) -> String {
    t.guest.ssh(
        "sudo journalctl -b -u chasquid.service --no-pager -o cat | grep -iE 'fail|error|defer|timeout|refused' | tail -20 || true",
    )
}

/// The queue directory's attributes (`D`: synchronous directory updates, from the image's
/// tmpfiles.d), its files (hidden ones too: a temporary file left by an interrupted write)
/// and chasquid's journal of this boot.
fn queue_evidence(t: &MailFlow) -> String {
    t.guest.ssh(
        "sudo lsattr -d /var/lib/chasquid/queue; sudo ls -la /var/lib/chasquid/queue; sudo journalctl -b -u chasquid.service --no-pager -o cat | tail -60",
    )
}

/// Asserts every message of a burst was answered 250.
fn all_accepted(what: &str, attempts: &[Attempt]) {
    let accepted = attempts.iter().filter(|a| a.accepted).count();
    assert_eq!(
        (accepted, attempts.len()),
        (BURST, BURST),
        "{what}: every message answered 250: {attempts:#?}"
    );
}

fn assert_none_lost(what: &str, tally: &Tally, t: &MailFlow) {
    eprintln!("mail_flow: {what}: {tally}");
    assert!(
        tally.lost.is_empty(),
        "{what}: accepted messages were lost: {tally}\n{}",
        queue_evidence(t)
    );
}

fn restart_in_burst(t: &mut MailFlow) {
    let tag = tag("restart");
    testkit::ok(t.internet.receiver.resume());
    let pid = |t: &MailFlow| {
        t.guest
            .ssh("systemctl show -p MainPID --value chasquid.service")
    };
    let before = pid(t);
    let guest = &t.guest;
    let mut restarted = false;
    let attempts = testkit::ok(burst(&tag).run(&t.net, |_, accepted| {
        // After the fifth 250: the burst goes on while chasquid stops and starts again, and
        // the first ones are being delivered.
        if accepted == 5 && !restarted {
            restarted = true;
            let _ = guest.try_ssh("sudo systemctl restart chasquid.service");
        }
        Next::Continue
    }));
    assert!(restarted);
    let after = pid(t);
    assert_ne!(
        before, after,
        "chasquid was restarted (MainPID {before} -> {after})"
    );
    let sessions = attempts.iter().filter(|a| a.code.is_none()).count();
    eprintln!(
        "mail_flow: restart: {} attempts, {sessions} without an answer: {:?}",
        attempts.len(),
        attempts
            .iter()
            .filter(|a| !a.accepted)
            .map(|a| (a.k, a.code, a.error.clone()))
            .collect::<Vec<_>>()
    );
    let tally = drained(t, &tag, &attempts);
    assert_none_lost("restart in a burst", &tally, t);
    assert_eq!(tally.accepted, BURST);
}

fn power_cut(t: &mut MailFlow) {
    let tag = tag("powercut");
    // chasquid never fsyncs the queue directory after its rename; the image makes that
    // directory's updates synchronous instead (tmpfiles.d, chattr +D). Without it this phase
    // lost the newest accepted message.
    let attrs = t.guest.ssh("sudo lsattr -d /var/lib/chasquid/queue");
    let flags = attrs.split_whitespace().next().unwrap_or("");
    assert!(
        flags.contains('D'),
        "the queue directory has synchronous updates (+D): {attrs}"
    );
    testkit::ok(t.internet.receiver.pause());
    let guest = &mut t.guest;
    let mut cut_at = None;
    let attempts = testkit::ok(burst(&tag).run(&t.net, |_, accepted| {
        if accepted == BURST {
            // No pause: whatever chasquid has not made durable by its 250 is lost now.
            guest.power_cut();
            cut_at = Some(Instant::now());
            Next::Stop
        } else {
            Next::Continue
        }
    }));
    assert!(cut_at.is_some(), "the power was cut");
    all_accepted("before the power cut", &attempts);
    // The receiver first, so that the first delivery attempt of the new boot finds it.
    testkit::ok(t.internet.receiver.resume());
    t.guest = boot_again(t, "serial-4.log", Firmware::Bios);
    let journal = t
        .guest
        .ssh("sudo journalctl -b -u chasquid.service --no-pager -o cat");
    eprintln!("mail_flow: chasquid after the power cut:\n{journal}");
    let tally = drained(t, &tag, &attempts);
    assert_none_lost("power cut", &tally, t);
    assert!(
        !journal.contains("error loading queue item"),
        "every queue file was readable after the power cut:\n{journal}"
    );
}
