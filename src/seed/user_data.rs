//! `user-data`: the `#cloud-config` document of one host.
//!
//! cloud-init's own `write_files` writes in place and resolves owners by name at a moment
//! when nothing guarantees the `chasquid` group exists, and chasquid >= 1.12 treats a torn
//! users file as fatal. So user-data only *stages* the secret files, root-only, under
//! [`STAGE_DIR`] (a tmpfs), together with a manifest of destination, owner and mode. The
//! image's `mailbake-apply-seed.service` (after cloud-init, before chasquid) then installs
//! each file with temp file + rename, removes chasquid files the seed no longer carries,
//! wipes the stage and restarts chasquid once if it was already running.
//!
//! The document is written by hand rather than through a YAML serializer so that its bytes
//! are fixed by this code alone: scalars are JSON strings (valid YAML), file contents are
//! literal blocks when that round-trips exactly, base64 otherwise.

use std::fmt::Write as _;

use base64::Engine as _;

use super::Material;
use crate::site::{Host, HostName, Site};

/// Where user-data stages files for `mailbake-apply-seed`; on tmpfs, so the staged copies of
/// the secrets do not outlive the boot that installs them.
pub const STAGE_DIR: &str = "/run/mailbake/seed";

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
}

/// The files `host` gets: the site's secrets plus, with `tls.files`, the certificate pair in
/// `/etc/chasquid/certs/<fqdn>/` (the directory the bootstrap certificate and ACME use).
pub fn host_files(host: &Host, material: &Material) -> (Vec<String>, Vec<StagedFile>) {
    let mut dirs = Vec::new();
    let mut files = material.files.clone();
    if let Some(tls) = &material.tls {
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

/// The manifest `mailbake-apply-seed` follows: one `TYPE MODE OWNER GROUP PATH` line per
/// entry, directories first. Paths never contain white space (domains and selectors are
/// validated names), so the shell reads it with a plain `read`.
pub fn manifest(dirs: &[String], files: &[StagedFile]) -> String {
    let mut out = String::from(
        "# mailbake seed manifest v1: TYPE MODE OWNER GROUP PATH\n# each file is staged at /run/mailbake/seed/files/PATH\n",
    );
    for dir in dirs {
        let _ = writeln!(out, "d 0750 root chasquid {dir}");
    }
    for f in files {
        let _ = writeln!(out, "f {:04o} {} {} {}", f.mode, f.owner, f.group, f.path);
    }
    out
}

pub fn render(site: &Site, name: &HostName, host: &Host, material: &Material) -> String {
    let fqdn = host.fqdn.to_string();
    let (dirs, files) = host_files(host, material);
    let mut y = String::new();
    y.push_str("#cloud-config\n");
    let _ = writeln!(
        y,
        "# mailbake seed of host {name} ({fqdn}), site {}. SECRET: it carries password hashes",
        site.site.as_str()
    );
    y.push_str(
        "# and private keys; keep it like one. Files are staged under /run/mailbake/seed/ and\n",
    );
    y.push_str("# installed by the image's mailbake-apply-seed.service (see docs/seed.md).\n");

    // chasquid greets with the system hostname; it must be the fqdn the PTR records name.
    let _ = writeln!(y, "hostname: {}", q(&fqdn));
    let _ = writeln!(y, "fqdn: {}", q(&fqdn));
    y.push_str("prefer_fqdn_over_hostname: true\n");
    // /etc/hosts maps the fqdn to the host, so `hostname -f` and local lookups agree.
    y.push_str("manage_etc_hosts: true\n");

    // The operator: key-only SSH, passwordless sudo, no password at all. Listing `users`
    // without `default` also keeps the distribution's default user out.
    y.push_str("users:\n");
    let _ = writeln!(y, "  - name: {}", q(site.ssh.user.0.as_str()));
    y.push_str("    gecos: \"mailbake operator\"\n");
    y.push_str("    shell: /bin/bash\n");
    y.push_str("    lock_passwd: true\n");
    y.push_str("    sudo: \"ALL=(ALL) NOPASSWD:ALL\"\n");
    if !site.ssh.authorized_keys.is_empty() {
        y.push_str("    ssh_authorized_keys:\n");
        for key in &site.ssh.authorized_keys {
            let _ = writeln!(y, "      - {}", q(&key.0));
        }
    }
    y.push_str("disable_root: true\n");
    y.push_str("ssh_pwauth: false\n");

    y.push_str("write_files:\n");
    write_file(
        &mut y,
        &format!("{STAGE_DIR}/manifest"),
        manifest(&dirs, &files).as_bytes(),
    );
    for f in &files {
        write_file(&mut y, &format!("{STAGE_DIR}/files{}", f.path), &f.data);
    }
    y
}

/// One `write_files` entry, staged root-only whatever its final mode.
fn write_file(y: &mut String, path: &str, data: &[u8]) {
    let _ = writeln!(y, "  - path: {}", q(path));
    y.push_str("    owner: \"root:root\"\n");
    y.push_str("    permissions: \"0600\"\n");
    match literal_text(data) {
        Some(text) => {
            y.push_str("    content: |\n");
            for line in text.lines() {
                if line.is_empty() {
                    y.push('\n');
                } else {
                    let _ = writeln!(y, "      {line}");
                }
            }
        }
        None => {
            y.push_str("    encoding: b64\n");
            let _ = writeln!(
                y,
                "    content: {}",
                q(&base64::engine::general_purpose::STANDARD.encode(data))
            );
        }
    }
}

/// `data` as text when a YAML literal block (`|`, clip chomping) gives back exactly these
/// bytes: printable UTF-8 ending in exactly one newline, no carriage returns or other YAML
/// line breaks, a first line that fixes the indentation (not empty, no leading blank).
/// PEM keys and chasquid's users database always qualify, and stay readable in the file.
fn literal_text(data: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(data).ok()?;
    let body = text.strip_suffix('\n')?;
    let first = body.lines().next()?;
    let ok = !body.ends_with('\n')
        && !first.is_empty()
        && !first.starts_with([' ', '\t'])
        && body
            .lines()
            .all(|l| !l.chars().all(|c| c == ' ' || c == '\t') || l.is_empty())
        && body.chars().all(|c| {
            c == '\n'
                || c == '\t'
                || !(c.is_control() || matches!(c, '\u{feff}' | '\u{2028}' | '\u{2029}'))
        });
    ok.then_some(text)
}

/// A YAML double-quoted scalar: JSON string syntax is a subset YAML parsers accept.
pub(crate) fn q(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_blocks_only_when_they_round_trip() {
        assert!(
            literal_text(b"-----BEGIN PRIVATE KEY-----\nabc\n-----END PRIVATE KEY-----\n")
                .is_some()
        );
        assert!(literal_text(b"users: {\n  key: \"i\"\n}\n").is_some());
        for bad in [
            &b""[..],
            b"no newline",
            b"two\n\n",
            b" leading\n",
            b"cr\r\n",
            b"a\n   \nb\n",
            b"\xff\n",
            b"\n\nlate start\n",
        ] {
            assert!(literal_text(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn file_contents_parse_back_to_the_same_bytes() {
        let samples: [&[u8]; 5] = [
            b"users: {\n  key: \"i\"\n  value: {\n    scrypt: {\n      salt: \"\\xf0\\x01\"\n    }\n  }\n}\n",
            b"A=1\n\n# c\nB=two words\n",
            b"",
            b"\x00\x01binary",
            b"x: \"#not a comment\"\n\ttab\n",
        ];
        for data in samples {
            let mut y = String::from("write_files:\n");
            write_file(&mut y, "/x", data);
            let doc: serde_json::Value = serde_norway::from_str(&y).unwrap();
            let entry = &doc["write_files"][0];
            let content = entry["content"].as_str().unwrap();
            let bytes = if entry["encoding"] == "b64" {
                base64::engine::general_purpose::STANDARD
                    .decode(content)
                    .unwrap()
            } else {
                content.as_bytes().to_vec()
            };
            assert_eq!(bytes, data, "{y}");
        }
    }
}
