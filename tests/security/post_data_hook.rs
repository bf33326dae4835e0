//! Issue 8 items 6, 7 and 8, against the real chasquid: the overlay's post-data hook with the
//! policy rendered from the site refuses (554) what an authenticated user may not send as,
//! messages carrying X-Mailbake-* headers, and messages that would reach one mailbox too many
//! times, and lets everything else through. chasquid and the SMTP client (Python's smtplib)
//! run in a network namespace of their own: accepted mail stays in chasquid's queue, and no
//! delivery attempt or DNS lookup can leave it.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde_json::{Value, json};

use crate::common::ChasquidOptions;
use crate::fixture;
use crate::netns::Netns;

const PASSWORD: &str = "correct horse battery staple";

/// Two users and an alias owned by both, a catch-all forwarding elsewhere, a second domain
/// with its own user, and `j` allowed to send as any address of example.com.
const SITE: &str = "\
site: senders
domains:
  example.com:
    users: [i, j]
    aliases:
      postmaster: i
      sales: [i, j]
      \"*\": i.example.com@gmail.com
    send_as:
      j: [\"*@example.com\"]
  example.org:
    users: [k]
hosts:
  mx1: {fqdn: smtp.example.com, ipv4: 203.0.113.10}
";

/// Opens one SMTP session per case and reports how far each got: the first command refused
/// (`mail`, `rcpt`) or the answer to DATA, with the server's text.
const CLIENT_PY: &str = r#"
import json, smtplib, ssl, sys
ports = {"submission": int(sys.argv[1]), "smtp": int(sys.argv[2])}
cases = json.load(open(sys.argv[3]))
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE  # the throw-away certificate
out = []
for case in cases:
    s = smtplib.SMTP("127.0.0.1", ports[case["port"]], local_hostname="client.example.net", timeout=30)
    s.ehlo()
    if case.get("auth"):
        s.starttls(context=ctx)
        s.ehlo()
        s.login(case["auth"], case["password"])
    result = {"name": case["name"]}
    utf8 = any(ord(c) > 127 for c in case["mail_from"] + case["data"])
    code, text = s.mail(case["mail_from"], ["SMTPUTF8"] if utf8 else [])
    if code != 250:
        result.update(stage="mail", code=code, text=text.decode())
    else:
        for rcpt in case["rcpt"]:
            code, text = s.rcpt(rcpt)
            if code != 250:
                result.update(stage="rcpt", code=code, text=text.decode())
                break
        else:
            # As bytes, so that UTF-8 headers go through; smtplib sends bytes as they are.
            code, text = s.data(case["data"].replace("\n", "\r\n").encode("utf-8"))
            result.update(stage="data", code=code, text=text.decode())
    try:
        s.quit()
    except Exception:
        pass
    out.append(result)
print(json.dumps(out))
"#;

/// One SMTP session: who logs in (if anyone), the envelope and the message's header block.
struct Case {
    name: &'static str,
    auth: Option<&'static str>,
    mail_from: String,
    rcpt: Vec<String>,
    headers: String,
    /// `None`: accepted (250 to DATA); `Some(text)`: refused with `code` (554, or 451 for
    /// a deferral) and `text` in the reply.
    refused: Option<&'static str>,
    code: i64,
}

fn submit(name: &'static str, user: &'static str, mail_from: &str, from_header: &str) -> Case {
    Case {
        name,
        auth: Some(user),
        mail_from: mail_from.to_string(),
        rcpt: vec!["friend@elsewhere.example".to_string()],
        headers: format!("From: {from_header}\nTo: friend@elsewhere.example\nSubject: {name}\n"),
        refused: None,
        code: 554,
    }
}

fn inbound(name: &'static str, rcpt: Vec<String>, extra_headers: &str) -> Case {
    Case {
        name,
        auth: None,
        mail_from: "someone@elsewhere.example".to_string(),
        rcpt,
        headers: format!(
            "From: Someone <someone@elsewhere.example>\nTo: i@example.com\nSubject: {name}\n{extra_headers}"
        ),
        refused: None,
        code: 554,
    }
}

impl Case {
    fn refused(mut self, why: &'static str) -> Case {
        self.refused = Some(why);
        self
    }
    fn deferred(mut self, why: &'static str) -> Case {
        self.refused = Some(why);
        self.code = 451;
        self
    }
    fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "port": if self.auth.is_some() { "submission" } else { "smtp" },
            "auth": self.auth,
            "password": PASSWORD,
            "mail_from": self.mail_from,
            "rcpt": self.rcpt,
            "data": format!("{}\nA message for the post-data hook.\n", self.headers),
        })
    }
}

