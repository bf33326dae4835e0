//! DKIM key material: generation, loading with strength checks, and the DNS TXT value.
//!
//! Keys are PEM `PRIVATE KEY` (unencrypted PKCS#8) because that is the only form chasquid's
//! native DKIM signer loads; PKCS#1 `RSA PRIVATE KEY` files are refused with the conversion
//! command, since chasquid would refuse them at start-up anyway.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::SigningKey;
use pkcs8::der::Decode as _;
use pkcs8::{EncodePrivateKey as _, EncodePublicKey as _, LineEnding, ObjectIdentifier};
use rsa::traits::PublicKeyParts as _;
use zeroize::Zeroizing;

use super::error::KeyError;
use crate::site::DkimAlgorithm;

/// RSA keys shorter than this are refused: RFC 8301 makes 1024 bits the floor and major
/// receivers already ignore such signatures; 2048 is what everyone publishes.
pub const MIN_RSA_BITS: usize = 2048;

const OID_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");

/// What a loaded key is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    Rsa { bits: usize },
    Ed25519,
}

/// A validated DKIM private key: PKCS#8 PEM plus its public half, ready for DNS.
pub struct DkimKey {
    kind: KeyKind,
    pem: Zeroizing<String>,
    /// The `p=` value: base64 SubjectPublicKeyInfo DER (RSA) or raw public key (Ed25519).
    public_b64: String,
}

impl fmt::Debug for DkimKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DkimKey")
            .field("kind", &self.kind)
            .field("public", &self.public_b64)
            .finish_non_exhaustive()
    }
}

impl DkimKey {
    /// Parses and checks a PEM private key: PKCS#8, RSA >= [`MIN_RSA_BITS`] or Ed25519.
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        let (label, der) = pkcs8::der::pem::decode_vec(pem.as_bytes())
            .map_err(|e| KeyError::Malformed(e.to_string()))?;
        let der = Zeroizing::new(der);
        match label {
            "PRIVATE KEY" => {}
            "RSA PRIVATE KEY" => return Err(KeyError::Pkcs1),
            "ENCRYPTED PRIVATE KEY" => return Err(KeyError::Encrypted),
            other => {
                return Err(KeyError::WrongLabel {
                    label: other.to_string(),
                });
            }
        }
        let info = pkcs8::PrivateKeyInfoRef::from_der(&der)
            .map_err(|e| KeyError::Malformed(format!("PKCS#8 structure: {e}")))?;
        let oid = info.algorithm.oid;
        let (kind, public_b64) = if oid == OID_RSA {
            // Measure the modulus before the full decode so a short key gets the "weak key"
            // error (with its fix) rather than whatever the RSA library says about it.
            let pkcs1 = rsa::pkcs1::RsaPrivateKeyRef::from_der(info.private_key.as_bytes())
                .map_err(|e| KeyError::Malformed(format!("RSA key: {e}")))?;
            let bits = bit_length(pkcs1.modulus.as_bytes());
            if bits < MIN_RSA_BITS {
                return Err(KeyError::Weak {
                    bits,
                    min: MIN_RSA_BITS,
                });
            }
            let key = rsa::PrivateKey::try_from(info)
                .map_err(|e| KeyError::Malformed(format!("RSA key: {e}")))?;
            let spki = key
                .to_public_key()
                .to_public_key_der()
                .map_err(|e| KeyError::Malformed(format!("RSA public key: {e}")))?;
            let bits = key.n().bit_width() as usize;
            (KeyKind::Rsa { bits }, BASE64.encode(spki.as_bytes()))
        } else if oid == OID_ED25519 {
            let key = SigningKey::try_from(info)
                .map_err(|e| KeyError::Malformed(format!("Ed25519 key: {e}")))?;
            (
                KeyKind::Ed25519,
                BASE64.encode(key.verifying_key().as_bytes()),
            )
        } else {
            return Err(KeyError::UnsupportedAlgorithm {
                oid: oid.to_string(),
            });
        };
        Ok(DkimKey {
            kind,
            pem: Zeroizing::new(pem.to_string()),
            public_b64,
        })
    }

    pub fn kind(&self) -> KeyKind {
        self.kind
    }

    /// The private key, PEM `PRIVATE KEY`, as it goes into the seed.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// The TXT record value for `<selector>._domainkey.<domain>`:
    /// `v=DKIM1; k=rsa; p=<base64 SPKI DER>` or `v=DKIM1; k=ed25519; p=<base64 raw key>`.
    pub fn dns_txt_value(&self) -> String {
        let k = match self.kind {
            KeyKind::Rsa { .. } => "rsa",
            KeyKind::Ed25519 => "ed25519",
        };
        format!("v=DKIM1; k={k}; p={}", self.public_b64)
    }
}

