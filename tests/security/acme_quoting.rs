//! Issue 8 item 1: no site value reaches a shell raw. `acme.conf` is rendered from the site
//! as the build renders it, then read by the real `acme-renew` under `sh` exactly as on a
//! host (it sources the file); a stand-in `lego` records the arguments it gets. Every value
//! must arrive byte for byte, and nothing in it may run (a canary file stays absent). Values
//! the site model refuses are rows too: the refusal itself is checked.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{common, fixture};

/// The command every hostile value tries to run, relative to the directory acme-renew runs in.
const RUN_CANARY: &str = "touch${IFS}canary";

/// The example domain and host with `tls.acme` set from the given YAML fragment.
fn site_yaml(acme: &str) -> String {
    format!(
        "site: quoting\n\
         domains:\n  example.com:\n    users: [i]\n\
         hosts:\n  mx1:\n    fqdn: smtp.example.com\n    ipv4: 203.0.113.10\n\
         tls:\n  acme:\n{acme}"
    )
}

/// A YAML double-quoted scalar for `value` (JSON strings are YAML), so the value in the site
/// is exactly `value`, newlines and quotes included.
fn yaml_str(value: &str) -> String {
    serde_json::to_string(value).expect("a string serializes")
}

/// What a row sets in `tls.acme`, and what lego must then receive.
struct Row {
    directory: String,
    email: String,
    names: Vec<String>,
    resolvers: Vec<String>,
}

impl Row {
    fn new() -> Row {
        Row {
            directory: "https://acme.example/directory".into(),
            email: "ops@example.com".into(),
            names: Vec::new(),
            resolvers: Vec::new(),
        }
    }
    fn directory(value: &str) -> Row {
        Row {
            directory: value.replace("CANARY", RUN_CANARY),
            ..Row::new()
        }
    }
    fn email(value: &str) -> Row {
        Row {
            email: value.replace("CANARY", RUN_CANARY),
            ..Row::new()
        }
    }
    fn yaml(&self) -> String {
        let list = |items: &[String]| {
            format!(
                "[{}]",
                items
                    .iter()
                    .map(|i| yaml_str(i))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        site_yaml(&format!(
            "    provider: rfc2136\n    email: {}\n    directory: {}\n    names: {}\n    resolvers: {}\n",
            yaml_str(&self.email),
            yaml_str(&self.directory),
            list(&self.names),
            list(&self.resolvers),
        ))
    }
}

/// `etc/mailbake/acme.conf` as `mailbake build` renders it for `site_text`.
fn rendered_acme_conf(site_text: &str, dir: &Path) -> Vec<u8> {
    fixture::file(&fixture::render(site_text, dir), "etc/mailbake/acme.conf").to_vec()
}

/// Runs `script` (the shipped `acme-renew`) with `acme.conf` installed under `root` and stand-ins for
/// `lego` and `hostname`, from `cwd` (where the canary would appear, next to glob bait).
/// Returns the arguments lego received.
fn run_acme_renew(script: &Path, acme_conf: &[u8], work: &Path) -> Vec<String> {
    let root = work.join("root");
    fs::create_dir_all(root.join("etc/mailbake")).expect("mkdir etc/mailbake");
    fs::write(root.join("etc/mailbake/acme.conf"), acme_conf).expect("install acme.conf");
    let bin = work.join("bin");
    fs::create_dir_all(&bin).expect("mkdir bin");
    let args_file = work.join("lego-args");
    let stand_in = |name: &str, body: &str| {
        let path = bin.join(name);
        fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write stand-in");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod stand-in");
    };
    // NUL-separated, so newlines in arguments would show.
    stand_in("lego", "printf '%s\\0' \"$@\" > \"$LEGO_ARGS\"");
    stand_in("hostname", "echo smtp.example.com");
    let cwd = work.join("cwd");
    fs::create_dir_all(&cwd).expect("mkdir cwd");
    // A wildcard name that globbed would become one of these.
    fs::write(cwd.join("evil.example.com"), "").expect("glob bait");
    fs::write(cwd.join("lego"), "").expect("glob bait");
    let out = Command::new("sh")
        .arg(script)
        .current_dir(&cwd)
        .env_clear()
        .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
        .env("MAILBAKE_ROOT", &root)
        .env("LEGO_ARGS", &args_file)
        .env("ACME_RETRY_DELAYS", "")
        .output()
        .expect("sh runs acme-renew");
    assert!(
        !cwd.join("canary").exists(),
        "a value in acme.conf ran a command:\n{}",
        String::from_utf8_lossy(acme_conf)
    );
    assert!(
        out.status.success(),
        "acme-renew failed on\n{}\n{}",
        String::from_utf8_lossy(acme_conf),
        String::from_utf8_lossy(&out.stderr)
    );
    let raw = fs::read(&args_file).expect("lego ran and recorded its arguments");
    raw.split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8(a.to_vec()).expect("UTF-8 arguments"))
        .collect()
}

/// The renewal script as the acme layer ships it.
fn acme_renew() -> PathBuf {
    common::repo().join("layers/acme/usr/lib/mailbake/acme-renew")
}

