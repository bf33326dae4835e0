//! A site directory for a boot test: `site.yaml`, its secrets store, and the operator's SSH
//! key; the host block every boot test uses puts the host on the test network.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use mailbake::secrets::{Password, SecretStore};
use mailbake::site::DkimAlgorithm;

use crate::topology::*;
use crate::{mailbake, run};

/// The host's fqdn in every boot test's site.
pub const FQDN: &str = "smtp.example.com";

/// The `hosts:` block of a boot test's site: host `mx1` with the test network's static IPv4
/// and IPv6 (link-local gateway, as at Contabo) and the test DNS as its resolvers.
pub fn hosts_yaml() -> String {
    format!(
        "hosts:\n  mx1:\n    fqdn: {FQDN}\n    ipv4: {{ address: {GUEST4}/{GUEST4_PREFIX}, gateway: {ROUTER4} }}\n    \
         ipv6: {{ address: \"{GUEST6}/64\", gateway: \"{ROUTER6_LINK_LOCAL}\" }}\n    \
         nameservers: [{DNS4}, \"{DNS6}\"]\n"
    )
}

pub struct TestSite {
    pub dir: PathBuf,
    pub ssh_key: PathBuf,
}

impl TestSite {
    /// Makes `dir` with an Ed25519 SSH key for the operator and an empty secrets store.
    pub fn create(dir: &Path) -> TestSite {
        fs::create_dir_all(dir).expect("mkdir for the site");
        let ssh_key = dir.join("id_ed25519");
        run(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "qemu-test", "-f"])
            .arg(&ssh_key));
        SecretStore::create(dir.join("secrets")).expect("create the secrets store");
        TestSite {
            dir: dir.to_path_buf(),
            ssh_key,
        }
    }

    /// The operator's public key (for `ssh.authorized_keys`).
    pub fn public_key(&self) -> String {
        fs::read_to_string(self.ssh_key.with_extension("pub"))
            .expect("the public SSH key")
            .trim()
            .to_string()
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join("site.yaml")
    }

    pub fn secrets(&self) -> PathBuf {
        self.dir.join("secrets")
    }

    pub fn store(&self) -> SecretStore {
        SecretStore::open(self.secrets()).expect("open the secrets store")
    }

    /// Writes `site.yaml`.
    pub fn write(&self, yaml: &str) {
        fs::write(self.path(), yaml).expect("write site.yaml");
    }

    /// Adds a user with `password` to the store.
    pub fn add_user(&self, domain: &str, user: &str, password: &str) {
        self.store()
            .add_user(
                &domain.try_into().expect("a valid domain"),
                &user.try_into().expect("a valid local part"),
                &Password::new(password.into()).expect("a long enough password"),
            )
            .expect("add the user");
    }

    /// Generates a DKIM key in the store for each `(selector, algorithm)` of `domain`.
    pub fn dkim_keygen(&self, domain: &str, selectors: &[(&str, DkimAlgorithm)]) {
        let store = self.store();
        for (selector, algorithm) in selectors {
            store
                .dkim_keygen(
                    &domain.try_into().expect("a valid domain"),
                    &(*selector).try_into().expect("a valid selector"),
                    *algorithm,
                    false,
                )
                .expect("generate the DKIM key");
        }
    }

    /// `mailbake build` into `out`.
    pub fn build(&self, out: &Path) {
        mailbake(&[
            "build",
            &self.path().display().to_string(),
            "--secrets",
            &self.secrets().display().to_string(),
            "--out",
            &out.display().to_string(),
        ]);
    }
}
