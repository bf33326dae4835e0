//! The receiver of the test network can say no: straight against it, without a guest, a
//! message from `sender.test`'s own host passes everything (the positive control), and
//! rspamd's and Postfix's verdicts turn to fail for a host the SPF record does not list (over
//! IPv4 and over IPv6), a host whose PTR does not lead back to it, a body changed after
//! signing, and, for DMARC, a message with both at once under a forged `Authentication-Results`
//! claiming everything passed (the verdicts are read from the receiver's own header, chosen by
//! its authserv-id). The second verifier (dkimpy, pyspf, dnspython) reaches the same verdicts
//! on every message. Paused, it refuses connections; resumed, it accepts again and still holds
//! what it had.
//!
//! Needs root (a network namespace), postfix, rspamd, bind9, python3-dkim, python3-spf.

use testkit::internet::{Internet, SENDER_SELECTOR, Verdicts};
use testkit::topology::*;
use testkit::{Phases, TestNet, ok, probe_in};

/// How a test message leaves sender.test's side.
#[derive(Clone, Copy)]
struct Sending<'a> {
    /// The local address it connects from, and the HELO it gives.
    source: &'a str,
    helo: &'a str,
    /// The receiver's address and the recipient there (IPv4: gmail4.test, IPv6: gmail6.test).
    mx: &'a str,
    rcpt: &'a str,
    /// The body changed after signing, so the signature must fail.
    tamper: bool,
    /// An `Authentication-Results` of the sender's own on top.
    forged_results: Option<&'a str>,
}

const TO4: &str = "someone@gmail4.test";
const TO6: &str = "someone@gmail6.test";

/// From sender.test's own host, untouched, to the IPv4 Gmail stand-in.
const GENUINE: Sending = Sending {
    source: SENDER4,
    helo: SENDER_NAME,
    mx: MX4,
    rcpt: TO4,
    tamper: false,
    forged_results: None,
};

/// Sends one message as `friend@sender.test`, DKIM-signed with sender.test's key.
fn send(net: &TestNet, internet: &Internet, how: Sending, subject: &str) {
    let key = internet.sender.key.display().to_string();
    let mut args = vec![
        "--helo",
        how.helo,
        "submit",
        how.mx,
        "25",
        "--mode",
        "starttls",
        "--source",
        how.source,
        "--from",
        "friend@sender.test",
        "--to",
        how.rcpt,
        "--subject",
        subject,
        "--dkim-key",
        &key,
        "--dkim-selector",
        SENDER_SELECTOR,
    ];
    if how.tamper {
        args.push("--tamper");
    }
    if let Some(forged) = how.forged_results {
        args.extend(["--forged-header", forged]);
    }
    let sent = ok(probe_in(net, &args));
    assert_eq!(
        sent["accepted"], true,
        "the receiver accepts {subject}: {sent}"
    );
}

/// The receiver's and the second verifier's verdicts on the message for `rcpt` with
/// `subject`, printed as evidence.
fn judged(net: &TestNet, internet: &Internet, rcpt: &str, subject: &str) -> Verdicts {
    let v = Verdicts::of(net, &internet.delivered(rcpt, subject));
    eprintln!(
        "receiver: {subject}:\n  Authentication-Results: {}\n  Received: {}\n  second verifier: {}",
        v.authentication_results, v.received, v.second
    );
    v
}

fn word(v: &str) -> &str {
    v.split_whitespace().next().unwrap_or_default()
}

