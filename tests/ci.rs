//! mailbake in CI: README's first command (`./scripts/example`) runs from a clean `out/` and
//! leaves every artifact with its digest, the installed binary needs no checkout, and the
//! example CI workflow is a valid GitHub Actions workflow.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use testkit::run;

/// `cargo install --path` of a copy of this checkout, the copy deleted, then `build` of the
/// example from an unrelated directory: the same SHA256SUMS (overlay, seeds, DNS) as the
/// in-tree binary's build, and the same built-in data digests. A binary that reads `layers/`
/// or `packages.lock` from the tree it was compiled in fails here, since that tree is gone.
///
/// Slow: the install compiles mailbake in release mode. Its dependencies are compiled once
/// into the cache's `release-target` (kept between runs and clones, so later runs rebuild
/// only mailbake).
#[test]
fn an_installed_binary_builds_the_example_with_no_checkout() {
    let tmp = tempfile::tempdir().unwrap();
    let checkout = tmp.path().join("checkout");
    copy_checkout(&testkit::repo(), &checkout);
    let root = tmp.path().join("root");
    let started = Instant::now();
    run(Command::new(env!("CARGO"))
        .args(["install", "--offline", "--locked", "--quiet", "--path"])
        .arg(&checkout)
        .arg("--root")
        .arg(&root)
        .env("CARGO_TARGET_DIR", install_target_dir()));
    eprintln!(
        "cargo install took {:.0} s",
        started.elapsed().as_secs_f64()
    );
    // The site travels with the operator, not with mailbake's source.
    let site_dir = tmp.path().join("site");
    fs::create_dir_all(&site_dir).unwrap();
    fs::copy(testkit::example_site(), site_dir.join("site.yaml")).unwrap();
    fs::remove_dir_all(&checkout).unwrap();
    let secrets = testkit::example_secrets(&site_dir);

    let installed = root.join("bin/mailbake");
    let elsewhere = tmp.path().join("elsewhere");
    fs::create_dir_all(&elsewhere).unwrap();
    run(Command::new(&installed).current_dir(&elsewhere).args([
        "build",
        "../site/site.yaml",
        "--out",
        "../out-installed",
    ]));
    testkit::mailbake_build(
        &site_dir.join("site.yaml"),
        &secrets,
        &tmp.path().join("out-in-tree"),
    );

    let sums = |dir: &str| fs::read_to_string(tmp.path().join(dir).join("SHA256SUMS")).unwrap();
    let (installed_sums, in_tree_sums) = (sums("out-installed"), sums("out-in-tree"));
    assert!(
        installed_sums.contains("  overlay.tar\n"),
        "{installed_sums}"
    );
    assert_eq!(
        installed_sums, in_tree_sums,
        "the installed binary built different artifacts"
    );
    let version = |bin: &Path| run(Command::new(bin).args(["version", "--verbose"]));
    assert_eq!(
        version(&installed),
        version(Path::new(env!("CARGO_BIN_EXE_mailbake")))
    );
}

/// README's first command, as a new user runs it: `./scripts/example` in a copy of this
/// checkout with no `out/`, which runs scripts/setup-host, builds mailbake in release mode,
/// and bakes the example. Its artifacts are all there: the overlay, mx1's seed, the DNS
/// records (the table it printed is `dns/records.txt`), each listed in `SHA256SUMS` with the
/// digest of its bytes, and the disk image, a qcow2 that `qemu-img check` accepts, with its
/// digest in `example.qcow2.sha256`.
///
/// Cheap after the first run: the base is cached (`$MAILBAKE_CACHE`, keyed by digest) and the
/// release build's dependencies are kept in the cache's `release-target`, shared with the
/// test above.
#[test]
fn readme_example_bakes_every_artifact_from_a_clean_out() {
    let tmp = tempfile::tempdir().unwrap();
    let checkout = tmp.path().join("checkout");
    copy_checkout(&testkit::repo(), &checkout);
    assert!(!checkout.join("out").exists());
    let started = Instant::now();
    let out = Command::new("./scripts/example")
        .current_dir(&checkout)
        .env("CARGO_TARGET_DIR", install_target_dir())
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "./scripts/example failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    eprintln!(
        "./scripts/example took {:.0} s",
        started.elapsed().as_secs_f64()
    );
    assert!(stderr.contains("setup-host: ready"), "{stderr}");

    let dir = checkout.join("out/example");
    let sums = read_artifact(&dir.join("SHA256SUMS"));
    let listed: BTreeMap<String, String> = sums
        .lines()
        .map(|l| {
            let (digest, name) = l.split_once("  ").expect("sha256sum format");
            (name.to_string(), digest.to_string())
        })
        .collect();
    for name in [
        "overlay.tar",
        "MANIFEST",
        "hosts/mx1/seed.img",
        "hosts/mx1/seed/user-data",
        "hosts/mx1/seed/network-config",
        "hosts/mx1/seed/meta-data",
        "dns/records.txt",
        "dns/records.json",
        "dns/example.com.zone",
    ] {
        assert!(
            listed.contains_key(name),
            "{name} is not in SHA256SUMS:\n{sums}"
        );
    }
    let mut on_disk = Vec::new();
    files_under(&dir, &dir, &mut on_disk);
    on_disk.retain(|f| f != "SHA256SUMS");
    assert_eq!(
        on_disk,
        listed.keys().cloned().collect::<Vec<_>>(),
        "SHA256SUMS lists exactly the files of {}",
        dir.display()
    );
    for (name, digest) in &listed {
        assert_eq!(&sha256_hex(&dir.join(name)), digest, "{name}");
    }
    let table = read_artifact(&dir.join("dns/records.txt"));
    assert!(table.contains("MX"), "{table}");
    assert!(
        stdout.contains(table.trim()),
        "the table the example printed is not dns/records.txt:\n{stdout}"
    );

    let image = checkout.join("out/example.qcow2");
    let info = run(Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(&image));
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["format"], "qcow2", "{info}");
    run(Command::new("qemu-img").arg("check").arg(&image));
    let line = read_artifact(&checkout.join("out/example.qcow2.sha256"));
    assert_eq!(
        line,
        format!("{}  example.qcow2\n", sha256_hex(&image)),
        "out/example.qcow2.sha256"
    );
    eprintln!("example artifacts:\n{sums}{line}");
}

