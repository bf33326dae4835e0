//! Self-test of the boot tests' host side (the `testkit` crate in `tests/support`,
//! `qemu-tests/probe.py`) without a VM: real `named` on a free high port, the Inbox on a free
//! port, the probes against them and DKIM verification of messages signed here with dkimpy.
//! Needs bind9, bind9-dnsutils (dig, nsupdate), openssl, python3-dkim; a missing one fails with
//! the reason.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use base64::Engine as _;
use testkit::burst::{Attempt, Tally};
use testkit::{
    Delivered, Dns, Inbox, InboxOptions, TsigKey, Zone, loopback, ok, output, probe, reserve_port,
    run, self_signed_certificate,
};

const WAIT: Duration = Duration::from_secs(10);

/// 300 characters: longer than one TXT string (255), so the zone splits it in two.
fn long_txt() -> String {
    (0..300).map(|i| (b'a' + (i % 26) as u8) as char).collect()
}

#[test]
fn dns_serves_the_zone_authoritatively() {
    let long = long_txt();
    let zone = Zone::from_records(
        "example.test",
        &[
            "@ IN MX 10 mx.example.test.".to_string(),
            "mx IN A 10.0.2.2".to_string(),
            "mx IN AAAA fec0::2".to_string(),
            format!("@ IN TXT \"{}\" \"{}\"", &long[..255], &long[255..]),
            "s1._domainkey IN TXT \"v=DKIM1; k=ed25519; p=AAAA\"".to_string(),
        ],
    );
    let other = Zone::from_records("gmail.test", &["@ IN MX 5 mx.gmail.test.", "mx A 10.0.2.2"]);
    let port = reserve_port();
    let dns = ok(Dns::start(loopback(port.number()), &[zone, other]));

    assert_eq!(
        ok(dns.dig("example.test", "MX")),
        ["10 mx.example.test."],
        "{}",
        dns.log()
    );
    assert_eq!(ok(dns.dig("mx.example.test", "A")), ["10.0.2.2"]);
    assert_eq!(ok(dns.dig("mx.example.test", "AAAA")), ["fec0::2"]);
    assert_eq!(ok(dns.dig("mx.gmail.test", "A")), ["10.0.2.2"]);
    let txt = ok(dns.dig("example.test", "TXT"));
    assert_eq!(
        txt,
        [format!("\"{}\" \"{}\"", &long[..255], &long[255..])],
        "the long TXT comes back as two strings that join to the value"
    );
    assert_eq!(
        ok(dns.dig("s1._domainkey.example.test", "TXT")),
        ["\"v=DKIM1; k=ed25519; p=AAAA\""]
    );
    assert!(ok(dns.dig("nothing.example.test", "A")).is_empty());

    // Authoritative only: a name outside the zones is refused, not resolved.
    let out = run(Command::new("dig")
        .arg(format!("@{}", dns.addr().ip()))
        .args(["-p", &dns.addr().port().to_string(), "example.org", "A"]));
    assert!(out.contains("status: REFUSED"), "{out}");
    // And the answers for the zone carry the aa flag.
    let out = run(Command::new("dig")
        .arg(format!("@{}", dns.addr().ip()))
        .args(["-p", &dns.addr().port().to_string(), "example.test", "MX"]));
    assert!(
        out.lines()
            .any(|l| l.contains("flags:") && l.contains(" aa")),
        "{out}"
    );
}

#[test]
fn dns_accepts_only_signed_updates() {
    let key = ok(TsigKey::generate("acme-key"));
    let zone = Zone::from_records("acme.test", &["@ IN A 10.0.2.2"]).allow_update(key.clone());
    let port = reserve_port();
    let dns = ok(Dns::start(loopback(port.number()), &[zone]));
    let script = |name: &str| {
        format!(
            "server {} {}\nzone acme.test\nupdate add {name}.acme.test. 60 TXT \"token-{name}\"\nsend\n",
            dns.addr().ip(),
            dns.addr().port()
        )
    };
    let nsupdate = |args: &[&str], input: String| {
        let mut child = Command::new("nsupdate")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run nsupdate (bind9-dnsutils): {e}"));
        if let Some(mut i) = child.stdin.take() {
            i.write_all(input.as_bytes()).expect("write to nsupdate");
        }
        child.wait_with_output().expect("nsupdate runs")
    };

    let signed = nsupdate(&["-y", &key.nsupdate_arg()], script("_acme-challenge"));
    assert!(
        signed.status.success(),
        "signed update refused: {}\n{}",
        String::from_utf8_lossy(&signed.stderr),
        dns.log()
    );
    assert_eq!(
        ok(dns.dig("_acme-challenge.acme.test", "TXT")),
        ["\"token-_acme-challenge\""]
    );

    let unsigned = nsupdate(&[], script("intruder"));
    assert!(
        !unsigned.status.success(),
        "an unsigned update was accepted"
    );
    let wrong = TsigKey::generate("acme-key").expect("key");
    let forged = nsupdate(&["-y", &wrong.nsupdate_arg()], script("forged"));
    assert!(
        !forged.status.success(),
        "an update with a wrong secret was accepted"
    );
    assert!(ok(dns.dig("intruder.acme.test", "TXT")).is_empty());
    assert!(ok(dns.dig("forged.acme.test", "TXT")).is_empty());
}