/// `n` distinct addresses no user or alias has: each one reaches the catch-all.
fn random_locals(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("nobody{i}@example.com")).collect()
}

/// Starts chasquid for `site` in a namespace of its own, runs `cases` and checks each one's
/// outcome, failing with every mismatch and chasquid's log.
fn run_cases(site: &str, cases: &[Case]) {
    run_cases_in(site, |_| {}, cases);
}

/// [`run_cases`] with operator filters (name, script) installed in `hooks/post-data.d/`.
fn run_cases_with_filters(site: &str, filters: &[(&str, &str)], cases: &[Case]) -> String {
    run_cases_in(
        site,
        |config| {
            let filter_dir = config.join("hooks/post-data.d");
            fs::create_dir_all(&filter_dir).expect("mkdir post-data.d");
            for (name, script) in filters {
                let path = filter_dir.join(name);
                fs::write(&path, script).expect("write filter");
                fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
                    .expect("chmod filter");
            }
        },
        cases,
    )
}

/// [`run_cases`] after `prepare` has changed chasquid's configuration directory; returns the
/// contents of chasquid's queue, which holds the accepted messages.
fn run_cases_in(site: &str, prepare: impl FnOnce(&Path), cases: &[Case]) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let users: Vec<(&str, &str)> = ["i@example.com", "j@example.com", "k@example.org"]
        .iter()
        .map(|u| (*u, PASSWORD))
        .collect();
    let root = fixture::chasquid_root(site, dir.path(), &users);
    prepare(&root.join("etc/chasquid"));
    let netns = Netns::new("hook");
    let chasquid = fixture::start_chasquid(
        &root,
        dir.path(),
        ChasquidOptions {
            wrapper: netns.wrapper(),
            ..ChasquidOptions::default()
        },
    );
    let script = dir.path().join("client.py");
    fs::write(&script, CLIENT_PY).expect("write client");
    let cases_file = dir.path().join("cases.json");
    let listed: Vec<Value> = cases.iter().map(Case::to_json).collect();
    fs::write(&cases_file, Value::Array(listed).to_string()).expect("write cases");
    let out = netns
        .command("/usr/bin/python3")
        .arg(&script)
        .arg(chasquid.submission.to_string())
        .arg(chasquid.smtp.to_string())
        .arg(&cases_file)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "the SMTP client failed:\n{}\n--- chasquid log ---\n{}",
        String::from_utf8_lossy(&out.stderr),
        chasquid.log_text()
    );
    let results: Vec<Value> = serde_json::from_slice(&out.stdout).expect("client JSON");
    let mut wrong = Vec::new();
    for (case, result) in cases.iter().zip(&results) {
        let (stage, code, text) = (
            result["stage"].as_str().unwrap_or(""),
            result["code"].as_i64().unwrap_or(0),
            result["text"].as_str().unwrap_or(""),
        );
        let ok = match case.refused {
            None => stage == "data" && code == 250,
            Some(why) => stage == "data" && code == case.code && text.contains(why),
        };
        if !ok {
            let wanted = case.refused.map_or("250 to DATA".to_string(), |w| {
                format!("{} to DATA with {w:?}", case.code)
            });
            wrong.push(format!(
                "{}: wanted {wanted}, got {code} at {stage}: {text}",
                case.name
            ));
        }
    }
    assert_eq!(results.len(), cases.len(), "one result per case");
    assert!(
        wrong.is_empty(),
        "{}\n--- chasquid log ---\n{}",
        wrong.join("\n"),
        chasquid.log_text()
    );
    let mut queued = String::new();
    for entry in fs::read_dir(dir.path().join("state/queue")).expect("queue dir") {
        let path = entry.expect("queue entry").path();
        queued.push_str(&String::from_utf8_lossy(
            &fs::read(&path).expect("queue item"),
        ));
    }
    queued
}

