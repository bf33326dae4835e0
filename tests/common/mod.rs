//! Helpers shared by the integration tests: the real programs they check our output against.
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use mailbake::fetch::{self, Cache, Lock};

/// The repository root (where `packages.lock`, `layers/` and `examples/` live).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The bundled example site file.
pub fn example_site() -> PathBuf {
    repo().join("examples/example.com/site.yaml")
}

/// The directory holding the `chasquid` and `chasquid-util` binaries mailbake ships: the
/// payload of the pinned package (fetched into the package cache if needed and verified by
/// digest), unpacked once per package digest. `MAILBAKE_TEST_CHASQUID_BIN_DIR` overrides it.
pub fn chasquid_bin_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os("MAILBAKE_TEST_CHASQUID_BIN_DIR") {
            return PathBuf::from(dir);
        }
        let lock = Lock::load(&repo().join("packages.lock")).expect("packages.lock loads");
        let cache = Cache::open_default().expect("package cache opens");
        let debs =
            fetch::fetch_all(&lock, &cache, &mut std::io::stderr()).expect("pinned packages fetch");
        let deb = debs
            .iter()
            .find(|d| d.package.name == "chasquid")
            .expect("chasquid is pinned in packages.lock");
        let dir = cache
            .root()
            .join("test-bin")
            .join(deb.package.sha256.as_str());
        if !dir.join("chasquid-util").is_file() {
            let staging = tempfile::tempdir_in(cache.root()).expect("staging dir");
            for entry in fetch::deb::read_payload(&deb.path).expect("chasquid payload reads") {
                if let Some(name) = entry.path.strip_prefix("usr/bin/") {
                    let target = staging.path().join(name);
                    fs::write(&target, &entry.contents).expect("write binary");
                    fs::set_permissions(&target, fs::Permissions::from_mode(0o755)).expect("chmod");
                }
            }
            fs::create_dir_all(dir.parent().expect("parent")).expect("mkdir test-bin");
            // Another test process may have won the race; either copy is the same bytes.
            let _ = fs::rename(staging.keep(), &dir);
        }
        dir
    })
    .clone()
}

pub fn chasquid() -> PathBuf {
    chasquid_bin_dir().join("chasquid")
}

pub fn chasquid_util() -> PathBuf {
    chasquid_bin_dir().join("chasquid-util")
}

/// Runs `mailbake build SITE --out OUT` and panics with its output if it fails.
pub fn mailbake_build(site: &Path, out: &Path) {
    let result = std::process::Command::new(env!("CARGO_BIN_EXE_mailbake"))
        .arg("build")
        .arg(site)
        .arg("--out")
        .arg(out)
        .output()
        .expect("mailbake runs");
    assert!(
        result.status.success(),
        "mailbake build failed:\n{}",
        String::from_utf8_lossy(&result.stderr)
    );
}
