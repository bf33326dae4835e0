//! `mailbake check`: the example validates, and each kind of bad input is refused with the
//! file, the line and column of the offending value, and what would be valid.

use std::path::Path;
use std::process::Command;
// Linked for its watchdog, which bounds every test (tests/support/src/watchdog.rs).
use testkit as _;

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

/// chasquid drops `.` from a local part before it looks users and aliases up: `j.k` and `jk`
/// are one address to it, so the site must not give them two meanings.
#[test]
fn names_chasquid_reads_as_one_address_are_refused_naming_both() {
    let alias_and_user = example_with("users: [i]", "users: [i, jk, chief]").replace(
        "      postmaster: i\n",
        "      postmaster: i\n      j.k: chief\n",
    );
    assert_refused(
        &alias_and_user,
        "j.k: chief",
        &[
            "`j.k@example.com`",
            "`jk@example.com`",
            "ignores `.`",
            "rename or remove",
        ],
    );
    let two_aliases = example_with(
        "      postmaster: i\n",
        "      postmaster: i\n      post.master: i\n",
    );
    assert_refused(
        &two_aliases,
        "post.master: i",
        &["`post.master@example.com`", "`postmaster@example.com`"],
    );
    let two_users = example_with("users: [i]", "users: [i, jk, j.k]");
    assert_refused(
        &two_users,
        "users: [i, jk, j.k]",
        &["`j.k@example.com`", "`jk@example.com`"],
    );
    // Dots alone are fine: `j.k` is one user as long as nothing else reads as `jk`.
    assert_valid(&example_with("users: [i]", "users: [i, j.k]"));
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

/// Asserts that `text` validates.
fn assert_valid(text: &str) {
    if let Err(errors) = mailbake::site::parse(Path::new("site.yaml"), text) {
        panic!("expected the site to validate:\n{errors}\n{text}");
    }
}

#[test]
fn ipv4_network_and_broadcast_addresses_are_not_host_addresses() {
    let with = |v4: &str| example_with("ipv4: 203.0.113.10", &format!("ipv4: {v4}"));
    assert_refused(
        &with("{ address: 203.0.113.0/24, gateway: 203.0.113.1 }"),
        "ipv4:",
        &[
            "203.0.113.0 is the network address of 203.0.113.0/24",
            "203.0.113.1 to 203.0.113.254",
        ],
    );
    assert_refused(
        &with("{ address: 203.0.113.127/25, gateway: 203.0.113.1 }"),
        "ipv4:",
        &["203.0.113.127 is the broadcast address of 203.0.113.0/25"],
    );
    assert_refused(
        &with("{ address: 203.0.113.10/24, gateway: 203.0.113.255 }"),
        "ipv4:",
        &["gateway 203.0.113.255 is the broadcast address of 203.0.113.0/24"],
    );
    assert_refused(
        &with("{ address: 203.0.113.10/24, gateway: 203.0.113.0 }"),
        "ipv4:",
        &["gateway 203.0.113.0 is the network address"],
    );
    // A /31 has no network or broadcast address (RFC 3021): both ends are hosts.
    assert_valid(&with("{ address: 203.0.113.10/31, gateway: 203.0.113.11 }"));
    assert_valid(&with("{ address: 203.0.113.11/31, gateway: 203.0.113.10 }"));
}

#[test]
fn an_ipv6_gateway_is_not_the_host_itself() {
    let text = example_with("gateway: fe80::1", "gateway: \"2001:db8:1::10\"");
    assert_refused(
        &text,
        "gateway: \"2001:db8:1::10\"",
        &[
            "the IPv6 gateway 2001:db8:1::10 is the host's own address",
            "fe80::1",
        ],
    );
}

#[test]
fn ipv4_addresses_in_ipv6_form_are_refused_with_their_ipv4_spelling() {
    let address = example_with(
        "address: 2001:db8:1::10/64",
        "address: \"::ffff:203.0.113.10/64\"",
    );
    assert_refused(
        &address,
        "::ffff:203.0.113.10/64",
        &["the IPv4 address 203.0.113.10 written as IPv6", "`ipv4:`"],
    );
    let compatible = example_with(
        "address: 2001:db8:1::10/64",
        "address: \"::203.0.113.10/96\"",
    );
    assert_refused(
        &compatible,
        "::203.0.113.10/96",
        &["203.0.113.10 written as IPv6"],
    );
    let gateway = example_with("gateway: fe80::1", "gateway: \"::ffff:203.0.113.1\"");
    assert_refused(
        &gateway,
        "::ffff:203.0.113.1",
        &["the IPv4 address 203.0.113.1 written as IPv6"],
    );
    let resolver = example_with(
        "      gateway: fe80::1\n",
        "      gateway: fe80::1\n    nameservers: [\"::ffff:192.0.2.53\"]\n",
    );
    assert_refused(
        &resolver,
        "nameservers:",
        &["resolver ::ffff:192.0.2.53", "write `192.0.2.53`"],
    );
}

#[test]
fn private_addresses_are_refused_unless_the_host_allows_them() {
    let v4 = |ip: &str| example_with("ipv4: 203.0.113.10", &format!("ipv4: {ip}"));
    let v6 = |net: &str| example_with("address: 2001:db8:1::10/64", &format!("address: \"{net}\""));
    let allowed = |text: String| text.replace("    ipv4:", "    allow_private: true\n    ipv4:");
    for (text, shown, why) in [
        (v4("10.0.2.15"), "10.0.2.15", "a private address (RFC 1918)"),
        (
            v4("172.16.5.4"),
            "172.16.5.4",
            "a private address (RFC 1918)",
        ),
        (
            v4("192.168.1.10"),
            "192.168.1.10",
            "a private address (RFC 1918)",
        ),
        (
            v4("100.64.0.10"),
            "100.64.0.10",
            "in the shared address space of carrier-grade NAT",
        ),
        (
            v6("fd00:1::10/64"),
            "fd00:1::10",
            "a unique local address (fc00::/7)",
        ),
        (v6("fec0::10/64"), "fec0::10", "a site-local address"),
    ] {
        assert_refused(
            &text,
            shown,
            &[
                &format!("{shown} is {why}"),
                "cannot be a public MX address",
                "add `allow_private: true` to host `mx1`",
            ],
        );
        assert_valid(&allowed(text));
    }
    // Addresses no interface can have stay refused, lab or not.
    for (ip, why) in [
        ("127.0.0.2", "loopback"),
        ("169.254.1.1", "link-local"),
        ("0.1.2.3", "0.0.0.0/8"),
        ("240.0.0.1", "reserved"),
    ] {
        let text = allowed(v4(ip));
        assert_refused(&text, ip, &[why]);
    }
    // The documentation ranges stand in for public addresses: the example uses them.
    assert_valid(EXAMPLE);
}

const SSH_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGbOGf3uRz5Q0t1W8Rj6ZC5o1Kj9fOkg2xKX0vPq5Y1a ops@laptop";

#[test]
fn ssh_keys_must_decode_to_their_own_type_on_one_line() {
    let with = |key: &str| {
        example_with(
            "authorized_keys: []",
            &format!("authorized_keys: [{key:?}]"),
        )
    };
    assert_valid(&with(SSH_KEY));
    let not_base64 = SSH_KEY.replace("AAAAIGbO", "AAAA*GbO");
    assert_refused(&with(&not_base64), "authorized_keys", &["not valid base64"]);
    let other_type = "ssh-ed25519 AAAAB3NzaC1yc2EAAAADAQABAAAABQBhYmNk ops@laptop";
    assert_refused(
        &with(other_type),
        "authorized_keys",
        &["the key inside is a `ssh-rsa` key, not `ssh-ed25519`"],
    );
    let with_cr = format!("{SSH_KEY}\r");
    assert_refused(&with(&with_cr), "authorized_keys", &["on one line"]);
}

#[test]
fn invalid_internationalized_domain_names_are_refused() {
    for (name, why) in [
        (
            "☃.com",
            "`☃` (U+2603), which is not a letter, digit or mark",
        ),
        ("xn--zz.com", "label `xn--zz` is not valid punycode"),
    ] {
        let text = example_with("  example.com:\n", &format!("  {name}:\n"));
        assert_refused(&text, &format!("  {name}:"), &[why]);
    }
}

#[test]
fn report_uris_take_a_size_limit_and_nothing_else_after_a_bang() {
    let with = |uri: &str| example_with("rua: mailto:rua@example.com", &format!("rua: \"{uri}\""));
    let site = mailbake::site::parse(Path::new("site.yaml"), &with("mailto:rua@example.com!10m"))
        .expect("a size limit is valid DMARC");
    let rua = site
        .domains
        .values()
        .next()
        .and_then(|d| d.dmarc.as_ref())
        .and_then(|d| d.rua.as_ref());
    assert_eq!(
        rua.map(|r| r.to_tag_value()).as_deref(),
        Some("mailto:rua@example.com!10m")
    );
    for (uri, why) in [
        ("mailto:rua@example.com!", "starts the report size limit"),
        ("mailto:rua@example.com!ten", "starts the report size limit"),
        ("mailto:r!ua@example.com", "starts the report size limit"),
        (
            "mailto:rüa@example.com",
            "`ü` cannot appear in a report URI",
        ),
    ] {
        assert_refused(&with(uri), "rua:", &[why]);
    }
    let tls_rpt = example_with(
        "    dmarc:\n",
        "    tls_rpt: { rua: \"mailto:tls@example.com!10m\" }\n    dmarc:\n",
    );
    assert_refused(&tls_rpt, "tls_rpt", &["TLS-RPT has no size limit"]);
}

#[test]
fn lego_provider_names_have_no_empty_parts() {
    let with = |provider: &str| {
        example_with(
            "\nssh:",
            &format!(
                "\ntls:\n  acme: {{ provider: \"{provider}\", email: ops@example.com }}\n\nssh:"
            ),
        )
    };
    assert_valid(&with("cloudflare"));
    for bad in [
        "..",
        ".cloudflare",
        "cloud..flare",
        "cloudflare.",
        "Cloudflare",
    ] {
        assert_refused(
            &with(bad),
            "provider:",
            &["is not a lego DNS provider name"],
        );
    }
}

/// Runs `mailbake check` on `text` written to a file; returns (exit code, stderr).
fn check_cli(text: &[u8]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("site.yaml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mailbake"))
        .arg("check")
        .arg(&path)
        .output()
        .unwrap();
    let stderr =
        String::from_utf8_lossy(&out.stderr).replace(&dir.path().display().to_string(), "DIR");
    (out.status.code(), stderr)
}

