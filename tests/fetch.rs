//! Real downloads from the Debian archive into temporary caches: apt, the network and the
//! pinned packages are the real ones, so these tests fail if the archive, apt handling,
//! digest checks or the .deb reader break.
//!
//! One cache is filled once per test binary (`primed`); tests that modify a cache work on a
//! copy of it, which keeps apt's lists and so avoids repeating the large first download.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use mailbake::fetch::{
    Cache, CachedDeb, EntryKind, FetchError, Lock, fetch_all, read_payload, read_version,
    sha256_file,
};

fn repo_lock_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("packages.lock")
}

fn repo_lock() -> Lock {
    Lock::load(&repo_lock_path()).expect("the repository's packages.lock parses")
}

struct Primed {
    dir: tempfile::TempDir,
    debs: Vec<CachedDeb>,
    progress: String,
    took: Duration,
}

/// A cache filled from scratch with the repository's lock, once per test binary.
fn primed() -> &'static Primed {
    static PRIMED: OnceLock<Primed> = OnceLock::new();
    PRIMED.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = Cache::open(dir.path()).expect("open cache");
        let mut progress = Vec::new();
        let start = Instant::now();
        let debs = fetch_all(&repo_lock(), &cache, &mut progress).expect("cold fetch works");
        let took = start.elapsed();
        eprintln!("cold fetch of the pinned packages took {took:?}");
        Primed {
            dir,
            debs,
            progress: String::from_utf8_lossy(&progress).into_owned(),
            took,
        }
    })
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("dir entry");
        let dest = to.join(entry.file_name());
        let ty = entry.file_type().expect("file type");
        if ty.is_dir() {
            copy_tree(&entry.path(), &dest);
        } else if ty.is_file() {
            std::fs::copy(entry.path(), &dest).expect("copy");
        }
    }
}

/// A new cache holding a copy of the primed one's apt state, with or without its debs.
fn copy_of_primed(with_debs: bool) -> (tempfile::TempDir, Cache) {
    let dir = tempfile::tempdir().expect("tempdir");
    copy_tree(&primed().dir.path().join("apt"), &dir.path().join("apt"));
    if with_debs {
        copy_tree(&primed().dir.path().join("debs"), &dir.path().join("debs"));
    }
    let cache = Cache::open(dir.path()).expect("open cache");
    (dir, cache)
}

fn dir_is_empty(p: &Path) -> bool {
    std::fs::read_dir(p).expect("read_dir").next().is_none()
}

fn lock_with(replace: &str, with: &str) -> Lock {
    let text = std::fs::read_to_string(repo_lock_path()).expect("read lock");
    assert!(text.contains(replace), "lock text has {replace}");
    Lock::parse(&text.replace(replace, with), Path::new("test.lock")).expect("edited lock parses")
}

const CHASQUID_SHA: &str = "b0a3a9715910771fda79ccfcb6f9fa0cec285688cdff1f934ce154519bcdf275";
const LEGO_SHA: &str = "1fea5ddc6c58b06d51479a4f095fcf2c26c466c3749e341abfb8acda095ea3f8";
const CHASQUID_VERSION: &str = "1.19.0-1";
const LEGO_VERSION: &str = "4.35.2-3~bpo13+1";

#[test]
fn cold_fetch_downloads_and_verifies_both_packages() {
    let p = primed();
    let names: Vec<_> = p.debs.iter().map(|d| d.package.name.as_str()).collect();
    assert_eq!(names, ["chasquid", "lego"]);
    for (deb, sha) in p.debs.iter().zip([CHASQUID_SHA, LEGO_SHA]) {
        assert!(deb.downloaded, "{} was downloaded", deb.package.name);
        assert_eq!(
            deb.path,
            p.dir.path().join("debs").join(format!("{sha}.deb"))
        );
        assert_eq!(sha256_file(&deb.path).expect("hash").as_str(), sha);
    }
    assert!(
        p.progress.contains(&format!(
            "fetching chasquid {CHASQUID_VERSION} amd64 from forky main"
        )),
        "{}",
        p.progress
    );
    assert!(
        p.progress.contains(&format!(
            "fetching lego {LEGO_VERSION} amd64 from trixie-backports main"
        )),
        "{}",
        p.progress
    );
    assert!(
        dir_is_empty(&p.dir.path().join("tmp")),
        "no download left behind"
    );
    eprintln!("(cold fetch took {:?})", p.took);
}

