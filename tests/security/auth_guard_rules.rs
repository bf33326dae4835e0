//! The auth guard's rules on their own (layers/auth-guard/usr/lib/mailbake/auth-guard.awk, the
//! file the image ships, run by the awk the image has): which address a log entry names, what
//! is banned for it, and the IPv6 reading checked against Rust's own `Ipv6Addr` over many
//! generated spellings. No journal, no routes: auth-guard.awk holds only functions, and a small
//! driver calls them.

use std::net::Ipv6Addr;
use std::process::Command;

use crate::common;

/// Calls one function per input line (`NAME<TAB>ARGUMENT`) and prints its result on one line.
const DRIVER: &str = r#"
BEGIN { FS = "\t" }
$1 == "target" { print target_of($2); next }
$1 == "budget" { print budget_of($2); next }
$1 == "prefix64" { print ipv6_prefix64($2); next }
$1 == "host" { print ipv6_host($2); next }
$1 == "ipv4" { print ipv4_ok($2); next }
$1 == "mapped" { print mapped_ipv4($2); next }
$1 == "message" { print message_of($2); next }
$1 == "allowed" {
    # NETWORK,NETWORK... ADDRESS: the address against a fresh allowlist of those networks.
    split("", allow)
    n = split($2, parts, " ")
    k = split(parts[1], networks, ",")
    for (i = 1; i <= k; i++)
        if (!allow_add(networks[i])) { print "not a network: " networks[i]; next }
    print allowed(parts[2])
    next
}
$1 == "allow_add" { split("", allow); print allow_add($2); next }
{ print "no such function: " $1; exit 1 }
"#;

/// `function(argument)` for each call, through the shipped rules.
fn call(function: &str, arguments: &[String]) -> Vec<String> {
    let rules = common::repo().join("layers/auth-guard/usr/lib/mailbake/auth-guard.awk");
    let input: String = arguments
        .iter()
        .map(|a| {
            assert!(!a.contains(['\t', '\n']), "{a:?} cannot be one driver line");
            format!("{function}\t{a}\n")
        })
        .collect();
    let dir = tempfile::tempdir().expect("temp dir");
    let driver = dir.path().join("driver.awk");
    std::fs::write(&driver, DRIVER).expect("write the driver");
    let calls = dir.path().join("calls");
    std::fs::write(&calls, input).expect("write the calls");
    let out = common::output(
        Command::new("awk")
            .arg("-f")
            .arg(&rules)
            .arg("-f")
            .arg(&driver)
            .arg(&calls)
            .env("LC_ALL", "C"),
    );
    assert!(
        out.status.success(),
        "awk failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(
        results.len(),
        arguments.len(),
        "one result per call: {results:?}"
    );
    results
}

