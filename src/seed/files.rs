//! The files a host's seed installs, and how user-data carries them.
//!
//! cloud-init's own `write_files` writes in place and resolves owners by name at a moment
//! when nothing guarantees the `chasquid` group exists, and chasquid >= 1.12 treats a torn
//! users file as fatal. So user-data only *stages* the secret files, root-only, under the
//! seed's stage directory ([`crate::template::SEED_STAGE_DIR`], a tmpfs), together with a
//! manifest of destination, owner and mode (`cloud-init/manifest.j2`). The image's
//! `mailbake-apply-seed.service` (after cloud-init, before chasquid) then installs each file
//! with temp file + rename, removes chasquid files the seed no longer carries, wipes the
//! stage and restarts chasquid once if it was already running.

use super::Material;
use crate::site::Host;
use crate::template::context::{FileContent, StagedFileContext};

/// A file the seed installs on the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StagedFile {
    /// Absolute destination path on the host.
    pub path: String,
    pub mode: u32,
    pub owner: &'static str,
    pub group: &'static str,
    pub data: Vec<u8>,
}

impl StagedFile {
    /// A secret chasquid reads through its group: 0640 root:chasquid (users, DKIM, TLS).
    pub fn chasquid_secret(path: String, data: Vec<u8>) -> StagedFile {
        StagedFile {
            path,
            mode: 0o640,
            owner: "root",
            group: "chasquid",
            data,
        }
    }

    /// A secret only root reads (ACME credentials: the renewal service runs as root).
    pub fn root_only(path: String, data: Vec<u8>) -> StagedFile {
        StagedFile {
            path,
            mode: 0o600,
            owner: "root",
            group: "root",
            data,
        }
    }

    /// A file anyone on the host may read, 0644 root:root (the network configuration and
    /// the host's expected addresses: nothing secret).
    pub fn public(path: String, data: Vec<u8>) -> StagedFile {
        StagedFile {
            path,
            mode: 0o644,
            owner: "root",
            group: "root",
            data,
        }
    }

    /// The file as the cloud-init templates see it.
    pub fn context(&self) -> StagedFileContext {
        StagedFileContext {
            path: self.path.clone(),
            mode: format!("{:04o}", self.mode),
            owner: self.owner,
            group: self.group,
            content: FileContent::of(&self.data),
        }
    }
}

/// The files `host` gets: the site's secrets, the ACME account and the host's stored ACME
/// certificate in lego's state (when the store has them), and a certificate pair in
/// `/etc/chasquid/certs/<fqdn>/` (the directory the bootstrap certificate and ACME use): the
/// stored ACME certificate, else the `tls.files` pair. Also the directories to create for them.
pub fn host_files(host: &Host, material: &Material) -> (Vec<String>, Vec<StagedFile>) {
    let mut dirs = Vec::new();
    let mut files = material.files.clone();
    files.extend(material.acme.account.iter().cloned());
    let acme = material.acme.certificates.get(host.fqdn.as_str());
    if let Some(cert) = acme {
        files.extend(cert.lego_files.iter().cloned());
    }
    // ACME replaces the operator's own pair once issued (docs/site.md), here as on the host.
    if let Some(tls) = acme.map(|c| &c.pair).or(material.tls.as_ref()) {
        let dir = format!("/etc/chasquid/certs/{}", host.fqdn);
        files.push(StagedFile::chasquid_secret(
            format!("{dir}/fullchain.pem"),
            tls.fullchain.clone(),
        ));
        files.push(StagedFile::chasquid_secret(
            format!("{dir}/privkey.pem"),
            tls.privkey.clone(),
        ));
        dirs.push(dir);
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    (dirs, files)
}