#[test]
fn each_suite_has_its_own_apt_state_with_one_signed_source() {
    let apt = primed().dir.path().join("apt");
    let mut states: Vec<String> = std::fs::read_dir(&apt)
        .expect("read apt dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    states.sort();
    assert_eq!(states, ["forky_main", "trixie-backports_main"]);
    for (state, suite) in [
        ("forky_main", "forky"),
        ("trixie-backports_main", "trixie-backports"),
    ] {
        let sources =
            std::fs::read_to_string(apt.join(state).join("sources.list")).expect("sources.list");
        let lines: Vec<&str> = sources.lines().filter(|l| l.starts_with("deb ")).collect();
        assert_eq!(lines.len(), 1, "one source in {state}:\n{sources}");
        assert!(
            lines[0].contains("signed-by=/usr/share/keyrings/debian-archive-keyring.gpg]"),
            "{sources}"
        );
        assert!(lines[0].ends_with(&format!(" {suite} main")), "{sources}");
        // The lists apt fetched are that suite's only (file names carry the suite).
        let lists: Vec<String> = std::fs::read_dir(apt.join(state).join("lists"))
            .expect("lists")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with("InRelease"))
            .collect();
        assert_eq!(lists.len(), 1, "{state}: {lists:?}");
        assert!(
            lists[0].ends_with(&format!("_dists_{suite}_InRelease")),
            "{lists:?}"
        );
    }
}

#[test]
fn second_run_uses_the_cache_without_apt() {
    let p = primed();
    let start = Instant::now();
    // A PATH without apt-get: the run can only succeed if apt is not needed at all.
    let out = Command::new(env!("CARGO_BIN_EXE_mailbake"))
        .args(["fetch", "--lock"])
        .arg(repo_lock_path())
        .arg("--cache")
        .arg(p.dir.path())
        .env("PATH", "/nonexistent")
        .output()
        .expect("run mailbake");
    eprintln!("(cached fetch took {:?})", start.elapsed());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "cached fetch failed: {stderr}");
    assert!(
        stderr.contains(&format!("cached chasquid {CHASQUID_VERSION}")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("cached lego {LEGO_VERSION}")),
        "{stderr}"
    );
    assert!(!stderr.contains("fetching"), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let printed: Vec<PathBuf> = stdout.lines().map(PathBuf::from).collect();
    let expected: Vec<PathBuf> = p.debs.iter().map(|d| d.path.clone()).collect();
    assert_eq!(printed, expected);
}

#[test]
fn missing_apt_get_is_reported_when_a_download_is_needed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_mailbake"))
        .args(["fetch", "--lock"])
        .arg(repo_lock_path())
        .arg("--cache")
        .arg(dir.path())
        .env("PATH", "/nonexistent")
        .output()
        .expect("run mailbake");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("apt-get not found in PATH"), "{stderr}");
    assert!(dir_is_empty(&dir.path().join("debs")));
}

#[test]
fn missing_lock_file_fails_with_its_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nope.lock");
    let out = Command::new(env!("CARGO_BIN_EXE_mailbake"))
        .args(["fetch", "--lock"])
        .arg(&missing)
        .arg("--cache")
        .arg(dir.path().join("cache"))
        .output()
        .expect("run mailbake");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("nope.lock") && stderr.contains("not found"),
        "{stderr}"
    );
}