#[test]
fn authenticated_users_send_only_as_addresses_they_own_or_are_granted() {
    let cases = vec![
        submit(
            "own address",
            "i@example.com",
            "i@example.com",
            "I <i@example.com>",
        ),
        submit(
            "own address with a suffix and other case",
            "i@example.com",
            "I+News@Example.COM",
            "i+news@example.com",
        ),
        submit(
            "an alias that delivers to the user",
            "i@example.com",
            "postmaster@example.com",
            "Postmaster <postmaster@example.com>",
        ),
        submit(
            "an alias shared with another user",
            "i@example.com",
            "sales@example.com",
            "sales@example.com",
        ),
        submit(
            "folded From: with a quoted display name and a comment",
            "i@example.com",
            "i@example.com",
            "\"Doe, I\" (that is me)\n\t<i@example.com> (me)",
        ),
        submit(
            "folded From: with an encoded display name",
            "i@example.com",
            "sales@example.com",
            "=?utf-8?q?Sales_team?=\n <sales@example.com>",
        ),
        submit(
            "several owned addresses in one From:",
            "i@example.com",
            "i@example.com",
            "i@example.com,\n\tpostmaster@example.com",
        )
        .refused("exactly one address"),
        submit(
            "another local user as envelope sender",
            "i@example.com",
            "j@example.com",
            "j@example.com",
        )
        .refused("i@example.com may not send as j@example.com (envelope sender)"),
        submit(
            "a user of another site domain",
            "i@example.com",
            "k@example.org",
            "k@example.org",
        )
        .refused("may not send as k@example.org (envelope sender)"),
        submit(
            "an outside address",
            "i@example.com",
            "ceo@bank.example",
            "ceo@bank.example",
        )
        .refused("may not send as ceo@bank.example (envelope sender)"),
        submit(
            "an address the catch-all forwards elsewhere",
            "i@example.com",
            "ceo@example.com",
            "ceo@example.com",
        )
        .refused("may not send as ceo@example.com (envelope sender)"),
        submit(
            "own envelope, forged From:",
            "i@example.com",
            "i@example.com",
            "CEO <ceo@example.com>",
        )
        .refused("may not send as ceo@example.com (From: header)"),
        submit(
            "an owned address in the display name only",
            "i@example.com",
            "i@example.com",
            "\"i@example.com\" <j@example.com>",
        )
        .refused("may not send as j@example.com (From: header)"),
        submit(
            "an owned address in a comment only",
            "i@example.com",
            "i@example.com",
            "j@example.com (i@example.com)",
        )
        .refused("may not send as j@example.com (From: header)"),
        submit(
            "an unquoted address as display name",
            "i@example.com",
            "i@example.com",
            "i@example.com <j@example.com>",
        )
        .refused("not one address this server can check"),
        submit(
            "several From: addresses, one not owned",
            "i@example.com",
            "i@example.com",
            "i@example.com,\n\tJ <j@example.com>",
        )
        .refused("exactly one address"),
        Case {
            headers: "From: i@example.com\nFrom: j@example.com\nSubject: two\n".into(),
            ..submit(
                "two From: headers, the second not owned",
                "i@example.com",
                "i@example.com",
                "",
            )
        }
        .refused("exactly one From: header"),
        Case {
            headers: "To: friend@elsewhere.example\nSubject: no from\n".into(),
            ..submit("no From: header", "i@example.com", "i@example.com", "")
        }
        .refused("no From: header"),
        submit("null envelope sender", "i@example.com", "", "i@example.com").refused("not <>"),
        submit(
            "send_as widens j to all of example.com",
            "j@example.com",
            "ceo@example.com",
            "CEO <ceo@example.com>",
        ),
        submit(
            "send_as covers other users' addresses too",
            "j@example.com",
            "i@example.com",
            "i@example.com",
        ),
        submit(
            "send_as does not reach other domains",
            "j@example.com",
            "k@example.org",
            "k@example.org",
        )
        .refused("j@example.com may not send as k@example.org (envelope sender)"),
        inbound(
            "unauthenticated inbound mail is not checked for ownership",
            vec!["i@example.com".into()],
            "",
        ),
        Case {
            mail_from: "ceo@example.com".into(),
            headers: "From: CEO <ceo@example.com>\nTo: i@example.com\nSubject: inbound\n".into(),
            ..inbound(
                "unauthenticated inbound mail from a site address",
                vec!["i@example.com".into()],
                "",
            )
        },
    ];
    run_cases(SITE, &cases);
}

