//! The seed stage, checked against its real consumers: cloud-init's schema validator and
//! network-config converter and netplan from the Debian 12 test base (run in a chroot of it),
//! mtools and blkid for the seed image, and the image's own apply-seed script.
//!
//! Needs root (chroot, and the base tarball is built with mmdebstrap's root mode). Secrets
//! come from a store each test creates; nothing secret is committed.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use base64::Engine as _;
use mailbake::secrets::{Password, SecretStore};
use mailbake::seed;
use mailbake::site::DkimAlgorithm;
use sha2::{Digest, Sha256};

const SITE: &str = r#"
site: test
domains:
  example.com:
    users: [i, bob]
    aliases: { postmaster: i }
    dkim:
      selectors:
        2026a-rsa: rsa-2048
        2026a-ed: ed25519
  example.net:
    users: [carol]
    dkim: { selectors: { s1: ed25519 } }
hosts:
  mx1:
    fqdn: smtp.example.com
    ipv4: 203.0.113.10
    ipv6: { address: "2001:db8:1::10/64", gateway: "fe80::1" }
    nameservers: [192.0.2.53]
  mx2:
    fqdn: mx2.example.com
    ipv4: { address: 198.51.100.20/24, gateway: 198.51.100.1 }
    ipv6: { address: "2001:db8:2::20/64", gateway: "2001:db8:2::1" }
    nameservers: [198.51.100.53, "2001:db8:2::53"]
tls:
  files: true
  acme: { provider: rfc2136, email: ops@example.com }
ssh:
  user: ops
  authorized_keys: ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGbOGf3uRz5Q0t1W8Rj6ZC5o1Kj9fOkg2xKX0vPq5Y1a ops@laptop"]
"#;

const ACME_ENV: &[u8] =
    b"RFC2136_NAMESERVER=192.0.2.53\nRFC2136_TSIG_KEY=acme.\nRFC2136_TSIG_SECRET=c2VjcmV0LXRzaWctdGVzdA==\n";

/// A site directory with `site.yaml` and a complete secrets store.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new(site_text: &str) -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join("site.yaml"), site_text).expect("write site");
        let store = SecretStore::create(dir.path().join("secrets")).expect("store");
        for (domain, local) in [
            ("example.com", "i"),
            ("example.com", "bob"),
            ("example.net", "carol"),
        ] {
            let pw = Password::new(format!("{local} has a long password")).expect("password");
            store
                .add_user(&domain.try_into().unwrap(), &local.try_into().unwrap(), &pw)
                .expect("add user");
        }
        for (domain, selector, alg) in [
            ("example.com", "2026a-rsa", DkimAlgorithm::Rsa2048),
            ("example.com", "2026a-ed", DkimAlgorithm::Ed25519),
            ("example.net", "s1", DkimAlgorithm::Ed25519),
        ] {
            store
                .dkim_keygen(
                    &domain.try_into().unwrap(),
                    &selector.try_into().unwrap(),
                    alg,
                    false,
                )
                .expect("keygen");
        }
        store.write_secret("acme.env", ACME_ENV).expect("acme.env");
        let (cert, key) = self_signed();
        store
            .write_secret(mailbake::secrets::TLS_FULLCHAIN, &cert)
            .expect("cert");
        store
            .write_secret(mailbake::secrets::TLS_PRIVKEY, &key)
            .expect("key");
        Fixture { dir }
    }

    fn site(&self) -> PathBuf {
        self.dir.path().join("site.yaml")
    }

    fn secrets(&self) -> PathBuf {
        self.dir.path().join("secrets")
    }

    fn store(&self) -> SecretStore {
        SecretStore::open(self.secrets()).expect("store opens")
    }

    fn seeds(&self) -> Result<Vec<seed::HostSeed>, seed::SeedError> {
        let loaded = mailbake::site::load(&self.site()).expect("site loads");
        let context = mailbake::template::SiteContext::for_site(&loaded).expect("context");
        seed::build(&loaded, &context, Some(&self.store()))
    }

    /// Every secret's bytes, labelled: users databases, their salts and hashes as they appear
    /// in the file, DKIM keys, ACME credentials, the TLS key.
    fn secret_needles(&self) -> Vec<(String, Vec<u8>)> {
        let store = self.store();
        let mut out = Vec::new();
        for domain in ["example.com", "example.net"] {
            let db = store
                .user_db_bytes(&domain.try_into().unwrap())
                .unwrap()
                .expect("users db");
            let text = String::from_utf8(db.clone()).unwrap();
            for line in text.lines() {
                let line = line.trim();
                if let Some(v) = line
                    .strip_prefix("salt: ")
                    .or_else(|| line.strip_prefix("encrypted: "))
                {
                    out.push((format!("{domain} {line}"), v.as_bytes().to_vec()));
                    // ...and the raw bytes those \xNN escapes stand for.
                    let raw: Vec<u8> = v
                        .trim_matches('"')
                        .split("\\x")
                        .filter(|h| !h.is_empty())
                        .map(|h| u8::from_str_radix(h, 16).unwrap())
                        .collect();
                    out.push((format!("{domain} raw {line}"), raw));
                }
            }
            out.push((format!("users db {domain}"), db));
        }
        for (domain, selector) in [
            ("example.com", "2026a-rsa"),
            ("example.com", "2026a-ed"),
            ("example.net", "s1"),
        ] {
            let pem = store
                .dkim_key(&domain.try_into().unwrap(), &selector.try_into().unwrap())
                .unwrap()
                .pem()
                .to_string();
            let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
            out.push((format!("dkim {domain} {selector}"), pem.into_bytes()));
            out.push((
                format!("dkim raw body {domain} {selector}"),
                body.into_bytes(),
            ));
        }
        out.push(("acme.env".into(), ACME_ENV.to_vec()));
        out.push(("tsig secret".into(), b"c2VjcmV0LXRzaWctdGVzdA==".to_vec()));
        let key = store
            .read_secret(mailbake::secrets::TLS_PRIVKEY)
            .unwrap()
            .unwrap()
            .to_vec();
        out.push(("tls key".into(), key));
        out
    }
}

fn self_signed() -> (Vec<u8>, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "30", "-subj", "/CN=smtp.example.com"])
        .arg("-keyout")
        .arg(dir.path().join("k"))
        .arg("-out")
        .arg(dir.path().join("c"))
        .output()
        .expect("openssl runs");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    (
        fs::read(dir.path().join("c")).unwrap(),
        fs::read(dir.path().join("k")).unwrap(),
    )
}

