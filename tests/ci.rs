//! mailbake in CI: the installed binary needs no checkout, and the example CI workflow is a
//! valid GitHub Actions workflow.

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
/// into `<target>/ci-install` (kept between runs, so later runs rebuild only mailbake).
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

/// This checkout's files (what git would track, plus changes not yet committed), without
/// `.git` or a `target/` inside it, copied with their modes and symlinks.
fn copy_checkout(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    let tar = format!(
        "tar --exclude=./.git --exclude=./target -C {} -cf - . | tar -xf - -C {}",
        shell_quote(from),
        shell_quote(to)
    );
    run(Command::new("sh").args(["-eu", "-c", &tar]));
}

fn shell_quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

/// Beside this build's own target directory, so that release builds of the dependencies
/// survive between runs, yet never share a lock with the `cargo test` that runs us.
fn install_target_dir() -> PathBuf {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_mailbake"));
    let target = bin
        .parent()
        .and_then(Path::parent)
        .expect("the binary is in <target>/<profile>/");
    target.join("ci-install")
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
