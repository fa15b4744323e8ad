//! Signature verification, apart from any JOSE encoding: the algorithms, keys prepared once for
//! verification, and who checks a signature (this module's code, or the host's BoringSSL through
//! `verify_signature`).

mod alg;
pub mod der;
pub mod ecdsa;
mod key;
pub mod rsa_montgomery;
pub mod verify_signature;

pub use alg::Alg;
pub use key::{Key, KeyMaterial, MIN_RSA_BITS};

use ::rsa::{Pkcs1v15Sign, Pss, RsaPublicKey};
use hmac::{Hmac, Mac};
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
        (Alg::Rs256, KeyMaterial::Rsa(k)) => match &k.1 {
            Some(m) => m.verify(SHA256_PREFIX, &Sha256::digest(input), sig),
            None => rsa_verify::<Sha256>(&k.0, Pkcs1v15Sign::new::<Sha256>(), input, sig),
        },
        (Alg::Rs384, KeyMaterial::Rsa(k)) => match &k.1 {
            Some(m) => m.verify(SHA384_PREFIX, &Sha384::digest(input), sig),
            None => rsa_verify::<Sha384>(&k.0, Pkcs1v15Sign::new::<Sha384>(), input, sig),
        },
        (Alg::Rs512, KeyMaterial::Rsa(k)) => match &k.1 {
            Some(m) => m.verify(SHA512_PREFIX, &Sha512::digest(input), sig),
            None => rsa_verify::<Sha512>(&k.0, Pkcs1v15Sign::new::<Sha512>(), input, sig),
        },
        (Alg::Ps256, KeyMaterial::Rsa(k)) => match &k.1 {
            Some(m) => m.verify_pss::<Sha256>(&Sha256::digest(input), sig),
            None => rsa_verify::<Sha256>(&k.0, Pss::new::<Sha256>(), input, sig),
        },
        (Alg::Ps384, KeyMaterial::Rsa(k)) => match &k.1 {
            Some(m) => m.verify_pss::<Sha384>(&Sha384::digest(input), sig),
            None => rsa_verify::<Sha384>(&k.0, Pss::new::<Sha384>(), input, sig),
        },
        (Alg::Ps512, KeyMaterial::Rsa(k)) => match &k.1 {
            Some(m) => m.verify_pss::<Sha512>(&Sha512::digest(input), sig),
            None => rsa_verify::<Sha512>(&k.0, Pss::new::<Sha512>(), input, sig),
        },
        (Alg::Es256, KeyMaterial::P256(k)) => k.verify(input, sig),
        (Alg::Es384, KeyMaterial::P384(k)) => k.verify(input, sig),
        (Alg::EdDsa, KeyMaterial::Ed25519(k)) => ed25519_dalek::Signature::from_slice(sig)
            .is_ok_and(|s| k.verify_strict(input, &s).is_ok()),
        (Alg::Hs256, KeyMaterial::Hmac(k)) => hmac_verify!(Sha256, k, input, sig),
        (Alg::Hs384, KeyMaterial::Hmac(k)) => hmac_verify!(Sha384, k, input, sig),
        (Alg::Hs512, KeyMaterial::Hmac(k)) => hmac_verify!(Sha512, k, input, sig),
        _ => false,
    }
}

fn rsa_verify<D: Digest>(
    key: &RsaPublicKey,
    scheme: impl ::rsa::traits::SignatureScheme,
    input: &[u8],
    sig: &[u8],
) -> bool {
    key.verify(scheme, &D::digest(input), sig).is_ok()
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
}