fn mailbake_build(site: &Path, secrets: &Path, out: &Path, envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mailbake"));
    cmd.arg("build")
        .arg(site)
        .arg("--out")
        .arg(out)
        .arg("--secrets")
        .arg(secrets);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().expect("mailbake runs")
}

/// One full build of the fixture site, shared by the tests that only read it.
fn built() -> &'static (Fixture, PathBuf) {
    static BUILT: OnceLock<(Fixture, PathBuf)> = OnceLock::new();
    BUILT.get_or_init(|| {
        let fx = Fixture::new(SITE);
        let out = fx.dir.path().join("out");
        let result = mailbake_build(&fx.site(), &fx.secrets(), &out, &[]);
        assert!(
            result.status.success(),
            "build failed:\n{}",
            String::from_utf8_lossy(&result.stderr)
        );
        (fx, out)
    })
}

fn sha256_file(path: &Path) -> String {
    hex::encode(Sha256::digest(fs::read(path).unwrap()))
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && memchr::memmem::find(hay, needle).is_some()
}

/// user-data's write_files, decoded: (path, bytes).
fn written_files(user_data: &[u8]) -> Vec<(String, Vec<u8>)> {
    let doc: serde_json::Value = serde_norway::from_slice(user_data).expect("user-data is YAML");
    doc["write_files"]
        .as_array()
        .expect("write_files")
        .iter()
        .map(|e| {
            let content = e["content"].as_str().unwrap_or("");
            let bytes = if e["encoding"] == "b64" {
                base64::engine::general_purpose::STANDARD
                    .decode(content)
                    .unwrap()
            } else {
                content.as_bytes().to_vec()
            };
            (e["path"].as_str().unwrap().to_string(), bytes)
        })
        .collect()
}

// ---- the Debian 12 test base, for the real cloud-init and netplan -----------------------

/// The test base's root, extracted once per tarball (its name is the digest of its inputs)
/// under the mailbake cache, and reused by later runs.
fn base_root() -> PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        assert!(
            nix_is_root(),
            "the seed tests chroot into the Debian test base and must run as root"
        );
        let out = Command::new(testkit::repo().join("qemu-tests/base/build.sh"))
            .output()
            .expect("qemu-tests/base/build.sh runs");
        assert!(
            out.status.success(),
            "base build failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let tarball = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
        let key = tarball.file_stem().unwrap().to_string_lossy().to_string();
        let cache = tarball
            .parent()
            .unwrap()
            .parent()
            .unwrap()
            .join("base-root");
        let root = cache.join(&key);
        // dev/null is among the last things written: python's ctypes (netplan) needs it.
        if !root.join("usr/bin/cloud-init").exists() || !root.join("dev/null").exists() {
            fs::create_dir_all(&cache).unwrap();
            let staging = tempfile::tempdir_in(&cache).unwrap();
            let status = Command::new("tar")
                .arg("-xf")
                .arg(&tarball)
                .arg("-C")
                .arg(staging.path())
                .arg("--numeric-owner")
                .status()
                .expect("tar runs");
            assert!(status.success(), "extracting {}", tarball.display());
            if root.exists() && !root.join("dev/null").exists() {
                // An incomplete extraction by an older version of this helper.
                let _ = fs::remove_dir_all(&root);
            }
            // Another test process may have won; both copies are the same tarball.
            let _ = fs::rename(staging.keep(), &root);
        }
        root
    })
    .clone()
}

fn nix_is_root() -> bool {
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// A scratch directory inside the base root, removed on drop, and its path as seen inside.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        let tmp = base_root().join("tmp");
        Scratch {
            dir: tempfile::Builder::new()
                .prefix("mailbake-seed-test-")
                .tempdir_in(tmp)
                .unwrap(),
        }
    }
    fn host(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    fn inside(&self, rel: &str) -> String {
        let name = self.dir.path().file_name().unwrap().to_string_lossy();
        format!("/tmp/{name}/{rel}")
    }
}

