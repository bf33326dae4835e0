//! `mailbake init DOMAIN [--dir DIR]`: a new site to start from.
//!
//! Writes `DIR/site.yaml`, a commented site file for one domain and one host (0600, in a
//! `DIR` made 0700 when init creates it, whatever the umask), and creates `DIR/secrets/`, an
//! empty secrets store (0700). Every value the operator must replace is
//! marked `REPLACE` and taken from the documentation ranges (203.0.113.0/24, 2001:db8::/32),
//! so the file passes `mailbake check` as written but can never be mistaken for a real
//! host. Nothing that exists is ever overwritten: when either path exists, nothing is
//! written at all.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::secrets::SecretStore;
use crate::site::{self, DomainName};

#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// The mail domain the site serves, e.g. example.com (Unicode names become punycode).
    pub domain: String,
    /// Directory to write site.yaml and secrets/ into (created if missing).
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub dir: PathBuf,
}

/// The file names `init` writes inside `--dir`.
const SITE_FILE: &str = "site.yaml";
const SECRETS_DIR: &str = "secrets";
/// Modes of what init creates: only the operator may read or change the site.
const PRIVATE_DIR: u32 = 0o700;
const PRIVATE_FILE: u32 = 0o600;

pub fn run(args: &InitArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let domain = DomainName::try_from(args.domain.as_str())
        .map_err(|why| anyhow::anyhow!("DOMAIN {why}"))?;
    if let Ok(meta) = fs::metadata(&args.dir)
        && !meta.is_dir()
    {
        bail!(
            "--dir {} is not a directory; init writes site.yaml and secrets/ into a directory\n  fix: give a directory, existing or not (a missing one is created, mode 0700)",
            args.dir.display()
        );
    }
    let site_path = args.dir.join(SITE_FILE);
    let secrets_path = args.dir.join(SECRETS_DIR);
    for path in [&site_path, &secrets_path] {
        if fs::symlink_metadata(path).is_ok() {
            bail!(
                "{} already exists; mailbake init never overwrites anything\n  fix: choose another --dir, or move it away first",
                path.display()
            );
        }
    }
    let text = site_text(&domain);
    // The template must always give a valid site; check it before anything is written.
    site::parse(&site_path, &text).map_err(|e| {
        anyhow::anyhow!("internal error: the site file init would write is invalid:\n{e}")
    })?;

    make_private_dir(&args.dir)?;
    SecretStore::create(&secrets_path)?;
    if let Err(e) = write_new(&site_path, text.as_bytes()) {
        // Leave nothing half-made: the store is empty, so removing it loses nothing.
        let _ = fs::remove_dir_all(&secrets_path);
        return Err(e);
    }
    let site = site_path.display();
    writeln!(
        out,
        "wrote {site} and an empty secrets store {}\nnext:\n  1. edit {site}: replace every value marked REPLACE (the host's name and addresses)\n  2. mailbake user add {site} me@{domain}\n  3. mailbake dkim keygen {site} {domain}\n  4. mailbake check {site} && mailbake build {site} --out out/",
        secrets_path.display()
    )?;
    Ok(())
}

/// Creates `dir` and its missing parents, each 0700 whatever the umask: the site file lists
/// the SSH keys that become root on every host, so nobody else may swap it or its directory.
/// A directory that exists is the operator's and is left as it is.
fn make_private_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut missing = Vec::new();
    let mut current = Some(dir);
    while let Some(d) = current.filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        missing.push(d);
        current = d.parent();
    }
    for d in missing.into_iter().rev() {
        DirBuilder::new()
            .mode(PRIVATE_DIR)
            .create(d)
            // Created with at most 0700 (the umask only removes bits); set in case it took
            // the owner's too.
            .and_then(|()| fs::set_permissions(d, fs::Permissions::from_mode(PRIVATE_DIR)))
            .with_context(|| format!("creating {}", d.display()))?;
    }
    Ok(())
}

/// Creates `path` (0600, whatever the umask) with `bytes`; fails if it exists.
fn write_new(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(PRIVATE_FILE)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.set_permissions(fs::Permissions::from_mode(PRIVATE_FILE))
        .with_context(|| format!("setting the mode of {}", path.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

/// The commented site file for `domain`. The domain is written as a YAML double-quoted
/// string (JSON's string syntax is valid YAML), so no name can change the document's shape.
fn site_text(domain: &DomainName) -> String {
    let quoted = |s: &str| serde_json::Value::from(s).to_string();
    let d = quoted(domain.as_str());
    let fqdn = quoted(&format!("smtp.{domain}"));
    let postmaster = quoted(&format!("mailto:postmaster@{domain}"));
    format!(
        r#"# A mailbake site: what `mailbake check`, `build`, `dns` and `boot` read.
# Every key is described in docs/site.md. Keep this file in git; secrets never go here:
# they live in secrets/ beside it (keep that directory out of git).
site: mail

domains:
  {d}:
    # Mailbox users who can log in (SMTP AUTH on 587/465). Give each a password with
    # `mailbake user add site.yaml me@{domain}`.
    users: [me]
    aliases:
      postmaster: me
      abuse: me
      # Uncomment for a catch-all: every other address goes to one mailbox.
      # "*": me
    dkim:
      # Signing keys: `mailbake dkim keygen site.yaml {domain}` makes them.
      selectors:
        sel1-rsa: rsa-2048
        sel1-ed: ed25519
    spf:
      policy: "~all"
    dmarc:
      p: none          # start with none; quarantine or reject once reports look clean
      rua: {postmaster}

hosts:
  mx1:
    # REPLACE: the host's public name; its reverse DNS (PTR) must point back to it.
    fqdn: {fqdn}
    # REPLACE: the host's public IPv4 address (documentation range until then).
    ipv4: 203.0.113.10
    # REPLACE: the static IPv6 /64 address and gateway from the provider's panel, or
    # remove the block for an IPv4-only host.
    ipv6:
      address: "2001:db8::10/64"
      gateway: "fe80::1"

ssh:
  # Your public key, e.g. the line in ~/.ssh/id_ed25519.pub, to log in as `admin`.
  authorized_keys: []
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_template_is_a_valid_site_for_any_domain() {
        for name in [
            "example.com",
            "bücher.example",
            "true.example",
            "a-1.b.example",
        ] {
            let domain = DomainName::try_from(name).unwrap();
            let site = site::parse(Path::new("site.yaml"), &site_text(&domain))
                .unwrap_or_else(|e| panic!("{name}:\n{e}"));
            assert!(site.domains.contains_key(&domain), "{name}");
        }
    }
}
