//! The alias checks of `mailbake check`: loops and chains too deep for chasquid, found in
//! time linear in the site's size, each loop group reported once, and the depth limit drawn
//! exactly where the shipped chasquid draws it.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::time::Instant;

/// A site with one domain, user `i`, and `aliases` (already-indented YAML lines).
fn site_with_aliases(aliases: &str) -> String {
    format!(
        "site: t\ndomains:\n  example.com:\n    users: [i]\n    aliases:\n{aliases}hosts:\n  mx1: {{ fqdn: smtp.example.com, ipv4: 203.0.113.10 }}\n"
    )
}

/// The problems `mailbake check` reports for `text` (empty when it validates).
fn problems(text: &str) -> Vec<String> {
    match mailbake::site::parse(Path::new("site.yaml"), text) {
        Ok(_) => Vec::new(),
        Err(errors) => errors.problems.iter().map(|p| p.message.clone()).collect(),
    }
}

/// `layers` layers of `width` aliases; each alias names every alias of the next layer and the
/// last layer delivers to the user `i`. No loop, and a chain of `layers + 1` addresses.
fn layered(layers: usize, width: usize) -> String {
    let mut yaml = String::new();
    for layer in 0..layers {
        for k in 0..width {
            let targets: Vec<String> = if layer + 1 == layers {
                vec!["i".into()]
            } else {
                (0..width).map(|j| format!("l{}-{j}", layer + 1)).collect()
            };
            let _ = writeln!(yaml, "      l{layer}-{k}: [{}]", targets.join(", "));
        }
    }
    yaml
}

#[test]
fn a_thousand_alias_layered_graph_is_checked_without_walking_every_path() {
    // 5 layers of 200: 160,000 edges and 200^4 distinct paths, within chasquid's depth.
    let text = site_with_aliases(&layered(5, 200));
    let started = Instant::now();
    let found = problems(&text);
    eprintln!(
        "1,000 aliases, 5 layers x 200: checked in {:.3} s",
        started.elapsed().as_secs_f64()
    );
    assert!(found.is_empty(), "{found:?}");

    // 25 layers of 40: the first 16 layers expand through 10 or more levels.
    let text = site_with_aliases(&layered(25, 40));
    let started = Instant::now();
    let found = problems(&text);
    eprintln!(
        "1,000 aliases, 25 layers x 40: checked in {:.3} s, {} findings",
        started.elapsed().as_secs_f64(),
        found.len()
    );
    let too_deep = found
        .iter()
        .filter(|m| m.contains("chasquid gives up after 10"))
        .count();
    assert_eq!(too_deep, 16 * 40, "{:?}", &found[..found.len().min(3)]);
    assert_eq!(found.len(), too_deep, "no other finding: {found:?}");
    let first = found
        .iter()
        .find(|m| m.starts_with("alias `l0-0@example.com`"))
        .expect("l0-0 is reported");
    assert!(
        first.contains("expands through 26 levels")
            && first.contains("l0-0@example.com -> l1-0@example.com")
            && first.contains("more)")
            && first.ends_with("i@example.com); chasquid gives up after 10"),
        "{first}"
    );
}

#[test]
fn nine_aliases_naming_each_other_are_one_loop_finding() {
    let mut yaml = String::new();
    for a in 1..=9 {
        let others: Vec<String> = (1..=9)
            .filter(|b| *b != a)
            .map(|b| format!("a{b}"))
            .collect();
        let _ = writeln!(yaml, "      a{a}: [{}]", others.join(", "));
    }
    let found = problems(&site_with_aliases(&yaml));
    assert_eq!(found.len(), 1, "one finding per loop group: {found:?}");
    assert_eq!(
        found[0],
        "aliases form a loop: a1@example.com -> a2@example.com -> a1@example.com; 7 more aliases are in loops with these: a3@example.com, a4@example.com, a5@example.com, a6@example.com, a7@example.com, a8@example.com, a9@example.com"
    );
}