#[test]
fn dns_reports_a_taken_port_and_a_bad_zone() {
    let reserved = reserve_port();
    let port = reserved.number();
    let squatter = std::net::UdpSocket::bind(loopback(port)).expect("bind the squatter");
    let zone = Zone::from_records("example.test", &["@ IN A 10.0.2.2"]);
    let err = Dns::start(loopback(port), std::slice::from_ref(&zone))
        .err()
        .expect("start must fail on a taken port");
    assert!(
        err.contains("taken") && err.contains(&port.to_string()),
        "{err}"
    );
    drop(squatter);

    let bad = Zone::from_records("bad.test", &["www IN A not-an-address"]);
    let port = reserve_port();
    let err = Dns::start(loopback(port.number()), &[bad])
        .err()
        .expect("start must fail on a bad zone");
    assert!(
        err.contains("named-checkconf") && err.contains("not-an-address"),
        "{err}"
    );
}

#[test]
fn dns_replaces_a_zone_and_refuses_a_bad_one() {
    let site = Zone::from_records(
        "example.test",
        &[
            "@ IN TXT \"v=spf1 ip4:192.0.2.1 -all\"",
            "_dmarc IN TXT \"v=DMARC1; p=reject\"",
        ],
    );
    let other = Zone::from_records("other.test", &["@ IN A 192.0.2.2"]);
    let port = reserve_port();
    let dns = ok(Dns::start(loopback(port.number()), &[site.clone(), other]));
    let changed = Zone::from_records("example.test", &["@ IN TXT \"v=spf1 -all\""]);
    ok(dns.replace_zone(changed.clone()));
    assert_eq!(
        ok(dns.dig("example.test", "TXT")),
        ["\"v=spf1 -all\""],
        "served at once after replace_zone returns:\n{}",
        dns.log()
    );
    assert!(
        ok(dns.dig("_dmarc.example.test", "TXT")).is_empty(),
        "a record left out of the new zone is gone"
    );
    assert_eq!(
        ok(dns.dig("other.test", "A")),
        ["192.0.2.2"],
        "other zones stay"
    );
    assert_eq!(ok(dns.zone("example.test.")).text, changed.text);

    let err = dns
        .replace_zone(Zone::from_records(
            "example.test",
            &["www IN A not-an-address"],
        ))
        .expect_err("a bad zone must be refused");
    assert!(
        err.contains("named-checkzone") && err.contains("not-an-address"),
        "{err}"
    );
    assert_eq!(
        ok(dns.dig("example.test", "TXT")),
        ["\"v=spf1 -all\""],
        "the old zone stays served"
    );
    let err = dns
        .replace_zone(Zone::from_records("unknown.test", &["@ IN A 192.0.2.3"]))
        .expect_err("only served zones can be replaced");
    assert!(err.contains("no zone unknown.test"), "{err}");

    ok(dns.replace_zone(site));
    assert_eq!(
        ok(dns.dig("_dmarc.example.test", "TXT")),
        ["\"v=DMARC1; p=reject\""],
        "restored"
    );
}

#[test]
fn burst_tally_counts_lost_duplicated_and_unanswered() {
    let attempt = |k: u64, code: Option<u64>| Attempt {
        k,
        message_id: format!("<t.{k}@example.com>"),
        accepted: code == Some(250),
        code,
        error: None,
    };
    let stored: Vec<Delivered> = [1, 1, 1, 3, 3, 9]
        .iter()
        .map(|k| Delivered {
            path: PathBuf::from(format!("/m{k}")),
            data: format!("Message-ID: <t.{k}@example.com>\r\nSubject: t {k}\r\n\r\nx\r\n")
                .into_bytes(),
            authserv_id: "mx.test".into(),
        })
        .collect();
    let attempts = [
        attempt(1, Some(250)),
        attempt(2, Some(250)),
        attempt(3, None),
        attempt(4, Some(451)),
        attempt(5, Some(250)),
    ];
    let t = Tally::count(&attempts, &stored);
    assert_eq!(t.accepted, 3);
    assert_eq!(t.delivered, 1);
    assert_eq!(t.lost, ["<t.2@example.com>", "<t.5@example.com>"]);
    assert_eq!(
        t.duplicated, 3,
        "message 1 arrived three times, message 3 twice"
    );
    assert_eq!((t.unanswered, t.unanswered_delivered), (1, 1));
    assert!(!t.complete());
    assert_eq!(
        t.to_string(),
        "accepted 3 | delivered 1 | lost 2 | duplicated 3 (and 1 unanswered, 1 of them delivered); \
         lost: <t.2@example.com> <t.5@example.com>"
    );
}

