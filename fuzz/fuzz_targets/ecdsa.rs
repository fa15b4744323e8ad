//! The in-module ES256/ES384 verifier (comb tables) against the RustCrypto crates' verification,
//! on valid signatures altered by the input and on the input itself as a signature. Any verdict
//! that differs is a crash.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mesh_authn::crypto::ecdsa::EcKey;
use p256::ecdsa::signature::{Signer as _, Verifier as _};
use std::sync::OnceLock;

struct Keys {
    p256: (p256::ecdsa::SigningKey, EcKey<p256::NistP256>),
    p384: (p384::ecdsa::SigningKey, EcKey<p384::NistP384>),
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let sk256 = p256::ecdsa::SigningKey::from_slice(&[7u8; 32]).unwrap();
        let sk384 = p384::ecdsa::SigningKey::from_slice(&[9u8; 48]).unwrap();
        let pk256 = sk256.verifying_key().to_encoded_point(false);
        let pk384 = sk384.verifying_key().to_encoded_point(false);
        Keys {
            p256: (sk256, EcKey::<p256::NistP256>::from_sec1(pk256.as_bytes()).unwrap()),
            p384: (sk384, EcKey::<p384::NistP384>::from_sec1(pk384.as_bytes()).unwrap()),
        }
    })
}

/// A valid signature of `msg`, with the bytes of `delta` XORed in from `at`, or `delta` itself.
fn candidate(valid: Vec<u8>, mode: u8, delta: &[u8]) -> Vec<u8> {
    if mode & 1 == 1 {
        return delta.to_vec();
    }
    let mut sig = valid;
    let at = usize::from(mode >> 1) % sig.len();
    for (b, d) in sig.iter_mut().skip(at).zip(delta) {
        *b ^= d;
    }
    sig
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let split = rest.len() / 2;
    let (msg, delta) = rest.split_at(split);
    let k = keys();
    if mode & 0x80 == 0 {
        let valid: p256::ecdsa::Signature = k.p256.0.sign(msg);
        let sig = candidate(valid.to_bytes().to_vec(), mode, delta);
        let reference = p256::ecdsa::Signature::from_slice(&sig)
            .is_ok_and(|s| k.p256.0.verifying_key().verify(msg, &s).is_ok());
        assert_eq!(k.p256.1.verify(msg, &sig), reference, "P-256 verdicts differ");
    } else {
        let valid: p384::ecdsa::Signature = k.p384.0.sign(msg);
        let sig = candidate(valid.to_bytes().to_vec(), mode & 0x7f, delta);
        let reference = p384::ecdsa::Signature::from_slice(&sig)
            .is_ok_and(|s| k.p384.0.verifying_key().verify(msg, &s).is_ok());
        assert_eq!(k.p384.1.verify(msg, &sig), reference, "P-384 verdicts differ");
    }
});
