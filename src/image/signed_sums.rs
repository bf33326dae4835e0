//! The base's expected digest from a signed checksum list, as Ubuntu publishes next to its
//! cloud images: `SHA256SUMS` and its detached signature `SHA256SUMS.gpg`, made with the "UEC
//! Image Automatic Signing Key" (Debian's `ubuntu-keyring` ships it as
//! `/usr/share/keyrings/ubuntu-cloudimage-keyring.gpg`).
//!
//! The signature is checked by `gpgv`, GnuPG's verify-only tool, against one keyring and
//! nothing else (a private, empty home directory: the operator's own keys and trust settings
//! play no part). The list is read into memory once and those very bytes are both verified
//! (on gpgv's stdin) and searched, so the file cannot change between the two. The base's line
//! is found by the base's file name, so the base must keep the name it was published under.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::ImageError;

/// Where Debian's `ubuntu-keyring` package puts the key that signs Ubuntu's cloud images.
pub const UBUNTU_CLOUD_IMAGE_KEYRING: &str = "/usr/share/keyrings/ubuntu-cloudimage-keyring.gpg";

/// A checksum list, its detached signature and the keyring that must have made it.
#[derive(Debug, Clone)]
pub struct SignedSums {
    pub sums: PathBuf,
    pub signature: PathBuf,
    pub keyring: PathBuf,
}

/// Verifies `signed` and returns the digest it lists for `base` (by file name).
pub fn expected_digest(signed: &SignedSums, base: &Path) -> Result<String, ImageError> {
    let keyring = signed.keyring.canonicalize().map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            ImageError::KeyringMissing {
                keyring: signed.keyring.clone(),
            }
        } else {
            ImageError::io(&signed.keyring)(source)
        }
    })?;
    let list = std::fs::read(&signed.sums).map_err(ImageError::io(&signed.sums))?;
    verify(signed, &keyring, &list)?;
    let name = base
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| ImageError::NotInSums {
            base: base.to_path_buf(),
            sums: signed.sums.clone(),
        })?;
    find(&list, name).map_err(|found| match found {
        Lookup::Missing => ImageError::NotInSums {
            base: base.to_path_buf(),
            sums: signed.sums.clone(),
        },
        Lookup::Conflicting => ImageError::ConflictingSums {
            name: name.to_string(),
            sums: signed.sums.clone(),
        },
    })
}

/// What `gpgv` said about the signature, from its machine-readable status lines.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Good,
    Bad,
    /// Made by a key that is not in the keyring: its long key id.
    UnknownKey(String),
    /// Anything else (expired or revoked key, not a signature at all): gpgv's own words.
    Other,
}

fn verify(signed: &SignedSums, keyring: &Path, list: &[u8]) -> Result<(), ImageError> {
    let home = tempfile::tempdir().map_err(ImageError::io(std::env::temp_dir()))?;
    let mut child = Command::new("gpgv")
        .arg("--homedir")
        .arg(home.path())
        .args(["--status-fd", "1", "--keyring"])
        .arg(keyring)
        .arg(&signed.signature)
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| ImageError::Tool {
            command: "gpgv".into(),
            status: "could not start".into(),
            stderr: e.to_string(),
            fix: "install gpgv (Debian and Ubuntu package `gpgv`)".into(),
        })?;
    // gpgv reads all of stdin before it answers, and the list is small, so writing it whole
    // before reading the output cannot deadlock.
    let written = child
        .stdin
        .take()
        .map(|mut stdin| stdin.write_all(list))
        .transpose();
    let out = child.wait_with_output().map_err(ImageError::io("gpgv"))?;
    written.map_err(ImageError::io(&signed.sums))?;
    let status = String::from_utf8_lossy(&out.stdout);
    match verdict(&status) {
        Verdict::Good if out.status.success() => Ok(()),
        Verdict::Bad => Err(ImageError::BadSignature {
            sums: signed.sums.clone(),
            signature: signed.signature.clone(),
        }),
        Verdict::UnknownKey(key) => Err(ImageError::UnknownSigningKey {
            sums: signed.sums.clone(),
            key,
            keyring: signed.keyring.clone(),
        }),
        Verdict::Good | Verdict::Other => Err(ImageError::SignatureRefused {
            signature: signed.signature.clone(),
            keyring: signed.keyring.clone(),
            gpgv: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        }),
    }
}

fn verdict(status: &str) -> Verdict {
    let mut verdict = Verdict::Other;
    for line in status.lines() {
        let mut words = line.split_whitespace();
        if words.next() != Some("[GNUPG:]") {
            continue;
        }
        match (words.next(), words.next()) {
            (Some("BADSIG"), _) => return Verdict::Bad,
            (Some("NO_PUBKEY"), Some(key)) => return Verdict::UnknownKey(key.to_string()),
            // Only a signature gpgv could check completely counts as good.
            (Some("VALIDSIG"), _) => verdict = Verdict::Good,
            _ => {}
        }
    }
    verdict
}

enum Lookup {
    Missing,
    Conflicting,
}

/// The digest `list` (`sha256sum` output: `HEX  NAME` or `HEX *NAME`) gives for `name`.
fn find(list: &[u8], name: &str) -> Result<String, Lookup> {
    let text = String::from_utf8_lossy(list);
    let mut found: Option<String> = None;
    for line in text.lines() {
        let Some((digest, rest)) = line.split_once(' ') else {
            continue;
        };
        let listed = rest.strip_prefix(['*', ' ']).unwrap_or(rest);
        let is_digest = digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit());
        if listed != name || !is_digest {
            continue;
        }
        let digest = digest.to_ascii_lowercase();
        match &found {
            Some(earlier) if *earlier != digest => return Err(Lookup::Conflicting),
            _ => found = Some(digest),
        }
    }
    found.ok_or(Lookup::Missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    #[test]
    fn a_name_is_found_in_either_sha256sum_format_and_only_whole() {
        let list = format!("{A} *ubuntu-root.tar.xz\n{B}  other.img\n{B} *ubuntu-root.tar.xz.1\n");
        assert_eq!(
            find(list.as_bytes(), "ubuntu-root.tar.xz").ok(),
            Some(A.into())
        );
        assert_eq!(find(list.as_bytes(), "other.img").ok(), Some(B.into()));
        assert!(matches!(
            find(list.as_bytes(), "root.tar.xz"),
            Err(Lookup::Missing)
        ));
    }

    #[test]
    fn a_name_listed_with_two_digests_is_refused() {
        let list = format!("{A} *x.tar\n{B} *x.tar\n");
        assert!(matches!(
            find(list.as_bytes(), "x.tar"),
            Err(Lookup::Conflicting)
        ));
        let same = format!("{A} *x.tar\n{A}  x.tar\n");
        assert_eq!(find(same.as_bytes(), "x.tar").ok(), Some(A.into()));
    }

    #[test]
    fn only_a_validsig_is_good() {
        assert_eq!(
            verdict("[GNUPG:] GOODSIG 1 x\n[GNUPG:] VALIDSIG F 2026\n"),
            Verdict::Good
        );
        assert_eq!(verdict("[GNUPG:] GOODSIG 1 x\n"), Verdict::Other);
        assert_eq!(verdict("[GNUPG:] BADSIG 1 x\n"), Verdict::Bad);
        assert_eq!(
            verdict("[GNUPG:] ERRSIG 1 22 8 00 1 9\n[GNUPG:] NO_PUBKEY B42DE646\n"),
            Verdict::UnknownKey("B42DE646".into())
        );
    }
}
