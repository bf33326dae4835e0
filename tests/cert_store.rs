//! `mailbake cert` and the secrets store under failure: with a stand-in lego that writes a
//! new account key the way lego does (mode 0644) and then hangs, the store must stay usable
//! while `cert` runs, and after `cert` is killed with `kill -9` nothing may be left running,
//! in the store's way or in the system's temporary directory.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use testkit::{mailbake_bin, names, run, text};

/// One host with ACME; the directory is never reached (the stand-in lego asks nothing).
const SITE: &str = "site: certstore
domains:
  example.com:
    users: [i]
hosts:
  mx1:
    fqdn: smtp.example.com
    ipv4: 203.0.113.10
tls:
  acme:
    provider: rfc2136
    email: ops@example.com
    directory: https://acme.example/directory
ssh:
  authorized_keys: []
";

/// The stand-in lego: the state directory is its third argument (`--accept-tos --path DIR`).
/// It writes an account key with lego's loose mode and a file in its temporary directory
/// (`$TMPDIR`, else the system's, which the fixture makes its own `tmp/`), records its pid, and hangs in the same process (`exec`), as a lego waiting on a CA does.
const LEGO: &str = r#"#!/bin/sh
set -eu
state="$3"
mkdir -p "$state/accounts/acme.example/ops@example.com/keys"
key="$state/accounts/acme.example/ops@example.com/keys/ops@example.com.key"
printf 'new account key\n' > "$key"
chmod 644 "$key"
printf 'scratch\n' > "${TMPDIR:-$SYSTEM_TMP}/lego-scratch"
echo "$$" > "$FAKE_LEGO_PID.tmp"
mv "$FAKE_LEGO_PID.tmp" "$FAKE_LEGO_PID"
exec sleep 120
"#;