fn submit_plain(
    inbox: &Inbox,
    from: &str,
    to: &[&str],
    subject: &str,
    body: Option<&Path>,
) -> serde_json::Value {
    let port = inbox.addr().port().to_string();
    let mut args = vec![
        "submit",
        "127.0.0.1",
        &port,
        "--mode",
        "plain",
        "--from",
        from,
    ];
    for t in to {
        args.extend(["--to", t]);
    }
    args.extend(["--subject", subject]);
    let body_s;
    if let Some(b) = body {
        body_s = b.display().to_string();
        args.extend(["--body-file", &body_s]);
    }
    ok(probe(&args))
}

#[test]
fn inbox_records_envelope_and_unstuffs_dots() {
    let inbox = ok(Inbox::start(loopback(0)));
    let dir = tempfile::tempdir().expect("temp dir");
    let body = dir.path().join("body.txt");
    fs::write(
        &body,
        "first line\n.leading dot\n..two dots\n.\nlast line\n",
    )
    .expect("write body");

    let r1 = submit_plain(
        &inbox,
        "alice@example.test",
        &["bob@gmail.test"],
        "one",
        None,
    );
    assert_eq!(r1["accepted"], true, "{r1}");
    assert_eq!(r1["code"], 250, "{r1}");
    let r2 = submit_plain(
        &inbox,
        "carol@example.test",
        &["dave@gmail.test", "erin@gmail.test"],
        "two",
        Some(&body),
    );
    assert_eq!(r2["accepted"], true, "{r2}");

    let m1 = ok(inbox.wait_for(|m| m.header("Subject").as_deref() == Some("one"), WAIT));
    assert_eq!(m1.mail_from, "alice@example.test");
    assert_eq!(m1.rcpt_to, ["bob@gmail.test"]);
    assert_eq!(m1.helo, "probe.mailbake.test");
    assert!(m1.esmtp);
    assert!(m1.peer.ip().is_loopback());
    assert_eq!(
        m1.header("Message-ID").as_deref(),
        r1["message_id"].as_str()
    );

    let m2 = ok(inbox.wait_for(|m| m.mail_from == "carol@example.test", WAIT));
    assert_eq!(m2.rcpt_to, ["dave@gmail.test", "erin@gmail.test"]);
    let text = m2.text();
    // The client doubled the leading dots; the Inbox must store the original lines, CRLF.
    assert!(
        text.contains("\r\nfirst line\r\n.leading dot\r\n..two dots\r\n.\r\nlast line\r\n"),
        "{text:?}"
    );
    assert!(text.ends_with("last line\r\n"), "{text:?}");
    assert_eq!(inbox.messages().len(), 2);
}

/// Raw session: sends `lines` (pipelined, as one write) and reads `replies` reply lines.
fn session(addr: std::net::SocketAddr, input: &str, replies: usize) -> Vec<String> {
    let mut s = TcpStream::connect(addr).expect("connect to the inbox");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut r = BufReader::new(s.try_clone().expect("clone"));
    let mut got = Vec::new();
    let mut line = String::new();
    r.read_line(&mut line).expect("greeting");
    got.push(line.trim_end().to_string());
    s.write_all(input.as_bytes()).expect("send");
    while got.len() < replies + 1 {
        line.clear();
        match r.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                // Only final lines of multi-line replies count.
                if line.as_bytes().get(3) != Some(&b'-') {
                    got.push(line.trim_end().to_string());
                }
            }
        }
    }
    got
}

fn codes(replies: &[String]) -> Vec<&str> {
    replies.iter().map(|l| l.get(..3).unwrap_or(l)).collect()
}

