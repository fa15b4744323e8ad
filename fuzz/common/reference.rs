//! A verifier independent of mesh-authn's `crypto`: keys read from the JWKS JSON with serde_json
//! and base64, signatures checked by the crates directly (`rsa` PKCS#1 v1.5 and PSS, `p256`,
//! `p384` and `p521` ECDSA, `ed25519-dalek` strict, `hmac`). The fuzz targets compare it with the module.

#![allow(dead_code)]

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::{alphabet, Engine};
use hmac::{Hmac, Mac};
use rsa::signature::Verifier as _;
use rsa::{BigUint, Pkcs1v15Sign, RsaPublicKey};
use serde_json::Value;
use sha2::{Digest, Sha256, Sha384, Sha512};

/// base64url with or without padding, as JWS segments and JWK members are read (Envoy too).
pub const B64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

pub enum RefKey {
    Rsa(RsaPublicKey),
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
    P521(p521::ecdsa::VerifyingKey),
    Ed25519(ed25519_dalek::VerifyingKey),
    Hmac(Vec<u8>),
}

/// Each key of the document with its kid, in order; panics on a key it cannot read (the JWKS
/// given are fixed and valid).
pub fn keys(jwks_json: &str) -> Vec<(Option<String>, RefKey)> {
    let doc: Value = serde_json::from_str(jwks_json).expect("JWKS JSON");
    let member = |k: &Value, name: &str| {
        B64.decode(k[name].as_str().expect("JWK member"))
            .expect("base64url JWK member")
    };
    doc["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| {
            let key = match (k["kty"].as_str(), k["crv"].as_str()) {
                (Some("RSA"), _) => RefKey::Rsa(
                    RsaPublicKey::new(
                        BigUint::from_bytes_be(&member(k, "n")),
                        BigUint::from_bytes_be(&member(k, "e")),
                    )
                    .expect("RSA JWK"),
                ),
                (Some("EC"), Some(crv)) => {
                    let sec1 = [&[4u8][..], &member(k, "x"), &member(k, "y")].concat();
                    match crv {
                        "P-256" => RefKey::P256(
                            p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1).expect("P-256 JWK"),
                        ),
                        "P-384" => RefKey::P384(
                            p384::ecdsa::VerifyingKey::from_sec1_bytes(&sec1).expect("P-384 JWK"),
                        ),
                        _ => RefKey::P521(
                            p521::ecdsa::VerifyingKey::from_sec1_bytes(&sec1).expect("P-521 JWK"),
                        ),
                    }
                }
                (Some("OKP"), _) => RefKey::Ed25519(
                    ed25519_dalek::VerifyingKey::from_bytes(
                        &member(k, "x").try_into().expect("32-byte Ed25519 JWK"),
                    )
                    .expect("Ed25519 JWK"),
                ),
                (Some("oct"), _) => RefKey::Hmac(member(k, "k")),
                other => panic!("unexpected JWK type {other:?}"),
            };
            (k["kid"].as_str().map(String::from), key)
        })
        .collect()
}

/// Whether `sig` is a JWS signature of `input` under the algorithm named `alg` and `key`.
pub fn verify(alg: &str, key: &RefKey, input: &[u8], sig: &[u8]) -> bool {
    match (alg, key) {
        ("RS256", RefKey::Rsa(k)) => pkcs1(
            k,
            Pkcs1v15Sign::new::<Sha256>(),
            &Sha256::digest(input),
            sig,
        ),
        ("RS384", RefKey::Rsa(k)) => pkcs1(
            k,
            Pkcs1v15Sign::new::<Sha384>(),
            &Sha384::digest(input),
            sig,
        ),
        ("RS512", RefKey::Rsa(k)) => pkcs1(
            k,
            Pkcs1v15Sign::new::<Sha512>(),
            &Sha512::digest(input),
            sig,
        ),
        ("PS256", RefKey::Rsa(k)) => pss::<Sha256>(k, input, sig),
        ("PS384", RefKey::Rsa(k)) => pss::<Sha384>(k, input, sig),
        ("PS512", RefKey::Rsa(k)) => pss::<Sha512>(k, input, sig),
        ("ES256", RefKey::P256(k)) => {
            p256::ecdsa::Signature::from_slice(sig).is_ok_and(|s| k.verify(input, &s).is_ok())
        }
        ("ES384", RefKey::P384(k)) => {
            p384::ecdsa::Signature::from_slice(sig).is_ok_and(|s| k.verify(input, &s).is_ok())
        }
        ("ES512", RefKey::P521(k)) => {
            p521::ecdsa::Signature::from_slice(sig).is_ok_and(|s| k.verify(input, &s).is_ok())
        }
        ("EdDSA", RefKey::Ed25519(k)) => ed25519_dalek::Signature::from_slice(sig)
            .is_ok_and(|s| k.verify_strict(input, &s).is_ok()),
        ("HS256", RefKey::Hmac(k)) => <Hmac<Sha256> as Mac>::new_from_slice(k)
            .is_ok_and(|m| m.chain_update(input).verify_slice(sig).is_ok()),
        ("HS384", RefKey::Hmac(k)) => <Hmac<Sha384> as Mac>::new_from_slice(k)
            .is_ok_and(|m| m.chain_update(input).verify_slice(sig).is_ok()),
        ("HS512", RefKey::Hmac(k)) => <Hmac<Sha512> as Mac>::new_from_slice(k)
            .is_ok_and(|m| m.chain_update(input).verify_slice(sig).is_ok()),
        _ => false,
    }
}

fn pkcs1(key: &RsaPublicKey, scheme: Pkcs1v15Sign, hashed: &[u8], sig: &[u8]) -> bool {
    key.verify(scheme, hashed, sig).is_ok()
}

/// Through `pss::VerifyingKey`: salt as long as the hash, as JWS wants, and s < n checked
/// (`RsaPublicKey::verify` with `Pss` does not check it in rsa 0.9.10).
fn pss<D>(key: &RsaPublicKey, input: &[u8], sig: &[u8]) -> bool
where
    D: Digest + sha2::digest::FixedOutputReset,
{
    rsa::pss::Signature::try_from(sig).is_ok_and(|s| {
        rsa::pss::VerifyingKey::<D>::new(key.clone())
            .verify(input, &s)
            .is_ok()
    })
}
