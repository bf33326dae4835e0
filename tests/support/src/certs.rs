//! Throw-away certificates made with the `openssl` command line: self-signed ones for a server
//! under test, and a small CA issuing server certificates for names and IP addresses (pebble's
//! directory, the receiver's STARTTLS).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::run;

/// The key options of every certificate here: P-256, no passphrase.
const EC_KEY: [&str; 5] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
];

/// A self-signed P-256 certificate for `names` (the first is the subject) written as
/// `cert` and `key`.
pub fn self_signed_certificate(cert: &Path, key: &Path, names: &[&str], days: u32) {
    let sans: Vec<String> = names.iter().map(|n| format!("DNS:{n}")).collect();
    run(Command::new("openssl")
        .args(["req", "-x509"])
        .args(EC_KEY)
        .args(["-days", &days.to_string()])
        .arg("-subj")
        .arg(format!("/CN={}", names[0]))
        .arg("-addext")
        .arg(format!("subjectAltName={}", sans.join(",")))
        .arg("-keyout")
        .arg(key)
        .arg("-out")
        .arg(cert));
}

/// A throw-away self-signed certificate for `name` in chasquid's layout
/// (`certs/<name>/{fullchain,privkey}.pem` under `config_dir`).
pub fn throwaway_certificate(config_dir: &Path, name: &str) {
    let dir = config_dir.join("certs").join(name);
    fs::create_dir_all(&dir).expect("mkdir certs");
    self_signed_certificate(
        &dir.join("fullchain.pem"),
        &dir.join("privkey.pem"),
        &[name],
        2,
    );
}

/// The SHA-256 fingerprint of a PEM certificate as openssl prints it (`AB:CD:…`).
pub fn fingerprint(cert: &Path) -> String {
    let out = run(Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(cert));
    out.trim()
        .rsplit('=')
        .next()
        .unwrap_or_default()
        .to_string()
}

/// A certificate authority in `dir` (`ca.pem`, `ca.key`), valid two days.
pub struct Ca {
    dir: PathBuf,
}

/// What a server certificate is issued for.
pub enum San<'a> {
    Dns(&'a str),
    Ip(&'a str),
}

impl Ca {
    pub fn create(dir: &Path, name: &str) -> Ca {
        fs::create_dir_all(dir).expect("mkdir for the CA");
        run(Command::new("openssl")
            .current_dir(dir)
            .args(["req", "-x509"])
            .args(EC_KEY)
            .args(["-days", "2", "-subj", &format!("/CN={name}")])
            .args(["-keyout", "ca.key", "-out", "ca.pem"]));
        Ca {
            dir: dir.to_path_buf(),
        }
    }

    /// The CA certificate (PEM).
    pub fn cert(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// Issues a server certificate for `sans` as `<stem>.pem` and `<stem>.key` in the CA's
    /// directory; returns (certificate, key).
    pub fn issue(&self, stem: &str, sans: &[San]) -> (PathBuf, PathBuf) {
        let names: Vec<String> = sans
            .iter()
            .map(|s| match s {
                San::Dns(n) => format!("DNS:{n}"),
                San::Ip(a) => format!("IP:{a}"),
            })
            .collect();
        let (cert, key, csr, ext) = (
            format!("{stem}.pem"),
            format!("{stem}.key"),
            format!("{stem}.csr"),
            format!("{stem}.ext"),
        );
        run(Command::new("openssl")
            .current_dir(&self.dir)
            .arg("req")
            .args(EC_KEY)
            .args([
                "-subj",
                &format!("/CN={stem}"),
                "-keyout",
                &key,
                "-out",
                &csr,
            ]));
        fs::write(
            self.dir.join(&ext),
            format!(
                "subjectAltName={}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
                names.join(",")
            ),
        )
        .expect("write the extensions file");
        run(Command::new("openssl")
            .current_dir(&self.dir)
            .args([
                "x509", "-req", "-in", &csr, "-CA", "ca.pem", "-CAkey", "ca.key",
            ])
            .args([
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &ext,
                "-out",
                &cert,
            ]));
        (self.dir.join(cert), self.dir.join(key))
    }
}
