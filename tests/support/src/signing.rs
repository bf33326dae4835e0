//! A throw-away OpenPGP signing key, standing in for the "UEC Image Automatic Signing Key"
//! that signs Ubuntu's `SHA256SUMS`: a private GnuPG home with one fresh Ed25519 key.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::run;

/// A private GnuPG home with one fresh signing key; its agent is stopped on drop.
pub struct Signer {
    home: tempfile::TempDir,
}

impl Signer {
    pub fn new(name: &str) -> Signer {
        let home = tempfile::tempdir().expect("a temp dir for GnuPG");
        let me = Signer { home };
        run(me
            .gpg()
            .args([
                "--quick-gen-key",
                &format!("{name} <{name}@example.invalid>"),
            ])
            .args(["ed25519", "sign", "never"]));
        me
    }

    fn gpg(&self) -> Command {
        let mut cmd = Command::new("gpg");
        cmd.env("GNUPGHOME", self.home.path()).args([
            "--batch",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
        ]);
        cmd
    }

    /// The public key as a binary keyring, as Debian ships `ubuntu-cloudimage-keyring.gpg`.
    pub fn keyring(&self, to: &Path) -> PathBuf {
        // Into the file: `run` returns stdout as text, which would mangle the key.
        run(self.gpg().arg("--output").arg(to).arg("--export"));
        assert!(fs::metadata(to).unwrap().len() > 0, "gpg exported no key");
        to.to_path_buf()
    }

    /// An armored detached signature of `file`, as Ubuntu's `SHA256SUMS.gpg`.
    pub fn sign(&self, file: &Path) -> PathBuf {
        let sig = file.with_extension("gpg");
        run(self
            .gpg()
            .args(["--armor", "--detach-sign", "--output"])
            .arg(&sig)
            .arg(file));
        sig
    }
}

impl Drop for Signer {
    fn drop(&mut self) {
        let _ = Command::new("gpgconf")
            .env("GNUPGHOME", self.home.path())
            .args(["--kill", "gpg-agent"])
            .status();
    }
}
