//! The secrets store against the real consumer: the chasquid-util we ship.
//!
//! chasquid-util comes from the pinned package (see `testkit::chasquid_bin_dir`).

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mailbake::secrets::{
    DkimKey, KeyError, KeyKind, Password, SecretStore, SecretsError, UserDb, dns_txt_value,
    hash_password, read_password_from,
};
use mailbake::site::{DkimAlgorithm, DomainName, LocalPart, Selector};
use rsa::pkcs1::EncodeRsaPrivateKey as _;
use rsa::pkcs8::{EncodePrivateKey as _, LineEnding};

const DOMAIN: &str = "example.com";

fn chasquid_util() -> PathBuf {
    testkit::chasquid_util()
}

fn run_chasquid_util(config_dir: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(chasquid_util());
    cmd.arg(format!("-C={}", config_dir.display())).args(args);
    match cmd.output() {
        Ok(out) => out,
        Err(e) => panic!("cannot run {cmd:?}: {e}"),
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn ok<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{e}"),
    }
}

fn d(name: &str) -> DomainName {
    ok(DomainName::try_from(name))
}

fn local(name: &str) -> LocalPart {
    ok(LocalPart::try_from(name))
}

fn sel(name: &str) -> Selector {
    ok(Selector::try_from(name))
}

fn password(p: &str) -> Password {
    ok(Password::new(p.to_string()))
}

/// A fresh store inside a temp dir (the store itself is a subdirectory, created by us).
fn new_store() -> (tempfile::TempDir, SecretStore) {
    let tmp = ok(tempfile::tempdir());
    let store = ok(SecretStore::create(tmp.path().join("secrets")));
    (tmp, store)
}

fn mode(path: &Path) -> u32 {
    ok(fs::metadata(path)).permissions().mode() & 0o7777
}

fn chmod(path: &Path, mode: u32) {
    ok(fs::set_permissions(path, fs::Permissions::from_mode(mode)));
}

/// Every entry below `dir` whose name marks an unfinished atomic write.
fn temp_leftovers(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in ok(fs::read_dir(dir)) {
        let path = ok(entry).path();
        if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(".tmp"))
        {
            found.push(path.clone());
        }
        if path.is_dir() {
            found.extend(temp_leftovers(&path));
        }
    }
    found
}

// ---- users database -------------------------------------------------------------------

#[test]
fn scrypt_reproduces_reference_test_vector() {
    let salt = ok(hex::decode("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff"));
    let hash = hash_password("correct horse", &salt);
    assert_eq!(
        hex::encode(&hash.encrypted),
        "6494e8e8977726d321aa1566f61cb1daaf4e82a1e64b37f1db2b8e27b07f0342"
    );
    assert_eq!((hash.log_n, hash.r, hash.p, hash.key_len), (14, 8, 1, 32));
    assert!(hash.verify("correct horse"));
    assert!(!hash.verify("correct horsE"));
}

