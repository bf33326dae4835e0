//! The post-data hook's parsing functions on their own, run by mawk (the `awk` of Ubuntu's
//! and Debian's minimal systems, Priority: required, which the image's hook runs), and
//! compared with real implementations:
//! - its `From:` parsing with Python's `email` package (`policy.default`) over generated
//!   values and whole header blocks: whatever the hook accepts, Python reads as exactly one
//!   `From:` with exactly the address the hook checked;
//! - its local-part key with chasquid's own resolution (`chasquid-util aliases-resolve`
//!   against the running daemon) over generated spellings of the site's names.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use crate::common::{self, ChasquidOptions};
use crate::fixture;

/// The awk the image's `/usr/bin/awk` is.
const AWK: &str = "/usr/bin/mawk";

fn hook_program() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("layers/chasquid/etc/chasquid/hooks/mailbake/post-data.awk")
}

/// A policy like the one mailbake renders: `i` and `j`, an alias of each and one shared, a
/// catch-all to `i`, and `j` granted all of example.net.
const POLICY: &str = "\
suffix_separators +
drop_characters .
copies_per_destination 10
domain example.com
address i@example.com i@example.com
address j@example.com j@example.com
address kelly@example.com j@example.com
address sales@example.com i@example.com j@example.com
address *@example.com i@example.com
send_as j@example.com *@example.net
";

/// Calls the hook's functions from a second program file, one call per record: the
/// function's name and its arguments separated by \x1f, records by \x1e (bytes no test
/// value holds, so values may hold tabs, newlines and CRs).
const DRIVER: &str = r#"
BEGIN {
    # The policy first: load_policy reads its lines with the record separator in force.
    load_policy(ENVIRON["MAILBAKE_POLICY"])
    RS = "\036"; ORS = "\036"; FS = "\037"
}
$1 == "key_of" { print key_of($2); next }
$1 == "plain_local" { print plain_local($2); next }
$1 == "header_name" { n = header_name($2); print n ((n != "" && header_blanks) ? " +blanks" : ""); next }
$1 == "mailbox_of" { a = mailbox_of($2); print (a == "" && mailbox_several) ? "+several" : a; next }
$1 == "may_send_as" { print may_send_as($2, $3); next }
# The address the hook goes on to check the owner of: one mailbox with a plain local part.
$1 == "sender_of" { a = mailbox_of($2); print (a != "" && plain_local(a)) ? a : ""; next }
{ print "unknown call " $1 }
"#;