#[test]
fn inbox_enforces_the_protocol_and_its_bounds() {
    let opts = InboxOptions {
        max_message_bytes: 100,
        accept_domains: vec!["gmail.test".into()],
        ..InboxOptions::default()
    };
    let inbox = ok(Inbox::start_with(loopback(0), opts));
    let r = session(
        inbox.addr(),
        "MAIL FROM:<a@x.test>\r\n\
         EHLO client.test\r\n\
         RCPT TO:<b@gmail.test>\r\n\
         DATA\r\n\
         STARTTLS\r\n\
         AUTH PLAIN AGFAYg==\r\n\
         MAIL FROM:<a@x.test> SIZE=5000\r\n\
         MAIL FROM:<a@x.test>\r\n\
         RCPT TO:<c@elsewhere.test>\r\n\
         RCPT TO:<b@gmail.test>\r\n\
         DATA\r\n\
         Subject: big\r\n\r\n\
         0123456789012345678901234567890123456789012345678901234567890123456789\r\n\
         0123456789012345678901234567890123456789012345678901234567890123456789\r\n\
         .\r\n\
         RSET\r\n\
         NOOP\r\n\
         FROB\r\n\
         QUIT\r\n",
        17,
    );
    assert_eq!(
        codes(&r),
        [
            "220", // greeting
            "503", // MAIL before EHLO
            "250", // EHLO
            "503", // RCPT before MAIL
            "503", // DATA before MAIL
            "502", // STARTTLS not offered
            "502", // AUTH not offered
            "552", // declared SIZE over the limit
            "250", // MAIL
            "550", // relaying to a foreign domain
            "250", // RCPT
            "354", // DATA
            "552", // message over the limit
            "250", // RSET
            "250", // NOOP
            "500", // unknown command
            "221", // QUIT
        ],
        "{r:#?}\n{}",
        inbox.transcript()
    );
    assert!(
        inbox.messages().is_empty(),
        "the oversized message was kept"
    );

    // An overlong command line ends the session with 500.
    let long = format!("NOOP {}\r\n", "x".repeat(5000));
    let r = session(inbox.addr(), &long, 1);
    assert_eq!(codes(&r), ["220", "500"], "{r:?}");
}

#[test]
fn inbox_limits_connections() {
    let opts = InboxOptions {
        max_connections: 1,
        ..InboxOptions::default()
    };
    let inbox = ok(Inbox::start_with(loopback(0), opts));
    let first = TcpStream::connect(inbox.addr()).expect("first connection");
    let mut r1 = BufReader::new(first.try_clone().expect("clone"));
    let mut line = String::new();
    r1.read_line(&mut line).expect("first greeting");
    assert!(line.starts_with("220 "), "{line}");
    let mut second = TcpStream::connect(inbox.addr()).expect("second connection");
    second.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut reply = String::new();
    second.read_to_string(&mut reply).expect("second reply");
    assert!(reply.starts_with("421 "), "{reply:?}");
}

#[test]
fn inbox_wait_for_times_out_listing_arrivals() {
    let inbox = ok(Inbox::start(loopback(0)));
    let r = submit_plain(
        &inbox,
        "a@example.test",
        &["b@gmail.test"],
        "arrived-subject",
        None,
    );
    assert_eq!(r["accepted"], true, "{r}");
    let t = Instant::now();
    let err = inbox
        .wait_for(
            |m| m.mail_from == "never@example.test",
            Duration::from_millis(500),
        )
        .expect_err("no such message");
    assert!(t.elapsed() >= Duration::from_millis(500));
    assert!(
        err.contains("arrived-subject")
            && err.contains("a@example.test")
            && err.to_lowercase().contains("c: quit"),
        "{err}"
    );
}

#[test]
fn inbox_drop_closes_sessions_and_the_port() {
    let inbox = ok(Inbox::start(loopback(0)));
    let addr = inbox.addr();
    let open = TcpStream::connect(addr).expect("connect");
    open.set_read_timeout(Some(WAIT)).expect("timeout");
    let mut r = BufReader::new(open);
    let mut greeting = String::new();
    r.read_line(&mut greeting).expect("greeting");
    // How long the drop takes is scripts/bench's business, not an assertion on a noisy
    // machine: what it must do is close the session and the port.
    drop(inbox);
    let mut rest = String::new();
    let _ = r.read_to_string(&mut rest);
    assert!(
        rest.is_empty() || rest.starts_with("421"),
        "open session not closed: {rest:?}"
    );
    assert!(
        TcpStream::connect(addr).is_err(),
        "still listening after drop"
    );
}