#[test]
fn a_byte_order_mark_is_ignored_and_positions_stay_right() {
    let mut text = "\u{feff}".to_string();
    text.push_str(&example_with("ipv4: 203.0.113.10", "ipv4: 203.0.113.256"));
    let report = problems(&text);
    assert!(report.contains("site.yaml:30:11:"), "{report}");
    let mut valid = "\u{feff}".to_string();
    valid.push_str(EXAMPLE);
    assert_valid(&valid);
}

#[test]
fn a_tab_used_for_indentation_is_named_where_it_is() {
    let text = example_with("    users: [i]\n", "\tusers: [i]\n");
    assert_refused(
        &text,
        "\tusers: [i]",
        &[
            "is indented with a tab; YAML indents with spaces only",
            "replace the tab",
        ],
    );
}

#[test]
fn an_unclosed_bracket_is_named_where_it_opens() {
    let text = example_with("    users: [i]\n", "    users: [i\n");
    let report = problems(&text);
    let line = line_of(&text, "users: [i");
    assert!(
        report.contains(&format!(
            "site.yaml:{line}:12: `[` on line {line} is never closed"
        )),
        "{report}"
    );
    assert!(report.contains("close it with `]`"), "{report}");
}

#[test]
fn an_error_inside_a_mapping_points_at_the_bad_key_not_the_first_one() {
    let text = example_with("      fo: \"1\"\n", "      fo: \"1\"\n      adkim: q\n");
    assert_refused(&text, "adkim: q", &["adkim"]);
    let text = example_with(
        "    dmarc:\n",
        "    mta_sts: { mode: testing, max_age: 99999999999 }\n    dmarc:\n",
    );
    assert_refused(&text, "mta_sts:", &["max_age 99999999999 is too long"]);
}