fn chroot(args: &[&str]) -> Output {
    let out = Command::new("chroot")
        .arg(base_root())
        .args(args)
        .env("LC_ALL", "C.UTF-8")
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .output()
        .expect("chroot runs");
    assert!(
        out.status.success(),
        "{args:?} failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

// ---- tests ------------------------------------------------------------------------------

#[test]
fn cloud_init_accepts_user_data_and_netplan_renders_network_config() {
    let (_, out) = built();
    for host in ["mx1", "mx2"] {
        let scratch = Scratch::new();
        let seed_dir = out.join(format!("hosts/{host}/seed"));
        for f in ["user-data", "network-config"] {
            fs::copy(seed_dir.join(f), scratch.host(f)).unwrap();
        }

        let schema = chroot(&[
            "cloud-init",
            "schema",
            "--config-file",
            &scratch.inside("user-data"),
        ]);
        let said = String::from_utf8_lossy(&schema.stdout);
        assert!(said.contains("Valid cloud-config"), "{host}: {said}");

        // cloud-init turns network-config into netplan YAML exactly as at boot; netplan then
        // generates the systemd-networkd units the host will run.
        let network_config = fs::read(scratch.host("network-config")).unwrap();
        let units: String = netplan_networkd_files(&network_config)
            .into_iter()
            .map(|(_, bytes)| String::from_utf8(bytes).unwrap())
            .collect();
        let has = |s: &str| units.contains(s);
        assert!(has("Name=e*"), "{host}: {units}");
        assert!(has("IPv6AcceptRA=no"), "{host}: {units}");
        assert!(has("Destination=::/0"), "{host}: {units}");
        match host {
            "mx1" => {
                assert!(
                    has("Address=2001:db8:1::10/64") && has("Gateway=fe80::1"),
                    "{units}"
                );
                assert!(
                    has("GatewayOnLink=true"),
                    "link-local gateway needs on-link: {units}"
                );
                assert!(has("DHCP=ipv4"), "{units}");
                // The site's resolver only: DHCP's DNS servers are not used.
                assert!(has("DNS=192.0.2.53") && has("UseDNS=false"), "{units}");
            }
            _ => {
                assert!(
                    has("Address=2001:db8:2::20/64") && has("Gateway=2001:db8:2::1"),
                    "{units}"
                );
                assert!(
                    !has("GatewayOnLink"),
                    "in-prefix gateway needs no on-link: {units}"
                );
                assert!(
                    has("Address=198.51.100.20/24") && has("Gateway=198.51.100.1"),
                    "{units}"
                );
                assert!(
                    has("DNS=198.51.100.53") && has("DNS=2001:db8:2::53"),
                    "{units}"
                );
                assert!(!has("DHCP=ipv4") && !has("DHCP=yes"), "{units}");
            }
        }
    }
}

/// The image replaces the distribution's cloud-init module lists with its own short ones
/// (layers/base/etc/cloud/cloud.cfg.d/99-mailbake.cfg), so a key of the seed's user-data that
/// no listed module reads would be ignored at boot without a word. Every key must be read by a
/// listed module, and every listed module must exist in the real cloud-init.
#[test]
fn every_user_data_key_is_read_by_a_module_the_image_runs() {
    // Which cloud-init module reads each top-level key (cloud-init's module reference).
    const READ_BY: &[(&str, &str)] = &[
        ("hostname", "set_hostname"),
        ("fqdn", "set_hostname"),
        ("prefer_fqdn_over_hostname", "set_hostname"),
        ("manage_etc_hosts", "update_etc_hosts"),
        ("users", "users_groups"),
        ("disable_root", "ssh"),
        ("ssh_pwauth", "set_passwords"),
        ("write_files", "write_files"),
    ];
    let (_, out) = built();
    let cfg_path = "etc/cloud/cloud.cfg.d/99-mailbake.cfg";
    let cfg: serde_json::Value = serde_norway::from_slice(&overlay_file(out, cfg_path))
        .expect("the cloud-init config is YAML");
    let mut modules = Vec::new();
    for stage in [
        "cloud_init_modules",
        "cloud_config_modules",
        "cloud_final_modules",
    ] {
        let list = cfg[stage]
            .as_array()
            .unwrap_or_else(|| panic!("{cfg_path} lists no {stage}"));
        modules.extend(
            list.iter()
                .map(|m| m.as_str().expect("a module name").to_string()),
        );
    }
    let config_dir = base_root().join("usr/lib/python3/dist-packages/cloudinit/config");
    for module in &modules {
        assert!(
            config_dir.join(format!("cc_{module}.py")).is_file(),
            "{cfg_path} lists `{module}`, which the test base's cloud-init does not have"
        );
    }
    for host in ["mx1", "mx2"] {
        let user_data = fs::read(out.join(format!("hosts/{host}/seed/user-data"))).unwrap();
        let doc: serde_json::Value =
            serde_norway::from_slice(&user_data).expect("user-data is YAML");
        let keys = doc.as_object().expect("user-data is a mapping");
        assert!(keys.contains_key("write_files"), "{host}: positive control");
        for key in keys.keys() {
            let module = READ_BY
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, m)| *m)
                .unwrap_or_else(|| {
                    panic!("{host}: user-data sets `{key}`, which this test does not know: add the module that reads it here and to {cfg_path}")
                });
            assert!(
                modules.iter().any(|m| m == module),
                "{host}: user-data sets `{key}`, read by `{module}`, which {cfg_path} does not run: {modules:?}"
            );
        }
    }
}

#[test]
fn user_data_carries_identity_operator_and_every_secret() {
    let (fx, out) = built();
    let user_data = fs::read(out.join("hosts/mx1/seed/user-data")).unwrap();
    assert!(user_data.starts_with(b"#cloud-config\n"));
    let doc: serde_json::Value = serde_norway::from_slice(&user_data).unwrap();
    assert_eq!(doc["hostname"], "smtp.example.com");
    assert_eq!(doc["fqdn"], "smtp.example.com");
    assert_eq!(doc["prefer_fqdn_over_hostname"], true);
    let user = &doc["users"][0];
    assert_eq!(user["name"], "ops");
    assert_eq!(user["sudo"], "ALL=(ALL) NOPASSWD:ALL");
    assert!(
        user["ssh_authorized_keys"][0]
            .as_str()
            .unwrap()
            .starts_with("ssh-ed25519 ")
    );

    let files = written_files(&user_data);
    let staged = |dest: &str| {
        files
            .iter()
            .find(|(p, _)| p == &format!("/run/mailbake/seed/files{dest}"))
            .map(|(_, b)| b.clone())
            .unwrap_or_else(|| panic!("{dest} not staged"))
    };
    let store = fx.store();
    assert_eq!(
        staged("/etc/chasquid/domains/example.com/users"),
        store
            .user_db_bytes(&"example.com".try_into().unwrap())
            .unwrap()
            .unwrap()
    );
    assert_eq!(
        staged("/etc/chasquid/domains/example.net/users"),
        store
            .user_db_bytes(&"example.net".try_into().unwrap())
            .unwrap()
            .unwrap()
    );
    assert_eq!(
        staged("/etc/chasquid/domains/example.com/dkim:2026a-rsa.pem"),
        store
            .dkim_key(
                &"example.com".try_into().unwrap(),
                &"2026a-rsa".try_into().unwrap()
            )
            .unwrap()
            .pem()
            .as_bytes()
    );
    assert_eq!(staged("/etc/mailbake/acme.env"), ACME_ENV);
    let key = store
        .read_secret(mailbake::secrets::TLS_PRIVKEY)
        .unwrap()
        .unwrap()
        .to_vec();
    assert_eq!(
        staged("/etc/chasquid/certs/smtp.example.com/privkey.pem"),
        key
    );

    let manifest = String::from_utf8(staged_manifest(&files)).unwrap();
    for line in [
        "d 0750 root chasquid /etc/chasquid/certs/smtp.example.com",
        "f 0640 root chasquid /etc/chasquid/domains/example.com/users",
        "f 0640 root chasquid /etc/chasquid/domains/example.com/dkim:2026a-ed.pem",
        "f 0640 root chasquid /etc/chasquid/domains/example.net/dkim:s1.pem",
        "f 0640 root chasquid /etc/chasquid/certs/smtp.example.com/privkey.pem",
        "f 0600 root root /etc/mailbake/acme.env",
    ] {
        assert!(
            manifest.lines().any(|l| l == line),
            "missing `{line}` in\n{manifest}"
        );
    }
    // Staged copies are root-only whatever their final mode.
    let doc_files = doc["write_files"].as_array().unwrap();
    assert!(
        doc_files
            .iter()
            .all(|e| e["permissions"] == "0600" && e["owner"] == "root:root")
    );

    let meta = fs::read_to_string(out.join("hosts/mx1/seed/meta-data")).unwrap();
    assert!(
        meta.contains("local-hostname: \"smtp.example.com\""),
        "{meta}"
    );
    for f in [
        "seed/user-data",
        "seed/meta-data",
        "seed/network-config",
        "seed.img",
    ] {
        let mode = fs::metadata(out.join("hosts/mx1").join(f))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{f}");
    }
}