#[test]
fn the_receiver_judges_independently_and_can_say_no() {
    assert!(
        testkit::is_root(),
        "this test needs root: it creates a network namespace"
    );
    let mut phases = Phases::new("receiver");
    let tmp = tempfile::tempdir().unwrap();
    let net = phases.run("test network", || ok(TestNet::create()));
    let mut internet = phases.run("DNS and receiver", || {
        Internet::start(&net, tmp.path(), Vec::new(), &[])
    });
    phases.check("positive control: sender.test's own host", || {
        send(&net, &internet, GENUINE, "genuine");
        judged(&net, &internet, TO4, "genuine")
            .assert_all_pass(&[(SENDER_DOMAIN, SENDER_SELECTOR)]);
    });

    phases.check("SPF: a host the record does not list", || {
        let stranger = Sending {
            source: STRANGER4,
            helo: "stranger.sender.test",
            ..GENUINE
        };
        send(&net, &internet, stranger, "stranger");
        let v = judged(&net, &internet, TO4, "stranger");
        assert_eq!(word(&v.spf), "fail", "sender.test's -all: {v:#?}");
        v.assert_agree();
    });

    phases.check("SPF over IPv6: a host the record does not list", || {
        let stranger6 = Sending {
            source: STRANGER6,
            helo: "stranger.sender.test",
            mx: MX6,
            rcpt: TO6,
            ..GENUINE
        };
        send(&net, &internet, stranger6, "stranger over IPv6");
        let v = judged(&net, &internet, TO6, "stranger over IPv6");
        assert_eq!(word(&v.spf), "fail", "sender.test's -all: {v:#?}");
        assert!(
            v.received.contains(&format!("[IPv6:{STRANGER6}]")),
            "judged over IPv6: {v:#?}"
        );
        v.assert_agree();
    });

    phases.check("iprev: a PTR that does not lead back", || {
        let liar = Sending {
            source: LIAR4,
            helo: "liar.sender.test",
            ..GENUINE
        };
        send(&net, &internet, liar, "liar");
        let v = judged(&net, &internet, TO4, "liar");
        assert_eq!(word(&v.iprev), "fail", "{v:#?}");
        v.assert_agree();
    });

    phases.check("DKIM: a body changed after signing", || {
        let tampered = Sending {
            tamper: true,
            ..GENUINE
        };
        send(&net, &internet, tampered, "tampered");
        let v = judged(&net, &internet, TO4, "tampered");
        assert!(
            !v.dkim.is_empty() && v.dkim.iter().all(|d| word(d) == "fail"),
            "the signature must fail: {v:#?}"
        );
        v.assert_agree();
    });

    phases.check(
        "DMARC: neither SPF nor DKIM passes, whatever the sender claims",
        || {
            // A stranger's address and a body changed after signing, under a forged
            // Authentication-Results that says everything passed.
            let forged = Sending {
                source: STRANGER4,
                helo: "stranger.sender.test",
                tamper: true,
                forged_results: Some(
                    "Authentication-Results: sender.test; spf=pass smtp.mailfrom=sender.test; \
                     dkim=pass header.d=sender.test; dmarc=pass header.from=sender.test",
                ),
                ..GENUINE
            };
            send(&net, &internet, forged, "forged");
            let v = judged(&net, &internet, TO4, "forged");
            assert_eq!(word(&v.spf), "fail", "{v:#?}");
            assert!(
                !v.dkim.is_empty() && v.dkim.iter().all(|d| word(d) == "fail"),
                "{v:#?}"
            );
            assert_eq!(word(&v.dmarc), "fail", "rspamd's DMARC: {v:#?}");
            assert_eq!(
                v.second["dmarc"], "fail",
                "the second verifier's DMARC: {v:#?}"
            );
            v.assert_agree();
        },
    );

    phases.check("paused: unreachable; resumed: back, mail kept", || {
        let before = internet.receiver.messages().len();
        ok(internet.receiver.pause());
        let refused = probe_in(&net, &["--timeout", "5", "banner", MX4, "25"])
            .expect_err("a paused receiver must not answer");
        assert!(refused.contains("refused"), "{refused}");
        ok(internet.receiver.resume());
        send(&net, &internet, GENUINE, "after the pause");
        internet.delivered(TO4, "after the pause");
        assert_eq!(
            internet.receiver.messages().len(),
            before + 1,
            "the mail from before the pause is still there"
        );
    });

    phases.check("no route out of the test network", || {
        assert_eq!(ok(net.default_routes()), Vec::<String>::new());
    });
    phases.summary();
}
