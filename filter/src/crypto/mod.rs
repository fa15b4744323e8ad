//! Signature verification, apart from any JOSE encoding: the algorithms, keys prepared once for
//! verification, and who checks a signature (this module's code, or the host's BoringSSL through
//! `verify_signature`).

mod alg;
mod key;
pub mod policy;
pub mod rsa_montgomery;
pub mod verify_signature;

pub use alg::Alg;
pub use key::{Key, KeyMaterial, P521Key, MIN_RSA_BITS};

use hmac::{Hmac, Mac};
// ES256/384/512 as JWS (RFC 7518 §3.4) and BoringSSL have them: r || s of fixed length, each in
// [1, n-1] (`from_slice`), over SHA-256/384/512 of the input. Like BoringSSL's ECDSA_do_verify
// (Envoy's jwt_authn), the crates' verification accepts a high s (n - s verifies as s does).
use p256::ecdsa::signature::Verifier as EcdsaVerifier;
use sha2::{Digest, Sha256, Sha384, Sha512};

/// Who checks signatures: this module (`InModule`), or the host (the runtime's verifier, over
/// `verify_signature`).
pub trait Verifier {
    fn verify(&self, alg: Alg, key: &Key, input: &[u8], sig: &[u8]) -> bool;
}

/// Signature checks in the module, for every algorithm.
pub struct InModule;

impl Verifier for InModule {
    fn verify(&self, alg: Alg, key: &Key, input: &[u8], sig: &[u8]) -> bool {
        verify(alg, &key.material, input, sig)
    }
}

macro_rules! hmac_verify {
    ($digest:ty, $key:expr, $input:expr, $sig:expr) => {
        match <Hmac<$digest> as Mac>::new_from_slice($key) {
            Ok(mut mac) => {
                mac.update($input);
                mac.verify_slice($sig).is_ok()
            }
            Err(_) => false,
        }
    };
}

