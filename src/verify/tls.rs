//! TLS for the probes and for send-test: which CAs are trusted, how a server's certificate is
//! judged, and a short summary of it for reports.
//!
//! A probe must keep talking to a server whose certificate is wrong (to report the relay test
//! too), so its handshake accepts any certificate whose handshake signatures verify and the
//! chain is judged afterwards, each property on its own: valid for the name, issued by a
//! trusted CA, within its dates. send-test is strict instead: it never sends a password to a
//! server it could not verify.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use sha2::{Digest, Sha256};

/// Certificates closer than this to their end are reported as a warning: ACME renews at 30
/// days, so 14 days left means renewal has been failing for two weeks.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("cannot read the CA file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{} holds no PEM certificate (`-----BEGIN CERTIFICATE-----`)\n  fix: pass the CA certificate(s) the server's chain ends in, in PEM form",
        path.display()
    )]
    NoCertificates { path: PathBuf },
    #[error("{}: certificate {index} is not usable as a trust anchor: {why}", path.display())]
    BadCertificate {
        path: PathBuf,
        index: usize,
        why: String,
    },
}

/// The CAs certificates must chain to.
#[derive(Clone)]
pub struct Trust {
    provider: Arc<CryptoProvider>,
    /// `Err` says why no chain can be trusted (no CA certificate at all).
    verifier: Result<Arc<WebPkiServerVerifier>, String>,
    /// Where the roots came from, for reports.
    pub source: String,
}

impl Trust {
    /// The system trust store (`/etc/ssl/certs` on Debian and Ubuntu).
    pub fn system() -> Trust {
        let found = rustls_native_certs::load_native_certs();
        let mut roots = RootCertStore::empty();
        let (added, _ignored) = roots.add_parsable_certificates(found.certs);
        Trust::from_roots(
            roots,
            format!("the system trust store ({added} CA certificates)"),
        )
    }

    /// Exactly the CA certificates in a PEM file (like curl's `--cacert`, instead of the
    /// system store): a private or test CA.
    pub fn from_pem_file(path: &Path) -> Result<Trust, TrustError> {
        let text = std::fs::read(path).map_err(|source| TrustError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut roots = RootCertStore::empty();
        let mut count = 0;
        for (index, cert) in CertificateDer::pem_slice_iter(&text).enumerate() {
            let cert = cert.map_err(|e| TrustError::BadCertificate {
                path: path.to_path_buf(),
                index: index + 1,
                why: e.to_string(),
            })?;
            roots.add(cert).map_err(|e| TrustError::BadCertificate {
                path: path.to_path_buf(),
                index: index + 1,
                why: e.to_string(),
            })?;
            count += 1;
        }
        if count == 0 {
            return Err(TrustError::NoCertificates {
                path: path.to_path_buf(),
            });
        }
        Ok(Trust::from_roots(
            roots,
            format!("--ca {} ({count} CA certificates)", path.display()),
        ))
    }

    fn from_roots(roots: RootCertStore, source: String) -> Trust {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = if roots.is_empty() {
            Err(format!("{source} holds no CA certificate"))
        } else {
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| e.to_string())
        };
        Trust {
            provider,
            verifier,
            source,
        }
    }

    /// For probes: completes any handshake whose signatures verify; judge the chain with
    /// [`Trust::judge`] afterwards.
    pub fn probing_config(&self) -> Result<Arc<ClientConfig>, String> {
        ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map(|b| {
                Arc::new(
                    b.dangerous()
                        .with_custom_certificate_verifier(Arc::new(JudgeLater {
                            provider: self.provider.clone(),
                        }))
                        .with_no_client_auth(),
                )
            })
            .map_err(|e| e.to_string())
    }

    /// For clients that must not talk to an unverified server: the handshake fails unless the
    /// certificate is valid for the name and chains to these CAs.
    pub fn strict_config(&self) -> Result<Arc<ClientConfig>, String> {
        let verifier = self.verifier.clone()?;
        ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map(|b| Arc::new(b.with_webpki_verifier(verifier).with_no_client_auth()))
            .map_err(|e| e.to_string())
    }

