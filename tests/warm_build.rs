//! Warm builds: an unchanged `mailbake build` into the same `--out` reuses the previous
//! overlay files, and what it writes is byte for byte what a cold build writes; a changed
//! input (a template, a site alias, SOURCE_DATE_EPOCH) or a damaged previous output makes the
//! build cold again.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

struct Run {
    sums: String,
    stderr: String,
}

impl Run {
    fn reused(&self) -> bool {
        self.stderr.contains("unchanged (key")
    }

    fn digest(&self, name: &str) -> &str {
        self.sums
            .lines()
            .find(|l| l.ends_with(&format!("  {name}")))
            .map(|l| &l[..64])
            .unwrap_or_else(|| panic!("{name} not in SHA256SUMS:\n{}", self.sums))
    }
}

struct Fixture {
    dir: tempfile::TempDir,
    secrets: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        testkit::example_secrets(dir.path());
        let secrets = dir.path().join("secrets");
        Fixture { dir, secrets }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn build(&self, site: &Path, out: &str, extra: &[&str]) -> Run {
        let out = self.path(out);
        let output = Command::new(env!("CARGO_BIN_EXE_mailbake"))
            .arg("build")
            .arg(site)
            .arg("--secrets")
            .arg(&self.secrets)
            .arg("--out")
            .arg(&out)
            .args(extra)
            .env_remove("SOURCE_DATE_EPOCH")
            .output()
            .expect("mailbake runs");
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "build failed:\n{stderr}");
        Run {
            sums: fs::read_to_string(out.join("SHA256SUMS")).expect("SHA256SUMS written"),
            stderr,
        }
    }
}

#[test]
fn an_unchanged_build_reuses_the_overlay_and_writes_the_same_bytes_as_a_cold_one() {
    let f = Fixture::new();
    let site = testkit::example_site();
    let cold = f.build(&site, "out", &[]);
    let warm = f.build(&site, "out", &[]);
    assert!(warm.reused(), "second build was not warm:\n{}", warm.stderr);
    assert_eq!(cold.sums, warm.sums, "warm SHA256SUMS differ from cold");
    // The files really are the cold bytes (SHA256SUMS of a warm build is not trusted alone).
    let sha = Command::new("sha256sum")
        .args(["-c", "--quiet", "SHA256SUMS"])
        .current_dir(f.path("out"))
        .output()
        .unwrap();
    assert!(
        sha.status.success(),
        "{}",
        String::from_utf8_lossy(&sha.stdout)
    );
    // A cold build elsewhere agrees.
    let elsewhere = f.build(&site, "other", &[]);
    assert!(!elsewhere.reused(), "{}", elsewhere.stderr);
    assert_eq!(cold.sums, elsewhere.sums);
}

#[test]
fn a_changed_template_alias_or_epoch_changes_the_key_and_the_overlay() {
    let f = Fixture::new();
    let site = testkit::example_site();
    let base = f.build(&site, "out", &[]);

    // One byte of one template.
    let layers = f.path("layers");
    testkit::copy_of_layers(&layers);
    let layers_arg = ["--layers", layers.to_str().unwrap()];
    let same_layers = f.build(&site, "out", &layers_arg);
    assert!(same_layers.reused(), "{}", same_layers.stderr);
    let template = layers.join("chasquid/etc/chasquid/chasquid.conf.j2");
    let mut bytes = fs::read(&template).unwrap();
    let at = bytes.iter().position(|b| *b == b'E').expect("a capital E");
    bytes[at] = b'e';
    fs::write(&template, bytes).unwrap();
    let changed = f.build(&site, "out", &layers_arg);
    assert!(
        !changed.reused(),
        "template change reused:\n{}",
        changed.stderr
    );
    assert_ne!(base.digest("overlay.tar"), changed.digest("overlay.tar"));
    assert_eq!(
        changed.sums,
        f.build(&site, "cold-template", &layers_arg).sums
    );

    // One alias of the site.
    let text = fs::read_to_string(&site).unwrap();
    let site_dir = f.path("site");
    fs::create_dir(&site_dir).unwrap();
    let edited = site_dir.join("site.yaml");
    let with_alias = text.replacen("aliases:", "aliases:\n      abuse: i", 1);
    assert_ne!(with_alias, text, "the example site has an aliases: key");
    fs::write(&edited, with_alias).unwrap();
    let aliased = f.build(&edited, "out", &[]);
    assert!(
        !aliased.reused(),
        "alias change reused:\n{}",
        aliased.stderr
    );
    assert_ne!(base.digest("overlay.tar"), aliased.digest("overlay.tar"));
    assert_eq!(aliased.sums, f.build(&edited, "cold-alias", &[]).sums);

    // SOURCE_DATE_EPOCH, from an output of the same site and layers: only the epoch differs.
    f.build(&site, "out", &[]);
    let epoch = ["--source-date-epoch", "1000000000"];
    let dated = f.build(&site, "out", &epoch);
    assert!(!dated.reused(), "epoch change reused:\n{}", dated.stderr);
    assert_ne!(base.digest("overlay.tar"), dated.digest("overlay.tar"));
}

#[test]
fn a_damaged_previous_output_is_not_reused() {
    let f = Fixture::new();
    let site = testkit::example_site();
    let cold = f.build(&site, "out", &[]);
    let tar = f.path("out/overlay.tar");
    let mut bytes = fs::read(&tar).unwrap();
    let last = bytes.len() - 2000;
    bytes[last] ^= 0xff;
    // Same size, one byte different: only the hash can tell.
    fs::remove_file(&tar).unwrap();
    fs::write(&tar, bytes).unwrap();
    let again = f.build(&site, "out", &[]);
    assert!(!again.reused(), "damaged overlay reused:\n{}", again.stderr);
    assert_eq!(cold.sums, again.sums);
}