#[test]
fn dmarc_pct_is_refused_with_rfc_9989s_testing_flag_as_the_fix() {
    let text = example_with("      fo: \"1\"\n", "      fo: \"1\"\n      pct: 50\n");
    assert_refused(
        &text,
        "pct: 50",
        &["`pct` was removed", "RFC 9989", "`t: true`"],
    );
}

#[test]
fn every_broken_host_and_domain_is_reported_at_once() {
    let text = example_with(
        "\nssh:",
        "  mx2:\n    fqdn: smtp2.example.com\n    ipv4: 203.0.113.300\n  mx3:\n    fqdn: smtp3.example.com\n    ipv4: 203.0.113.11\n    ipv6: { address: \"2001:db8:1::11\", gateway: \"fe80::1\" }\n\nssh:",
    )
    .replace("p: quarantine", "p: quarantined")
    .replace("ipv4: 203.0.113.10", "ipv4: 999.0.113.10");
    let mut errors = match mailbake::site::parse(Path::new("site.yaml"), &text) {
        Ok(_) => panic!("invalid"),
        Err(e) => e
            .problems
            .iter()
            .map(|p| (p.at.map(|a| a.line), p.message.clone()))
            .collect::<Vec<_>>(),
    };
    errors.sort();
    let lines: Vec<Option<usize>> = errors.iter().map(|(l, _)| *l).collect();
    assert_eq!(
        lines,
        [
            Some(line_of(&text, "p: quarantined")),
            Some(line_of(&text, "999.0.113.10")),
            Some(line_of(&text, "203.0.113.300")),
            Some(line_of(&text, "2001:db8:1::11")),
        ],
        "one problem per broken entry: {errors:#?}"
    );
    let (code, stderr) = check_cli(text.as_bytes());
    assert_eq!(code, Some(3), "{stderr}");
    assert!(stderr.contains("4 problems found"), "{stderr}");
}

