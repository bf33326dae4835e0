//! `mailbake check`: the example validates, and each kind of bad input is refused with the
//! file, the line and column of the offending value, and what would be valid.

use std::path::Path;
use std::process::Command;

const EXAMPLE: &str = include_str!("../examples/example.com/site.yaml");

/// The example with `from` replaced by `to` (which must occur exactly once).
fn example_with(from: &str, to: &str) -> String {
    assert_eq!(
        EXAMPLE.matches(from).count(),
        1,
        "`{from}` must occur once in the example"
    );
    EXAMPLE.replace(from, to)
}

/// Parses `text` and returns the plain error report, or panics if it validated.
fn problems(text: &str) -> String {
    match mailbake::site::parse(Path::new("site.yaml"), text) {
        Ok(_) => panic!("expected the site to be refused:\n{text}"),
        Err(errors) => errors.to_string(),
    }
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("`{needle}` not in text"))
}

/// Asserts that the report names `site.yaml:<line of marker>:` and contains every fragment.
fn assert_refused(text: &str, marker: &str, fragments: &[&str]) {
    let report = problems(text);
    let line = line_of(text, marker);
    assert!(
        report.contains(&format!("site.yaml:{line}:")),
        "report should point at line {line} (`{marker}`):\n{report}"
    );
    for fragment in fragments {
        assert!(
            report.contains(fragment),
            "report should mention `{fragment}`:\n{report}"
        );
    }
}

#[test]
fn the_bundled_example_is_valid() {
    let site = mailbake::site::parse(Path::new("site.yaml"), EXAMPLE).expect("example validates");
    assert_eq!(site.domains.len(), 1);
    assert_eq!(site.hosts.len(), 1);
}

#[test]
fn unknown_keys_are_named_with_the_accepted_ones() {
    let text = example_with("    users: [i]\n", "    users: [i]\n    mailboxes: [j]\n");
    assert_refused(
        &text,
        "mailboxes:",
        &["unknown field `mailboxes`", "`users`"],
    );
}

#[test]
fn malformed_yaml_is_located() {
    let text = example_with("    users: [i]\n", "    users: [i\n");
    let report = problems(&text);
    assert!(report.contains("site.yaml:"), "{report}");
}

#[test]
fn invalid_domain_names_are_refused() {
    let text = example_with("  example.com:\n", "  exa_mple.com:\n");
    assert_refused(
        &text,
        "exa_mple.com:",
        &["`_`", "letters, digits and hyphens"],
    );
}

#[test]
fn unicode_domain_names_are_accepted_as_punycode() {
    let text = example_with("  example.com:\n", "  bücher.example:\n")
        .replace("rua@example.com", "rua@xn--bcher-kva.example")
        .replace("ruf@example.com", "ruf@xn--bcher-kva.example");
    let site = mailbake::site::parse(Path::new("site.yaml"), &text).expect("IDNA domain validates");
    assert!(
        site.domains
            .keys()
            .any(|d| d.as_str() == "xn--bcher-kva.example")
    );
}

#[test]
fn invalid_ipv4_addresses_are_refused() {
    let text = example_with("ipv4: 203.0.113.10", "ipv4: 203.0.113.256");
    assert_refused(
        &text,
        "203.0.113.256",
        &["not an IPv4 address", "203.0.113.10"],
    );
}

#[test]
fn ipv6_without_a_prefix_is_refused_with_the_fix() {
    let text = example_with("address: 2001:db8:1::10/64", "address: 2001:db8:1::10");
    assert_refused(
        &text,
        "address: 2001:db8:1::10",
        &["no prefix length", "2001:db8:1::10/64"],
    );
}

#[test]
fn an_ipv6_gateway_must_be_an_address() {
    let text = example_with("gateway: fe80::1", "gateway: fe80::1/64");
    assert_refused(&text, "gateway: fe80::1/64", &["not an IPv6 address"]);
}

#[test]
fn alias_targets_must_exist_on_a_domain_without_catch_all() {
    let text = example_with("      \"*\": i.example.com@gmail.com\n", "")
        .replace("postmaster: i", "postmaster: bob");
    assert_refused(
        &text,
        "postmaster: bob",
        &["bob@example.com", "neither a user nor an alias"],
    );
}

#[test]
fn alias_loops_are_refused() {
    let text = example_with(
        "      postmaster: i\n",
        "      postmaster: abuse\n      abuse: hostmaster\n      hostmaster: postmaster\n",
    );
    assert_refused(
        &text,
        "abuse: hostmaster",
        &[
            "loop",
            "abuse@example.com -> hostmaster@example.com -> postmaster@example.com",
        ],
    );
}

#[test]
fn a_catch_all_must_stand_alone() {
    let text = example_with(
        "\"*\": i.example.com@gmail.com",
        "\"a*\": i.example.com@gmail.com",
    );
    assert_refused(&text, "\"a*\"", &["`*`", "catch-all"]);
}

#[test]
fn uppercase_user_names_are_refused_with_the_lowercase_spelling() {
    let text = example_with("users: [i]", "users: [i, Alice]");
    assert_refused(&text, "Alice", &["write `alice`"]);
}

#[test]
fn duplicate_users_are_refused() {
    let text = example_with("users: [i]", "users: [i, i]");
    assert_refused(&text, "users: [i, i]", &["listed twice"]);
}

