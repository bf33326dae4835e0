//! `mailbake image --base-sums SHA256SUMS --base-sums-sig SHA256SUMS.gpg --keyring K`: the
//! base's digest comes from a checksum list whose signature gpgv verifies, as for Ubuntu's
//! cloud images. A throw-away key (made by gpg in a private GNUPGHOME) signs the list the way
//! Ubuntu does (armored detached signature); every refusal names the file and the fix, exits
//! 1 and writes nothing.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use testkit::signing::Signer;

/// The base's published name: the list is searched by it.
const BASE_NAME: &str = "ubuntu-22.04-server-cloudimg-amd64-root.tar.xz";

/// A stand-in base (the check reads only its bytes), a signer and its keyring.
struct Setup {
    dir: tempfile::TempDir,
    base: PathBuf,
    base_sha256: String,
    signer: Signer,
    keyring: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join(BASE_NAME);
        fs::write(&base, b"the base root tarball's bytes").unwrap();
        let base_sha256 = mailbake::image::digest(&base).unwrap();
        let signer = Signer::new("image-signing");
        let keyring = signer.keyring(&dir.path().join("keyring.gpg"));
        fs::create_dir(dir.path().join("out")).unwrap();
        Setup {
            dir,
            base,
            base_sha256,
            signer,
            keyring,
        }
    }

    /// Writes `list` as `SHA256SUMS` and signs it.
    fn signed_list(&self, list: &str) -> (PathBuf, PathBuf) {
        let sums = self.dir.path().join("SHA256SUMS");
        fs::write(&sums, list).unwrap();
        let sig = self.signer.sign(&sums);
        (sums, sig)
    }

    /// Ubuntu's format: `HEX *NAME`, the base among other files.
    fn good_list(&self) -> String {
        format!(
            "{} *ubuntu-22.04-server-cloudimg-amd64.img\n{} *{BASE_NAME}\n",
            "0".repeat(64),
            self.base_sha256
        )
    }

    fn image(&self, sums: &Path, sig: &Path, keyring: &Path) -> Output {
        Command::new(env!("CARGO_BIN_EXE_mailbake"))
            .args(["image", "--base"])
            .arg(&self.base)
            .arg("--base-sums")
            .arg(sums)
            .arg("--base-sums-sig")
            .arg(sig)
            .arg("--keyring")
            .arg(keyring)
            // Missing on purpose: a base that passes is stopped by the next check.
            .arg("--overlay")
            .arg(self.dir.path().join("no-overlay.tar"))
            .arg("--out")
            .arg(self.out().join("mail.qcow2"))
            .output()
            .unwrap()
    }

    fn out(&self) -> PathBuf {
        self.dir.path().join("out")
    }

    /// Runs `image`, which must fail for the base's sake, and returns its error text.
    fn refused(&self, sums: &Path, sig: &Path, keyring: &Path) -> String {
        let out = self.image(sums, sig, keyring);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert_eq!(
            fs::read_dir(self.out()).unwrap().count(),
            0,
            "something was written: {err}"
        );
        assert!(err.contains("fix:"), "no fix offered: {err}");
        err
    }
}

#[test]
fn a_correctly_signed_list_with_the_bases_digest_lets_the_base_through() {
    let s = Setup::new();
    let (sums, sig) = s.signed_list(&s.good_list());
    let out = s.image(&sums, &sig, &s.keyring);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    // The base passed: what stops the run is what comes after it (root, then the overlay).
    assert!(
        err.contains("no-overlay.tar") || err.contains("must run as root"),
        "{err}"
    );
    assert!(
        !err.contains("fix: download") && !err.contains("signed list"),
        "{err}"
    );

    let signed = mailbake::image::signed_sums::SignedSums {
        sums,
        signature: sig,
        keyring: s.keyring.clone(),
    };
    assert_eq!(
        mailbake::image::signed_sums::expected_digest(&signed, &s.base).unwrap(),
        s.base_sha256
    );
}

#[test]
fn a_list_changed_after_signing_is_refused_as_a_bad_signature() {
    let s = Setup::new();
    let (sums, sig) = s.signed_list(&s.good_list());
    // The attacker's edit: the base's line now carries another digest.
    let tampered = s.good_list().replace(&s.base_sha256, &"e".repeat(64));
    fs::write(&sums, tampered).unwrap();
    let err = s.refused(&sums, &sig, &s.keyring);
    assert!(err.contains("BAD signature"), "{err}");
    assert!(err.contains(&sums.display().to_string()), "{err}");
}

#[test]
fn a_list_signed_by_a_key_not_in_the_keyring_is_refused() {
    let s = Setup::new();
    let (sums, sig) = s.signed_list(&s.good_list());
    let stranger = Signer::new("someone-else");
    let other_keyring = stranger.keyring(&s.dir.path().join("other.gpg"));
    let err = s.refused(&sums, &sig, &other_keyring);
    assert!(err.contains("which is not in the keyring"), "{err}");
    assert!(err.contains(&other_keyring.display().to_string()), "{err}");
    assert!(err.contains("ubuntu-cloudimage-keyring.gpg"), "{err}");
}

#[test]
fn a_signed_list_without_the_base_is_refused() {
    let s = Setup::new();
    let list = format!("{} *some-other-image.img\n", s.base_sha256);
    let (sums, sig) = s.signed_list(&list);
    let err = s.refused(&sums, &sig, &s.keyring);
    assert!(
        err.contains(&format!("has no line for `{BASE_NAME}`")),
        "{err}"
    );
    assert!(err.contains(&sums.display().to_string()), "{err}");
}

#[test]
fn a_base_whose_digest_differs_from_the_signed_one_is_refused() {
    let s = Setup::new();
    let (sums, sig) = s.signed_list(&s.good_list());
    fs::write(&s.base, b"a corrupted or replaced download").unwrap();
    let err = s.refused(&sums, &sig, &s.keyring);
    let actual = mailbake::image::digest(&s.base).unwrap();
    assert!(
        err.contains("differs from the one the signed list"),
        "{err}"
    );
    assert!(
        err.contains(&s.base_sha256) && err.contains(&actual),
        "{err}"
    );
}

#[test]
fn a_missing_keyring_says_where_to_get_it() {
    let s = Setup::new();
    let (sums, sig) = s.signed_list(&s.good_list());
    let err = s.refused(&sums, &sig, &s.dir.path().join("absent.gpg"));
    assert!(err.contains("absent.gpg not found"), "{err}");
    assert!(err.contains("ubuntu-keyring"), "{err}");
}