fn staged_manifest(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    files
        .iter()
        .find(|(p, _)| p == "/run/mailbake/seed/manifest")
        .expect("manifest")
        .1
        .clone()
}

#[test]
fn no_secret_in_the_overlay_and_every_secret_in_user_data() {
    let (fx, out) = built();
    let overlay = fs::read(out.join("overlay.tar")).unwrap();
    let user_data = fs::read(out.join("hosts/mx1/seed/user-data")).unwrap();
    let decoded: Vec<u8> = written_files(&user_data)
        .into_iter()
        .flat_map(|(_, b)| b)
        .collect();
    let needles = fx.secret_needles();
    assert!(needles.len() >= 15, "too few needles: {}", needles.len());
    for (what, needle) in &needles {
        assert!(
            !contains(&overlay, needle),
            "{what} leaked into overlay.tar"
        );
        // Raw salt/hash bytes exist only as \xNN text in the users file, a key's base64 body
        // only split into PEM lines: those needles guard the overlay against re-encoded copies.
        assert!(
            what.contains(" raw ") || contains(&decoded, needle),
            "{what} is missing from user-data (positive control)"
        );
    }
}

#[test]
fn seed_image_is_cidata_with_the_three_files_and_reproducible() {
    let (fx, out) = built();
    for host in ["mx1", "mx2"] {
        let img = out.join(format!("hosts/{host}/seed.img"));
        let blkid = Command::new("blkid")
            .args(["-p", "-o", "export"])
            .arg(&img)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&blkid.stdout);
        assert!(
            said.contains("LABEL=cidata") && said.contains("TYPE=vfat"),
            "{host}: {said}"
        );

        let mdir = Command::new("mdir")
            .args(["-b", "-i"])
            .arg(&img)
            .arg("::")
            .output()
            .unwrap();
        assert!(
            mdir.status.success(),
            "{}",
            String::from_utf8_lossy(&mdir.stderr)
        );
        let mut names: Vec<String> = String::from_utf8_lossy(&mdir.stdout)
            .lines()
            .map(|l| l.trim_start_matches("::/").to_string())
            .collect();
        names.sort();
        assert_eq!(
            names,
            ["meta-data", "network-config", "user-data"],
            "{host}"
        );
        for name in &names {
            let mtype = Command::new("mtype")
                .args(["-i"])
                .arg(&img)
                .arg(format!("::{name}"))
                .output()
                .unwrap();
            assert!(mtype.status.success());
            assert_eq!(
                mtype.stdout,
                fs::read(out.join(format!("hosts/{host}/seed/{name}"))).unwrap(),
                "{host} {name}"
            );
        }
    }

    // A second build elsewhere, with another umask, time zone and clock: same seed bytes.
    let other = fx.dir.path().join("elsewhere/out2");
    let result = Command::new("sh")
        .arg("-c")
        .arg(r#"umask 077; exec "$@""#)
        .arg("sh")
        .arg(env!("CARGO_BIN_EXE_mailbake"))
        .arg("build")
        .arg(fx.site())
        .arg("--out")
        .arg(&other)
        .arg("--secrets")
        .arg(fx.secrets())
        .env("TZ", "Pacific/Kiritimati")
        .output()
        .unwrap();
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    for f in [
        "seed.img",
        "seed/user-data",
        "seed/meta-data",
        "seed/network-config",
    ] {
        let a = sha256_file(&out.join("hosts/mx1").join(f));
        let b = sha256_file(&other.join("hosts/mx1").join(f));
        assert_eq!(a, b, "{f} differs between builds");
        eprintln!("mx1/{f}: {a} == {b}");
    }
}

#[test]
fn instance_id_changes_with_a_secret_and_only_then() {
    let fx = Fixture::new(SITE);
    let ids = |fx: &Fixture| -> Vec<String> {
        fx.seeds()
            .unwrap()
            .into_iter()
            .map(|s| s.instance_id)
            .collect()
    };
    let first = ids(&fx);
    assert_eq!(first, ids(&fx), "same inputs, same instance-id");
    assert_ne!(first[0], first[1], "hosts differ");
    let meta = &fx.seeds().unwrap()[0].meta_data;
    assert!(String::from_utf8_lossy(meta).contains(&first[0]));

    fx.store()
        .dkim_keygen(
            &"example.net".try_into().unwrap(),
            &"s1".try_into().unwrap(),
            DkimAlgorithm::Ed25519,
            true,
        )
        .unwrap();
    let rotated = ids(&fx);
    assert!(
        rotated.iter().zip(&first).all(|(a, b)| a != b),
        "a new DKIM key must change every host's id"
    );

    let pw = Password::new("another long password".into()).unwrap();
    fx.store()
        .remove_user(
            &"example.com".try_into().unwrap(),
            &"bob".try_into().unwrap(),
        )
        .unwrap();
    fx.store()
        .add_user(
            &"example.com".try_into().unwrap(),
            &"bob".try_into().unwrap(),
            &pw,
        )
        .unwrap();
    let repassworded = ids(&fx);
    assert!(
        repassworded.iter().zip(&rotated).all(|(a, b)| a != b),
        "a new password must change the id"
    );

    fx.store()
        .write_secret("acme.env", b"RFC2136_TSIG_SECRET=rotated\n")
        .unwrap();
    assert!(
        ids(&fx).iter().zip(&repassworded).all(|(a, b)| a != b),
        "new ACME credentials must change the id"
    );
}

