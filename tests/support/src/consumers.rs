//! The real programs the integration tests check mailbake's output with: the chasquid and
//! chasquid-util binaries of the pinned package, `mailbake build`, and the example site.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use mailbake::fetch::{self, Cache, Lock};

use crate::ports::{self, Port};
use crate::repo;

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

/// The password of the example's user `i@example.com` in stores made by [`example_secrets`].
pub const EXAMPLE_PASSWORD: &str = "correct horse battery staple";

/// A secrets store for the example site in `dir/secrets`: a password for `i@example.com` and
/// a key for each DKIM selector (RSA and Ed25519), as `mailbake user add` and
/// `mailbake dkim keygen` would make them.
pub fn example_secrets(dir: &Path) -> PathBuf {
    use mailbake::secrets::{Password, SecretStore};
    let path = dir.join("secrets");
    let store = SecretStore::create(&path).expect("create the store");
    let password = Password::new(EXAMPLE_PASSWORD.to_string()).expect("a long password");
    store
        .add_user(
            &"example.com".try_into().unwrap(),
            &"i".try_into().unwrap(),
            &password,
        )
        .expect("add i@example.com");
    let site = mailbake::site::load(&example_site()).expect("the example loads");
    for (domain, d) in site.site.domains.iter() {
        for (selector, algorithm) in d.dkim.selectors.iter() {
            store
                .dkim_keygen(domain, selector, *algorithm, false)
                .expect("generate a DKIM key");
        }
    }
    path
}

