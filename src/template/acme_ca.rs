//! `tls.acme.ca_certificates`: extra CA certificates lego trusts for a private ACME directory
//! (an in-house CA, pebble in the tests). They are read and checked at build time, so a wrong
//! path or a pasted key fails the build with the file named, not lego on every host at 3 a.m.

#[cfg(test)]
use std::fs;
use std::path::{Path, PathBuf};

use base64::Engine;

use crate::site::Site;

const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
const END: &str = "-----END CERTIFICATE-----";

#[derive(Debug, thiserror::Error)]
pub enum AcmeCaError {
    #[error(
        "cannot read {path} (tls.acme.ca_certificates, relative to the site file): {source}\n  fix: give the path of a PEM file with the CA certificate, relative to {site_dir}"
    )]
    Read {
        path: PathBuf,
        site_dir: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} (tls.acme.ca_certificates): {problem}\n  fix: give a PEM file with one or more `{BEGIN}` blocks (public CA certificates only)"
    )]
    Invalid { path: PathBuf, problem: String },
}

/// The concatenated, checked PEM of every listed file, or `None` when the site lists none.
pub fn bundle(site: &Site, site_dir: &Path) -> Result<Option<String>, AcmeCaError> {
    let Some(acme) = &site.tls.acme else {
        return Ok(None);
    };
    if acme.ca_certificates.is_empty() {
        return Ok(None);
    }
    let mut out = String::new();
    for listed in &acme.ca_certificates {
        let path = site_dir.join(listed);
        let bytes = std::fs::read(&path).map_err(|source| AcmeCaError::Read {
            path: path.clone(),
            site_dir: site_dir.to_path_buf(),
            source,
        })?;
        let invalid = |problem: String| AcmeCaError::Invalid {
            path: path.clone(),
            problem,
        };
        let text = String::from_utf8(bytes).map_err(|_| invalid("not a text (PEM) file".into()))?;
        for block in certificates(&text).map_err(invalid)? {
            out.push_str(&block);
        }
    }
    Ok(Some(out))
}

/// The certificate blocks of `text`, normalised; an error for anything that is not one.
fn certificates(text: &str) -> Result<Vec<String>, String> {
    // The bundle ships in the image: a private key in it would be published to every host.
    if text.contains("PRIVATE KEY-----") {
        return Err("contains a private key; only the CA certificate belongs here".into());
    }
    let mut blocks = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(BEGIN) {
        let after = &rest[start + BEGIN.len()..];
        let end = after
            .find(END)
            .ok_or_else(|| format!("certificate {} has no `{END}` line", blocks.len() + 1))?;
        let body: String = after[..end].split_whitespace().collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(&body)
            .map_err(|e| format!("certificate {} is not valid base64: {e}", blocks.len() + 1))?;
        // A DER certificate is a SEQUENCE; anything else was pasted by mistake.
        if der.first() != Some(&0x30) || der.len() < 64 {
            return Err(format!(
                "certificate {} is not a DER X.509 certificate",
                blocks.len() + 1
            ));
        }
        let mut block = String::from(BEGIN);
        block.push('\n');
        for line in body.as_bytes().chunks(64) {
            block.push_str(&String::from_utf8_lossy(line));
            block.push('\n');
        }
        block.push_str(END);
        block.push('\n');
        blocks.push(block);
        rest = &after[end + END.len()..];
    }
    if blocks.is_empty() {
        return Err(format!("no `{BEGIN}` block"));
    }
    Ok(blocks)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(ca: &str) -> Site {
        let text = format!(
            "site: t\ndomains:\n  example.com: {{}}\nhosts:\n  mx1:\n    fqdn: mx1.example.com\n    ipv4: 203.0.113.10\ntls:\n  acme:\n    provider: rfc2136\n    email: ops@example.com\n    ca_certificates: [{ca}]\n"
        );
        crate::site::parse(Path::new("site.yaml"), &text).unwrap_or_else(|e| panic!("{e:?}"))
    }

    #[test]
    fn a_missing_file_is_named_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let err = bundle(&site("ca/missing.pem"), dir.path()).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("ca/missing.pem") && text.contains("fix:"),
            "{text}"
        );
    }

    #[test]
    fn certificates_are_read_relative_to_the_site_and_normalised() {
        let dir = tempfile::tempdir().unwrap();
        let der = [0x30u8; 100];
        let body = base64::engine::general_purpose::STANDARD.encode(der);
        fs::write(
            dir.path().join("ca.pem"),
            format!("junk\r\n{BEGIN}\r\n{body}\r\n{END}\r\n"),
        )
        .unwrap();
        let pem = bundle(&site("ca.pem"), dir.path()).unwrap().unwrap();
        assert!(
            pem.starts_with(BEGIN) && pem.ends_with(&format!("{END}\n")),
            "{pem}"
        );
        assert!(!pem.contains('\r'));
    }

    #[test]
    fn refuses_keys_empty_files_and_garbage() {
        assert!(certificates("").unwrap_err().contains("no `-----BEGIN"));
        assert!(
            certificates("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
                .unwrap_err()
                .contains("private key")
        );
        assert!(
            certificates(&format!("{BEGIN}\n!!!\n{END}\n"))
                .unwrap_err()
                .contains("base64")
        );
        assert!(
            certificates(&format!("{BEGIN}\nAAAA\n"))
                .unwrap_err()
                .contains("no `-----END")
        );
    }
}