#[test]
fn users_file_is_accepted_by_chasquid_util() {
    let (tmp, store) = new_store();
    ok(store.add_user(
        &d(DOMAIN),
        &local("alice"),
        &password("alice's long password"),
    ));
    ok(store.add_user(&d(DOMAIN), &local("bob"), &password("bob-has-another-one")));
    assert_eq!(ok(store.list_users(&d(DOMAIN))), ["alice", "bob"]);

    // What goes into the seed, placed where chasquid reads it.
    let bytes = ok(store.user_db_bytes(&d(DOMAIN))).unwrap_or_default();
    assert!(bytes.is_ascii(), "every salt/hash byte is \\xNN-escaped");
    let config = tmp.path().join("chasquid");
    let domain_dir = config.join("domains").join(DOMAIN);
    ok(fs::create_dir_all(&domain_dir));
    ok(fs::write(domain_dir.join("users"), &bytes));

    let check = run_chasquid_util(&config, &["check-userdb", DOMAIN]);
    assert!(check.status.success(), "{}", text(&check));
    assert!(
        text(&check).contains("Database loaded (2 users)"),
        "{}",
        text(&check)
    );

    for (user, right, wrong) in [
        ("alice", "alice's long password", "bob-has-another-one"),
        ("bob", "bob-has-another-one", "alice's long password"),
    ] {
        let addr = format!("{user}@{DOMAIN}");
        let good = run_chasquid_util(
            &config,
            &["authenticate", &addr, &format!("--password={right}")],
        );
        assert_eq!(good.status.code(), Some(0), "{user}: {}", text(&good));
        assert!(
            text(&good).contains("Authentication succeeded"),
            "{}",
            text(&good)
        );

        let bad = run_chasquid_util(
            &config,
            &["authenticate", &addr, &format!("--password={wrong}")],
        );
        assert_eq!(bad.status.code(), Some(1), "{user}: {}", text(&bad));
        assert!(
            text(&bad).contains("Authentication failed"),
            "{}",
            text(&bad)
        );

        // Our offline check agrees with chasquid's.
        assert!(ok(store.authenticate(&d(DOMAIN), &local(user), right)));
        assert!(!ok(store.authenticate(&d(DOMAIN), &local(user), wrong)));
    }

    // Removing every user leaves an empty database, which chasquid still loads.
    ok(store.remove_user(&d(DOMAIN), &local("alice")));
    ok(store.remove_user(&d(DOMAIN), &local("bob")));
    ok(fs::write(
        domain_dir.join("users"),
        ok(store.user_db_bytes(&d(DOMAIN))).unwrap_or_default(),
    ));
    let check = run_chasquid_util(&config, &["check-userdb", DOMAIN]);
    assert!(
        text(&check).contains("Database loaded (0 users)"),
        "{}",
        text(&check)
    );
}

#[test]
fn users_file_written_by_chasquid_util_can_be_adopted() {
    // chasquid-util writes raw UTF-8 bytes and C escapes; an operator migrating from a hand
    // set-up must be able to bring that file along.
    let tmp = ok(tempfile::tempdir());
    let config = tmp.path();
    ok(fs::create_dir_all(config.join("domains").join(DOMAIN)));
    for (user, pw) in [("carol", "carol-password-1"), ("dave", "dave-password-22")] {
        let out = run_chasquid_util(
            config,
            &[
                "user-add",
                &format!("{user}@{DOMAIN}"),
                &format!("--password={pw}"),
            ],
        );
        assert!(out.status.success(), "{}", text(&out));
    }
    let path = config.join("domains").join(DOMAIN).join("users");
    let db = ok(UserDb::parse(&ok(fs::read(&path)), &path));
    assert_eq!(db.len(), 2);
    assert!(db.authenticate("carol", "carol-password-1"));
    assert!(db.authenticate("dave", "dave-password-22"));
    assert!(!db.authenticate("dave", "carol-password-1"));
}

#[test]
fn user_errors_name_the_file_and_the_fix() {
    let (_tmp, store) = new_store();
    let users = store.users_path(&d(DOMAIN));

    ok(store.add_user(&d(DOMAIN), &local("i"), &password("twelve chars!")));
    let before = ok(fs::read(&users));
    match store.add_user(&d(DOMAIN), &local("i"), &password("another password")) {
        Err(e @ SecretsError::UserExists { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains(&users.display().to_string()), "{msg}");
            assert!(msg.contains("fix:"), "{msg}");
        }
        other => panic!("expected UserExists, got {other:?}"),
    }
    assert_eq!(
        ok(fs::read(&users)),
        before,
        "a refused add leaves the file as it was"
    );

    match store.remove_user(&d(DOMAIN), &local("nobody")) {
        Err(e @ SecretsError::UnknownUser { .. }) => {
            assert!(e.to_string().contains("mailbake user add"), "{e}");
        }
        other => panic!("expected UnknownUser, got {other:?}"),
    }
    assert!(matches!(
        store.require_users(&d(DOMAIN), &[local("i"), local("postmaster")]),
        Err(SecretsError::UnknownUser { local, .. }) if local == "postmaster"
    ));
    ok(store.require_users(&d(DOMAIN), &[local("i")]));

    match Password::new("short pw".into()) {
        Err(e @ SecretsError::PasswordTooShort { .. }) => {
            assert!(e.to_string().contains("at least 12"), "{e}");
        }
        other => panic!("expected PasswordTooShort, got {other:?}"),
    }
    assert!(matches!(
        read_password_from(&b"eleven char\n"[..]),
        Err(SecretsError::PasswordTooShort { got: 11, .. })
    ));
    // Names that are not safe path components cannot even be spelled for the store: it takes
    // the site's typed names, whose validation refuses them.
    assert!(LocalPart::try_from("a+b").is_err());
    assert!(DomainName::try_from("../etc").is_err());

    ok(store.remove_user(&d(DOMAIN), &local("i")));
    assert!(ok(store.list_users(&d(DOMAIN))).is_empty());
    assert_eq!(ok(store.user_domains()), [DOMAIN]);
    assert!(temp_leftovers(store.root()).is_empty());
}

