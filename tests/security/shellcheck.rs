//! Every shell script in the repository (the layers' hooks and helpers, scripts/, the QEMU
//! test base, drain's host script, CI's entry point) passes shellcheck, found by its `#!` line
//! so that a new script is checked without anyone listing it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common;

/// Whether the file starts with a `#!` line naming a POSIX shell or bash.
fn is_shell_script(path: &Path) -> bool {
    let Ok(bytes) = fs::read(path) else {
        return false;
    };
    let first = bytes.split(|b| *b == b'\n').next().unwrap_or_default();
    let first = String::from_utf8_lossy(first);
    let Some(interpreter) = first.strip_prefix("#!") else {
        return false;
    };
    let words: Vec<&str> = interpreter.split_whitespace().collect();
    matches!(
        words.as_slice(),
        ["/bin/sh", ..] | ["/bin/bash", ..] | ["/usr/bin/env", "sh" | "bash", ..]
    )
}

/// Directories that hold no source of ours: build output, git's store, the example's output.
const NOT_SOURCE: [&str; 3] = ["target", ".git", "out"];

fn shell_scripts_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        let meta = fs::symlink_metadata(&path).expect("metadata");
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if meta.is_dir() && !NOT_SOURCE.contains(&name) {
            shell_scripts_under(&path, out);
        } else if meta.is_file() && is_shell_script(&path) {
            out.push(path);
        }
    }
}

#[test]
fn every_shell_script_passes_shellcheck() {
    let repo = common::repo();
    let mut scripts = Vec::new();
    shell_scripts_under(&repo, &mut scripts);
    let relative: Vec<String> = scripts
        .iter()
        .map(|p| p.strip_prefix(&repo).unwrap_or(p).display().to_string())
        .collect();
    // Discovery must find the scripts we know of, or the check below proves nothing.
    for known in [
        "layers/acme/usr/lib/mailbake/acme-renew",
        "layers/acme/usr/lib/mailbake/acme-deploy",
        "layers/auth-guard/usr/lib/mailbake/auth-guard",
        "layers/chasquid/etc/chasquid/hooks/post-data",
        "layers/chasquid/usr/lib/mailbake/apply-seed",
        "layers/chasquid/usr/lib/mailbake/bootstrap-cert",
        "scripts/setup-host",
        "scripts/test",
        "qemu-tests/base/build.sh",
        "qemu-tests/base/build-img.sh",
        "src/drain/remote.sh",
        ".ci/run",
    ] {
        assert!(
            relative.iter().any(|r| r == known),
            "{known} not found: {relative:?}"
        );
    }
    let out = Command::new("shellcheck")
        .arg("--external-sources")
        .args(&scripts)
        .current_dir(&repo)
        .output()
        .expect("shellcheck runs (scripts/setup-host installs it)");
    assert!(
        out.status.success(),
        "shellcheck found problems:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
