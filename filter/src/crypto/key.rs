//! Verification keys, prepared once when a key set is loaded: the in-module form of each key and,
//! for RSA and EC keys, the DER the host's verifier takes.

use rsa::pkcs8::EncodePublicKey;
use rsa::traits::PublicKeyParts;
use rsa::{BigUint, RsaPublicKey};

use super::rsa_montgomery::MontKey;

/// RSA keys shorter than this are refused (NIST SP 800-131A).
pub const MIN_RSA_BITS: usize = 2048;

#[derive(Debug, Clone)]
pub enum KeyMaterial {
    /// The key in Montgomery form, for checks in the module.
    Rsa(Box<MontKey>),
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
    P521(P521Key),
    Ed25519(ed25519_dalek::VerifyingKey),
    Hmac(Vec<u8>),
}

/// A P-521 key (the crate's type has no `Debug`).
#[derive(Clone)]
pub struct P521Key(pub p521::ecdsa::VerifyingKey);

impl std::fmt::Debug for P521Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("P521Key")
    }
}

/// A verification key, prepared once: its material and, for RSA and EC keys, the
/// SubjectPublicKeyInfo DER the host's verifier takes.
#[derive(Debug, Clone)]
pub struct Key {
    pub material: KeyMaterial,
    pub host_der: Option<Vec<u8>>,
}

impl Key {
    /// From the big-endian modulus and exponent. Refused as BoringSSL refuses them (even n; e
    /// even, 1, or over 33 bits; checked by `RsaPublicKey::new`), and when shorter than
    /// `MIN_RSA_BITS` or longer than 4096 bits (the `rsa` crate's limit; BoringSSL's is 16384).
    pub fn rsa(n: &[u8], e: &[u8]) -> Result<Self, String> {
        let key = RsaPublicKey::new(BigUint::from_bytes_be(n), BigUint::from_bytes_be(e))
            .map_err(|e| format!("invalid RSA key: {e}"))?;
        if key.n().bits() < MIN_RSA_BITS {
            return Err(format!("RSA key shorter than {MIN_RSA_BITS} bits"));
        }
        let mont = MontKey::new(&key).ok_or("invalid RSA key")?;
        Ok(Self {
            material: KeyMaterial::Rsa(Box::new(mont)),
            host_der: Some(spki(&key)?),
        })
    }