#[test]
fn tampered_cache_file_is_detected_and_replaced() {
    let (dir, cache) = copy_of_primed(true);
    let chasquid = dir.path().join("debs").join(format!("{CHASQUID_SHA}.deb"));
    let mut bytes = std::fs::read(&chasquid).expect("read cached deb");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&chasquid, &bytes).expect("tamper");

    let mut progress = Vec::new();
    let debs = fetch_all(&repo_lock(), &cache, &mut progress).expect("refetch works");
    let progress = String::from_utf8_lossy(&progress);
    assert!(
        progress.contains("corrupt cache entry for chasquid"),
        "{progress}"
    );
    assert!(debs[0].downloaded, "chasquid fetched again");
    assert!(!debs[1].downloaded, "lego still cached");
    assert_eq!(sha256_file(&chasquid).expect("hash").as_str(), CHASQUID_SHA);
}

#[test]
fn wrong_digest_fails_and_leaves_nothing_in_the_cache() {
    let (dir, cache) = copy_of_primed(false);
    let wrong = "0".repeat(64);
    let lock = lock_with(CHASQUID_SHA, &wrong);
    let err = fetch_all(&lock, &cache, &mut Vec::new()).expect_err("digest mismatch");
    match &err {
        FetchError::DigestMismatch {
            expected, actual, ..
        } => {
            assert_eq!(expected.as_str(), wrong);
            assert_eq!(actual.as_str(), CHASQUID_SHA);
        }
        other => panic!("expected DigestMismatch, got {other}"),
    }
    let msg = err.to_string();
    assert!(msg.contains(&wrong) && msg.contains(CHASQUID_SHA), "{msg}");
    assert!(
        msg.contains(&format!("chasquid {CHASQUID_VERSION}")),
        "{msg}"
    );
    assert!(dir_is_empty(&dir.path().join("debs")), "nothing cached");
    assert!(dir_is_empty(&dir.path().join("tmp")), "no temp file left");
}