/// Number of significant bits in a big-endian unsigned integer.
fn bit_length(be: &[u8]) -> usize {
    let trimmed: &[u8] = match be.iter().position(|&b| b != 0) {
        Some(i) => &be[i..],
        None => return 0,
    };
    (trimmed.len() - 1) * 8 + (8 - trimmed[0].leading_zeros() as usize)
}

/// Generates a new private key, returned as PKCS#8 PEM (LF line endings).
pub fn generate(algorithm: DkimAlgorithm) -> Result<Zeroizing<String>, KeyError> {
    let gen_err = |e: &dyn fmt::Display| KeyError::Generation(e.to_string());
    match algorithm.rsa_bits() {
        Some(bits) => {
            let key =
                rsa::PrivateKey::new(&mut getrandom::SysRng, bits).map_err(|e| gen_err(&e))?;
            key.to_pkcs8_pem(LineEnding::LF).map_err(|e| gen_err(&e))
        }
        None => {
            let mut seed = Zeroizing::new([0u8; 32]);
            getrandom::fill(&mut *seed).map_err(|e| gen_err(&e))?;
            let key = SigningKey::from_bytes(&seed);
            // Write the RFC 8410 v1 form (private key only, no embedded public key): the form
            // OpenSSL writes and every PKCS#8 reader, Go's included, accepts.
            let pair = ed25519_dalek::ed25519::pkcs8::KeypairBytes {
                secret_key: key.to_bytes(),
                public_key: None,
            };
            pair.to_pkcs8_pem(LineEnding::LF).map_err(|e| gen_err(&e))
        }
    }
}

/// The DNS TXT value for a PEM private key; see [`DkimKey::dns_txt_value`].
pub fn dns_txt_value(private_pem: &str) -> Result<String, KeyError> {
    Ok(DkimKey::from_pem(private_pem)?.dns_txt_value())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bit_lengths() {
        assert_eq!(bit_length(&[0, 0x80, 0]), 16);
        assert_eq!(bit_length(&[0x01]), 1);
        assert_eq!(bit_length(&[0, 0]), 0);
    }

    #[test]
    fn ed25519_generate_and_load() {
        let pem = match generate(DkimAlgorithm::Ed25519) {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        };
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{}", *pem);
        let key = DkimKey::from_pem(&pem).map_err(|e| e.to_string());
        let txt = key.map(|k| (k.kind(), k.dns_txt_value()));
        let Ok((KeyKind::Ed25519, txt)) = txt else {
            panic!("{txt:?}")
        };
        let p = txt.strip_prefix("v=DKIM1; k=ed25519; p=").unwrap_or("");
        assert_eq!(BASE64.decode(p).map(|b| b.len()).ok(), Some(32));
    }

    #[test]
    fn refuses_wrong_labels() {
        let pkcs1 = "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n";
        assert!(matches!(DkimKey::from_pem(pkcs1), Err(KeyError::Pkcs1)));
        let cert = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(matches!(
            DkimKey::from_pem(cert),
            Err(KeyError::WrongLabel { .. })
        ));
        assert!(matches!(
            DkimKey::from_pem("garbage"),
            Err(KeyError::Malformed(_))
        ));
    }
}