fn assert_fails_cleanly(fx: &Fixture, expect: &[&str]) {
    let out = fx.dir.path().join("out-fail");
    let result = mailbake_build(&fx.site(), &fx.secrets(), &out, &[]);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(1), "{stderr}");
    for e in expect {
        assert!(stderr.contains(e), "expected `{e}` in:\n{stderr}");
    }
    assert!(!out.exists(), "nothing may be written on failure");
    let leftovers: Vec<_> = fs::read_dir(fx.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with(".mailbake"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_user_without_a_hash_is_an_error_naming_the_fix() {
    let fx = Fixture::new(&SITE.replace("users: [carol]", "users: [carol, dave]"));
    assert_fails_cleanly(
        &fx,
        &[
            "dave@example.net",
            "mailbake user add",
            "site.yaml dave@example.net",
        ],
    );
}

#[test]
fn a_selector_without_a_key_is_an_error_naming_the_fix() {
    let fx = Fixture::new(&SITE.replace("s1: ed25519", "s1: ed25519, s2: ed25519"));
    assert_fails_cleanly(
        &fx,
        &[
            "selector s2 of example.net",
            "mailbake dkim keygen",
            "example.net",
        ],
    );
}

#[test]
fn acme_without_credentials_is_an_error_naming_the_fix() {
    let fx = Fixture::new(SITE);
    fs::remove_file(fx.secrets().join("acme.env")).unwrap();
    assert_fails_cleanly(&fx, &["tls.acme", "acme.env", "NAME=value"]);
}

/// systemd ends an EnvironmentFile line at CR: `A=x\rB=y` is two variables on the host and
/// one value for `mailbake cert`. The build ships no file the two would read differently.
#[test]
fn acme_credentials_with_cr_or_nul_are_refused() {
    for (bytes, line) in [
        (
            &b"RFC2136_TSIG_KEY=acme.\rRFC2136_NAMESERVER=198.51.100.1\n"[..],
            1,
        ),
        (
            &b"RFC2136_TSIG_KEY=acme.\nRFC2136_TSIG_SECRET=c2Vj\0cmV0\n"[..],
            2,
        ),
    ] {
        let fx = Fixture::new(SITE);
        fx.store()
            .write_secret("acme.env", bytes)
            .expect("acme.env");
        assert_fails_cleanly(
            &fx,
            &[
                &format!("acme.env:{line}:"),
                "carriage return (CR) or a NUL byte",
                "fix:",
            ],
        );
    }
}

/// One file of the built overlay, as the image has it.
fn overlay_file(out: &Path, path: &str) -> Vec<u8> {
    let tar = Command::new("tar")
        .arg("-xOf")
        .arg(out.join("overlay.tar"))
        .arg(path)
        .output()
        .expect("tar runs");
    assert!(tar.status.success(), "{path} is not in overlay.tar");
    tar.stdout
}

/// Stages `user_data`'s files exactly as cloud-init's write_files would, under `stage/` of
/// `scratch`, and puts the image's apply-seed and seed.conf (from the built overlay) beside.
fn stage_seed(scratch: &Scratch, out: &Path, user_data: &[u8]) {
    let stage_dir = String::from_utf8(overlay_file(out, "usr/lib/mailbake/seed.conf"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("stage_dir=").map(str::to_string))
        .expect("seed.conf names stage_dir");
    for (path, bytes) in written_files(user_data) {
        let rel = path
            .strip_prefix(&format!("{stage_dir}/"))
            .unwrap_or_else(|| panic!("{path} is staged outside {stage_dir}"));
        let target = scratch.host(&format!("stage/{rel}"));
        fs::create_dir_all(target.parent().unwrap()).unwrap();
        fs::write(&target, bytes).unwrap();
    }
    for file in ["apply-seed", "seed.conf"] {
        fs::write(
            scratch.host(file),
            overlay_file(out, &format!("usr/lib/mailbake/{file}")),
        )
        .unwrap();
    }
}

/// Runs the image's apply-seed in the Debian base with a chasquid group (gid 4242), under the
/// scratch root, with the stage `stage_seed` made; systemctl calls go to `calls`.
fn run_apply_seed(scratch: &Scratch) -> Output {
    fs::write(
        scratch.host("fake-systemctl"),
        format!("#!/bin/sh\necho \"$*\" >> {}\n", scratch.inside("calls")),
    )
    .unwrap();
    fs::write(
        scratch.host("fake-networkctl"),
        format!(
            "#!/bin/sh\necho \"networkctl $*\" >> {}\n",
            scratch.inside("calls")
        ),
    )
    .unwrap();
    // The chasquid group the image's sysusers entry creates at boot, added to a copy of the
    // base's group file bind-mounted in a private mount namespace: the cached base stays as
    // it was.
    let mut group = fs::read_to_string(base_root().join("etc/group")).unwrap();
    assert!(!group.contains(":4242:"));
    group.push_str("chasquid:x:4242:\n");
    fs::write(scratch.host("group"), group).unwrap();
    let script = format!(
        "mount --bind {group} {root}/etc/group && exec chroot {root} env MAILBAKE_ROOT={r} MAILBAKE_SEED_STAGE={stage} MAILBAKE_SEED_FORMAT={format} SYSTEMCTL='sh {fake}' NETWORKCTL='sh {fake_nc}' sh {apply}",
        group = scratch.host("group").display(),
        root = base_root().display(),
        r = scratch.inside("root"),
        stage = scratch.inside("stage"),
        format = scratch.inside("seed.conf"),
        fake = scratch.inside("fake-systemctl"),
        fake_nc = scratch.inside("fake-networkctl"),
        apply = scratch.inside("apply-seed"),
    );
    Command::new("unshare")
        .args(["-m", "sh", "-c", &script])
        .output()
        .unwrap()
}

#[test]
fn the_image_script_installs_the_staged_seed_atomically_with_owners_and_modes() {
    let (_, out) = built();
    let user_data = fs::read(out.join("hosts/mx1/seed/user-data")).unwrap();
    let scratch = Scratch::new();
    stage_seed(&scratch, out, &user_data);
    // Leftovers of an earlier seed: a retired DKIM key and an old users file must go.
    let old = scratch.host("root/etc/chasquid/domains/example.com");
    fs::create_dir_all(&old).unwrap();
    fs::write(old.join("dkim:2020-old.pem"), "old").unwrap();
    fs::create_dir_all(scratch.host("root/etc/chasquid/domains/gone.example")).unwrap();
    fs::write(
        scratch.host("root/etc/chasquid/domains/gone.example/users"),
        "",
    )
    .unwrap();
    let gid = 4242;
    let run = run_apply_seed(&scratch);
    assert!(
        run.status.success(),
        "apply-seed failed:\n{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    let calls = fs::read_to_string(scratch.host("calls")).unwrap();
    assert_eq!(
        calls.lines().collect::<Vec<_>>(),
        [
            "networkctl reload",
            "try-restart --no-block chasquid.service"
        ],
        "networkd reloads for the seed's new network file, chasquid restarts once"
    );

    let root = scratch.host("root");
    let check = |rel: &str, mode: u32, group: u32| {
        let meta = fs::metadata(root.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
        assert_eq!(
            (meta.mode() & 0o7777, meta.uid(), meta.gid()),
            (mode, 0, group),
            "{rel}"
        );
    };
    check("etc/chasquid/domains/example.com/users", 0o640, gid);
    check(
        "etc/chasquid/domains/example.com/dkim:2026a-rsa.pem",
        0o640,
        gid,
    );
    check("etc/chasquid/domains/example.net/dkim:s1.pem", 0o640, gid);
    check("etc/chasquid/certs/smtp.example.com", 0o750, gid);
    check(
        "etc/chasquid/certs/smtp.example.com/privkey.pem",
        0o640,
        gid,
    );
    check("etc/mailbake/acme.env", 0o600, 0);
    check("etc/systemd/network/05-mailbake-uplink.network", 0o644, 0);
    check("etc/mailbake/host.conf", 0o644, 0);
    assert!(
        fs::read_to_string(root.join("etc/mailbake/host.conf"))
            .unwrap()
            .contains("\nipv6=2001:db8:1::10\nipv6_prefix=64\nipv6_gateway=fe80::1\n"),
        "host.conf names the host's IPv6"
    );
    // The same seed again (a reboot that re-applies it): the network file is unchanged, so
    // networkd is not reloaded (a reload reconfigures the link).
    fs::write(scratch.host("calls"), "").unwrap();
    stage_seed(&scratch, out, &user_data);
    let again = run_apply_seed(&scratch);
    assert!(again.status.success());
    assert_eq!(
        fs::read_to_string(scratch.host("calls"))
            .unwrap()
            .lines()
            .collect::<Vec<_>>(),
        ["try-restart --no-block chasquid.service"],
        "an unchanged network file: no reload"
    );
    assert_eq!(
        fs::read(root.join("etc/mailbake/acme.env")).unwrap(),
        ACME_ENV
    );
    assert!(
        !old.join("dkim:2020-old.pem").exists(),
        "retired DKIM key must be removed"
    );
    assert!(
        !scratch
            .host("root/etc/chasquid/domains/gone.example/users")
            .exists()
    );
    assert!(!scratch.host("stage").exists(), "the stage must be wiped");
    let temps: Vec<_> = walk(&root)
        .into_iter()
        .filter(|p| p.contains(".apply-seed."))
        .collect();
    assert!(temps.is_empty(), "{temps:?}");
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        out.push(p.to_string_lossy().to_string());
        if p.is_dir() {
            out.extend(walk(&p));
        }
    }
    out
}

#[test]
fn the_image_script_refuses_a_manifest_version_it_does_not_know() {
    let (_, out) = built();
    let user_data = fs::read(out.join("hosts/mx1/seed/user-data")).unwrap();
    let known = String::from_utf8(overlay_file(out, "usr/lib/mailbake/seed.conf"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("manifest_version=").map(str::to_string))
        .expect("seed.conf names manifest_version");
    let staged = String::from_utf8(staged_manifest(&written_files(&user_data))).unwrap();
    let version_line = format!("v {known}");
    assert!(
        staged.lines().any(|l| l == version_line),
        "the seed's manifest is version {known}:\n{staged}"
    );
    let next: u32 = known.parse::<u32>().unwrap() + 1;
    for (what, manifest, says) in [
        (
            "a newer version",
            staged.replace(&version_line, &format!("v {next}")),
            format!("version {next}"),
        ),
        (
            "no version line (version 1 had none)",
            staged
                .lines()
                .filter(|l| *l != version_line)
                .map(|l| format!("{l}\n"))
                .collect(),
            "version none".to_string(),
        ),
    ] {
        let scratch = Scratch::new();
        stage_seed(&scratch, out, &user_data);
        fs::write(scratch.host("stage/manifest"), &manifest).unwrap();
        let run = run_apply_seed(&scratch);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success(), "{what}: apply-seed accepted it");
        assert!(
            stderr.contains(&says) && stderr.contains(&format!("reads version {known}")),
            "{what}: {stderr}"
        );
        assert!(
            !scratch.host("root").exists() && !scratch.host("calls").exists(),
            "{what}: something was installed or restarted"
        );
        assert!(
            scratch.host("stage/manifest").exists(),
            "{what}: the stage is kept for inspection"
        );
    }
}

/// Strings that break YAML, or change their meaning, when written without quoting.
const HOSTILE: &[&str] = &[
    "\"double\" and 'single' quotes",
    "line\nbreak and\r\ncarriage\rreturns",
    "# not a comment",
    "key: value",
    "- not a list item",
    "* not an alias",
    "&anchor",
    "!tag",
    "{{ not a template }} {% nor this %}",
    "[flow] {map}",
    "| literal > folded",
    "yes",
    "~",
    "  spaces around  ",
    "line\u{2028}separator\u{2029}paragraph\u{85}nel",
    "bom\u{feff}",
    "tab\tdel\u{7f}esc\u{1b}",
    "ünïcödé ✉ 𝄞 📬",
    "---",
];

#[test]
fn hostile_values_come_back_exactly_from_user_data_network_config_and_meta_data() {
    use mailbake::template::SiteContext;
    let fx = Fixture::new(SITE);
    let loaded = mailbake::site::load(&fx.site()).expect("site loads");
    let material = seed::Material::collect(&loaded, Some(&fx.store())).expect("secrets");
    let (name, host) = loaded.site.hosts.iter().next().expect("a host");
    let scratch = Scratch::new();
    let mut inside = Vec::new();
    for (i, value) in HOSTILE.iter().enumerate() {
        let mut site = SiteContext::for_site(&loaded).expect("context");
        site.site = value.to_string();
        site.operator.user = value.to_string();
        site.operator.authorized_keys = HOSTILE.iter().map(|v| v.to_string()).collect();
        let mut ctx = seed::host_context(&site, name, host, &material);
        // The host's names and addresses also go into the networkd file and host.conf, whose
        // values must be one field each (`word`): a value with white space or control
        // characters, or an empty one, fails the render there, naming the template. The site
        // model never lets one through; the YAML files are then checked with plain ones.
        let one_field =
            !value.is_empty() && value.chars().all(|c| !c.is_whitespace() && !c.is_control());
        ctx.host.name = value.to_string();
        ctx.host.fqdn = value.to_string();
        ctx.network.addresses = vec![value.to_string()];
        ctx.network.nameservers = vec![value.to_string()];
        let (host_value, network_value) = if one_field {
            (*value, *value)
        } else {
            let refused = seed::render(&ctx).expect_err("a value that is not one field");
            assert!(
                refused.to_string().contains("cloud-init/networkd.j2")
                    || refused.to_string().contains("cloud-init/host.conf.j2"),
                "{value:?}: {refused}"
            );
            ctx.host.name = "mx1".into();
            ctx.host.fqdn = "mx1.example.com".into();
            ctx.network.addresses = vec!["192.0.2.1/24".into()];
            ctx.network.nameservers = vec!["192.0.2.53".into()];
            ("mx1.example.com", "192.0.2.53")
        };
        // A staged file whose bytes are the value: base64 or a literal block, exactly.
        let data = format!("{value}\n").into_bytes();
        ctx.files.push(
            seed::StagedFile::root_only(format!("/etc/mailbake/hostile-{i}"), data.clone())
                .context(),
        );
        let files = seed::render(&ctx).unwrap_or_else(|e| panic!("{value:?}: {e}"));

        let user_data: serde_json::Value = serde_norway::from_slice(&files.user_data)
            .unwrap_or_else(|e| {
                panic!(
                    "{value:?}: {e}\n{}",
                    String::from_utf8_lossy(&files.user_data)
                )
            });
        assert_eq!(user_data["hostname"], host_value);
        assert_eq!(user_data["fqdn"], host_value);
        assert_eq!(user_data["users"][0]["name"], *value);
        assert_eq!(
            user_data["users"][0]["ssh_authorized_keys"],
            serde_json::json!(HOSTILE)
        );
        let staged = written_files(&files.user_data);
        let (_, bytes) = staged
            .iter()
            .find(|(p, _)| p.ends_with(&format!("/etc/mailbake/hostile-{i}")))
            .expect("the hostile file is staged");
        assert_eq!(bytes, &data, "{value:?}");

        let network: serde_json::Value =
            serde_norway::from_slice(&files.network_config).expect("network-config is YAML");
        let uplink = &network["ethernets"]["uplink"];
        if one_field {
            assert_eq!(uplink["addresses"][0], network_value);
        }
        assert_eq!(uplink["nameservers"]["addresses"][0], network_value);
        let meta: serde_json::Value =
            serde_norway::from_slice(&files.meta_data).expect("meta-data is YAML");
        assert_eq!(meta["local-hostname"], host_value);
        assert_eq!(meta["instance-id"], files.instance_id.as_str());

        let file = format!("user-data-{i}");
        fs::write(scratch.host(&file), &files.user_data).unwrap();
        inside.push(scratch.inside(&file));
    }
    // cloud-init's own parser and schema validator, on every document, in one chroot.
    let script = format!(
        "for f in {}; do cloud-init schema --config-file \"$f\" | grep -q 'Valid cloud-config' || {{ echo \"$f\"; exit 1; }}; done",
        inside.join(" ")
    );
    chroot(&["sh", "-c", &script]);
}

#[test]
fn a_path_that_is_not_one_manifest_field_fails_the_render() {
    use mailbake::template::SiteContext;
    let fx = Fixture::new(SITE);
    let loaded = mailbake::site::load(&fx.site()).expect("site loads");
    let material = seed::Material::collect(&loaded, Some(&fx.store())).expect("secrets");
    let site = SiteContext::for_site(&loaded).expect("context");
    let (name, host) = loaded.site.hosts.iter().next().expect("a host");
    for path in ["/etc/with space", "/etc/with\nnewline", ""] {
        let mut ctx = seed::host_context(&site, name, host, &material);
        ctx.files[0].path = path.to_string();
        let err = seed::render(&ctx).expect_err(path).to_string();
        assert!(err.contains("manifest"), "{path:?}: {err}");
    }
}

// ---- the host's network: the seed's networkd file against the provider's configuration ----

/// The MAC of the test's interface.
const PROVIDER_MAC: &str = "52:54:00:12:34:56";

/// Network configurations as a provider's datasource hands them to cloud-init: IPv4 only,
/// with the provider's own interface ids; one also carries the host's IPv6 address. They
/// match by name: netplan turns a MAC match into `PermanentMACAddress=`, which the veth this
/// test runs networkd on does not have (qemu-tests/provider.rs boots MAC matches on a real
/// virtio NIC).
fn provider_network_configs() -> [(&'static str, &'static str, String); 3] {
    [
        (
            "static IPv4, id eth0 matched by name",
            "mx2",
            "version: 2\nethernets:\n  eth0:\n    match:\n      name: eth0\n    \
             addresses: [198.51.100.20/24]\n    routes: [{to: 0.0.0.0/0, via: 198.51.100.1}]\n    \
             nameservers: {addresses: [198.51.100.53]}\n"
                .to_string(),
        ),
        (
            "IPv4 by DHCP, id id0 matched by a name glob",
            "mx1",
            "version: 2\nethernets:\n  id0:\n    match:\n      name: \"e*\"\n    dhcp4: true\n".to_string(),
        ),
        (
            "static IPv4 and the same IPv6, id net0",
            "mx2",
            "version: 2\nethernets:\n  net0:\n    match:\n      name: \"eth*\"\n    \
             addresses: [198.51.100.20/24, \"2001:db8:2::20/64\"]\n    routes:\n      - {to: 0.0.0.0/0, via: 198.51.100.1}\n      \
             - {to: \"::/0\", via: \"2001:db8:2::1\"}\n"
                .to_string(),
        ),
    ]
}

/// The systemd-networkd files the real cloud-init and netplan of the test base make of
/// `network_config` (with the image's netplan defaults beside it), by file name.
fn netplan_networkd_files(network_config: &[u8]) -> Vec<(String, Vec<u8>)> {
    let scratch = Scratch::new();
    fs::write(scratch.host("network-config"), network_config).unwrap();
    chroot(&[
        "cloud-init",
        "devel",
        "net-convert",
        "-p",
        &scratch.inside("network-config"),
        "-k",
        "yaml",
        "-D",
        "debian",
        "-O",
        "netplan",
        "-d",
        &scratch.inside("root"),
    ]);
    let netplan_dir = scratch.host("root/etc/netplan");
    assert!(
        netplan_dir.join("50-cloud-init.yaml").is_file(),
        "cloud-init wrote no netplan file"
    );
    fs::copy(
        testkit::repo().join("layers/base/etc/netplan/01-mailbake-defaults.yaml"),
        netplan_dir.join("01-mailbake-defaults.yaml"),
    )
    .unwrap();
    for entry in fs::read_dir(&netplan_dir).unwrap() {
        fs::set_permissions(entry.unwrap().path(), fs::Permissions::from_mode(0o600)).unwrap();
    }
    chroot(&["netplan", "generate", "--root-dir", &scratch.inside("root")]);
    let mut files: Vec<(String, Vec<u8>)> = fs::read_dir(scratch.host("root/run/systemd/network"))
        .expect("netplan wrote networkd files")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "network"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                fs::read(&p).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

/// What the real systemd-networkd (the host's, the same systemd 252 as the test base) does
/// with `run_files` in /run/systemd/network and `etc_files` in /etc/systemd/network, for an
/// interface `eth0` with [`PROVIDER_MAC`]: run in its own network and mount namespaces (sysfs
/// read-only, as in a container, so networkd does not wait for udev). Returns the file it
/// chose for eth0 and `ip` of the addresses and default routes once `want6` is up (or after
/// 15 s).
fn networkd_on_eth0(
    run_files: &[(String, Vec<u8>)],
    etc_files: &[(String, Vec<u8>)],
    want6: &str,
) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    for (sub, files) in [("run", run_files), ("etc", etc_files)] {
        fs::create_dir_all(dir.path().join(sub)).unwrap();
        for (name, bytes) in files {
            fs::write(dir.path().join(sub).join(name), bytes).unwrap();
        }
    }
    let script = format!(
        r#"set -eu
mount -t tmpfs tmpfs /run
mount -t sysfs -o ro sysfs /sys
mkdir -p /run/systemd/network
cp {d}/run/. /run/systemd/network/ -r
mount --bind {d}/etc /etc/systemd/network
ip link add eth0 address {PROVIDER_MAC} type veth peer name peer0
ip link set peer0 up
/lib/systemd/systemd-networkd > {d}/networkd.log 2>&1 &
pid=$!
idx=$(cat /sys/class/net/eth0/ifindex)
i=0
while [ $i -lt 30 ]; do
    sleep 0.5
    if [ -n "$(ip -6 -o addr show dev eth0 to {want6}/128 -tentative)" ] && ip -6 route show default | grep -q . ; then break; fi
    i=$((i + 1))
done
sed -n 's/^NETWORK_FILE=//p' /run/systemd/netif/links/$idx
ip -o addr show dev eth0 scope global
ip -4 route show default
ip -6 route show default
kill $pid
"#,
        d = dir.path().display()
    );
    let out = Command::new("unshare")
        .args(["-m", "-n", "sh", "-c", &script])
        .output()
        .expect("unshare runs");
    let log = fs::read_to_string(dir.path().join("networkd.log")).unwrap_or_default();
    assert!(
        out.status.success(),
        "networkd run failed:\n{}{}\n{log}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let (file, rest) = stdout.split_once('\n').unwrap_or((&stdout, ""));
    (file.to_string(), rest.to_string())
}

/// The provider path: whatever network configuration the provider's datasource gives (static
/// IPv4 on its own interface id matched by MAC, DHCP, or one that holds the same IPv6), the
/// real netplan turns it into /run/systemd/network/10-netplan-<id>.network matching the
/// interface, and the real systemd-networkd still configures the interface from the seed's
/// own file, carried in user-data: the host's static IPv6 address and default route are up,
/// router advertisements off. The same holds on the seed.img path (the seed's own
/// network-config). Without the seed's file, the provider's wins and there is no IPv6: the
/// reason the file exists.
#[test]
fn the_seeds_network_file_wins_over_any_provider_configuration_in_real_networkd() {
    let (_, out) = built();
    let seed_file = |host: &str| -> (String, Vec<u8>) {
        let user_data = fs::read(out.join(format!("hosts/{host}/seed/user-data"))).unwrap();
        let staged = format!(
            "{}/files/etc/systemd/network/05-mailbake-uplink.network",
            mailbake::template::SEED_STAGE_DIR
        );
        let bytes = written_files(&user_data)
            .into_iter()
            .find(|(p, _)| *p == staged)
            .unwrap_or_else(|| panic!("{host}: user-data stages no {staged}"))
            .1;
        ("05-mailbake-uplink.network".to_string(), bytes)
    };
    let expect = |host: &str| match host {
        "mx1" => ("2001:db8:1::10", "2001:db8:1::10/64", "via fe80::1", None),
        _ => (
            "2001:db8:2::20",
            "2001:db8:2::20/64",
            "via 2001:db8:2::1",
            Some(("198.51.100.20/24", "via 198.51.100.1")),
        ),
    };
    let mut cases: Vec<(String, &str, Vec<u8>)> = provider_network_configs()
        .into_iter()
        .map(|(what, host, yaml)| (format!("provider: {what}"), host, yaml.into_bytes()))
        .collect();
    for host in ["mx1", "mx2"] {
        cases.push((
            format!("seed.img: the seed's own network-config of {host}"),
            if host == "mx1" { "mx1" } else { "mx2" },
            fs::read(out.join(format!("hosts/{host}/seed/network-config"))).unwrap(),
        ));
    }
    for (what, host, network_config) in &cases {
        let provider = netplan_networkd_files(network_config);
        assert!(
            provider
                .iter()
                .all(|(name, _)| name.starts_with("10-netplan-")),
            "{what}: netplan's file names changed: {provider:?}"
        );
        let (addr6, cidr6, via6, v4) = expect(host);
        let (chosen, state) = networkd_on_eth0(&provider, &[seed_file(host)], addr6);
        eprintln!("{what}: networkd chose {chosen}:\n{state}");
        assert_eq!(
            chosen, "/etc/systemd/network/05-mailbake-uplink.network",
            "{what}: networkd did not take the seed's file:\n{state}"
        );
        assert!(
            state.contains(&format!("inet6 {cidr6} scope global")),
            "{what}: no {cidr6}:\n{state}"
        );
        assert_eq!(
            state.matches("inet6 ").count(),
            1,
            "{what}: one global IPv6 address only:\n{state}"
        );
        assert!(
            state
                .lines()
                .any(|l| l.starts_with(&format!("default {via6} "))),
            "{what}: no IPv6 default route {via6}:\n{state}"
        );
        if let Some((cidr4, via4)) = v4 {
            assert!(
                state.contains(&format!("inet {cidr4} ")),
                "{what}:\n{state}"
            );
            assert!(
                state
                    .lines()
                    .any(|l| l.starts_with(&format!("default {via4} "))),
                "{what}:\n{state}"
            );
        }
        let seed = String::from_utf8(seed_file(host).1).unwrap();
        assert!(seed.contains("IPv6AcceptRA=no"), "{seed}");
    }

    // The negative control: the first provider configuration alone leaves the host without
    // its IPv6 address, which is what a host deployed by user-data got before.
    let (_, host, yaml) = &provider_network_configs()[0];
    let provider = netplan_networkd_files(yaml.as_bytes());
    let (chosen, state) = networkd_on_eth0(&provider, &[], expect(host).0);
    assert!(
        chosen.starts_with("/run/systemd/network/10-netplan-") && !state.contains("inet6 "),
        "without the seed's file, the provider's configuration applies, without IPv6: {chosen}\n{state}"
    );
}