#[test]
fn separate_loops_are_reported_separately_and_shared_ones_once() {
    let two = site_with_aliases(
        "      a: b\n      b: a\n      c: d\n      d: [c, i]\n      e: e\n      ok: a\n",
    );
    let found = problems(&two);
    assert_eq!(
        found,
        [
            "aliases form a loop: a@example.com -> b@example.com -> a@example.com",
            "aliases form a loop: c@example.com -> d@example.com -> c@example.com",
            "aliases form a loop: e@example.com -> e@example.com",
        ],
        "`ok` only reaches a loop: it is not a loop itself"
    );
    // A figure eight: two loops through `a` are one group.
    let eight = site_with_aliases("      a: [b, c]\n      b: a\n      c: a\n");
    assert_eq!(
        problems(&eight),
        [
            "aliases form a loop: a@example.com -> b@example.com -> a@example.com; 1 more aliases are in loops with these: c@example.com"
        ]
    );
}

/// `n` aliases `{prefix}0 -> {prefix}1 -> … -> {prefix}{n-1} -> end`, as (alias, target).
fn chain_of(prefix: &str, n: usize, end: &str) -> Vec<(String, String)> {
    (0..n)
        .map(|k| {
            let next = if k + 1 == n {
                end.to_string()
            } else {
                format!("{prefix}{}", k + 1)
            };
            (format!("{prefix}{k}"), next)
        })
        .collect()
}

/// The chain as site-file alias lines.
fn chain(n: usize, end: &str) -> String {
    chain_of("c", n, end)
        .iter()
        .map(|(alias, target)| format!("      {alias}: \"{target}\"\n"))
        .collect()
}

#[test]
fn the_depth_limit_is_where_the_shipped_chasquid_gives_up() {
    const REMOTE: &str = "someone@elsewhere.example";
    // Nine aliases and their remote destination: ten lookups, the most chasquid makes.
    assert!(problems(&site_with_aliases(&chain(9, REMOTE))).is_empty());
    let found = problems(&site_with_aliases(&chain(10, REMOTE)));
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with(
            "alias `c0@example.com` expands through 11 levels (c0@example.com -> c1@example.com"
        ) && found[0].contains(&format!("c9@example.com -> {REMOTE})")),
        "{}",
        found[0]
    );
    // A pipe is not looked up: ten aliases ending in one stay within the limit.
    assert!(problems(&site_with_aliases(&chain(10, "| /bin/true"))).is_empty());
    assert_eq!(
        problems(&site_with_aliases(&chain(11, "| /bin/true"))).len(),
        1
    );

    // The same chains in the shipped chasquid: c1 (nine aliases, then the remote address)
    // resolves, c0 (ten) exceeds its recursion limit; p0 (ten aliases ending in a pipe)
    // resolves, q0 (eleven) does not.
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let config = root.join("etc/chasquid");
    fs::create_dir_all(config.join("domains/example.com")).unwrap();
    fs::write(
        config.join("chasquid.conf"),
        "# relocated by the test\ndata_dir: \"/nonexistent\"\n",
    )
    .unwrap();
    let mut aliases = String::new();
    for (prefix, n, end) in [
        ("c", 10, REMOTE),
        ("p", 10, "| /bin/true"),
        ("q", 11, "| /bin/true"),
    ] {
        for (alias, target) in chain_of(prefix, n, end) {
            let _ = writeln!(aliases, "{alias}: {target}");
        }
    }
    fs::write(config.join("domains/example.com/aliases"), aliases).unwrap();
    testkit::throwaway_certificate(&config, "smtp.example.com");
    let state = dir.path().join("state");
    let chasquid = testkit::Chasquid::start(&root, &state, "smtp.example.com");
    let resolve = |address: &str| {
        let out = chasquid.util(&["aliases-resolve", address]);
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (ok, text) = resolve("c1@example.com");
    assert!(ok && text.contains(REMOTE), "{text}");
    let (ok, text) = resolve("c0@example.com");
    assert!(!ok && text.contains("recursion limit exceeded"), "{text}");
    let (ok, text) = resolve("p0@example.com");
    assert!(ok && text.contains("/bin/true"), "{text}");
    let (ok, text) = resolve("q0@example.com");
    assert!(!ok && text.contains("recursion limit exceeded"), "{text}");
}