/// Checks `function` over a table of (argument, expected result), reporting every mismatch.
fn table(function: &str, rows: &[(&str, &str)]) {
    let arguments: Vec<String> = rows.iter().map(|(a, _)| a.to_string()).collect();
    let got = call(function, &arguments);
    let wrong: Vec<String> = rows
        .iter()
        .zip(&got)
        .filter(|((_, want), got)| want != got)
        .map(|((arg, want), got)| format!("{function}({arg:?}) = {got:?}, expected {want:?}"))
        .collect();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn the_ban_target_of_an_address() {
    table(
        "target",
        &[
            ("198.51.100.10", "198.51.100.10/32"),
            ("0.0.0.0", ""),
            ("127.0.0.1", ""),
            ("127.10.0.1", ""),
            ("255.255.255.255", "255.255.255.255/32"),
            ("256.1.1.1", ""),
            ("1.2.3", ""),
            ("1.2.3.4.5", ""),
            ("01.2.3.4", ""),
            ("1.2.3.04", ""),
            ("1..3.4", ""),
            ("2001:db8:1::10", "2001:db8:1:0::/64"),
            ("2001:DB8:1::10", "2001:db8:1:0::/64"),
            (
                "2001:0db8:0001:0000:0000:0000:0000:0010",
                "2001:db8:1:0::/64",
            ),
            ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
            ("::ffff:198.51.100.10", "198.51.100.10/32"),
            ("::FFFF:c633:640a", "198.51.100.10/32"),
            ("0:0:0:0:0:ffff:198.51.100.10", "198.51.100.10/32"),
            ("::ffff:127.0.0.1", ""),
            ("::1", ""),
            ("0:0:0:0:0:0:0:1", ""),
            ("::", ""),
            ("::2", "0:0:0:0::/64"),
            ("64:ff9b::198.51.100.10", "64:ff9b:0:0::/64"),
            ("2001:db8::1%eth0", ""),
            ("2001:db8:::1", ""),
            ("2001:db8::1::2", ""),
            ("2001:db8:1:2:3:4:5:6:7", ""),
            ("2001:db8:1:2:3:4:5", ""),
            ("12345::1", ""),
            ("2001:db8::g", ""),
            (":2001:db8::1", ""),
            ("2001:db8::1:", ""),
            ("", ""),
            ("x", ""),
        ],
    );
}

#[test]
fn an_ipv6_client_also_counts_against_its_48() {
    table(
        "budget",
        &[
            ("2001:db8:1:2::5", "2001:db8:1::/48"),
            ("2001:db8:1:ffff:1:2:3:4", "2001:db8:1::/48"),
            ("2001:0DB8:0001::", "2001:db8:1::/48"),
            ("198.51.100.10", ""),
            ("::ffff:198.51.100.10", ""),
            ("2001:db8::1::2", ""),
        ],
    );
    table(
        "host",
        &[
            ("2001:db8:1::10", "2001:db8:1:0:0:0:0:10/128"),
            ("2001:DB8:0:0:0:0:0:00A", "2001:db8:0:0:0:0:0:a/128"),
            ("1.2.3.4", ""),
        ],
    );
}

#[test]
fn the_address_of_a_log_message() {
    table(
        "message",
        &[
            (
                r#"{"MESSAGE":"198.51.100.10:5 auth failed for x@example.com"}"#,
                "198.51.100.10:5 auth failed for x@example.com\"}",
            ),
            (r#"{"MESSAGE":[49,46,50,58,51]}"#, "1.2:3"),
            (r#"{"MESSAGE":[49,46,50,58,256]}"#, ""),
            (r#"{"MESSAGE":[49,-1]}"#, ""),
            (r#"{"MESSAGE":17}"#, ""),
            (r#"{"OTHER":"1.2.3.4:5 auth failed for x"}"#, ""),
        ],
    );
}

/// A small deterministic generator (xorshift): the same spellings on every run.
struct Spellings(u64);

impl Spellings {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// One way of writing `groups` (valid or not, on purpose now and then).
    fn spell(&mut self, groups: [u16; 8]) -> String {
        let mut parts: Vec<String> = groups
            .iter()
            .map(|g| match self.below(4) {
                0 => format!("{g:x}"),
                1 => format!("{g:04x}"),
                2 => format!("{g:X}"),
                _ => format!("{g:0w$x}", w = 1 + self.below(4) as usize),
            })
            .collect();
        // A dotted IPv4 tail now and then.
        let dotted = self.below(5) == 0;
        if dotted {
            let [a, b] = groups[6].to_be_bytes();
            let [c, d] = groups[7].to_be_bytes();
            parts.truncate(6);
            parts.push(format!("{a}.{b}.{c}.{d}"));
        }
        // "::" over a run of groups (zero or not: a non-zero run makes a wrong spelling).
        let text = if self.below(3) > 0 {
            let len = parts.len();
            let start = self.below(len as u64) as usize;
            let end = (start + 1 + self.below((len - start) as u64) as usize).min(len);
            let end = if dotted && end == len { len - 1 } else { end };
            let end = end.max(start + 1).min(len);
            format!("{}::{}", parts[..start].join(":"), parts[end..].join(":"))
        } else {
            parts.join(":")
        };
        // Now and then a damaged spelling: a group too long, a stray character, a colon lost.
        match self.below(12) {
            0 => format!("{text}0"),
            1 => text.replacen(':', "", 1),
            2 => format!("{text}:"),
            3 => text.replacen(':', ":::", 1),
            4 => format!("{text}g"),
            _ => text,
        }
    }

    fn groups(&mut self) -> [u16; 8] {
        let mut g = [0u16; 8];
        for x in &mut g {
            // Many zeros, so that runs of them (and "::") are common.
            *x = match self.below(3) {
                0 => 0,
                1 => self.below(0x10) as u16,
                _ => self.next() as u16,
            };
        }
        g
    }
}

#[test]
fn the_guard_reads_ipv6_addresses_as_std_does() {
    let mut make = Spellings(0x9e37_79b9_7f4a_7c15);
    let spellings: Vec<String> = (0..3000)
        .map(|_| {
            let groups = make.groups();
            make.spell(groups)
        })
        .collect();
    let got = call("prefix64", &spellings);
    let mut valid = 0;
    let mut wrong = Vec::new();
    for (spelling, got) in spellings.iter().zip(&got) {
        let expected = match spelling.parse::<Ipv6Addr>() {
            Ok(a) => {
                valid += 1;
                let s = a.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
            Err(_) => String::new(),
        };
        if *got != expected {
            wrong.push(format!("{spelling:?}: guard {got:?}, std {expected:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} spellings read differently:\n{}",
        wrong.len(),
        spellings.len(),
        wrong[..wrong.len().min(30)].join("\n")
    );
    // Both kinds in good number, or the comparison says little.
    assert!(
        valid > 1000 && spellings.len() - valid > 500,
        "{valid} valid of {}",
        spellings.len()
    );
}

#[test]
fn the_allowlist_matches_addresses_in_its_networks() {
    table(
        "allow_add",
        &[
            ("203.0.113.0/24", "1"),
            ("203.0.113.7/32", "1"),
            ("2001:db8:ffff::/48", "1"),
            ("2001:db8::1/128", "1"),
            ("::ffff:203.0.113.0/24", "1"),
            ("203.0.113.0/0", "0"),
            ("203.0.113.0/33", "0"),
            ("2001:db8::/129", "0"),
            ("203.0.113.0", "0"),
            ("203.0.113.0/", "0"),
            ("203.0.113.0/x", "0"),
            ("example.com/24", "0"),
        ],
    );
    table(
        "allowed",
        &[
            ("203.0.113.0/24 203.0.113.7", "1"),
            ("203.0.113.0/24 203.0.113.255", "1"),
            ("203.0.113.0/24 203.0.114.0", "0"),
            ("203.0.113.0/24 ::ffff:203.0.113.9", "1"),
            ("203.0.113.128/25 203.0.113.127", "0"),
            ("203.0.113.128/25 203.0.113.128", "1"),
            ("198.51.100.20/32 198.51.100.20", "1"),
            ("198.51.100.20/32 198.51.100.21", "0"),
            ("2001:db8:ffff::/48 2001:db8:ffff:1234::9", "1"),
            ("2001:db8:ffff::/48 2001:DB8:FFFF::", "1"),
            ("2001:db8:ffff::/48 2001:db8:fffe:ffff::1", "0"),
            ("2001:db8:ff00::/40 2001:db8:ffff::1", "1"),
            ("2001:db8:ff00::/40 2001:db8:fe00::1", "0"),
            ("2001:db8::1/128 2001:db8::1", "1"),
            ("2001:db8::1/128 2001:db8::2", "0"),
            ("203.0.113.0/24 2001:db8::1", "0"),
            ("2001:db8::/32 203.0.113.1", "0"),
            ("203.0.113.0/24,2001:db8::/32 2001:db8:5::1", "1"),
            ("203.0.113.0/24 not-an-address", "0"),
        ],
    );
}

/// Feeds journal lines to the guard's `handle` with `ip` replaced by a stub that records its
/// arguments and answers `route get` with `route_get_status`: 2 as a kernel whose ban is in
/// place (no route to give), 0 as one where another route still wins. Returns the guard's
/// messages and the recorded `ip` calls.
fn handle_with_stub_ip(lines: &[String], route_get_status: u8) -> (String, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let calls = dir.path().join("ip-calls");
    let stub = dir.path().join("ip");
    std::fs::write(
        &stub,
        format!(
            "#!/bin/sh\necho \"$*\" >> '{}'\ncase \"$*\" in *'route get'*) exit {route_get_status} ;; esac\nexit 0\n",
            calls.display()
        ),
    )
    .expect("write the stub");
    std::fs::set_permissions(&stub, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod the stub");
    let driver = dir.path().join("driver.awk");
    std::fs::write(
        &driver,
        "BEGIN { failures = 3; failures_48 = 9; window = 600; ban_seconds = 60; \
         max_bans = 100; max_tracked = 1000; proto = 201 }\n{ handle($0) }\n",
    )
    .expect("write the driver");
    let input = dir.path().join("journal");
    std::fs::write(&input, lines.join("\n") + "\n").expect("write the journal");
    let out = common::output(
        Command::new("awk")
            .arg("-f")
            .arg(common::repo().join("layers/auth-guard/usr/lib/mailbake/auth-guard.awk"))
            .arg("-f")
            .arg(&driver)
            .arg(&input)
            .env("LC_ALL", "C")
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    dir.path().display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            ),
    );
    assert!(out.status.success(), "awk failed: {out:?}");
    (
        String::from_utf8_lossy(&out.stderr).into_owned(),
        std::fs::read_to_string(&calls).unwrap_or_default(),
    )
}

fn failure(address: &str) -> String {
    format!(r#"{{"MESSAGE":"{address}:4321 auth failed for x@example.com"}}"#)
}

#[test]
fn an_ipv4_mapped_client_is_banned_and_probed_as_its_ipv4_address() {
    let lines: Vec<String> = (0..3).map(|_| failure("[::ffff:198.51.100.10]")).collect();
    let (said, calls) = handle_with_stub_ip(&lines, 2);
    assert_eq!(
        calls, "-4 route add blackhole 198.51.100.10/32 proto 201\nroute get 198.51.100.10\n",
        "{said}"
    );
    assert!(said.contains("banned 198.51.100.10/32 for 60s"), "{said}");
}

#[test]
fn a_ban_the_kernel_does_not_apply_is_removed_and_never_reported_as_banned() {
    let lines: Vec<String> = (0..3).map(|_| failure("198.51.100.10")).collect();
    let (said, calls) = handle_with_stub_ip(&lines, 0);
    assert_eq!(
        calls,
        "-4 route add blackhole 198.51.100.10/32 proto 201\nroute get 198.51.100.10\n\
         -4 route del blackhole 198.51.100.10/32 proto 201\n",
        "{said}"
    );
    assert!(!said.contains("banned"), "{said}");
    assert!(said.contains("could not ban 198.51.100.10/32"), "{said}");
}