#[test]
fn probes_banner_ehlo_auth_relay() {
    let opts = InboxOptions {
        hostname: "mx.gmail.test".into(),
        accept_domains: vec!["gmail.test".into()],
        ..InboxOptions::default()
    };
    let inbox = ok(Inbox::start_with(loopback(0), opts));
    let port = inbox.addr().port().to_string();
    let hp = ["127.0.0.1", port.as_str()];

    let b = ok(probe(&["banner", hp[0], hp[1]]));
    assert_eq!(b["code"], 220, "{b}");
    assert_eq!(
        b["line"], "220 mx.gmail.test ESMTP mailbake test inbox",
        "{b}"
    );

    let e = ok(probe(&["ehlo", hp[0], hp[1]]));
    assert_eq!(e["code"], 250, "{e}");
    assert_eq!(e["extensions"]["SIZE"], "10485760", "{e}");
    assert!(e["extensions"].get("PIPELINING").is_some(), "{e}");
    assert!(e["extensions"].get("STARTTLS").is_none(), "{e}");
    assert!(e["extensions"].get("AUTH").is_none(), "{e}");

    let a = ok(probe(&[
        "auth-before-tls",
        hp[0],
        hp[1],
        "u@x.test",
        "secret",
    ]));
    assert_eq!(a["advertised"], false, "{a}");
    assert_eq!(a["code"], 502, "{a}");
    assert_eq!(a["refused"], true, "{a}");

    let rel = ok(probe(&[
        "relay",
        hp[0],
        hp[1],
        "--from",
        "a@x.test",
        "--to",
        "victim@elsewhere.test",
    ]));
    assert_eq!(rel["stage"], "rcpt", "{rel}");
    assert_eq!(rel["code"], 550, "{rel}");
    assert_eq!(rel["refused"], true, "{rel}");
    let local = ok(probe(&[
        "relay",
        hp[0],
        hp[1],
        "--from",
        "a@x.test",
        "--to",
        "me@gmail.test",
    ]));
    assert_eq!(local["code"], 250, "{local}");
    assert_eq!(local["refused"], false, "{local}");
    assert!(
        inbox.messages().is_empty(),
        "relay probe must not send DATA"
    );

    // STARTTLS requested from a server that does not offer it: the probe fails, non-zero.
    let err =
        probe(&["ehlo", hp[0], hp[1], "--mode", "starttls"]).expect_err("starttls probe must fail");
    assert!(err.contains("does not offer STARTTLS"), "{err}");
    // Nothing listening: non-zero with the reason.
    let reserved = reserve_port();
    let closed = reserved.number().to_string();
    let err = probe(&["banner", "127.0.0.1", &closed]).expect_err("nothing listens");
    assert!(err.contains("cannot connect"), "{err}");
}

/// Self-signed certificate for mx.example.test with two SANs; returns (cert, key) paths.
fn make_cert(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    self_signed_certificate(&cert, &key, &["mx.example.test", "*.example.test"], 2);
    (cert, key)
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `probe.py SUBCOMMAND 127.0.0.1 PORT EXTRA…` against `openssl s_server` playing an
/// implicit-TLS SMTP server: the `replies` piped to it are sent to the client once it connects,
/// in order (smtplib waits for each reply, so a fixed script works). Returns the probe's JSON and
/// what the client sent.
fn scripted_tls_probe(
    dir: &Path,
    replies: &str,
    subcommand: &str,
    extra: &[&str],
) -> (serde_json::Value, String) {
    let (cert, key) = make_cert(dir);
    let reserved = reserve_port();
    let port = reserved.number();
    let received = dir.join("received.txt");
    let mut child = testkit::process::dies_with_test(&mut Command::new("openssl"))
        .args(["s_server", "-quiet", "-crlf"])
        .args(["-accept", &format!("127.0.0.1:{port}")])
        .arg("-cert")
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .stdin(Stdio::piped())
        .stdout(fs::File::create(&received).expect("create received.txt"))
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_server runs");
    let mut stdin = child.stdin.take().expect("stdin");
    let server = Killed(child);
    stdin.write_all(replies.as_bytes()).expect("feed s_server");
    // Retry until s_server listens; a refused connection never reaches the TLS handshake, so
    // the piped replies are kept for the probe that gets through.
    let deadline = Instant::now() + WAIT;
    let port_s = port.to_string();
    let mut args = vec![subcommand, "127.0.0.1", port_s.as_str()];
    args.extend(extra);
    let v = loop {
        match probe(&args) {
            Ok(v) => break v,
            Err(e) if Instant::now() < deadline && e.contains("Connection refused") => {
                sleep(Duration::from_millis(100))
            }
            Err(e) => panic!("{e}"),
        }
    };
    drop(stdin);
    drop(server);
    (v, fs::read_to_string(&received).unwrap_or_default())
}

#[test]
fn probe_submit_authenticates_over_implicit_tls() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (r, sent) = scripted_tls_probe(
        dir.path(),
        "220 mx.example.test ESMTP\n250-mx.example.test\n250 AUTH PLAIN\n235 2.7.0 ok\n\
         250 2.1.0 ok\n250 2.1.5 ok\n354 go\n250 2.0.0 queued as X\n221 bye\n",
        "submit",
        &[
            "--mode",
            "tls",
            "--user",
            "u@x.test",
            "--password",
            "secret",
            "--from",
            "u@x.test",
            "--to",
            "v@gmail.test",
            "--subject",
            "over-tls",
        ],
    );
    assert_eq!(r["accepted"], true, "{r}\n{sent}");
    assert_eq!(r["code"], 250, "{r}");
    assert_eq!(r["message"], "2.0.0 queued as X", "{r}");
    // base64("\0u@x.test\0secret")
    assert!(
        sent.contains("AUTH PLAIN AHVAeC50ZXN0AHNlY3JldA=="),
        "{sent}"
    );
    assert!(sent.contains("mail FROM:<u@x.test>"), "{sent}");
    assert!(sent.contains("Subject: over-tls"), "{sent}");

    let dir = tempfile::tempdir().expect("temp dir");
    let (r, _) = scripted_tls_probe(
        dir.path(),
        "220 mx ESMTP\n250-mx\n250 AUTH PLAIN\n535 5.7.8 bad credentials\n221 bye\n",
        "submit",
        &[
            "--mode",
            "tls",
            "--user",
            "u@x.test",
            "--password",
            "wrong",
            "--from",
            "u@x.test",
            "--to",
            "v@gmail.test",
        ],
    );
    assert_eq!(r["accepted"], false, "{r}");
    assert_eq!(r["stage"], "auth", "{r}");
    assert_eq!(r["code"], 535, "{r}");
}