#[test]
fn version_missing_from_the_archive_is_explained() {
    let (dir, cache) = copy_of_primed(false);
    let lock = lock_with(&format!("version: {CHASQUID_VERSION}"), "version: 0.0.1-1");
    let err = fetch_all(&lock, &cache, &mut Vec::new()).expect_err("no such version");
    assert!(matches!(err, FetchError::NotInArchive { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("chasquid 0.0.1-1"), "{msg}");
    assert!(
        msg.contains(" forky; "),
        "names the suite it looked in: {msg}"
    );
    assert!(msg.contains("may have left the archive"), "{msg}");
    // The hint lists what the suite has now, with the digest from the signed index.
    assert!(
        msg.contains(&format!("{CHASQUID_VERSION} sha256:{CHASQUID_SHA}")),
        "{msg}"
    );
    assert!(dir_is_empty(&dir.path().join("debs")));
    assert!(dir_is_empty(&dir.path().join("tmp")));
}

#[test]
fn a_package_is_looked_up_in_its_own_suite_only() {
    // trixie-backports' lego, pinned as if it came from forky: forky has another lego, and the
    // backports version must not be found there.
    let (_dir, cache) = copy_of_primed(false);
    let lock = lock_with("suite: trixie-backports", "suite: forky");
    let err = fetch_all(&lock, &cache, &mut Vec::new()).expect_err("not in forky");
    let FetchError::NotInArchive {
        package,
        suite,
        available,
        ..
    } = &err
    else {
        panic!("expected NotInArchive, got {err}");
    };
    assert_eq!(package, &format!("lego {LEGO_VERSION} amd64"));
    assert_eq!(suite, "forky");
    assert!(!available.is_empty(), "forky has a lego: {err}");
    assert!(
        available.iter().all(|v| !v.contains(LEGO_SHA)),
        "forky's listing must not offer the backports build: {available:?}"
    );
}

#[test]
fn a_cached_pin_stays_usable_after_its_suite_dropped_it() {
    // trixie never had chasquid 1.19.0-1: pinned there, it is exactly what forky does to a
    // pin when a newer upload migrates. With its .deb cached the build goes on (while lego,
    // not cached, still comes from its own suite) ...
    let (dir, cache) = copy_of_primed(true);
    std::fs::remove_file(dir.path().join("debs").join(format!("{LEGO_SHA}.deb")))
        .expect("drop lego from the cache");
    let lock = lock_with("suite: forky", "suite: trixie");
    let mut progress = Vec::new();
    let debs = fetch_all(&lock, &cache, &mut progress).expect("cached pin still works");
    let progress = String::from_utf8_lossy(&progress);
    assert!(
        !debs[0].downloaded,
        "chasquid came from the cache: {progress}"
    );
    assert!(debs[1].downloaded, "lego was downloaded: {progress}");
    assert!(
        !progress.contains("for trixie main"),
        "trixie was not asked: {progress}"
    );
    assert_eq!(
        sha256_file(&debs[0].path).expect("hash").as_str(),
        CHASQUID_SHA
    );

    // ... and a machine without the cached file is told what the suite has instead.
    let (empty, cache) = copy_of_primed(false);
    let err = fetch_all(&lock, &cache, &mut Vec::new()).expect_err("gone from trixie");
    let msg = err.to_string();
    assert!(matches!(err, FetchError::NotInArchive { .. }), "{msg}");
    assert!(
        msg.contains(&format!("chasquid {CHASQUID_VERSION} amd64")),
        "{msg}"
    );
    assert!(msg.contains(" trixie; "), "{msg}");
    assert!(
        msg.contains(
            "1.15.0-1+b4 sha256:8c9307e2faf2db384f3fecf58acfd30da31abc48525507add36c9eae51b4328b"
        ),
        "trixie's chasquid is listed with its digest: {msg}"
    );
    assert!(dir_is_empty(&empty.path().join("debs")));
}

#[test]
fn a_digest_pinned_under_the_wrong_version_is_refused() {
    // The lego bytes are cached; a lock naming another lego version with the same digest
    // must not be served those bytes.
    let (_dir, cache) = copy_of_primed(true);
    let lock = lock_with(&format!("version: {LEGO_VERSION}"), "version: 4.35.1-1");
    let err = fetch_all(&lock, &cache, &mut Vec::new()).expect_err("wrong version");
    assert!(matches!(err, FetchError::WrongPackage { .. }), "{err}");
    assert!(
        err.to_string()
            .contains(&format!("lego {LEGO_VERSION} amd64")),
        "{err}"
    );
}

/// Writes `path` from a package's payload into a temporary directory and runs it with `args`;
/// returns its stdout and stderr together.
fn run_from_payload(deb: &Path, path: &str, args: &[&str]) -> String {
    let entries = read_payload(deb).expect("payload");
    let bin = entries
        .iter()
        .find(|e| e.path == path)
        .unwrap_or_else(|| panic!("{path} in the payload of {}", deb.display()));
    assert_eq!(bin.kind, EntryKind::File);
    assert_eq!(bin.mode & 0o111, 0o111, "executable: mode {:o}", bin.mode);
    assert_eq!((bin.uid, bin.gid), (0, 0));
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = dir.path().join("exe");
    std::fs::write(&exe, &bin.contents).expect("write binary");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let out = Command::new(&exe)
        .args(args)
        .output()
        .expect("run the binary");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn chasquid_payload_contains_a_working_binary() {
    let deb = &primed().debs[0].path;
    assert_eq!(read_version(deb).expect("control"), CHASQUID_VERSION);
    let entries = read_payload(deb).expect("payload");
    assert!(
        entries
            .iter()
            .all(|e| !e.path.starts_with("./") && !e.path.starts_with('/'))
    );
    assert!(
        entries
            .iter()
            .any(|e| e.path == "usr/bin" && e.kind == EntryKind::Dir),
        "directories are listed"
    );
    // No maintainer script may come out of the payload reader.
    assert!(!entries.iter().any(|e| e.path.ends_with("postinst")));
    let text = run_from_payload(deb, "usr/bin/chasquid", &["-version"]);
    assert!(
        text.starts_with("chasquid 1.19.0"),
        "chasquid -version said: {text}"
    );
}

#[test]
fn lego_payload_contains_a_working_binary() {
    let deb = &primed().debs[1].path;
    assert_eq!(read_version(deb).expect("control"), LEGO_VERSION);
    let text = run_from_payload(deb, "usr/bin/lego", &["--version"]);
    assert!(
        text.starts_with("lego version 4.35.2 "),
        "lego --version said: {text}"
    );
}