/// Runs every call in one awk process and returns the results in order.
fn call_all(calls: &[Vec<&str>]) -> Vec<String> {
    let dir = tempfile::tempdir().expect("temp dir");
    let policy = dir.path().join("policy");
    fs::write(&policy, POLICY).expect("write policy");
    let driver = dir.path().join("driver.awk");
    fs::write(&driver, DRIVER).expect("write driver");
    let mut input = Vec::new();
    for call in calls {
        for part in call {
            assert!(
                !part.contains(['\x1e', '\x1f']),
                "{part:?} holds a separator"
            );
        }
        input.extend_from_slice(call.join("\x1f").as_bytes());
        input.push(0x1e);
    }
    let out = common::output_with_input(
        Command::new(AWK)
            .arg("-v")
            .arg("mailbake_library=1")
            .arg("-f")
            .arg(hook_program())
            .arg("-f")
            .arg(&driver)
            .env("LC_ALL", "C")
            .env("MAILBAKE_POLICY", &policy),
        &input,
    );
    assert!(
        out.status.success(),
        "mawk failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("UTF-8 results");
    let results: Vec<String> = text
        .strip_suffix('\x1e')
        .unwrap_or(&text)
        .split('\x1e')
        .map(str::to_string)
        .collect();
    assert_eq!(results.len(), calls.len(), "one result per call: {text:?}");
    results
}

/// Checks a table of (arguments, expected result) for one function, failing with every
/// wrong row.
fn check_table(function: &str, rows: &[(&[&str], &str)]) {
    let calls: Vec<Vec<&str>> = rows
        .iter()
        .map(|(args, _)| {
            std::iter::once(function)
                .chain(args.iter().copied())
                .collect()
        })
        .collect();
    let results = call_all(&calls);
    let wrong: Vec<String> = rows
        .iter()
        .zip(&results)
        .filter(|((_, want), got)| got != want)
        .map(|((args, want), got)| format!("{function}{args:?}: wanted {want:?}, got {got:?}"))
        .collect();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn header_names_are_found_over_the_whole_line() {
    let twelve = format!("From{}: j@example.com", " ".repeat(12));
    let long = format!("Subject{}\t : x", " ".repeat(200));
    check_table(
        "header_name",
        &[
            (&["From: i@example.com"], "from"),
            (&["FROM:i@example.com"], "from"),
            (&[&twelve], "from +blanks"),
            (&["From\t: j@example.com"], "from +blanks"),
            (&[&long], "subject +blanks"),
            (&["Resent-From: i@example.com"], "resent-from"),
            (&["X-Mailbake-Verdict  : ok"], "x-mailbake-verdict +blanks"),
            (&["Subject: a: b"], "subject"),
            (&["not a header"], ""),
            (&[": no name"], ""),
            (&["Fr om: i@example.com"], ""),
            (&["Fr\u{f6}m: i@example.com"], ""),
            (&["From\r: i@example.com"], ""),
        ],
    );
}

#[test]
fn a_from_value_yields_one_address_or_nothing() {
    check_table(
        "mailbox_of",
        &[
            (&["i@example.com"], "i@example.com"),
            (&[" I <I+x@Example.COM> "], "I+x@Example.COM"),
            (&["\"Doe, I\" (me) <i@example.com> (work)"], "i@example.com"),
            (&["(a (nested) comment) i@example.com"], "i@example.com"),
            (&["\"i@example.com\" <j@example.com>"], "j@example.com"),
            (&["=?utf-8?q?J=40x?= <j@example.com>"], "j@example.com"),
            (&["j@example.com (i@example.com)"], "j@example.com"),
            (&["i@example.com, j@example.com"], "+several"),
            (&["I <i@example.com>,\r\n J <j@example.com>"], "+several"),
            (&["team: i@example.com;"], ""),
            (&["i@example.com <j@example.com>"], ""),
            (&["<i@example.com> j@example.com"], ""),
            (&["<i@example.com"], ""),
            (&["\"i@example.com <j@example.com>"], ""),
            (&["i(c)@example.com"], ""),
            (&["\"j\"@example.com"], ""),
            (&["\\j@example.com"], ""),
            (&["j@[192.0.2.1]"], ""),
            (&["<@relay.example:j@example.com>"], ""),
            (&["(unclosed i@example.com"], ""),
            (&["i@example.com)"], ""),
            (&[""], ""),
            (&["Just a name"], ""),
        ],
    );
}

#[test]
fn local_parts_are_keyed_as_chasquid_keys_site_names() {
    check_table(
        "key_of",
        &[
            (&["i@example.com"], "i@example.com"),
            (&["J.K+News@Example.COM"], "jk@example.com"),
            (&["post.master@example.com"], "postmaster@example.com"),
            (&["i+a+b@example.com"], "i@example.com"),
            (&["@example.com"], ""),
            (&["i@"], ""),
            (&["i"], ""),
        ],
    );
    // Mirrors the Rust key that `mailbake check` keeps unique and the policy is keyed by.
    for (local, key) in [("J.K+News", "jk"), ("post.master", "postmaster")] {
        assert_eq!(mailbake::site::chasquid_local_key(local), key);
    }
}

#[test]
fn only_plain_ascii_local_parts_count_as_senders() {
    check_table(
        "plain_local",
        &[
            (&["i@example.com"], "1"),
            (&["I.Doe_2-x+News@example.com"], "1"),
            (&["\u{ff4a}@example.com"], "0"),
            (&["\u{212a}elly@example.com"], "0"),
            (&["j\u{301}@example.com"], "0"),
            (&["=?utf-8?q?j?=@example.com"], "0"),
            (&["\"j\"@example.com"], "0"),
            (&["\\j@example.com"], "0"),
            (&["j k@example.com"], "0"),
            (&["j%x@example.com"], "0"),
            (&["@example.com"], "0"),
        ],
    );
}

#[test]
fn ownership_follows_the_policy() {
    check_table(
        "may_send_as",
        &[
            (&["i@example.com", "i@example.com"], "1"),
            (&["i@example.com", "I.+tag@EXAMPLE.COM"], "1"),
            (&["i@example.com", "sales@example.com"], "1"),
            (&["j@example.com", "sales@example.com"], "1"),
            (&["i@example.com", "shop@example.com"], "1"),
            (&["i@example.com", "j@example.com"], "0"),
            (&["i@example.com", "kelly@example.com"], "0"),
            (&["i@example.com", "k.e.l.l.y@example.com"], "0"),
            (&["i@example.com", "\u{212a}elly@example.com"], "0"),
            (&["i@example.com", "=?utf-8?q?j?=@example.com"], "0"),
            (&["j@example.com", "anyone@example.net"], "1"),
            (&["j@example.com", "\u{ff4a}@example.net"], "0"),
            (&["i@example.com", "anyone@example.net"], "0"),
            (&["i@example.com", "i@example.com.evil.example"], "0"),
        ],
    );
}

/// Python's reading of `From:` header values (one JSON list in, one out): the addr-specs of
/// the header's addresses, or an error.
const PY_FROM: &str = r#"
import json, sys
from email import message_from_string, policy
out = []
for value in json.load(sys.stdin):
    try:
        msg = message_from_string("From:" + value + "\n\nbody\n", policy=policy.default)
        froms = msg.get_all("From") or []
        out.append({"headers": len(froms),
                    "addresses": [a.addr_spec for h in froms for a in h.addresses]})
    except Exception as e:
        out.append({"error": repr(e)})
print(json.dumps(out))
"#;

fn python_json(program: &str, input: &Value) -> Vec<Value> {
    let out = common::output_with_input(
        Command::new("/usr/bin/python3").arg("-c").arg(program),
        input.to_string().as_bytes(),
    );
    assert!(
        out.status.success(),
        "python3 failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    match serde_json::from_slice(&out.stdout).expect("JSON from python") {
        Value::Array(items) => items,
        other => panic!("not a list: {other}"),
    }
}

/// Display names, address spellings, what may follow, and folds: every combination.
fn generated_from_values() -> Vec<(String, bool)> {
    let names = [
        ("", true),
        ("I", true),
        ("\"Doe, I\"", true),
        ("J. Doe", true),
        ("=?utf-8?q?J_Doe?=", true),
        ("\"i@example.com\"", true),
        ("(c) I", true),
        ("\"a\\\"b\"", true),
        ("i@example.com", false),
        ("I <x>", false),
    ];
    let addresses = [
        ("i@example.com", true),
        ("I+x@Example.COM", true),
        ("j.k_l-m@example.com", true),
        ("\"j\"@example.com", false),
        ("j(c)@example.com", false),
        ("=?utf-8?q?j?=@example.com", false),
        ("\u{ff4a}@example.com", false),
        ("\\j@example.com", false),
        ("j@[192.0.2.1]", false),
        ("@relay.example:j@example.com", false),
        ("j@example.com@example.org", false),
    ];
    let tails = [
        ("", true),
        (" (comment)", true),
        (" (nested (comment))", true),
        (", other@example.com", false),
        (" trailing", false),
        (";", false),
        (" (unclosed", false),
    ];
    let mut out = Vec::new();
    for (name, name_ok) in names {
        for (address, address_ok) in addresses {
            for (tail, tail_ok) in tails {
                let value = if name.is_empty() {
                    format!(" {address}{tail}")
                } else {
                    format!(" {name} <{address}>{tail}")
                };
                let plain = name_ok && address_ok && tail_ok;
                // The same value folded at its first space (CRLF + WSP, which both unfold).
                let folded = value.trim_start().replacen(' ', "\r\n\t", 1);
                out.push((value, plain));
                out.push((format!(" {folded}"), plain));
            }
        }
    }
    out
}

/// Whatever address the hook takes from a `From:` value, Python's `email` reads the same
/// value as exactly that one address; and the well-formed values are all taken.
#[test]
fn from_parsing_agrees_with_python_email() {
    let values = generated_from_values();
    // The hook sees a value unfolded: the line break dropped, the WSP after it kept.
    let unfolded: Vec<String> = values.iter().map(|(v, _)| v.replace("\r\n", "")).collect();
    let calls: Vec<Vec<&str>> = unfolded
        .iter()
        .map(|u| vec!["sender_of", u.as_str()])
        .collect();
    let hook = call_all(&calls);
    let input = Value::Array(values.iter().map(|(v, _)| json!(v)).collect());
    let python = python_json(PY_FROM, &input);
    let mut wrong = Vec::new();
    let mut taken = 0;
    for (((value, plain), got), py) in values.iter().zip(&hook).zip(&python) {
        let accepted = !got.is_empty();
        if accepted {
            taken += 1;
            let py_addresses = py["addresses"].as_array().cloned().unwrap_or_default();
            if py["headers"] != json!(1) || py_addresses != vec![json!(got)] {
                wrong.push(format!(
                    "From:{value:?}: the hook checks {got:?}, Python reads {py}"
                ));
            }
        } else if *plain {
            wrong.push(format!(
                "From:{value:?}: well-formed, Python reads {py}, the hook refuses it ({got:?})"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(
        taken >= 100,
        "only {taken} of {} values were accepted",
        values.len()
    );
}

/// Python's and a lenient reader's view of whole header blocks: the `From:` headers each
/// finds and their addresses. The lenient reader takes any line with a colon after a name
/// and blanks as a field, and a bare CR as a line break.
const PY_BLOCKS: &str = r#"
import json, re, sys
from email import message_from_string, policy
out = []
for block in json.load(sys.stdin):
    msg = message_from_string(block + "\nbody\n", policy=policy.default)
    froms = msg.get_all("From") or []
    strict = [a.addr_spec for h in froms for a in h.addresses]
    lenient = [l for l in re.split(r"\r\n|\r|\n", block)
               if re.match(r"(?i)from[ \t]*:", l)]
    out.append({"strict_headers": len(froms), "strict": strict, "lenient_headers": len(lenient)})
print(json.dumps(out))
"#;

fn generated_header_blocks() -> Vec<String> {
    let from_names = [
        "From",
        "from",
        "FROM",
        "From ",
        "From\t",
        "From            ",
    ];
    let seconds = [
        "",
        "From: j@example.com\n",
        // A second From: the user owns: two are refused all the same (readers pick one).
        "From: i+again@example.com\n",
        "From            : j@example.com\n",
        "FROM\t\t: J <j@example.com>\n",
        "Sender: j@example.com\n",
        "Resent-From: j@example.com\n",
        "Subject: x\rFrom: j@example.com\n",
        "Subject: x\n\tFrom: j@example.com\n",
        "X-Note: From: j@example.com\n",
    ];
    let firsts = [
        "i@example.com",
        "I <i@example.com>",
        "i@example.com\n (me)",
        "i@example.com,\n j@example.com",
    ];
    let mut out = Vec::new();
    for name in from_names {
        for first in firsts {
            for second in seconds {
                out.push(format!(
                    "{name}: {first}\n{second}To: friend@elsewhere.example\n"
                ));
                out.push(format!(
                    "To: friend@elsewhere.example\n{second}{name}: {first}\n"
                ));
            }
        }
    }
    out
}

/// The whole hook over generated header blocks: when it lets a message of `i` through, both
/// Python's parser and a lenient reader find exactly one `From:`, and it is `i`'s.
#[test]
fn no_accepted_header_block_shows_another_from() {
    let dir = tempfile::tempdir().expect("temp dir");
    let policy = dir.path().join("policy");
    fs::write(&policy, POLICY).expect("write policy");
    let blocks = generated_header_blocks();
    let python = python_json(
        PY_BLOCKS,
        &Value::Array(blocks.iter().map(|b| json!(b)).collect()),
    );
    let mut wrong = Vec::new();
    let mut accepted = 0;
    for (block, py) in blocks.iter().zip(&python) {
        let out = common::output_with_input(
            Command::new(AWK)
                .arg("-f")
                .arg(hook_program())
                .env("LC_ALL", "C")
                .env("MAILBAKE_POLICY", &policy)
                .env("AUTH_AS", "i@example.com")
                .env("MAIL_FROM", "i@example.com")
                .env("RCPT_TO", "friend@elsewhere.example"),
            format!("{block}\nbody\n").as_bytes(),
        );
        let said = String::from_utf8_lossy(&out.stdout).trim().to_string();
        match out.status.code() {
            Some(0) => {
                accepted += 1;
                if py["strict_headers"] != json!(1)
                    || py["strict"] != json!(["i@example.com"])
                    || py["lenient_headers"] != json!(1)
                {
                    wrong.push(format!("{block:?}: accepted, but the readers see {py}"));
                }
            }
            Some(20) => {}
            other => wrong.push(format!("{block:?}: exit {other:?}: {said}")),
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(
        accepted >= 10,
        "only {accepted} of {} blocks were accepted",
        blocks.len()
    );
}

/// A site whose names chasquid reads with dots dropped and suffixes cut.
const KEY_SITE: &str = "\
site: keys
domains:
  example.com:
    users: [i, j]
    aliases:
      kelly: j
      sales: [i, j]
      post-master: i
      \"*\": i
  example.org:
    users: [k]
hosts:
  mx1: {fqdn: smtp.example.com, ipv4: 203.0.113.10}
";

/// Spellings of the site's names: case, dots, suffixes, and Unicode that chasquid's PRECIS
/// mapping folds (fullwidth letters, the KELVIN SIGN for k).
fn generated_spellings() -> Vec<String> {
    let mut out = Vec::new();
    for name in ["i", "j", "kelly", "sales", "post-master", "nobody"] {
        let upper = name.to_uppercase();
        let dotted: String = name.chars().flat_map(|c| [c, '.']).collect();
        let dotted = dotted.trim_end_matches('.').to_string();
        let fullwidth: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphabetic() {
                    char::from_u32(c as u32 - 'a' as u32 + 0xff41).unwrap_or(c)
                } else {
                    c
                }
            })
            .collect();
        let kelvin = name.replace('k', "\u{212a}");
        for spelling in [
            name.to_string(),
            upper.clone(),
            dotted,
            format!("{name}+tag"),
            format!("{upper}+Tag.x"),
            format!(".{name}."),
            fullwidth,
            kelvin,
        ] {
            if !out.contains(&spelling) {
                out.push(spelling);
            }
        }
    }
    out
}

/// For every spelling the hook would accept as a sender, its key leads to the mailboxes
/// chasquid itself resolves the address to; every spelling whose chasquid form differs from
/// it some other way is one the hook refuses.
#[test]
fn the_hook_s_key_resolves_as_chasquid_resolves() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = fixture::chasquid_root(
        KEY_SITE,
        dir.path(),
        &[
            ("i@example.com", "correct horse battery staple"),
            ("j@example.com", "correct horse battery staple"),
            ("k@example.org", "correct horse battery staple"),
        ],
    );
    let chasquid = fixture::start_chasquid(&root, dir.path(), ChasquidOptions::default());
    let policy = root.join("etc/chasquid/hooks/mailbake/policy");
    let policy_text = fs::read_to_string(&policy).expect("rendered policy");
    // The rendered policy's destinations, by key.
    let mut destinations: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in policy_text.lines() {
        let mut fields = line.split(' ');
        if fields.next() == Some("address") {
            let key = fields.next().expect("a key").to_string();
            destinations.insert(key, fields.map(str::to_string).collect());
        }
    }
    let mut catch_all = destinations
        .get("*@example.com")
        .cloned()
        .expect("the catch-all in the policy");
    catch_all.sort();
    let spellings = generated_spellings();
    let addresses: Vec<String> = spellings
        .iter()
        .map(|s| format!("{s}@example.com"))
        .collect();
    let calls: Vec<Vec<&str>> = addresses
        .iter()
        .flat_map(|a| [vec!["plain_local", a.as_str()], vec!["key_of", a.as_str()]])
        .collect();
    let results = call_all(&calls);
    let mut wrong = Vec::new();
    let mut compared = 0;
    let mut diverging = Vec::new();
    for (i, address) in addresses.iter().enumerate() {
        let (plain, key) = (&results[2 * i], &results[2 * i + 1]);
        let out = chasquid.util(&["aliases-resolve", address]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if !out.status.success() {
            wrong.push(format!(
                "aliases-resolve {address:?} failed: {}{text}",
                String::from_utf8_lossy(&out.stderr)
            ));
            continue;
        }
        // One line per final destination: its kind, then the address.
        let mut by_chasquid: Vec<String> = text
            .lines()
            .filter_map(|l| l.split_whitespace().last())
            .map(str::to_string)
            .collect();
        by_chasquid.sort();
        let mut by_hook = destinations
            .get(key)
            .or_else(|| destinations.get("*@example.com"))
            .cloned()
            .unwrap_or_default();
        by_hook.sort();
        if plain == "1" {
            compared += 1;
            // chasquid finds a user only by its exact name: where a catch-all exists, it
            // delivers `J@` and `j+tag@` to the catch-all. The hook keys them to the user,
            // the stricter owner: the catch-all's owner may not send as them.
            let stricter = by_chasquid == catch_all && destinations.contains_key(key);
            if by_hook != by_chasquid && !stricter {
                wrong.push(format!(
                    "{address:?}: the hook keys it {key:?} -> {by_hook:?}, chasquid resolves it to {by_chasquid:?}"
                ));
            }
        } else if by_hook != by_chasquid {
            // A spelling the hook refuses that chasquid maps to another target than the
            // hook's key would: what accepting it would have let through.
            diverging.push(format!("{address} -> {by_chasquid:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(compared >= 20, "only {compared} spellings were compared");
    // The premise of refusing them: chasquid folds fullwidth letters and the KELVIN SIGN.
    assert!(
        diverging.iter().any(|d| d.starts_with('\u{ff4b}'))
            && diverging.iter().any(|d| d.starts_with('\u{212a}')),
        "chasquid no longer maps fullwidth or KELVIN SIGN spellings to other names: {diverging:?}"
    );
}
