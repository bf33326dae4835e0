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
// Linked for its watchdog, which bounds every test (tests/support/src/watchdog.rs).
use testkit as _;

use mailbake::fetch::{
    Cache, CachedDeb, EntryKind, FetchError, Lock, Sources, fetch_all, fetch_all_from,
    read_payload, read_version, sha256_file,
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
    // It also names both ways to build the same bytes without moving the pin.
    assert!(
        msg.contains("MAILBAKE_DEBS=DIR") && msg.contains("`mailbake fetch --debs DIR`"),
        "names the saved-.debs directory: {msg}"
    );
    assert!(
        msg.contains(
            "MAILBAKE_DEBIAN_MIRROR=https://snapshot.debian.org/archive/debian/YYYYMMDDTHHMMSSZ"
        ) && msg.contains("a day trixie still had chasquid"),
        "names the snapshot archive: {msg}"
    );
    assert!(msg.contains("To move the pin"), "{msg}");
}

/// A machine whose archive dropped the pins builds the same bytes from a directory of saved
/// .debs: one named as the cache names it, one as apt names it. apt is not run at all, and a
/// file with other bytes is refused with its path.
#[test]
fn saved_debs_serve_pins_the_archive_no_longer_has() {
    let saved = tempfile::tempdir().expect("tempdir");
    let primed_debs = primed().dir.path().join("debs");
    std::fs::copy(
        primed_debs.join(format!("{CHASQUID_SHA}.deb")),
        saved
            .path()
            .join(format!("chasquid_{CHASQUID_VERSION}_amd64.deb")),
    )
    .expect("save chasquid");
    std::fs::copy(
        primed_debs.join(format!("{LEGO_SHA}.deb")),
        saved.path().join(format!("{LEGO_SHA}.deb")),
    )
    .expect("save lego");
    // chasquid pinned where the archive has no such version, and no mirror reachable.
    let text = format!(
        "archive:\n  mirror: http://127.0.0.1:9/debian\n{}",
        std::fs::read_to_string(repo_lock_path()).unwrap()
    );
    let lock = Lock::parse(
        &text.replace("suite: forky", "suite: trixie"),
        Path::new("t.lock"),
    )
    .expect("lock parses");
    let cache_dir = tempfile::tempdir().expect("tempdir");
    let cache = Cache::open(cache_dir.path()).expect("cache");
    let sources = Sources {
        saved_debs: Some((saved.path().to_owned(), "test".into())),
    };
    let mut progress = Vec::new();
    let debs = fetch_all_from(&lock, &cache, &sources, &mut progress).expect("saved debs work");
    let progress = String::from_utf8_lossy(&progress);
    assert!(!progress.contains("updating"), "apt was asked: {progress}");
    for (deb, sha) in debs.iter().zip([CHASQUID_SHA, LEGO_SHA]) {
        assert_eq!(deb.path, cache.deb_path(&deb.package.sha256));
        assert_eq!(sha256_file(&deb.path).unwrap().as_str(), sha);
    }
    assert!(
        progress.contains(&format!(
            "verified chasquid {CHASQUID_VERSION} amd64 (from {}",
            saved
                .path()
                .join(format!("chasquid_{CHASQUID_VERSION}_amd64.deb"))
                .display()
        )),
        "{progress}"
    );
    assert!(dir_is_empty(&cache_dir.path().join("tmp")));

    // A saved file with other bytes never enters the cache.
    let bad = saved
        .path()
        .join(format!("chasquid_{CHASQUID_VERSION}_amd64.deb"));
    let mut bytes = std::fs::read(&bad).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&bad, &bytes).unwrap();
    let fresh_dir = tempfile::tempdir().expect("tempdir");
    let fresh = Cache::open(fresh_dir.path()).expect("cache");
    let err = fetch_all_from(&lock, &fresh, &sources, &mut Vec::new()).expect_err("tampered");
    assert!(
        matches!(err, FetchError::SavedDebMismatch { .. }),
        "expected SavedDebMismatch, got {err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&bad.display().to_string()) && msg.contains(CHASQUID_SHA),
        "{msg}"
    );
    assert!(
        dir_is_empty(&fresh_dir.path().join("debs")),
        "nothing cached"
    );
    assert!(dir_is_empty(&fresh_dir.path().join("tmp")), "no copy left");
}