/// `i` owns every address the catch-all reaches; `kelly` is an alias of `j`.
const CATCH_ALL_SITE: &str = "\
site: spellings
domains:
  example.com:
    users: [i, j]
    aliases:
      kelly: j
      \"*\": i
  example.org:
    users: [k]
hosts:
  mx1: {fqdn: smtp.example.com, ipv4: 203.0.113.10}
";

/// Spellings that chasquid or a mail reader maps to another user's address (Unicode width
/// and case, RFC 2047 encoded words, quoting and escapes) are not addresses of the
/// catch-all that a user may take: the hook refuses them in an authenticated sender.
#[test]
fn spellings_of_another_user_s_address_are_not_the_catch_all_s() {
    let refused = "characters this server does not accept in an authenticated sender";
    let cases = vec![
        submit(
            "a catch-all address",
            "i@example.com",
            "shop@example.com",
            "Shop <shop@example.com>",
        ),
        submit(
            "own address, other case, suffix",
            "i@example.com",
            "I.+x@example.com",
            "i+y@EXAMPLE.com",
        ),
        submit(
            "fullwidth j as envelope sender",
            "i@example.com",
            "\u{ff4a}@example.com",
            "i@example.com",
        )
        .refused(refused),
        submit(
            "fullwidth J in From:",
            "i@example.com",
            "i@example.com",
            "\u{ff2a}@example.com",
        )
        .refused(refused),
        submit(
            "KELVIN SIGN for the K of kelly in From:",
            "i@example.com",
            "i@example.com",
            "\u{212a}elly@example.com",
        )
        .refused(refused),
        submit(
            "KELVIN SIGN as envelope sender",
            "i@example.com",
            "\u{212a}elly@example.com",
            "i@example.com",
        )
        .refused(refused),
        submit(
            "encoded word as local part",
            "i@example.com",
            "i@example.com",
            "=?utf-8?q?j?=@example.com",
        )
        .refused(refused),
        submit(
            "base64 encoded word in angle brackets",
            "i@example.com",
            "i@example.com",
            "J <=?utf-8?b?ag==?=@example.com>",
        )
        .refused(refused),
        submit(
            "encoded word as envelope sender",
            "i@example.com",
            "=?utf-8?q?j?=@example.com",
            "i@example.com",
        )
        .refused(refused),
        submit(
            "quoted local part as envelope sender",
            "i@example.com",
            "\"j\"@example.com",
            "i@example.com",
        )
        .refused("may not send as j@example.com (envelope sender)"),
        submit(
            "escaped local part in From:",
            "i@example.com",
            "i@example.com",
            "\\j@example.com",
        )
        .refused("not one address this server can check"),
    ];
    run_cases(CATCH_ALL_SITE, &cases);
}