#[test]
fn a_huge_bad_value_is_echoed_once_and_cut_short() {
    let huge = "a".repeat(900_000);
    let text = example_with("fqdn: smtp.example.com", &format!("fqdn: {huge}.com"));
    let (code, stderr) = check_cli(text.as_bytes());
    assert_eq!(code, Some(3));
    assert!(stderr.len() < 4_000, "{} bytes of errors", stderr.len());
    assert!(stderr.contains("more characters)"), "{stderr}");
    assert!(stderr.matches(&"a".repeat(150)).count() <= 1, "{stderr}");
}

#[test]
fn the_site_file_must_be_a_small_regular_file() {
    let run = |path: &Path| {
        let out = Command::new("timeout")
            .arg("20")
            .arg(env!("CARGO_BIN_EXE_mailbake"))
            .arg("check")
            .arg(path)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stderr) = run(Path::new("/dev/zero"));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("is not a regular file (a device)"),
        "{stderr}"
    );

    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("site.yaml");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let (code, stderr) = run(&fifo);
    assert_eq!(
        code,
        Some(1),
        "a FIFO without a writer must not block: {stderr}"
    );
    assert!(stderr.contains("(a named pipe)"), "{stderr}");

    let (code, stderr) = run(dir.path());
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("(a directory)"), "{stderr}");

    let big = dir.path().join("big.yaml");
    let mut text = EXAMPLE.to_string();
    text.push_str(&format!("# {}\n", "x".repeat(1 << 20)));
    std::fs::write(&big, text).unwrap();
    let (code, stderr) = run(&big);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("is larger than 1048576 bytes"), "{stderr}");
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

#[test]
fn auth_guard_allow_takes_networks_and_says_how_to_fix_others() {
    let ok = format!(
        "{EXAMPLE}\nauth_guard:\n  allow: [203.0.113.0/24, 2001:db8:ffff::/48, 198.51.100.7]\n"
    );
    let site = mailbake::site::parse(Path::new("site.yaml"), &ok).expect("allowlist validates");
    let allow: Vec<String> = site
        .auth_guard
        .allow
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        allow,
        ["203.0.113.0/24", "2001:db8:ffff::/48", "198.51.100.7/32"]
    );
    for (entry, fragments) in [
        (
            "198.51.100.5/24",
            &["auth_guard.allow", "write the network 198.51.100.0/24"][..],
        ),
        (
            "0.0.0.0/0",
            &["auth_guard.allow", "allows every address"][..],
        ),
        (
            "office-vpn",
            &["auth_guard.allow", "not an IP network or address"][..],
        ),
    ] {
        let text = format!("{EXAMPLE}\nauth_guard:\n  allow: [{entry}]\n");
        assert_refused(&text, entry, fragments);
    }
}