/// A site directory with a store holding `acme.env`, a lock pinning the stand-in lego and
/// a package cache that already holds it (so nothing is downloaded).
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        fs::write(root.join("site.yaml"), SITE).expect("write site.yaml");
        mailbake::secrets::SecretStore::create(root.join("secrets"))
            .and_then(|store| {
                store.write_secret(
                    mailbake::secrets::ACME_ENV,
                    format!(
                        "FAKE_LEGO_PID={}\nSYSTEM_TMP={}\n",
                        root.join("lego.pid").display(),
                        root.join("tmp").display()
                    )
                    .as_bytes(),
                )
            })
            .expect("a store with acme.env");
        let deb = lego_deb(root);
        let digest = sha256(&deb);
        fs::create_dir_all(root.join("cache/debs")).expect("mkdir cache/debs");
        fs::copy(&deb, root.join(format!("cache/debs/{digest}.deb"))).expect("cache the deb");
        fs::write(
            root.join("packages.lock"),
            format!(
                "packages:\n  - name: lego\n    suite: forky\n    version: 0.0.1-1\n    \
                 architecture: amd64\n    sha256: {digest}\n"
            ),
        )
        .expect("write packages.lock");
        fs::create_dir(root.join("tmp")).expect("mkdir tmp");
        Fixture { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// `mailbake ARGS…` in the site directory, with the fixture's own system temporary
    /// directory, so what a run leaves there can be seen.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(mailbake_bin());
        cmd.args(args)
            .current_dir(self.dir.path())
            .env("TMPDIR", self.path("tmp"))
            .stdin(Stdio::null());
        cmd
    }

    /// `mailbake cert`, started and left running.
    fn start_cert(&self) -> Child {
        self.command(&[
            "cert",
            "site.yaml",
            "--lock",
            "packages.lock",
            "--cache",
            "cache",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mailbake cert starts")
    }

    fn user_list(&self) -> Output {
        self.command(&["user", "list", "site.yaml"])
            .output()
            .expect("mailbake user list runs")
    }

    /// The stand-in lego's pid, once it has written its files and is hanging.
    fn wait_for_lego(&self, cert: &mut Child) -> i32 {
        let pid_file = self.path("lego.pid");
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(text) = fs::read_to_string(&pid_file) {
                return text.trim().parse().expect("a pid");
            }
            if let Ok(Some(status)) = cert.try_wait() {
                let out = cert.wait_with_output_now();
                panic!("mailbake cert ended ({status}) before lego hung:\n{out}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the stand-in lego did not start within 60 s");
    }
}

trait OutputNow {
    fn wait_with_output_now(&mut self) -> String;
}

impl OutputNow for Child {
    /// What an exited child printed.
    fn wait_with_output_now(&mut self) -> String {
        use std::io::Read as _;
        let mut text = String::new();
        if let Some(mut o) = self.stdout.take() {
            let _ = o.read_to_string(&mut text);
        }
        if let Some(mut e) = self.stderr.take() {
            let _ = e.read_to_string(&mut text);
        }
        text
    }
}

/// A `.deb` named lego whose usr/bin/lego is [`LEGO`].
fn lego_deb(dir: &Path) -> PathBuf {
    let root = dir.join("deb-root");
    fs::create_dir_all(root.join("DEBIAN")).expect("mkdir DEBIAN");
    fs::create_dir_all(root.join("usr/bin")).expect("mkdir usr/bin");
    fs::write(
        root.join("DEBIAN/control"),
        "Package: lego\nVersion: 0.0.1-1\nArchitecture: amd64\nMaintainer: test <t@example.com>\n\
         Description: stand-in lego that hangs\n",
    )
    .expect("write control");
    let bin = root.join("usr/bin/lego");
    fs::write(&bin, LEGO).expect("write the stand-in lego");
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).expect("chmod lego");
    let deb = dir.join("lego.deb");
    run(Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zgzip", "--build"])
        .arg(&root)
        .arg(&deb));
    deb
}

fn sha256(path: &Path) -> String {
    mailbake::fetch::sha256_file(path)
        .expect("hash the deb")
        .as_str()
        .to_string()
}

/// Whether process `pid` exists and is not a zombie.
fn running(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

#[test]
fn the_store_stays_usable_while_cert_runs_and_after_it_is_killed() {
    let fx = Fixture::new();
    let mut cert = fx.start_cert();
    let lego = fx.wait_for_lego(&mut cert);

    // lego's 0644 key sits in the run's work directory: other commands still work.
    let during = fx.user_list();
    assert!(
        during.status.success(),
        "a store command failed while cert ran:\n{}\nstore: {:?}",
        text(&during),
        names(&fx.path("secrets"))
    );
    for work in names(&fx.path("secrets"))
        .iter()
        .filter(|n| n.starts_with(".tmp-"))
    {
        let mode = fs::metadata(fx.path("secrets").join(work))
            .expect("stat the work directory")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700, "{work} is mode {mode:o}");
    }

    // kill -9: no chance to clean up.
    cert.kill().expect("kill -9 mailbake cert");
    cert.wait().expect("reap mailbake cert");
    let deadline = Instant::now() + Duration::from_secs(10);
    while running(lego) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let lego_alive = running(lego);
    if lego_alive {
        // Do not leave the stand-in behind for the next test run.
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(lego, libc::SIGKILL) };
    }
    assert!(
        !lego_alive,
        "lego (pid {lego}) outlived the killed mailbake"
    );
    assert_eq!(
        names(&fx.path("tmp")),
        Vec::<String>::new(),
        "the killed run left files in the system temporary directory"
    );

    let after = fx.user_list();
    assert!(
        after.status.success(),
        "a store command failed after cert was killed:\n{}",
        text(&after)
    );
    let left: Vec<String> = names(&fx.path("secrets"))
        .into_iter()
        .filter(|n| n.starts_with(".tmp-"))
        .collect();
    assert!(
        left.is_empty(),
        "the killed run's work directories stay: {left:?}"
    );
    assert!(
        !fx.path("secrets/acme").exists(),
        "the killed run's account reached the store"
    );
}