/// What acme-renew must hand lego for `row`: the values exactly as the site wrote them.
fn expected_lego_args(row: &Row, root: &Path) -> Vec<String> {
    let mut args: Vec<String> = [
        "--accept-tos",
        "--path",
        &root.join("var/lib/mailbake/acme").display().to_string(),
        "--server",
        &row.directory,
        "--email",
        &row.email,
        "--dns",
        "rfc2136",
        "--key-type",
        "ec256",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for r in &row.resolvers {
        args.extend(["--dns.resolvers".to_string(), r.clone()]);
    }
    let names: Vec<String> = if row.names.is_empty() {
        vec!["example.com".into(), "*.example.com".into()]
    } else {
        row.names.clone()
    };
    for name in std::iter::once("smtp.example.com".to_string()).chain(names) {
        args.extend(["--domains".to_string(), name]);
    }
    args.extend(["run", "--run-hook", "/usr/lib/mailbake/acme-deploy"].map(String::from));
    args
}

#[test]
fn hostile_and_awkward_acme_values_reach_lego_byte_exact_and_never_run() {
    let accepted = vec![
        Row::directory("https://acme.example/dir?a=1&b=2"),
        Row::directory("https://acme.example/$(CANARY)"),
        Row::directory("https://acme.example/`CANARY`"),
        Row::directory("https://acme.example/x;CANARY"),
        Row::directory("https://acme.example/x|CANARY"),
        Row::directory("https://acme.example/x&&CANARY&"),
        Row::directory("https://acme.example/'$(CANARY)'"),
        Row::directory("https://acme.example/\"$(CANARY)\""),
        Row::directory("https://acme.example/'\\''$(CANARY)"),
        Row::directory("https://acme.example/back\\slash\\"),
        Row::directory("https://acme.example/$HOME${PATH}$1$@"),
        Row::directory("https://acme.example/*"),
        Row::email("o.brien+acme_1-x@example.com"),
        Row {
            names: vec!["*.example.com".into(), "example.com".into()],
            ..Row::new()
        },
        Row {
            resolvers: vec!["ns1.example.net:53".into(), "[2001:db8::53]:53".into()],
            ..Row::new()
        },
    ];
    for row in &accepted {
        let work = tempfile::tempdir().expect("temp dir");
        let conf = rendered_acme_conf(&row.yaml(), work.path());
        let got = run_acme_renew(&acme_renew(), &conf, work.path());
        assert_eq!(
            got,
            expected_lego_args(row, &work.path().join("root")),
            "lego got other arguments than the site says; acme.conf was:\n{}",
            String::from_utf8_lossy(&conf)
        );
    }
}

#[test]
fn acme_values_the_site_model_refuses_are_refused_where_they_are_written() {
    // (site fragment, what the error must say). These never reach a template, but the
    // quoting above does not rely on that: the filter's own tests cover newlines too.
    let rows: Vec<(Row, &str)> = vec![
        (
            Row::directory("https://acme.example/a b"),
            "not a valid URL",
        ),
        (
            Row::directory("https://acme.example/a\nb"),
            "not a valid URL",
        ),
        (Row::directory("http://acme.example/$(CANARY)"), "https://"),
        (
            Row::email("$(CANARY)@example.com"),
            "not a valid local part",
        ),
        (
            Row::email("\"quoted\"@example.com"),
            "not a valid local part",
        ),
        (Row::email("a;CANARY@example.com"), "not a valid local part"),
        // Valid mail addresses, but not ACME account e-mails: lego names a directory after
        // the address, and one rule (check, build, cert) keeps it to a safe alphabet.
        (
            Row::email("`CANARY`@example.com"),
            "an ACME account e-mail uses only",
        ),
        (
            Row::email("o'brien@example.com"),
            "an ACME account e-mail uses only",
        ),
        (
            Row::email("a&b|c*d$e{f}!#%@example.com"),
            "an ACME account e-mail uses only",
        ),
        (
            Row::email("'$HOME'@example.com"),
            "an ACME account e-mail uses only",
        ),
        (
            Row::directory("https://ops:s3cret@acme.example/dir"),
            "holds user information",
        ),
        (Row::email("a b@example.com"), "not a valid local part"),
        (Row::email("a\nb@example.com"), "not a valid local part"),
        (
            Row {
                names: vec!["*.example.com;CANARY".into()],
                ..Row::new()
            },
            "contains `;`",
        ),
        (
            Row {
                resolvers: vec!["1.1.1.1;CANARY".into()],
                ..Row::new()
            },
            "is not a DNS server",
        ),
    ];
    for (row, why) in rows {
        let text = row.yaml();
        let err = mailbake::site::parse(Path::new("site.yaml"), &text).expect_err(&format!(
            "the model accepts a value it should refuse:\n{text}"
        ));
        let shown = format!("{err:?}");
        assert!(shown.contains(why), "{why:?} not in the error:\n{shown}");
    }
    let provider = site_yaml("    provider: \"rfc2136;id\"\n    email: ops@example.com\n");
    let err = mailbake::site::parse(Path::new("site.yaml"), &provider)
        .expect_err("a provider with `;` is refused");
    assert!(format!("{err:?}").contains("lego DNS provider"), "{err:?}");
}

/// The issue's own reproduction, through the real CLI: `mailbake build` with the hostile
/// e-mail and directory, then the built overlay's acme.conf read by the built acme-renew.
#[test]
fn mailbake_build_writes_an_acme_conf_that_runs_nothing() {
    let work = tempfile::tempdir().expect("temp dir");
    let row = Row {
        directory: format!("https://acme.example/$({RUN_CANARY})?a=1&b=2"),
        // The e-mail's alphabet is closed (letters, digits, `.`, `_`, `+`, `-`); the directory's
        // path carries the hostile bytes through the real build.
        email: "ops+acme@example.com".into(),
        ..Row::new()
    };
    let unpacked = fixture::built_example_with_acme(
        work.path(),
        &format!(
            "    provider: rfc2136\n    email: {}\n    directory: {}\n",
            yaml_str(&row.email),
            yaml_str(&row.directory)
        ),
    );
    let conf = fs::read(unpacked.join("etc/mailbake/acme.conf")).expect("acme.conf built");
    let run = work.path().join("run");
    let got = run_acme_renew(&unpacked.join("usr/lib/mailbake/acme-renew"), &conf, &run);
    assert_eq!(got, expected_lego_args(&row, &run.join("root")));
}
