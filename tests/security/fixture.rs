//! Overlays for the security tests: a site's layers rendered by `mailbake::overlay::build`,
//! the function `mailbake build` uses, and written out as a root tree that the shipped
//! chasquid and scripts run from. The packages' payloads are left out (the tests bring the
//! pinned chasquid binary themselves, see `common::chasquid`), which keeps a fixture to
//! milliseconds instead of reading and compressing tens of megabytes.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::common::{self, Chasquid, ChasquidOptions};
use mailbake::overlay::tree::{Content, Tree};
use mailbake::overlay::{self, PackagePayload};
use mailbake::secrets::{Password, SecretStore};
use mailbake::site::{DomainName, LoadedSite, LocalPart};
use mailbake::template::SiteContext;

/// Stand-ins for the pinned packages the layers name; their files do not matter here.
fn no_payloads() -> Vec<PackagePayload> {
    ["chasquid", "lego"]
        .iter()
        .map(|name| PackagePayload {
            name: name.to_string(),
            version: "0".into(),
            entries: Vec::new(),
        })
        .collect()
}

/// The overlay tree for `site_text` (a site file's contents, as if at `dir/site.yaml`),
/// rendered from the site's template context as the build renders it.
pub fn render(site_text: &str, dir: &Path) -> Tree {
    let path = dir.join("site.yaml");
    let site = mailbake::site::parse(&path, site_text)
        .unwrap_or_else(|e| panic!("the test site should load:\n{e:?}\n{site_text}"));
    let loaded = LoadedSite {
        site,
        path,
        dir: dir.to_path_buf(),
    };
    let context = SiteContext::for_site(&loaded).unwrap_or_else(|e| panic!("context: {e}"));
    overlay::render(&context, &mailbake::shipped::built_in_layers())
        .and_then(|rendered| rendered.assemble(&no_payloads()))
        .unwrap_or_else(|e| panic!("the overlay renders: {e}"))
}

/// One rendered file of `tree`.
pub fn file<'a>(tree: &'a Tree, path: &str) -> &'a [u8] {
    match tree.get(path).map(|e| &e.content) {
        Some(Content::File(bytes)) => bytes,
        other => panic!("no file {path} in the overlay: {other:?}"),
    }
}

/// Writes `tree` under `root` with its modes, as unpacking overlay.tar would.
pub fn write_tree(tree: &Tree, root: &Path) {
    for (path, entry) in tree.entries() {
        let target = root.join(path);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).expect("mkdir parent");
        }
        match &entry.content {
            Content::Dir => fs::create_dir_all(&target).expect("mkdir"),
            Content::File(bytes) => {
                fs::write(&target, bytes).expect("write file");
                fs::set_permissions(&target, fs::Permissions::from_mode(entry.mode))
                    .expect("chmod");
            }
            Content::Symlink(to) => std::os::unix::fs::symlink(to, &target).expect("symlink"),
        }
    }
}

/// A chasquid configuration directory for `site_text` under `root`: the overlay, a throw-away
/// certificate for `smtp.example.com`, and users databases with `users` (`local@domain`,
/// password), as a seed would install them.
pub fn chasquid_root(site_text: &str, dir: &Path, users: &[(&str, &str)]) -> std::path::PathBuf {
    let root = dir.join("root");
    write_tree(&render(site_text, dir), &root);
    let config = root.join("etc/chasquid");
    common::throwaway_certificate(&config, "smtp.example.com");
    let store = SecretStore::create(dir.join("secrets")).expect("create the store");
    for (address, password) in users {
        let (local, domain) = address.split_once('@').expect("user@domain");
        let password = Password::new(password.to_string()).expect("a long password");
        let domain = DomainName::try_from(domain).expect("a domain");
        let local = LocalPart::try_from(local).expect("a local part");
        store
            .add_user(&domain, &local, &password)
            .expect("add the user");
    }
    for domain in store.user_domains().expect("list domains") {
        let name = DomainName::try_from(domain.as_str()).expect("a domain");
        let bytes = store
            .user_db_bytes(&name)
            .expect("users database")
            .expect("users database exists");
        fs::write(config.join("domains").join(&domain).join("users"), bytes)
            .expect("install users");
    }
    root
}

/// The shipped chasquid from `root` (see [`chasquid_root`]) as `smtp.example.com`, its
/// queue and state in `dir/state`.
pub fn start_chasquid(root: &Path, dir: &Path, options: ChasquidOptions) -> Chasquid {
    let state = dir.join("state");
    fs::create_dir_all(&state).expect("mkdir state");
    Chasquid::start_with(root, &state, "smtp.example.com", &options)
}

/// `mailbake build` of the example site with `tls.acme` set by `acme` (YAML lines under
/// `acme:`, indented by four), through the real CLI with the pinned packages, unpacked into
/// `dir/unpacked`, which is returned.
pub fn built_example_with_acme(dir: &Path, acme: &str) -> std::path::PathBuf {
    let example = fs::read_to_string(common::example_site()).expect("example site");
    let site = dir.join("site.yaml");
    fs::write(&site, format!("{example}\ntls:\n  acme:\n{acme}")).expect("write site");
    let secrets = common::example_secrets(dir);
    SecretStore::open(&secrets)
        .expect("store opens")
        .write_secret("acme.env", b"RFC2136_NAMESERVER=192.0.2.53\n")
        .expect("acme.env");
    let out = dir.join("out");
    common::mailbake_build(&site, &secrets, &out);
    let unpacked = dir.join("unpacked");
    common::unpack_overlay(&out, &unpacked);
    unpacked
}