    /// From the curve's JOSE name and the point's big-endian coordinates. RFC 7518 §6.2.1.2 asks
    /// for the full field size, but some libraries drop leading zero bytes (about one P-256 key in
    /// 128 then has a 31-byte coordinate), and Envoy reads the coordinates as integers, so shorter
    /// ones are left-padded; longer ones are refused. The point is checked to be on the curve.
    pub fn ec(crv: &str, x: &[u8], y: &[u8]) -> Result<Self, String> {
        let field_bytes = match crv {
            "P-256" => 32,
            "P-384" => 48,
            "P-521" => 66,
            other => return Err(format!("EC curve {other:?} is not supported")),
        };
        let mut sec1 = Vec::with_capacity(1 + 2 * field_bytes);
        sec1.push(0x04);
        for (name, c) in [("x", x), ("y", y)] {
            let pad = field_bytes.checked_sub(c.len()).ok_or_else(|| {
                format!("[{name}] is longer than {crv}'s {field_bytes}-byte coordinates")
            })?;
            sec1.resize(sec1.len() + pad, 0);
            sec1.extend_from_slice(c);
        }
        let (material, host_der) = match crv {
            "P-256" => {
                let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1)
                    .map_err(|_| "invalid P-256 point")?;
                let der = spki(&p256::PublicKey::from(&key))?;
                (KeyMaterial::P256(key), der)
            }
            "P-384" => {
                let key = p384::ecdsa::VerifyingKey::from_sec1_bytes(&sec1)
                    .map_err(|_| "invalid P-384 point")?;
                let der = spki(&p384::PublicKey::from(&key))?;
                (KeyMaterial::P384(key), der)
            }
            "P-521" => {
                let key = p521::ecdsa::VerifyingKey::from_sec1_bytes(&sec1)
                    .map_err(|_| "invalid P-521 point")?;
                let der = spki(
                    &p521::PublicKey::from_affine(*key.as_affine())
                        .map_err(|_| "invalid P-521 point")?,
                )?;
                (KeyMaterial::P521(P521Key(key)), der)
            }
            other => return Err(format!("EC curve {other:?} is not supported")),
        };
        Ok(Self {
            material,
            host_der: Some(host_der),
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

/// The SubjectPublicKeyInfo DER the host's verifier takes.
fn spki(key: &impl EncodePublicKey) -> Result<Vec<u8>, String> {
    key.to_public_key_der()
        .map(|der| der.into_vec())
        .map_err(|_| "cannot encode the key".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len() / 2)
            .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn rsa_keys_boringssl_would_refuse_are_refused() {
        let odd = [0xc3u8; 256];
        let mut even = odd;
        even[255] = 0xc2;
        assert!(Key::rsa(&odd, &[1, 0, 1]).is_ok());
        assert!(Key::rsa(&even, &[1, 0, 1]).is_err());
        assert!(Key::rsa(&odd[1..], &[1, 0, 1]).is_err(), "2040 bits");
        // e: odd, 2 to 33 bits.
        assert!(Key::rsa(&odd, &[3]).is_ok());
        assert!(Key::rsa(&odd, &[1, 0xff, 0xff, 0xff, 0xff]).is_ok());
        for e in [&[1][..], &[0], &[], &[1, 0, 0], &[2, 0, 0, 0, 1], &[1; 8]] {
            assert!(Key::rsa(&odd, e).is_err(), "e = {e:?}");
        }
    }

    #[test]
    fn host_der_is_subject_public_key_info() {
        // n with the high bit set: its INTEGER takes a leading 0 byte.
        let n = [0xc3u8; 256];
        let key = Key::rsa(&n, &[1, 0, 1]).unwrap();
        let want = [
            hex("30820122300d06092a864886f70d01010105000382010f003082010a0282010100"),
            n.to_vec(),
            hex("0203010001"),
        ]
        .concat();
        assert_eq!(key.host_der.unwrap(), want);

        // RFC 7515 A.3's P-256 key.
        let x = hex("7fcdce2770f6c45d4183cbee6fdb4b7b580733357be9ef13bacf6e3c7bd15445");
        let y = hex("c7f144cd1bbd9b7e872cdfedb9eeb9f4b3695d6ea90b24ad8a4623288588e5ad");
        let key = Key::ec("P-256", &x, &y).unwrap();
        let prefix = hex("3059301306072a8648ce3d020106082a8648ce3d030107034200");
        assert_eq!(key.host_der.unwrap(), [&prefix[..], &[4], &x, &y].concat());

        let sk = p384::ecdsa::SigningKey::from_slice(&[9u8; 48]).unwrap();
        let point = sk.verifying_key().to_encoded_point(false);
        let key = Key::ec("P-384", point.x().unwrap(), point.y().unwrap()).unwrap();
        let prefix = hex("3076301006072a8648ce3d020106052b81040022036200");
        assert_eq!(
            key.host_der.unwrap(),
            [&prefix[..], point.as_bytes()].concat()
        );

        let sk =
            p521::ecdsa::SigningKey::from_slice(&[[0u8].as_slice(), &[5; 65]].concat()).unwrap();
        let point = p521::ecdsa::VerifyingKey::from(&sk).to_encoded_point(false);
        let key = Key::ec("P-521", point.x().unwrap(), point.y().unwrap()).unwrap();
        let prefix = hex("30819b301006072a8648ce3d020106052b81040023038186");
        assert_eq!(
            key.host_der.unwrap(),
            [&prefix[..], &[0], point.as_bytes()].concat()
        );
        // Coordinates longer than the field are refused; a P-521 point is not a P-384 one.
        let long_x = [&[0u8][..], point.x().unwrap()].concat();
        assert!(Key::ec("P-521", &long_x, point.y().unwrap()).is_err());
        assert!(Key::ec("P-384", point.x().unwrap(), point.y().unwrap()).is_err());
    }

    #[test]
    fn short_coordinates_are_left_padded() {
        // A P-256 key whose x starts with a zero byte, written without it.
        let (sk, x, y) = (1u32..100_000)
            .find_map(|seed| {
                let mut scalar = [7u8; 32];
                scalar[28..].copy_from_slice(&seed.to_be_bytes());
                let sk = p256::ecdsa::SigningKey::from_slice(&scalar).ok()?;
                let p = sk.verifying_key().to_encoded_point(false);
                let (x, y) = (p.x()?.to_vec(), p.y()?.to_vec());
                (x[0] == 0).then_some((sk, x, y))
            })
            .unwrap();
        let short = Key::ec("P-256", &x[1..], &y).unwrap();
        let full = Key::ec("P-256", &x, &y).unwrap();
        assert_eq!(short.host_der, full.host_der);
        assert!(matches!(short.material, KeyMaterial::P256(k) if k == *sk.verifying_key()));
        // Not on the curve once padded: still refused.
        assert!(Key::ec("P-256", &x[1..], &[1u8; 31]).is_err());
        assert!(Key::ec("P-256", &[], &y).is_err());
    }
}
