//! The receiver of the test network can say no: straight against it, without a guest, a
//! message from `sender.test`'s own host passes everything (the positive control), and
//! rspamd's and Postfix's verdicts turn to fail for a host the SPF record does not list, a
//! host whose PTR does not lead back to it, and a body changed after signing. The second
//! verifier (dkimpy, pyspf, dnspython) reaches the same verdicts on every message. Paused,
//! it refuses connections; resumed, it accepts again and still holds what it had.
//!
//! Needs root (a network namespace), postfix, rspamd, bind9, python3-dkim, python3-spf.

use testkit::internet::{Internet, SENDER_SELECTOR, Verdicts};
use testkit::topology::*;
use testkit::{Phases, TestNet, ok, probe_in};

/// Sends one message from `source` (HELO `helo`) as `friend@sender.test` to the IPv4 Gmail
/// stand-in, DKIM-signed with sender.test's key (`tamper`: body changed after signing).
fn send(net: &TestNet, internet: &Internet, source: &str, helo: &str, subject: &str, tamper: bool) {
    let key = internet.sender.key.display().to_string();
    let mut args = vec![
        "--helo",
        helo,
        "submit",
        MX4,
        "25",
        "--mode",
        "starttls",
        "--source",
        source,
        "--from",
        "friend@sender.test",
        "--to",
        "someone@gmail4.test",
        "--subject",
        subject,
        "--dkim-key",
        &key,
        "--dkim-selector",
        SENDER_SELECTOR,
    ];
    if tamper {
        args.push("--tamper");
    }
    let sent = ok(probe_in(net, &args));
    assert_eq!(
        sent["accepted"], true,
        "the receiver accepts {subject}: {sent}"
    );
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
    let rcpt = "someone@gmail4.test";

    phases.run("positive control: sender.test's own host", || {
        send(&net, &internet, SENDER4, SENDER_NAME, "genuine", false);
        let v = Verdicts::of(&net, &internet.delivered(rcpt, "genuine"));
        eprintln!(
            "receiver: genuine: {}\n  {}",
            v.authentication_results, v.received
        );
        v.assert_all_pass(&[(SENDER_DOMAIN, SENDER_SELECTOR)]);
    });

    phases.run("SPF: a host the record does not list", || {
        send(
            &net,
            &internet,
            STRANGER4,
            "stranger.sender.test",
            "stranger",
            false,
        );
        let v = Verdicts::of(&net, &internet.delivered(rcpt, "stranger"));
        eprintln!("receiver: stranger: {}", v.authentication_results);
        assert_eq!(word(&v.spf), "fail", "sender.test's -all: {v:#?}");
        v.assert_agree();
    });

    phases.run("iprev: a PTR that does not lead back", || {
        send(&net, &internet, LIAR4, "liar.sender.test", "liar", false);
        let v = Verdicts::of(&net, &internet.delivered(rcpt, "liar"));
        eprintln!(
            "receiver: liar: {}\n  {}",
            v.authentication_results, v.received
        );
        assert_eq!(word(&v.iprev), "fail", "{v:#?}");
        v.assert_agree();
    });

    phases.run("DKIM: a body changed after signing", || {
        send(&net, &internet, SENDER4, SENDER_NAME, "tampered", true);
        let v = Verdicts::of(&net, &internet.delivered(rcpt, "tampered"));
        eprintln!("receiver: tampered: {}", v.authentication_results);
        assert!(
            !v.dkim.is_empty() && v.dkim.iter().all(|d| word(d) == "fail"),
            "the signature must fail: {v:#?}"
        );
        v.assert_agree();
    });

    phases.run("paused: unreachable; resumed: back, mail kept", || {
        let before = internet.receiver.messages().len();
        ok(internet.receiver.pause());
        let refused = probe_in(&net, &["--timeout", "5", "banner", MX4, "25"])
            .expect_err("a paused receiver must not answer");
        assert!(refused.contains("refused"), "{refused}");
        ok(internet.receiver.resume());
        send(
            &net,
            &internet,
            SENDER4,
            SENDER_NAME,
            "after the pause",
            false,
        );
        internet.delivered(rcpt, "after the pause");
        assert_eq!(
            internet.receiver.messages().len(),
            before + 1,
            "the mail from before the pause is still there"
        );
    });

    phases.run("no route out of the test network", || {
        assert_eq!(ok(net.default_routes()), Vec::<String>::new());
    });
    phases.summary();
}