/// An artifact ./scripts/example should have written.
fn read_artifact(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}: ./scripts/example said it succeeded but did not write it",
            path.display()
        )
    })
}

/// Paths of the regular files under `dir`, relative to `root`, sorted.
fn files_under(root: &Path, dir: &Path, out: &mut Vec<String>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(root, &path, out);
        } else {
            out.push(path.strip_prefix(root).unwrap().display().to_string());
        }
    }
    out.sort();
}

fn sha256_hex(path: &Path) -> String {
    mailbake::fetch::sha256_file(path)
        .unwrap()
        .as_str()
        .to_string()
}

/// This checkout's files (what git would track, plus changes not yet committed), without
/// `.git`, a `target/` or an `out/` inside it, copied with their modes and symlinks.
fn copy_checkout(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    let tar = format!(
        "tar --exclude=./.git --exclude=./target --exclude=./out -C {} -cf - . | tar -xf - -C {}",
        shell_quote(from),
        shell_quote(to)
    );
    run(Command::new("sh").args(["-eu", "-c", &tar]));
}

fn shell_quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

/// In mailbake's cache outside the checkout (`$MAILBAKE_CACHE`, else `~/.cache/mailbake`),
/// so that release builds of the dependencies survive fresh clones as well as runs (a fresh
/// clone's `target/` is empty, and compiling them again cost every CI run minutes), and never
/// share a lock with the `cargo test` that runs us. cargo's own fingerprints (compiler
/// version, Cargo.lock, features, sources) decide what is rebuilt; a cold cache builds all.
fn install_target_dir() -> PathBuf {
    let cache = mailbake::fetch::Cache::open_default()
        .unwrap_or_else(|e| panic!("mailbake's cache does not open: {e}"));
    cache.root().join("release-target")
}

/// docs/ci/github-actions.yml is a valid GitHub Actions workflow (check-jsonschema with the
/// GitHub workflow schema it ships, offline), its `run:` scripts pass shellcheck as the bash
/// GitHub runs them with, and it runs the steps docs/ci.md promises.
#[test]
fn the_example_github_workflow_is_valid_and_runs_every_step() {
    let workflow = testkit::repo().join("docs/ci/github-actions.yml");
    run(Command::new(testkit::test_tool("check-jsonschema"))
        .args(["--builtin-schema", "vendor.github-workflows"])
        .arg(&workflow));

    let doc: serde_json::Value =
        serde_norway::from_slice(&fs::read(&workflow).unwrap()).expect("the workflow is YAML");
    let scripts: Vec<String> = doc["jobs"]
        .as_object()
        .expect("jobs")
        .values()
        .flat_map(|job| job["steps"].as_array().expect("steps").clone())
        .filter_map(|step| step["run"].as_str().map(str::to_string))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    for (i, script) in scripts.iter().enumerate() {
        assert!(
            !script.contains("${{"),
            "expressions belong in env:, not in run: {script}"
        );
        let file = dir.path().join(format!("step-{i}.sh"));
        // GitHub runs `run:` with `bash -e {0}`.
        fs::write(&file, format!("#!/bin/bash\nset -e\n{script}")).unwrap();
        run(Command::new("shellcheck").arg(&file));
    }
    let all = scripts.join("\n");
    for step in [
        "cargo install --locked",
        "mailbake version --verbose",
        "mailbake check",
        "mailbake build",
        "--base-sums",
        "mailbake terraform",
        "mailbake verify",
    ] {
        assert!(all.contains(step), "the workflow does not run `{step}`");
    }
    let uses: Vec<&str> = doc["jobs"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|job| job["steps"].as_array().unwrap())
        .filter_map(|step| step["uses"].as_str())
        .collect();
    assert!(
        uses.iter().any(|u| u.starts_with("actions/cache@")),
        "no cache"
    );
    assert!(
        uses.iter()
            .any(|u| u.starts_with("actions/upload-artifact@")),
        "no upload"
    );
}