/// Runs `mailbake build SITE --out OUT --secrets SECRETS` and panics with its output if it
/// fails.
pub fn mailbake_build(site: &Path, secrets: &Path, out: &Path) {
    let result = std::process::Command::new(crate::mailbake_bin())
        .arg("build")
        .arg(site)
        .arg("--secrets")
        .arg(secrets)
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

/// What [`built_overlay`] made under its directory.
pub struct BuiltOverlay {
    /// The secrets store the site was built with (the example's users and keys).
    pub secrets: PathBuf,
    /// The build's output directory.
    pub out: PathBuf,
    /// `overlay.tar`, unpacked.
    pub root: PathBuf,
}

/// `mailbake build SITE` with the example's secrets into `dir/out`, its overlay unpacked into
/// `dir/root`: the files chasquid would read on a host.
pub fn built_overlay(dir: &Path, site: &Path) -> BuiltOverlay {
    let secrets = example_secrets(dir);
    let out = dir.join("out");
    mailbake_build(site, &secrets, &out);
    let root = dir.join("root");
    unpack_overlay(&out, &root);
    BuiltOverlay { secrets, out, root }
}

/// A copy of the repository's `layers/` at `dest`, modes kept, for a test to change and pass
/// with `--layers`.
pub fn copy_of_layers(dest: &Path) {
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(crate::repo().join("layers"))
        .arg(dest)
        .status()
        .expect("cp runs");
    assert!(
        status.success(),
        "copying layers/ to {} failed",
        dest.display()
    );
}

/// `overlay.tar` from a build, unpacked into `root`.
pub fn unpack_overlay(out: &Path, root: &Path) {
    fs::create_dir_all(root).expect("mkdir root");
    let status = std::process::Command::new("tar")
        .arg("-xf")
        .arg(out.join("overlay.tar"))
        .arg("-C")
        .arg(root)
        .status()
        .expect("tar runs");
    assert!(status.success(), "unpacking overlay.tar failed");
}

/// The shipped chasquid running from an unpacked overlay on loopback ports; killed on drop.
pub struct Chasquid {
    child: std::process::Child,
    pub smtp: u16,
    pub submission: u16,
    pub submission_tls: u16,
    pub config_dir: PathBuf,
    pub log: PathBuf,
    /// chasquid runs in another namespace: its ports cannot be probed from here.
    wrapped: bool,
    _ports: [Port; 3],
}

/// What [`Chasquid::start_with`] changes from [`Chasquid::start`].
#[derive(Clone, Debug, Default)]
pub struct ChasquidOptions {
    /// Extra environment for the daemon, such as a unit's `Environment=` settings.
    pub env: Vec<(String, String)>,
    /// A command prefix chasquid runs under, such as `ip netns exec NAME` (a network
    /// namespace whose network is all chasquid sees; clients must run there too).
    pub wrapper: Vec<String>,
    /// Listen on every address of the (namespace's) host instead of 127.0.0.1 only.
    pub all_addresses: bool,
    /// Keep chasquid.conf's mail log (the image's `<syslog>`) instead of the test log.
    pub keep_mail_log: bool,
}

impl Chasquid {
    /// Starts chasquid with the configuration in `<root>/etc/chasquid` as generated, except
    /// for what cannot be used outside a booted host: listening addresses (loopback ports
    /// instead of systemd sockets), the greeting name, the log (a file), and `data_dir`,
    /// which is relocated into `state` in chasquid.conf itself so chasquid-util finds the
    /// running daemon too. Local delivery goes to a program that always defers, so accepted mail
    /// stays in the queue for the test to read and nothing is delivered anywhere.
    pub fn start(root: &Path, state: &Path, hostname: &str) -> Chasquid {
        Chasquid::start_with(root, state, hostname, &ChasquidOptions::default())
    }

    /// [`Chasquid::start`] with extra environment and, optionally, in a network namespace.
    pub fn start_with(
        root: &Path,
        state: &Path,
        hostname: &str,
        options: &ChasquidOptions,
    ) -> Chasquid {
        let config_dir = root.join("etc/chasquid");
        let conf = config_dir.join("chasquid.conf");
        let text = fs::read_to_string(&conf).expect("chasquid.conf");
        assert_eq!(
            text.matches("\ndata_dir:").count(),
            1,
            "chasquid.conf sets data_dir once"
        );
        let relocated: String = text
            .lines()
            .map(|l| {
                if l.starts_with("data_dir:") {
                    format!("data_dir: {:?}", state.display().to_string())
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        fs::write(&conf, relocated + "\n").expect("relocate data_dir");
        // Held as long as chasquid runs: no other test takes them before or while it listens.
        let ports = [ports::reserve(), ports::reserve(), ports::reserve()];
        let [smtp, submission, submission_tls] = ports.each_ref().map(Port::number);
        let log = state.with_extension("log");
        // Local delivery always fails temporarily (EX_TEMPFAIL), so accepted mail stays queued.
        let mda = state.with_extension("mda");
        fs::write(&mda, "#!/bin/sh\ncat > /dev/null\nexit 75\n").expect("write the test MDA");
        fs::set_permissions(&mda, fs::Permissions::from_mode(0o755)).expect("chmod the test MDA");
        let host = if options.all_addresses {
            ""
        } else {
            "127.0.0.1"
        };
        let mut overrides = format!(
            "smtp_address: \"{host}:{smtp}\" submission_address: \"{host}:{submission}\" \
             submission_over_tls_address: \"{host}:{submission_tls}\" hostname: \"{hostname}\" \
             mail_delivery_agent_bin: \"{}\"",
            mda.display()
        );
        if !options.keep_mail_log {
            overrides.push_str(" mail_log_path: \"<stderr>\"");
        }
        let mut command = match options.wrapper.split_first() {
            Some((program, args)) => {
                let mut c = std::process::Command::new(program);
                c.args(args).arg(chasquid());
                c
            }
            None => std::process::Command::new(chasquid()),
        };
        let child = crate::process::dies_with_test(&mut command)
            .envs(options.env.iter().map(|(k, v)| (k, v)))
            .arg("-config_dir")
            .arg(&config_dir)
            .arg("-config_overrides")
            .arg(overrides)
            .arg("-alsologtostderr")
            .stderr(fs::File::create(&log).expect("log file"))
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("chasquid starts");
        let me = Chasquid {
            child,
            smtp,
            submission,
            submission_tls,
            config_dir,
            log,
            wrapped: !options.wrapper.is_empty(),
            _ports: ports,
        };
        me.wait_listening();
        me
    }

    fn wait_listening(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            let listening = if self.wrapped {
                // Another namespace's ports cannot be reached from here: ask the log.
                let port = format!(":{} (", self.submission_tls);
                self.log_text()
                    .lines()
                    .any(|l| l.contains("Server listening on ") && l.contains(&port))
            } else {
                std::net::TcpStream::connect(("127.0.0.1", self.submission_tls)).is_ok()
            };
            if listening {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!(
            "chasquid did not start listening; its log:\n{}",
            self.log_text()
        );
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs chasquid-util against this daemon's configuration.
    pub fn util(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new(chasquid_util())
            .arg(format!("-C={}", self.config_dir.display()))
            .args(args)
            .output()
            .expect("chasquid-util runs")
    }
}

impl Drop for Chasquid {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A program from the Python test tools' virtualenv (`scripts/test-tools.txt`, installed by
/// `scripts/setup-host` into `$MAILBAKE_TEST_TOOLS`, else /opt/mailbake-test-tools).
pub fn test_tool(name: &str) -> PathBuf {
    let root = std::env::var_os("MAILBAKE_TEST_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/mailbake-test-tools"));
    let bin = root.join("bin").join(name);
    assert!(
        bin.exists(),
        "{} is missing: run scripts/setup-host (it installs scripts/test-tools.txt)",
        bin.display()
    );
    bin
}