#[test]
fn plaintext_never_reaches_disk() {
    let (_tmp, store) = new_store();
    let secret = "plaintext-must-not-leak";
    ok(store.add_user(&d(DOMAIN), &local("i"), &password(secret)));
    let bytes = ok(fs::read(store.users_path(&d(DOMAIN))));
    assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()));
}

// ---- store ----------------------------------------------------------------------------

#[test]
fn store_modes_are_private() {
    let (_tmp, store) = new_store();
    ok(store.add_user(&d(DOMAIN), &local("i"), &password("twelve chars!")));
    ok(store.dkim_keygen(&d(DOMAIN), &sel("s1"), DkimAlgorithm::Ed25519, false));
    ok(store.write_secret(mailbake::secrets::ACME_ENV, b"TOKEN=x\n"));
    let root = store.root();
    for dir in [
        root.to_path_buf(),
        root.join("users"),
        root.join("dkim"),
        root.join("dkim").join(DOMAIN),
    ] {
        assert_eq!(mode(&dir), 0o700, "{}", dir.display());
    }
    for file in [
        store.users_path(&d(DOMAIN)),
        store.dkim_path(&d(DOMAIN), &sel("s1")),
        root.join("acme.env"),
        root.join(".lock"),
    ] {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
    assert_eq!(
        ok(store.read_secret("acme.env")).map(|b| b.to_vec()),
        Some(b"TOKEN=x\n".to_vec())
    );
    assert!(store.write_secret("../x", b"").is_err());
    // Re-creating an existing store is fine (init is idempotent).
    ok(SecretStore::create(root));
}

#[test]
fn insecure_store_is_refused_with_chmod_fix() {
    let (_tmp, store) = new_store();
    ok(store.add_user(&d(DOMAIN), &local("i"), &password("twelve chars!")));
    let users = store.users_path(&d(DOMAIN));

    chmod(&users, 0o644);
    for result in [
        SecretStore::open(store.root()).map(|_| ()),
        store.list_users(&d(DOMAIN)).map(|_| ()),
    ] {
        match result {
            Err(e @ SecretsError::Insecure { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains(&users.display().to_string()), "{msg}");
                assert!(msg.contains("chmod 600"), "{msg}");
            }
            other => panic!("expected Insecure, got {other:?}"),
        }
    }
    chmod(&users, 0o600);

    chmod(store.root(), 0o755);
    match SecretStore::open(store.root()) {
        Err(e @ SecretsError::Insecure { .. }) => {
            assert!(e.to_string().contains("chmod 700"), "{e}")
        }
        other => panic!("expected Insecure, got {other:?}"),
    }
    chmod(store.root(), 0o700);
    ok(SecretStore::open(store.root()));

    // A symlink inside the store could point anywhere: refused.
    let link = store.root().join("users").join("other.example");
    ok(std::os::unix::fs::symlink("/etc/passwd", &link));
    assert!(matches!(
        SecretStore::open(store.root()),
        Err(SecretsError::NotPlain { .. })
    ));
    ok(fs::remove_file(&link));

    // Unreadable: a directory where the users file should be.
    ok(fs::create_dir(store.users_path(&d("other.example"))));
    chmod(&store.users_path(&d("other.example")), 0o700);
    match store.list_users(&d("other.example")) {
        Err(e @ SecretsError::Unreadable { .. }) => {
            assert!(e.to_string().contains("other.example"), "{e}");
            assert!(e.to_string().contains("fix:"), "{e}");
        }
        other => panic!("expected Unreadable, got {other:?}"),
    }

    let missing = store.root().join("nope");
    assert!(matches!(
        SecretStore::open(&missing),
        Err(SecretsError::StoreMissing { .. })
    ));
}

#[test]
fn failed_write_leaves_no_temp_file_and_keeps_old_content() {
    let (_tmp, store) = new_store();
    ok(store.dkim_keygen(&d(DOMAIN), &sel("good"), DkimAlgorithm::Ed25519, false));
    let good = store.dkim_path(&d(DOMAIN), &sel("good"));
    let before = ok(fs::read(&good));

    // Refusing to overwrite happens before anything is written.
    assert!(matches!(
        store.dkim_keygen(&d(DOMAIN), &sel("good"), DkimAlgorithm::Ed25519, false),
        Err(SecretsError::KeyExists { .. })
    ));
    assert_eq!(ok(fs::read(&good)), before);

    // The final rename fails (a directory is in the way): the temp file must be gone.
    let blocked = store.dkim_path(&d(DOMAIN), &sel("blocked"));
    ok(fs::create_dir(&blocked));
    ok(fs::write(blocked.join("keep"), b""));
    chmod(&blocked, 0o700);
    chmod(&blocked.join("keep"), 0o600);
    assert!(matches!(
        store.dkim_keygen(&d(DOMAIN), &sel("blocked"), DkimAlgorithm::Ed25519, true),
        Err(SecretsError::Io { .. })
    ));
    assert_eq!(temp_leftovers(store.root()), Vec::<PathBuf>::new());

    // Forcing replaces the key atomically with a different one.
    ok(store.dkim_keygen(&d(DOMAIN), &sel("good"), DkimAlgorithm::Ed25519, true));
    assert_ne!(ok(fs::read(&good)), before);
    assert!(temp_leftovers(store.root()).is_empty());
}

// ---- DKIM -----------------------------------------------------------------------------

/// Runs `chasquid-util dkim-dns` on a key placed where chasquid reads it and returns the
/// TXT value it prints, with quoting and string splitting removed.
fn chasquid_dkim_dns(key: &DkimKey, selector: &str) -> String {
    let tmp = ok(tempfile::tempdir());
    let domain_dir = tmp.path().join("domains").join(DOMAIN);
    ok(fs::create_dir_all(&domain_dir));
    let pem = domain_dir.join(format!("dkim:{selector}.pem"));
    ok(fs::write(&pem, key.pem()));
    let out = run_chasquid_util(
        tmp.path(),
        &["dkim-dns", DOMAIN, selector, &pem.display().to_string()],
    );
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = stdout.trim();
    let expected_name = format!("{selector}._domainkey.{DOMAIN}");
    let Some((name, rest)) = line.split_once(char::is_whitespace) else {
        panic!("unexpected dkim-dns output: {line:?}")
    };
    assert_eq!(name, expected_name, "{line}");
    let Some(value) = rest.trim_start().strip_prefix("TXT") else {
        panic!("unexpected dkim-dns output: {line:?}")
    };
    // `"part1" "part2"` -> part1part2; a single quoted string is the common case.
    value.split('"').skip(1).step_by(2).collect::<String>()
}

#[test]
fn dkim_rsa_2048_matches_chasquid_dkim_dns() {
    let (_tmp, store) = new_store();
    let key = ok(store.dkim_keygen(&d(DOMAIN), &sel("2026a-rsa"), DkimAlgorithm::Rsa2048, false));
    assert_eq!(key.kind(), KeyKind::Rsa { bits: 2048 });
    assert!(key.pem().starts_with("-----BEGIN PRIVATE KEY-----\n"));
    let ours = key.dns_txt_value();
    assert!(ours.starts_with("v=DKIM1; k=rsa; p=MII"), "{ours}");
    assert_eq!(chasquid_dkim_dns(&key, "2026a-rsa"), ours);

    // Loading back from the store gives the same record.
    let loaded = ok(store.dkim_key(&d(DOMAIN), &sel("2026a-rsa")));
    assert_eq!(loaded.dns_txt_value(), ours);
    assert_eq!(ok(dns_txt_value(loaded.pem())), ours);
}

#[test]
fn dkim_ed25519_matches_chasquid_dkim_dns() {
    let (_tmp, store) = new_store();
    let key = ok(store.dkim_keygen(&d(DOMAIN), &sel("2026a-ed"), DkimAlgorithm::Ed25519, false));
    assert_eq!(key.kind(), KeyKind::Ed25519);
    let ours = key.dns_txt_value();
    assert!(ours.starts_with("v=DKIM1; k=ed25519; p="), "{ours}");
    assert_eq!(chasquid_dkim_dns(&key, "2026a-ed"), ours);
    assert_eq!(ok(store.list_dkim_selectors(&d(DOMAIN))), ["2026a-ed"]);
    assert_eq!(ok(store.dkim_domains()), [DOMAIN]);
}

#[test]
fn dkim_pkcs1_and_weak_rsa_keys_are_refused() {
    let (_tmp, store) = new_store();
    // Seed the store with one valid key so the dkim/<domain> directory exists with our modes.
    ok(store.dkim_keygen(&d(DOMAIN), &sel("ok"), DkimAlgorithm::Ed25519, false));

    let put = |selector: &str, pem: &str| {
        let path = store.dkim_path(&d(DOMAIN), &sel(selector));
        ok(fs::write(&path, pem));
        chmod(&path, 0o600);
        path
    };

    // PKCS#1 of a 2048-bit key: chasquid itself rejects it, and so do we, with the fix.
    let rsa2048 = ok(rsa::PrivateKey::new(&mut getrandom::SysRng, 2048));
    let pkcs1 = ok(rsa2048.to_pkcs1_pem(LineEnding::LF));
    let path = put("pkcs1", &pkcs1);
    match store.dkim_key(&d(DOMAIN), &sel("pkcs1")) {
        Err(
            e @ SecretsError::Key {
                source: KeyError::Pkcs1,
                ..
            },
        ) => {
            let msg = e.to_string();
            assert!(msg.contains(&path.display().to_string()), "{msg}");
            assert!(msg.contains("openssl pkcs8 -topk8"), "{msg}");
        }
        other => panic!("expected Pkcs1, got {other:?}"),
    }
    let tmp = ok(tempfile::tempdir());
    let out = run_chasquid_util(
        tmp.path(),
        &["dkim-dns", DOMAIN, "pkcs1", &path.display().to_string()],
    );
    assert!(
        !out.status.success(),
        "chasquid accepted PKCS#1: {}",
        text(&out)
    );

    // A 1024-bit key in proper PKCS#8: weak.
    let rsa1024 = ok(rsa::PrivateKey::new(&mut getrandom::SysRng, 1024));
    let weak = ok(rsa1024.to_pkcs8_pem(LineEnding::LF));
    let path = put("weak", &weak);
    match store.dkim_key(&d(DOMAIN), &sel("weak")) {
        Err(
            e @ SecretsError::Key {
                source:
                    KeyError::Weak {
                        bits: 1024,
                        min: 2048,
                    },
                ..
            },
        ) => {
            let msg = e.to_string();
            assert!(msg.contains(&path.display().to_string()), "{msg}");
            assert!(msg.contains("fix:"), "{msg}");
        }
        other => panic!("expected Weak, got {other:?}"),
    }
    assert!(matches!(dns_txt_value(&weak), Err(KeyError::Weak { .. })));

    match store.dkim_key(&d(DOMAIN), &sel("absent")) {
        Err(e @ SecretsError::MissingKey { .. }) => {
            assert!(e.to_string().contains("mailbake dkim keygen"), "{e}");
        }
        other => panic!("expected MissingKey, got {other:?}"),
    }
}

#[test]
fn dkim_every_algorithm_generates_a_loadable_key_of_its_size() {
    for (algorithm, kind) in [
        (DkimAlgorithm::Rsa3072, KeyKind::Rsa { bits: 3072 }),
        (DkimAlgorithm::Rsa4096, KeyKind::Rsa { bits: 4096 }),
    ] {
        let pem = ok(mailbake::secrets::generate(algorithm));
        let key = ok(DkimKey::from_pem(&pem));
        assert_eq!(key.kind(), kind, "{algorithm}");
        assert!(key.dns_txt_value().starts_with("v=DKIM1; k=rsa; p=MII"));
    }
}
