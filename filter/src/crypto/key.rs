//! Verification keys, prepared once when a key set is loaded: the in-module form of each key and,
//! for RSA and EC keys, the DER the host's verifier takes.

use rsa::traits::PublicKeyParts;
use rsa::{BigUint, RsaPublicKey};

use super::der;
use super::rsa_montgomery::MontKey;

/// RSA keys shorter than this are refused (NIST SP 800-131A).
pub const MIN_RSA_BITS: usize = 2048;

#[derive(Debug, Clone)]
pub enum KeyMaterial {
    /// The key, and its Montgomery form for checks in the module.
    Rsa(Box<(RsaPublicKey, Option<MontKey>)>),
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
    Ed25519(ed25519_dalek::VerifyingKey),
    Hmac(Vec<u8>),
}

/// A verification key, prepared once: its material and, for RSA and EC keys, the
/// SubjectPublicKeyInfo DER the host's verifier takes.
#[derive(Debug, Clone)]
pub struct Key {
    pub material: KeyMaterial,
    pub host_der: Option<Vec<u8>>,
}

impl Key {
    /// From the big-endian modulus and exponent.
    pub fn rsa(n: &[u8], e: &[u8]) -> Result<Self, String> {
        let key = RsaPublicKey::new(BigUint::from_bytes_be(n), BigUint::from_bytes_be(e))
            .map_err(|e| format!("invalid RSA key: {e}"))?;
        if key.n().bits() < MIN_RSA_BITS {
            return Err(format!("RSA key shorter than {MIN_RSA_BITS} bits"));
        }
        let host_der = der::rsa_spki(&key.n().to_bytes_be(), &key.e().to_bytes_be());
        let mont = MontKey::new(&key);
        Ok(Self {
            material: KeyMaterial::Rsa(Box::new((key, mont))),
            host_der: Some(host_der),
        })
    }

    /// From the curve's JOSE name and the point's big-endian coordinates.
    pub fn ec(crv: &str, x: &[u8], y: &[u8]) -> Result<Self, String> {
        let sec1 = [&[0x04][..], x, y].concat();
        let (material, oid) = match crv {
            "P-256" => (
                KeyMaterial::P256(
                    p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1)
                        .map_err(|_| "invalid P-256 point")?,
                ),
                der::OID_P256,
            ),
            "P-384" => (
                KeyMaterial::P384(
                    p384::ecdsa::VerifyingKey::from_sec1_bytes(&sec1)
                        .map_err(|_| "invalid P-384 point")?,
                ),
                der::OID_P384,
            ),
            other => return Err(format!("EC curve {other:?} is not supported")),
        };
        Ok(Self {
            material,
            host_der: Some(der::ec_spki(oid, &sec1)),
        })
    }

    pub fn ed25519(x: &[u8]) -> Result<Self, String> {
        let x: [u8; 32] = x.try_into().map_err(|_| "Ed25519 [x] must be 32 bytes")?;
        let key = ed25519_dalek::VerifyingKey::from_bytes(&x).map_err(|_| "invalid Ed25519 key")?;
        Ok(Self {
            material: KeyMaterial::Ed25519(key),
            host_der: None,
        })
    }

    pub fn hmac(secret: Vec<u8>) -> Result<Self, String> {
        if secret.is_empty() {
            return Err("[k] is empty".into());
        }
        Ok(Self {
            material: KeyMaterial::Hmac(secret),
            host_der: None,
        })
    }
}