#[test]
fn probe_cert_shows_the_served_certificate() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (c, _) = scripted_tls_probe(
        dir.path(),
        "220 mx.example.test ESMTP\n250 mx.example.test\n221 bye\n",
        "cert",
        &["--mode", "tls"],
    );
    let cert = dir.path().join("cert.pem");

    assert_eq!(c["sha256"], testkit::fingerprint(&cert), "{c}");
    assert_eq!(c["subject"], "CN=mx.example.test", "{c}");
    assert_eq!(c["issuer"], "CN=mx.example.test", "{c}");
    assert_eq!(
        c["sans"],
        serde_json::json!(["DNS:mx.example.test", "DNS:*.example.test"]),
        "{c}"
    );
    assert!(c["serial"].as_str().is_some_and(|s| !s.is_empty()), "{c}");
    assert!(
        c["pem"]
            .as_str()
            .is_some_and(|s| s.contains("BEGIN CERTIFICATE")),
        "{c}"
    );
}

/// Signs `message` with dkimpy: RSA (PKCS#1/PKCS#8 PEM) then Ed25519 (raw seed, base64).
const SIGN_PY: &str = r#"
import sys, dkim
msg = sys.stdin.buffer.read()
rsa_pem, ed_seed_b64 = open(sys.argv[1], 'rb').read(), open(sys.argv[2], 'rb').read().strip()
sig = dkim.sign(msg, b'rsa1', b'example.test', rsa_pem, include_headers=[b'from', b'to', b'subject'])
msg = sig + msg
sig = dkim.sign(msg, b'ed1', b'example.test', ed_seed_b64, signature_algorithm=b'ed25519-sha256',
                include_headers=[b'from', b'to', b'subject'])
sys.stdout.buffer.write(sig + msg)
"#;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn der(args: &[&str], input: &Path) -> Vec<u8> {
    let out = output(Command::new("openssl").args(args).arg("-in").arg(input));
    assert!(out.status.success(), "openssl {args:?} failed");
    out.stdout
}

fn dkim_verify(records: &Path, message: &[u8]) -> Result<serde_json::Value, String> {
    let records = records.display().to_string();
    testkit::probe_with_stdin(&["dkim-verify", "--records", &records], message)
}