pub fn verify(alg: Alg, key: &KeyMaterial, input: &[u8], sig: &[u8]) -> bool {
    use rsa_montgomery::{SHA256_PREFIX, SHA384_PREFIX, SHA512_PREFIX};
    match (alg, key) {
        (Alg::Rs256, KeyMaterial::Rsa(k)) => k.verify(SHA256_PREFIX, &Sha256::digest(input), sig),
        (Alg::Rs384, KeyMaterial::Rsa(k)) => k.verify(SHA384_PREFIX, &Sha384::digest(input), sig),
        (Alg::Rs512, KeyMaterial::Rsa(k)) => k.verify(SHA512_PREFIX, &Sha512::digest(input), sig),
        (Alg::Ps256, KeyMaterial::Rsa(k)) => k.verify_pss::<Sha256>(&Sha256::digest(input), sig),
        (Alg::Ps384, KeyMaterial::Rsa(k)) => k.verify_pss::<Sha384>(&Sha384::digest(input), sig),
        (Alg::Ps512, KeyMaterial::Rsa(k)) => k.verify_pss::<Sha512>(&Sha512::digest(input), sig),
        (Alg::Es256, KeyMaterial::P256(k)) => p256::ecdsa::Signature::from_slice(sig)
            .is_ok_and(|s| EcdsaVerifier::verify(k, input, &s).is_ok()),
        (Alg::Es384, KeyMaterial::P384(k)) => p384::ecdsa::Signature::from_slice(sig)
            .is_ok_and(|s| EcdsaVerifier::verify(k, input, &s).is_ok()),
        (Alg::Es512, KeyMaterial::P521(k)) => p521::ecdsa::Signature::from_slice(sig)
            .is_ok_and(|s| EcdsaVerifier::verify(&k.0, input, &s).is_ok()),
        (Alg::EdDsa, KeyMaterial::Ed25519(k)) => ed25519_dalek::Signature::from_slice(sig)
            .is_ok_and(|s| k.verify_strict(input, &s).is_ok()),
        (Alg::Hs256, KeyMaterial::Hmac(k)) => hmac_verify!(Sha256, k, input, sig),
        (Alg::Hs384, KeyMaterial::Hmac(k)) => hmac_verify!(Sha384, k, input, sig),
        (Alg::Hs512, KeyMaterial::Hmac(k)) => hmac_verify!(Sha512, k, input, sig),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_roundtrip_and_tamper() {
        let key = KeyMaterial::Hmac(b"0123456789abcdef0123456789abcdef".to_vec());
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(b"0123456789abcdef0123456789abcdef").unwrap();
        mac.update(b"a.b");
        let sig = mac.finalize().into_bytes().to_vec();
        assert!(verify(Alg::Hs256, &key, b"a.b", &sig));
        assert!(!verify(Alg::Hs256, &key, b"a.c", &sig));
        assert!(!verify(Alg::Hs384, &key, b"a.b", &sig));
        assert!(!verify(Alg::Rs256, &key, b"a.b", &sig));
    }

    #[test]
    fn ecdsa_jose_semantics() {
        use p256::ecdsa::signature::Signer;
        use p256::elliptic_curve::PrimeField;

        let sk = p256::ecdsa::SigningKey::from_slice(&[7u8; 32]).unwrap();
        let key = KeyMaterial::P256(*sk.verifying_key());
        let sig: p256::ecdsa::Signature = sk.sign(b"a.b");
        let sig = sig.to_bytes().to_vec();
        assert!(verify(Alg::Es256, &key, b"a.b", &sig));
        assert!(!verify(Alg::Es256, &key, b"a.c", &sig));
        assert!(!verify(Alg::Es384, &key, b"a.b", &sig));
        assert!(!verify(Alg::Es256, &key, b"a.b", &sig[..63]));
        assert!(!verify(
            Alg::Es256,
            &key,
            b"a.b",
            &[&sig[..], &[0]].concat()
        ));

        let (r, s) = sig.split_at(32);
        // n - s verifies as s does: BoringSSL (Envoy's jwt_authn) has no low-s rule either.
        let mut s_repr = p256::FieldBytes::default();
        s_repr.copy_from_slice(s);
        let neg_s = (-p256::Scalar::from_repr(s_repr).unwrap()).to_repr();
        let high = [r, &neg_s[..]].concat();
        assert!(verify(Alg::Es256, &key, b"a.b", &high));

        let order: Vec<u8> = (0..32)
            .map(|i| {
                let hex = "ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551";
                u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap()
            })
            .collect();
        for bad in [
            [&[0u8; 32][..], s].concat(),
            [r, &[0u8; 32][..]].concat(),
            [&order[..], s].concat(),
            [r, &order[..]].concat(),
            [&[0xffu8; 32][..], s].concat(),
        ] {
            assert!(!verify(Alg::Es256, &key, b"a.b", &bad));
        }

        let sk = p384::ecdsa::SigningKey::from_slice(&[9u8; 48]).unwrap();
        let key = KeyMaterial::P384(*sk.verifying_key());
        let sig: p384::ecdsa::Signature = sk.sign(b"a.b");
        assert!(verify(Alg::Es384, &key, b"a.b", &sig.to_bytes()));
        assert!(!verify(Alg::Es384, &key, b"a.c", &sig.to_bytes()));
        assert!(!verify(Alg::Es256, &key, b"a.b", &sig.to_bytes()));

        use p256::ecdsa::signature::RandomizedSigner;
        use rand::SeedableRng;
        let sk =
            p521::ecdsa::SigningKey::from_slice(&[[0u8].as_slice(), &[5; 65]].concat()).unwrap();
        let key = KeyMaterial::P521(P521Key(p521::ecdsa::VerifyingKey::from(&sk)));
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let sig: p521::ecdsa::Signature = sk.sign_with_rng(&mut rng, b"a.b");
        let sig = sig.to_bytes().to_vec();
        assert_eq!(sig.len(), 132);
        assert!(verify(Alg::Es512, &key, b"a.b", &sig));
        assert!(!verify(Alg::Es512, &key, b"a.c", &sig));
        assert!(!verify(Alg::Es384, &key, b"a.b", &sig));
        assert!(!verify(Alg::Es512, &key, b"a.b", &sig[..131]));
    }

    /// RFC 7515 Appendix A.4: ES512 (P-521, SHA-512).
    #[test]
    fn rfc7515_a4_es512() {
        use base64::Engine;
        let b64 = |s: &str| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(s)
                .unwrap()
        };
        let key = Key::ec(
            "P-521",
            &b64("AekpBQ8ST8a8VcfVOTNl353vSrDCLLJXmPk06wTjxrrjcBpXp5EOnYG_NjFZ6OvLFV1jSfS9tsz4qUxcWceqwQGk"),
            &b64("ADSmRA43Z1DSNx_RvcLI87cdL07l6jQyyBXMoxVg_l2Th-x3S1WDhjDly79ajL4Kkd0AZMaZmh9ubmf63e3kyMj2"),
        )
        .unwrap();
        let input = b"eyJhbGciOiJFUzUxMiJ9.UGF5bG9hZA";
        let mut sig = b64(
            "AdwMgeerwtHoh-l192l60hp9wAHZFVJbLfD_UxMi70cwnZOYaRI1bKPWROc-mZZqwqT2SI-KGDKB34XO0aw_7XdtAG8\
             GaSwFKdCAPZgoXD2YBJZCPEX3xKpRwcdOO8KpEHwJjyqOgzDO7iKvU8vcnwNrmxYbSW9ERBXukOXolLzeO_Jn",
        );
        assert!(verify(Alg::Es512, &key.material, input, &sig));
        assert!(verify_signature::request(Alg::Es512, &key, input, &sig).is_some());
        sig[40] ^= 1;
        assert!(!verify(Alg::Es512, &key.material, input, &sig));
    }
}