/// Values that parse but would be wrong on a host or in DNS: each is refused at its line,
/// with what is wrong and what would be valid.
#[test]
fn values_that_would_be_accepted_but_wrong_are_refused() {
    const ACME: &str = "tls:\n  acme:\n    provider: rfc2136\n    email: ops@example.com\n";
    let with_acme = |from: &str, to: &str| format!("{EXAMPLE}{ACME}").replace(from, to);
    let rows: Vec<(String, &str, Vec<&str>)> = vec![
        (
            example_with(
                "    ipv4: 203.0.113.10\n",
                "    ipv4: { address: 203.0.113.10/0, gateway: 203.0.113.1 }\n",
            ),
            "203.0.113.10/0",
            vec!["/0 prefix is implausible", "e.g. /24"],
        ),
        (
            example_with(
                "    ipv4: 203.0.113.10\n",
                "    ipv4: 203.0.113.10\n    nameservers: [\"0.0.0.0\"]\n",
            ),
            "0.0.0.0",
            vec!["0.0.0.0 is not the address of a DNS server"],
        ),
        (
            example_with(
                "    ipv4: 203.0.113.10\n",
                "    ipv4: 203.0.113.10\n    nameservers: [\"224.0.0.251\"]\n",
            ),
            "224.0.0.251",
            vec!["not the address of a DNS server"],
        ),
        (
            format!("{EXAMPLE}dns:\n  ttl: 2147483648\n"),
            "ttl: 2147483648",
            vec!["larger than DNS allows (2147483647", "e.g. 3600"],
        ),
        (
            example_with(
                "      include: [_spf.google.com]\n",
                "      include: [_spf.google.com, Example.COM]\n",
            ),
            "Example.COM",
            vec![
                "would include example.com itself",
                "permerror",
                "remove `example.com`",
            ],
        ),
        (
            example_with(
                "      policy: \"~all\"\n",
                "      policy: \"~all\"\n    mta_sts: { mode: testing, max_age: 0 }\n",
            ),
            "max_age: 0",
            vec!["max_age 0 is too short", "at least 86400"],
        ),
        (
            with_acme("email: ops@example.com", "email: \"o`ps@example.com\""),
            "email: \"o`ps",
            vec!["has '`' before the `@`", "ACME account e-mail"],
        ),
        (
            with_acme("email: ops@example.com", "email: ops.@example.com"),
            "email: ops.@",
            vec!["starts or ends with `.`"],
        ),
        (
            with_acme(
                "email: ops@example.com",
                &format!("email: {}@example.com", "a".repeat(300)),
            ),
            "email: aaaa",
            vec!["is 300 characters long", "at most 64"],
        ),
        (
            with_acme(
                "email: ops@example.com\n",
                "email: ops@example.com\n    directory: https://user:s3cret@ca.example/dir\n",
            ),
            "directory:",
            vec!["holds user information"],
        ),
        (
            with_acme(
                "email: ops@example.com\n",
                "email: ops@example.com\n    directory: https://bücher.example/dir\n",
            ),
            "directory:",
            vec!["not ASCII", "punycode"],
        ),
        (
            with_acme(
                "email: ops@example.com\n",
                "email: ops@example.com\n    directory: https://-x/dir\n",
            ),
            "directory:",
            vec!["starting with a letter or digit"],
        ),
    ];
    for (text, marker, fragments) in &rows {
        assert_refused(text, marker, fragments);
    }
}

/// cloud-init gives an existing account the operator's sudo rule and keys: `ssh.user` may
/// not name any user or group the base image has, nor a name reserved for the system.
#[test]
fn the_operator_may_not_be_a_system_account_or_group() {
    for name in [
        "messagebus",
        "mail",
        "_apt",
        "www-data",
        "systemd-resolve",
        "sync",
        "shadow",
        "sudo",
    ] {
        let text = example_with(
            "  authorized_keys: []\n",
            &format!("  authorized_keys: []\n  user: \"{name}\"\n"),
        );
        assert_refused(
            &text,
            "  user:",
            &[&format!("`{name}`"), "choose another operator name"],
        );
    }
}

/// An https: report URI is valid TLS-RPT (RFC 8460): the error says why mailbake still wants a
/// `mailto:` one, and never suggests `mailto:https://…`.
#[test]
fn an_https_report_uri_gets_an_error_that_explains_itself() {
    let text = example_with(
        "      ruf: mailto:ruf@example.com\n",
        "      ruf: mailto:ruf@example.com\n    tls_rpt:\n      rua: https://reports.example.com/tlsrpt\n",
    );
    assert_refused(
        &text,
        "rua: https://",
        &[
            "valid for TLS-RPT, RFC 8460",
            "e.g. `mailto:reports@example.com`",
        ],
    );
    assert!(
        !problems(&text).contains("mailto:https"),
        "{}",
        problems(&text)
    );
}