#[test]
fn probe_dkim_verify_checks_rsa_and_ed25519_against_the_records_only() {
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    let (rsa, ed) = (d.join("rsa.pem"), d.join("ed.pem"));
    run(Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
            "-out",
        ])
        .arg(&rsa));
    run(Command::new("openssl")
        .args(["genpkey", "-algorithm", "ED25519", "-out"])
        .arg(&ed));
    // DKIM publishes RSA keys as SubjectPublicKeyInfo DER, Ed25519 keys as the raw 32 bytes
    // (RFC 8463), which are the last 32 bytes of the SPKI; dkimpy signs with the raw seed.
    let rsa_pub = der(&["pkey", "-pubout", "-outform", "DER"], &rsa);
    let ed_pub = der(&["pkey", "-pubout", "-outform", "DER"], &ed);
    let ed_priv = der(&["pkey", "-outform", "DER"], &ed);
    let seed = d.join("ed.seed");
    fs::write(&seed, b64(&ed_priv[ed_priv.len() - 32..])).expect("write seed");

    let rsa_txt = format!("v=DKIM1; k=rsa; p={}", b64(&rsa_pub));
    // The RSA record as quoted strings (zone-file form), split inside the key: the probe joins.
    let rsa_quoted = format!("\"{}\" \"{}\"", &rsa_txt[..200], &rsa_txt[200..]);
    let records = serde_json::json!([
        {"name": "example.test", "type": "MX", "value": "10 mx.example.test"},
        {"name": "rsa1._domainkey.example.test", "type": "TXT", "value": rsa_quoted},
        {"name": "ed1._domainkey.example.test", "type": "TXT",
         "value": format!("v=DKIM1; k=ed25519; p={}", b64(&ed_pub[ed_pub.len() - 32..]))},
    ]);
    let records_path = d.join("records.json");
    fs::write(&records_path, records.to_string()).expect("write records");

    let message = b"From: alice@example.test\r\nTo: bob@gmail.test\r\nSubject: signed\r\n\
                    Message-ID: <1@example.test>\r\n\r\nHello.\r\n.dot line\r\n";
    let mut child = Command::new(testkit::probe::PYTHON)
        .arg("-c")
        .arg(SIGN_PY)
        .arg(&rsa)
        .arg(&seed)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(message)
        .expect("feed the signer");
    let out = child.wait_with_output().expect("signer ends");
    assert!(
        out.status.success(),
        "signing failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let signed = out.stdout;

    let v = ok(dkim_verify(&records_path, &signed));
    let sigs = v["signatures"].as_array().expect("signatures").clone();
    assert_eq!(sigs.len(), 2, "{v}");
    let algs: Vec<_> = sigs
        .iter()
        .map(|s| s["algorithm"].as_str().unwrap_or(""))
        .collect();
    assert!(
        algs.contains(&"rsa-sha256") && algs.contains(&"ed25519-sha256"),
        "{v}"
    );
    assert!(
        sigs.iter()
            .all(|s| s["ok"] == true && s["domain"] == "example.test"),
        "{v}"
    );

    // Through the Inbox and back: the bytes it records must still verify (nothing rewritten).
    let inbox = ok(Inbox::start(loopback(0)));
    let msg_file = d.join("signed.eml");
    fs::write(&msg_file, &signed).expect("write signed");
    let port = inbox.addr().port().to_string();
    let r = ok(probe(&[
        "submit",
        "127.0.0.1",
        &port,
        "--mode",
        "plain",
        "--from",
        "alice@example.test",
        "--to",
        "bob@gmail.test",
        "--message-file",
        &msg_file.display().to_string(),
    ]));
    assert_eq!(r["accepted"], true, "{r}");
    let got = ok(inbox.wait_for(|m| m.header("Subject").as_deref() == Some("signed"), WAIT));
    assert_eq!(got.data, signed, "the Inbox changed the message bytes");
    ok(dkim_verify(&records_path, &got.data));

    // Tampered body: both signatures fail, non-zero exit.
    let tampered = String::from_utf8_lossy(&signed).replace("Hello.", "Hullo.");
    let err =
        dkim_verify(&records_path, tampered.as_bytes()).expect_err("tampered message must fail");
    assert!(
        err.contains("\"ok\": false") && !err.contains("\"ok\": true"),
        "{err}"
    );

    // Key not in the records: fails (the probe must not fall back to real DNS).
    let only_mx = d.join("only-mx.json");
    fs::write(
        &only_mx,
        r#"[{"name":"example.test","type":"MX","value":"10 mx.example.test"}]"#,
    )
    .expect("write");
    let err = dkim_verify(&only_mx, &signed).expect_err("no key published");
    assert!(err.contains("\"ok\": false"), "{err}");

    // No signature at all: non-zero.
    let err = dkim_verify(&records_path, message).expect_err("unsigned message");
    assert!(err.contains("no DKIM-Signature"), "{err}");
}