/// A snapshot of the archive, served on loopback as snapshot.debian.org lays it out
/// (`/archive/debian/<timestamp>/`): the real signed InRelease and Packages indexes the
/// primed cache fetched, and the pinned .debs at their pool paths. apt fetches both pins from
/// it, signature-checked, and they enter the cache only with the lock's digests.
#[test]
fn a_snapshot_archive_serves_the_pins() {
    let root = tempfile::tempdir().expect("tempdir");
    let base = "archive/debian/20261207T000000Z";
    let top = root.path().join(base);
    let apt = primed().dir.path().join("apt");
    for state in std::fs::read_dir(&apt).expect("apt dir") {
        let lists = state.expect("entry").path().join("lists");
        for entry in std::fs::read_dir(&lists).expect("lists") {
            let path = entry.expect("entry").path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            // <host>_debian_dists_<suite>_InRelease, ..._<component>_binary-<arch>_Packages[.ext]
            let Some((_, rel)) = name.split_once("_dists_") else {
                continue;
            };
            let (rel, ext) = match rel.rsplit_once('.') {
                Some((r, e)) if ["lz4", "gz", "xz", "zst"].contains(&e) => (r, Some(e)),
                _ => (rel, None),
            };
            let dest = top.join("dists").join(rel.replace('_', "/"));
            std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
            decompress(&path, ext, &dest);
        }
    }
    let mut pool = Vec::new();
    for deb in &primed().debs {
        let filename = pool_filename(&top, &deb.package.name, &deb.package.version);
        let dest = top.join(&filename);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(&deb.path, &dest).unwrap();
        pool.push(format!("/{base}/{filename}"));
    }
    let server = StaticHttp::serve(root.path());
    let url = format!("http://{}/{base}", server.addr);
    let text = format!(
        "archive:\n  mirror: {url}\n{}",
        std::fs::read_to_string(repo_lock_path()).unwrap()
    );
    let lock = Lock::parse(&text, Path::new("t.lock")).expect("lock parses");
    let cache_dir = tempfile::tempdir().expect("tempdir");
    let cache = Cache::open(cache_dir.path()).expect("cache");
    let mut progress = Vec::new();
    let debs = fetch_all_from(&lock, &cache, &Sources::default(), &mut progress)
        .expect("the snapshot serves both pins");
    let progress = String::from_utf8_lossy(&progress);
    assert!(
        progress.contains(&format!("from {url} (the lock's archive.mirror)")),
        "{progress}"
    );
    for (deb, sha) in debs.iter().zip([CHASQUID_SHA, LEGO_SHA]) {
        assert!(deb.downloaded, "{progress}");
        assert_eq!(sha256_file(&deb.path).unwrap().as_str(), sha);
    }
    let requests = server.requests();
    for path in &pool {
        assert!(
            requests.contains(path),
            "{path} was not fetched from the snapshot: {requests:?}"
        );
    }
    assert!(
        requests
            .iter()
            .any(|r| r == &format!("/{base}/dists/forky/InRelease")),
        "{requests:?}"
    );
}

/// Writes `from` to `to`, decompressed as apt's `Acquire::GzipIndexes` kept it.
fn decompress(from: &Path, ext: Option<&str>, to: &Path) {
    let tool = match ext {
        None => {
            std::fs::copy(from, to).unwrap();
            return;
        }
        Some("lz4") => "lz4",
        Some("gz") => "gzip",
        Some("xz") => "xz",
        Some(_) => "zstd",
    };
    let out = Command::new(tool)
        .arg("-dc")
        .arg(from)
        .output()
        .unwrap_or_else(|e| panic!("{tool} (to read apt's kept index {}): {e}", from.display()));
    assert!(out.status.success(), "{tool} -dc {}", from.display());
    std::fs::write(to, out.stdout).unwrap();
}

/// The `Filename:` (pool path) of NAME VERSION in the stand-in's Packages indexes.
fn pool_filename(top: &Path, name: &str, version: &str) -> String {
    for suite in std::fs::read_dir(top.join("dists")).unwrap() {
        let packages = suite.unwrap().path().join("main/binary-amd64/Packages");
        let Ok(text) = std::fs::read_to_string(&packages) else {
            continue;
        };
        for stanza in text.split("\n\n") {
            let field = |f: &str| {
                stanza
                    .lines()
                    .find_map(|l| l.strip_prefix(f).map(|v| v.trim().to_string()))
            };
            if field("Package:").as_deref() == Some(name)
                && field("Version:").as_deref() == Some(version)
            {
                return field("Filename:").unwrap();
            }
        }
    }
    panic!(
        "{name} {version} is in no Packages index under {}",
        top.display()
    );
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

/// A static file server on 127.0.0.1 for the stand-in archive: GET and HEAD of files under
/// its root, 404 otherwise, one request per connection. It records each request's path.
struct StaticHttp {
    addr: std::net::SocketAddr,
    log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl StaticHttp {
    fn serve(root: &Path) -> StaticHttp {
        use std::io::{BufRead, BufReader, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (root, requests) = (root.to_owned(), log.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request = String::new();
                if reader.read_line(&mut request).is_err() {
                    continue;
                }
                // The headers are not needed; read up to the blank line.
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let mut words = request.split_whitespace();
                let method = words.next().unwrap_or("").to_string();
                let path = percent_decode(words.next().unwrap_or(""));
                requests.lock().unwrap().push(path.clone());
                let file = root.join(path.trim_start_matches('/'));
                let body = (!path.contains("..") && file.is_file())
                    .then(|| std::fs::read(&file).ok())
                    .flatten();
                let (status, body) = match body {
                    Some(b) => ("200 OK", b),
                    None => ("404 Not Found", Vec::new()),
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes());
                if method == "GET" {
                    let _ = stream.write_all(&body);
                }
            }
        });
        StaticHttp { addr, log }
    }

    fn requests(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

/// apt escapes `~` and `+` in pool paths (`%7e`, `%2b`).
fn percent_decode(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