#[test]
fn duplicate_hosts_by_normalized_name_and_shared_addresses_are_refused() {
    let literal = example_with(
        "hosts:\n  mx1:\n",
        "hosts:\n  mx2:\n    fqdn: smtp2.example.com\n    ipv4: 203.0.113.11\n  mx2:\n",
    );
    assert_refused(&literal, "  mx2:", &["`mx2` is listed twice"]);

    let same_fqdn = example_with(
        "\nssh:",
        "  mx2:\n    fqdn: SMTP.example.com.\n    ipv4: 203.0.113.11\n\nssh:",
    );
    assert_refused(
        &same_fqdn,
        "SMTP.example.com.",
        &["same fqdn smtp.example.com"],
    );

    let same_ip = example_with(
        "\nssh:",
        "  mx2:\n    fqdn: smtp2.example.com\n    ipv4: 203.0.113.10\n\nssh:",
    );
    let report = problems(&same_ip);
    let mx2_ipv4_line = line_of(&same_ip, "smtp2.example.com") + 1;
    assert!(
        report.contains(&format!("site.yaml:{mx2_ipv4_line}:")),
        "{report}"
    );
    assert!(
        report.contains("hosts `mx1` and `mx2` both use 203.0.113.10"),
        "{report}"
    );
}

#[test]
fn dmarc_values_are_checked() {
    let policy = example_with("p: quarantine", "p: quarantined");
    assert_refused(
        &policy,
        "p: quarantined",
        &["quarantined", "`none`, `quarantine`, `reject`"],
    );
    let rua = example_with("rua: mailto:rua@example.com", "rua: rua@example.com");
    assert_refused(
        &rua,
        "rua: rua@example.com",
        &["write `mailto:rua@example.com`"],
    );
    let fo = example_with("fo: \"1\"", "fo: \"x\"");
    assert_refused(&fo, "fo: \"x\"", &["fo `x` is not valid"]);
}

#[test]
fn spf_policy_never_allows_everyone() {
    let text = example_with("policy: \"~all\"", "policy: \"+all\"");
    assert_refused(&text, "+all", &["`-all`, `~all`, `?all`"]);
}

#[test]
fn dkim_selectors_need_a_known_algorithm() {
    let text = example_with("2026a-rsa: rsa-2048", "2026a-rsa: rsa-1024");
    assert_refused(&text, "rsa-1024", &["rsa-1024", "`rsa-2048`", "`ed25519`"]);
}

#[test]
fn the_cli_exits_3_with_a_snippet_for_an_invalid_site_and_0_for_the_example() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("site.yaml");
    std::fs::write(
        &bad,
        example_with("ipv4: 203.0.113.10", "ipv4: 203.0.113.256"),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mailbake"))
        .arg("check")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{}:30:11", bad.display())),
        "{stderr}"
    );
    assert!(
        stderr.contains("ipv4: 203.0.113.256"),
        "snippet expected:\n{stderr}"
    );

    let good = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/example.com/site.yaml");
    let out = Command::new(env!("CARGO_BIN_EXE_mailbake"))
        .arg("check")
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let missing = Command::new(env!("CARGO_BIN_EXE_mailbake"))
        .arg("check")
        .arg(dir.path().join("nope.yaml"))
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("nope.yaml"));
}

#[test]
fn the_reference_in_docs_site_md_is_a_valid_site() {
    let doc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/site.md"))
        .unwrap();
    let start = doc.find("```yaml\n").expect("a yaml block") + "```yaml\n".len();
    let len = doc[start..].find("```").expect("end of the yaml block");
    let site = mailbake::site::parse(Path::new("docs/site.md"), &doc[start..start + len])
        .unwrap_or_else(|e| panic!("docs/site.md's reference does not validate:\n{e}"));
    assert!(
        site.tls.acme.is_some(),
        "the reference documents every section"
    );
}

/// `chasquid:` values chasquid would misread (0 is its "use the default"), refuse at start-up
/// (days in a duration), or that would expose the monitoring pages, are refused at the value.
#[test]
fn chasquid_settings_are_checked_where_they_are_written() {
    for (line, fragments) in [
        (
            "max_data_size_mb: 0",
            &["max_data_size_mb `0` is refused", "default of 50 MiB"][..],
        ),
        ("max_data_size_mb: 4096", &["give 1 to 1024"][..]),
        (
            "max_queue_items: 0",
            &["max_queue_items `0` is refused", "default of 200"][..],
        ),
        ("max_queue_items: -1", &["give 1 to 10000"][..]),
        (
            "give_up_send_after: 5d",
            &["`5d` is not a duration chasquid reads", "5 days is `120h`"][..],
        ),
        (
            "give_up_send_after: 0s",
            &["`0s` is out of range", "1h to 720h"][..],
        ),
        (
            "monitoring_address: \"0.0.0.0:1099\"",
            &[
                "`0.0.0.0:1099` is not a loopback address",
                "127.0.0.0/8 or ::1",
            ][..],
        ),
        (
            "monitoring_address: localhost:1099",
            &["`localhost:1099` is not an IP address and port"][..],
        ),
    ] {
        // A valid key first: the error must point at the bad value, not the mapping's start.
        let first = if line.starts_with("max_queue_items") {
            "max_data_size_mb: 30"
        } else {
            "max_queue_items: 300"
        };
        let text = format!("{EXAMPLE}chasquid:\n  {first}\n  {line}\n");
        let report = problems(&text);
        let value_column = 3 + line.find(": ").expect("key: value") + 2;
        let at = format!("site.yaml:{}:{value_column}:", line_of(&text, line));
        assert!(
            report.contains(&at),
            "`{line}` should be reported at {at}\n{report}"
        );
        for fragment in fragments {
            assert!(
                report.contains(fragment),
                "`{line}`: expected `{fragment}` in\n{report}"
            );
        }
    }
}