/// Header names are found the way RFC 5322 writes them, over the whole line: blanks before
/// the colon do not hide a `From:`. A message has exactly one `From:` with exactly one
/// address, and `Sender:` and `Resent-*` senders are held to the same ownership rule.
#[test]
fn every_from_header_is_seen_and_there_is_exactly_one() {
    let with_headers = |name: &'static str, headers: &str| Case {
        headers: format!("{headers}To: friend@elsewhere.example\nSubject: {name}\n"),
        ..submit(name, "i@example.com", "i@example.com", "")
    };
    let cases = vec![
        with_headers(
            "a second From: with 12 blanks before its colon",
            "From: i@example.com\nFrom            : j@example.com\n",
        )
        .refused("blanks before its colon"),
        with_headers(
            "the only From: after 40 blanks and a tab",
            "From                                        \t: j@example.com\n",
        )
        .refused("blanks before its colon"),
        with_headers(
            "two From: headers, both owned",
            "From: i@example.com\nfrom: i@example.com\n",
        )
        .refused("exactly one From: header"),
        with_headers(
            "two addresses in one From:",
            "From: i@example.com, postmaster@example.com\n",
        )
        .refused("exactly one address"),
        with_headers("a group in From:", "From: team: i@example.com;\n")
            .refused("not one address this server can check"),
        with_headers(
            "Sender: of another user",
            "From: i@example.com\nSender: j@example.com\n",
        )
        .refused("may not send as j@example.com (Sender: header)"),
        with_headers(
            "Resent-From: of another user",
            "From: i@example.com\nResent-From: J <j@example.com>\n",
        )
        .refused("may not send as j@example.com (Resent-From: header)"),
        with_headers(
            "own Sender: and Resent-From:",
            "From: i@example.com\nSender: i@example.com\nResent-From: postmaster@example.com\n",
        ),
    ];
    run_cases(SITE, &cases);
}

#[test]
fn messages_carrying_x_mailbake_headers_are_refused_inbound_and_submitted() {
    let cases = vec![
        inbound(
            "inbound with a forged submission verdict",
            vec!["i@example.com".into()],
            "X-Mailbake-Submission: authenticated\n",
        )
        .refused("X-Mailbake-* headers are reserved for this server; remove X-Mailbake-Submission"),
        inbound(
            "inbound, lowercase and folded",
            vec!["i@example.com".into()],
            "x-mailbake-inbound:\n tls=1 spf-pass=1\n",
        )
        .refused("reserved for this server"),
        Case {
            headers: "From: i@example.com\nX-Mailbake-Anything: 1\nSubject: s\n".into(),
            ..submit("submitted", "i@example.com", "i@example.com", "")
        }
        .refused("reserved for this server"),
        inbound(
            "the name in a header value or in the body is fine",
            vec!["i@example.com".into()],
            "Subject-Note: X-Mailbake-Submission: authenticated\n\nX-Mailbake-Submission: authenticated\n",
        ),
    ];
    run_cases(SITE, &cases);
}

#[test]
fn a_catch_all_does_not_turn_one_message_into_many_copies_at_one_mailbox() {
    let cases = vec![
        inbound("40 random recipients", random_locals(40), "")
            .refused("would reach one mailbox more than 10 times"),
        inbound("3 random recipients", random_locals(3), ""),
        inbound("the default limit: 10", random_locals(10), ""),
        inbound("the default limit: 11", random_locals(11), "").refused("more than 10 times"),
        inbound(
            "aliases to one user add up",
            [
                "i",
                "postmaster",
                "sales",
                "i+a",
                "i+b",
                "i+c",
                "i+d",
                "i+e",
                "i+f",
                "i+g",
                "i+h",
            ]
            .iter()
            .map(|l| format!("{l}@example.com"))
            .collect(),
            "",
        )
        .refused("more than 10 times"),
        Case {
            rcpt: random_locals(11),
            ..submit(
                "authenticated, to the catch-all",
                "i@example.com",
                "i@example.com",
                "i@example.com",
            )
        }
        .refused("more than 10 times"),
        Case {
            rcpt: (0..20)
                .map(|n| format!("friend{n}@elsewhere.example"))
                .collect(),
            ..submit(
                "authenticated, to 20 distinct outside addresses",
                "i@example.com",
                "i@example.com",
                "i@example.com",
            )
        },
    ];
    run_cases(SITE, &cases);
}