#[test]
fn phases_report_every_failed_check_and_go_on() {
    let mut phases = testkit::Phases::new("selftest");
    let mut ran = Vec::new();
    phases.check("first check", || ran.push("first"));
    phases.check("a broken check", || {
        panic!("the broken check's reason\nsecond line")
    });
    phases.check("a check after it", || ran.push("after"));
    let value = phases.run("a phase that makes something", || 42);
    assert_eq!(value, 42);
    assert_eq!(
        ran,
        ["first", "after"],
        "the check after the broken one still ran"
    );
    let summary = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| phases.summary()))
        .expect_err("a failed check fails the summary");
    let message = summary
        .downcast_ref::<String>()
        .expect("the summary's message");
    assert!(
        message.contains("1 check(s) failed")
            && message.contains("a broken check: the broken check's reason")
            && !message.contains("second line"),
        "{message}"
    );

    let mut clean = testkit::Phases::new("selftest");
    clean.check("only check", || ());
    clean.summary();
}

#[test]
fn a_failed_run_phase_stops_the_test_with_its_own_message() {
    let mut phases = testkit::Phases::new("selftest");
    let stopped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        phases.run("needed by later phases", || -> u8 { panic!("no network") })
    }))
    .expect_err("a failed run phase propagates");
    assert_eq!(stopped.downcast_ref::<&str>(), Some(&"no network"));
}

#[test]
fn verdicts_come_from_the_receivers_own_authentication_results_wherever_it_stands() {
    let message = |headers: &str| Delivered {
        path: PathBuf::from("/m"),
        data: format!("{headers}From: a@sender.test\r\n\r\nbody\r\n").into_bytes(),
        authserv_id: "mx.gmail4.test".into(),
    };
    // A forger's claim on top, the receiver's own below it, folded over two lines.
    let forged_first = message(
        "Authentication-Results: sender.test; spf=pass smtp.mailfrom=sender.test;\r\n\
         \tdkim=pass header.d=sender.test; dmarc=pass header.from=sender.test\r\n\
         Authentication-Results: MX.gmail4.test 1; dkim=fail header.d=sender.test;\r\n\
         \tspf=fail smtp.mailfrom=sender.test; dmarc=fail header.from=sender.test\r\n",
    );
    assert_eq!(
        forged_first.verdicts("dmarc"),
        ["fail header.from=sender.test"]
    );
    assert_eq!(
        forged_first.verdicts("spf"),
        ["fail smtp.mailfrom=sender.test"]
    );
    assert!(
        forged_first
            .authentication_results()
            .starts_with("MX.gmail4.test 1;")
    );
    // Only a claim by someone else: no verdict at all, never the claim's.
    let only_forged =
        message("Authentication-Results: mx.gmail4.test.evil; dmarc=pass header.from=x\r\n");
    assert_eq!(only_forged.authentication_results(), "");
    assert_eq!(only_forged.verdicts("dmarc"), Vec::<String>::new());
}

/// testssl's protocol findings as it wrote them for chasquid 1.19 on 25 (STARTTLS): chasquid
/// answers a refused handshake with `554 5.5.0 Error in TLS handshake`, which testssl words
/// "likely not offered". That is a refusal; only findings starting with "offered" are offers.
#[test]
fn testssl_likely_not_offered_is_a_refusal() {
    use testkit::tls_scan::{Finding, TlsReport};
    let finding = |id: &str, finding: &str| Finding {
        id: id.into(),
        severity: "INFO".into(),
        finding: finding.into(),
    };
    let report = TlsReport {
        target: "203.0.113.10:25".into(),
        findings: vec![
            finding("SSLv2", "not offered"),
            finding("SSLv3", "not offered"),
            finding("TLS1", "likely not offered"),
            finding(
                "TLS1",
                "received 4xx/5xx after STARTTLS handshake, rerun with DEBUG>=2 or --ssl-native",
            ),
            finding("TLS1_1", "not offered"),
            finding("TLS1_2", "offered"),
            finding("TLS1_3", "offered with final"),
        ],
        seconds: 1.0,
    };
    assert_eq!(report.offered_protocols(), ["TLS1_2", "TLS1_3"]);
    for refused in ["SSLv2", "SSLv3", "TLS1", "TLS1_1"] {
        assert!(report.refuses(refused), "{refused}");
    }
    assert!(!report.refuses("TLS1_2"));
    let deprecated = TlsReport {
        findings: vec![finding("TLS1", "offered (deprecated)")],
        ..report
    };
    assert_eq!(deprecated.offered_protocols(), ["TLS1"]);
    assert!(!deprecated.refuses("TLS1"));
}