    /// Judges a chain the server presented (leaf first) for `name` at time `now`.
    pub fn judge(&self, chain: &[CertificateDer<'_>], name: &str, now: SystemTime) -> CertVerdict {
        let Some(leaf) = chain.first() else {
            let none = Err("the server presented no certificate".to_string());
            return CertVerdict {
                summary: None,
                name: none.clone(),
                chain: none,
                expiry: Expiry::Unknown("no certificate".into()),
            };
        };
        let summary = CertSummary::parse(leaf);
        let server_name = ServerName::try_from(name.to_string());
        let name_verdict = match (
            &server_name,
            rustls::server::ParsedCertificate::try_from(leaf),
        ) {
            (Err(e), _) => Err(format!("`{name}` is not a server name: {e}")),
            (_, Err(e)) => Err(format!("the certificate cannot be parsed: {e}")),
            (Ok(sn), Ok(parsed)) => rustls::client::verify_server_name(&parsed, sn)
                .map_err(|e| format!("not valid for {name}: {}", rustls_error(&e))),
        };
        let (expiry, at) = match &summary {
            Ok(s) => {
                let now_s = unix(now);
                let at = if now_s > s.not_after {
                    s.not_after
                } else if now_s < s.not_before {
                    s.not_before
                } else {
                    now_s
                };
                (Expiry::from_dates(s, now_s), at)
            }
            Err(e) => (Expiry::Unknown(e.clone()), unix(now)),
        };
        // Trust is judged inside the validity period, so an expired certificate is reported as
        // expired, not also as untrusted; and a wrong name does not hide a bad chain.
        let chain_verdict = match (&self.verifier, &server_name) {
            (Err(why), _) => Err(why.clone()),
            (_, Err(e)) => Err(e.to_string()),
            (Ok(verifier), Ok(sn)) => {
                let time = UnixTime::since_unix_epoch(Duration::from_secs(at.max(0) as u64));
                match verifier.verify_server_cert(leaf, &chain[1..], sn, &[], time) {
                    Ok(_) => Ok(()),
                    Err(rustls::Error::InvalidCertificate(
                        CertificateError::NotValidForName
                        | CertificateError::NotValidForNameContext { .. },
                    )) => Ok(()),
                    Err(e) => Err(format!(
                        "does not chain to {}: {}",
                        self.source,
                        rustls_error(&e)
                    )),
                }
            }
        };
        CertVerdict {
            summary: summary.ok(),
            name: name_verdict,
            chain: chain_verdict,
            expiry,
        }
    }
}

fn rustls_error(e: &rustls::Error) -> String {
    match e {
        rustls::Error::InvalidCertificate(c) => certificate_error(c),
        other => other.to_string(),
    }
}

fn certificate_error(e: &CertificateError) -> String {
    match e {
        CertificateError::UnknownIssuer => {
            "issued by an unknown CA (self-signed, or a CA not trusted here)".into()
        }
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            "the certificate names other hosts".into()
        }
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => "expired".into(),
        // The issuer's name matches a trusted CA, but not its key: another CA of that name.
        CertificateError::BadSignature => {
            "issued by a CA not trusted here (its signature matches no trusted CA's key)".into()
        }
        other => format!("{other:?}"),
    }
}

fn unix(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

/// A verdict per property, so each can be reported (and fixed) on its own.
#[derive(Clone, Debug)]
pub struct CertVerdict {
    pub summary: Option<CertSummary>,
    pub name: Result<(), String>,
    pub chain: Result<(), String>,
    pub expiry: Expiry,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expiry {
    Valid { days_left: i64 },
    Soon { days_left: i64 },
    Expired { days_ago: i64 },
    NotYetValid,
    Unknown(String),
}

impl Expiry {
    fn from_dates(s: &CertSummary, now: i64) -> Expiry {
        const DAY: i64 = 24 * 3600;
        if now > s.not_after {
            Expiry::Expired {
                days_ago: (now - s.not_after) / DAY,
            }
        } else if now < s.not_before {
            Expiry::NotYetValid
        } else if s.not_after - now < EXPIRY_WARNING.as_secs() as i64 {
            Expiry::Soon {
                days_left: (s.not_after - now) / DAY,
            }
        } else {
            Expiry::Valid {
                days_left: (s.not_after - now) / DAY,
            }
        }
    }
}

/// What a person wants to know about a certificate.
#[derive(Clone, Debug)]
pub struct CertSummary {
    pub subject: String,
    pub sans: Vec<String>,
    pub issuer: String,
    pub not_before: i64,
    pub not_after: i64,
    pub not_after_text: String,
    /// SHA-256 of the DER certificate, colon-separated hex (what `openssl x509 -fingerprint
    /// -sha256` prints).
    pub sha256: String,
}

impl CertSummary {
    pub fn parse(der: &CertificateDer<'_>) -> Result<CertSummary, String> {
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
            .map_err(|e| format!("the certificate cannot be parsed: {e}"))?;
        let mut sans = Vec::new();
        if let Ok(Some(ext)) = cert.subject_alternative_name() {
            for name in &ext.value.general_names {
                match name {
                    x509_parser::extensions::GeneralName::DNSName(n) => sans.push(n.to_string()),
                    x509_parser::extensions::GeneralName::IPAddress(bytes) => {
                        let ip = match bytes.len() {
                            4 => <[u8; 4]>::try_from(*bytes)
                                .map(|b| std::net::IpAddr::from(b).to_string())
                                .ok(),
                            16 => <[u8; 16]>::try_from(*bytes)
                                .map(|b| std::net::IpAddr::from(b).to_string())
                                .ok(),
                            _ => None,
                        };
                        sans.extend(ip.map(|ip| format!("IP:{ip}")));
                    }
                    _ => {}
                }
            }
        }
        let validity = cert.validity();
        let digest = Sha256::digest(der.as_ref());
        Ok(CertSummary {
            subject: cert.subject().to_string(),
            sans,
            issuer: cert.issuer().to_string(),
            not_before: validity.not_before.timestamp(),
            not_after: validity.not_after.timestamp(),
            not_after_text: validity.not_after.to_string(),
            sha256: digest
                .iter()
                .map(|b| format!("{b:02X}"))
                .collect::<Vec<_>>()
                .join(":"),
        })
    }

    /// Evidence lines: subject, names, issuer, expiry, fingerprint.
    pub fn lines(&self) -> Vec<String> {
        vec![
            format!("subject: {}", self.subject),
            format!(
                "names (SAN): {}",
                if self.sans.is_empty() {
                    "none".to_string()
                } else {
                    self.sans.join(", ")
                }
            ),
            format!("issuer: {}", self.issuer),
            format!("valid until: {}", self.not_after_text),
            format!("sha256: {}", self.sha256),
        ]
    }
}

/// Accepts the certificate for now (it is judged later), but still verifies the handshake
/// signatures, so the server proves it holds the certificate's key.
#[derive(Debug)]
struct JudgeLater {
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for JudgeLater {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