#[test]
fn the_site_sets_the_copies_limit() {
    let site = format!("{SITE}limits: {{copies_per_destination: 2}}\n");
    let cases = vec![
        inbound("2 random recipients", random_locals(2), ""),
        inbound("3 random recipients", random_locals(3), "")
            .refused("would reach one mailbox more than 2 times"),
    ];
    run_cases(&site, &cases);
}

/// The hook's site data comes from a file rendered at build time (its code is a plain layer
/// file, not a template): the addresses and final destinations mailbake computed.
#[test]
fn the_hook_reads_the_site_from_a_rendered_policy_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let tree = fixture::render(SITE, dir.path());
    let policy =
        String::from_utf8(fixture::file(&tree, "etc/chasquid/hooks/mailbake/policy").to_vec())
            .expect("UTF-8 policy");
    for line in [
        "copies_per_destination 10",
        "domain example.com",
        "domain example.org",
        "address i@example.com i@example.com",
        "address postmaster@example.com i@example.com",
        "address sales@example.com i@example.com j@example.com",
        "address *@example.com i.example.com@gmail.com",
        "address k@example.org k@example.org",
        "send_as j@example.com *@example.com",
    ] {
        assert!(
            policy.lines().any(|l| l == line),
            "{line:?} missing from the policy:\n{policy}"
        );
    }
}

/// Operator filters in post-data.d/ still run, with the whole message, after mailbake's
/// checks: their headers are added, their refusals stand, and they never see what
/// mailbake already refused.
#[test]
fn operator_filters_in_post_data_d_run_after_mailbake_s_checks() {
    let filters = [
        (
            "10-tag",
            "#!/bin/sh\n# The body comes after the header block mailbake's check reads.\nif grep -q '^A message for the post-data hook.$'; then echo 'X-Operator-Filter: saw the body'; fi\n",
        ),
        (
            "20-no-spam",
            "#!/bin/sh\nif grep -q '^Subject: spam'; then echo '5.7.1 the operator filter says no'; exit 20; fi\n",
        ),
        (
            "30-never-reached",
            "#!/bin/sh\necho '4.3.0 the filter ran after a refusal'; exit 1\n",
        ),
    ];
    // 30-never-reached defers everything it sees: only refused messages may pass it by.
    let never = [filters[0], filters[1]];
    let queued = run_cases_with_filters(
        SITE,
        &never,
        &[
            inbound("an ordinary message", vec!["i@example.com".into()], ""),
            Case {
                headers: "From: someone@elsewhere.example\nSubject: spam\n".into(),
                ..inbound(
                    "spam by the operator's rule",
                    vec!["i@example.com".into()],
                    "",
                )
            }
            .refused("the operator filter says no"),
        ],
    );
    assert!(
        queued.contains("X-Operator-Filter: saw the body"),
        "the filter's header is missing or it got part of the message:\n{queued}"
    );
    run_cases_with_filters(
        SITE,
        &filters,
        &[submit(
            "forged sender",
            "i@example.com",
            "j@example.com",
            "j@example.com",
        )
        .refused("may not send as j@example.com")],
    );
}

/// Without its policy the hook defers (451: the sender retries) rather than let mail through
/// unchecked; so does a policy line it does not understand.
#[test]
fn a_missing_or_unreadable_policy_defers_mail_instead_of_letting_it_through() {
    let cases = [
        inbound("inbound", vec!["i@example.com".into()], "").deferred("mail policy"),
        submit(
            "submitted",
            "i@example.com",
            "j@example.com",
            "j@example.com",
        )
        .deferred("mail policy"),
    ];
    run_cases_in(
        SITE,
        |config| fs::remove_file(config.join("hooks/mailbake/policy")).expect("rm policy"),
        &cases,
    );
    run_cases_in(
        SITE,
        |config| {
            let policy = config.join("hooks/mailbake/policy");
            let text = fs::read_to_string(&policy).expect("policy");
            fs::write(
                &policy,
                format!("{text}adress typo@example.com x@example.com\n"),
            )
            .expect("write policy");
        },
        &cases,
    );
}
