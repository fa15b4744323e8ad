//! The one token minter of mesh-authn's tests: fixed signing keys, their JWKS and signed JWTs, for
//! the unit tests, the integration tests (`filter/tests`) and the fuzz targets (`fuzz/`).
//!
//! The keys are fixed, not generated (RSA keygen costs seconds, more under wasm32 and ASan), and
//! every signature is a function of its input alone (PSS salt and ES512 nonce from a hash of it),
//! so a token, a failing test or a fuzz crash replays. They are the keys the `token` fuzz target
//! always signed with: its seed corpus selects among them.
//!
//! ```
//! use serde_json::json;
//! use test_tokens::{jwks_json, mint, Key};
//!
//! let jwks = jwks_json(&[(Key::P256, "ec1"), (Key::Hmac, "hs1")]);
//! let token = mint(&json!({"alg": "ES256", "kid": "ec1"}), &json!({"sub": "alice"}));
//! assert_eq!(token.split('.').count(), 3);
//! # let _ = jwks;
//! ```

// Test-only code: a key or signature that cannot be made is a broken fixture, best a panic.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::Signer as _;
use hmac::{Hmac, Mac};
use rand::{rngs::StdRng, SeedableRng};
use rsa::pkcs8::DecodePrivateKey;
use rsa::traits::PublicKeyParts;
use rsa::{Pkcs1v15Sign, Pss, RsaPrivateKey};
use serde_json::{json, Value};
use sha2::{Digest, Sha256, Sha384, Sha512};

/// The RSA key, 2048 bits, e = 65537: PKCS#8 DER, one of the `rsa` fuzz target's fixed keys.
pub const RSA_PKCS8_DER: &[u8] =
    include_bytes!("../../../fuzz/fixtures/rsa/rsa-2048-e65537.p8.der");
/// The P-256 private scalar.
pub const P256_SCALAR: [u8; 32] = [7; 32];
/// The P-384 private scalar.
pub const P384_SCALAR: [u8; 48] = [9; 48];
/// The Ed25519 seed.
pub const ED25519_SEED: [u8; 32] = [5; 32];
/// The HMAC secret (HS256/384/512), also the `k` of its JWK.
pub const HMAC_KEY: &[u8] = b"mesh-authn fuzz HMAC key, 32+ bytes";

/// The algorithm `sign` and `mint` know besides the JWS ones: HS256 keyed with the big-endian
/// bytes of the RSA key's modulus, the algorithm-confusion attack on verifiers that take an RSA
/// key for an HMAC secret.
pub const HS256_RSA_PUB: &str = "HS256-rsa-pub";

/// The signing keys, made once.
pub struct Keys {
    pub rsa: RsaPrivateKey,
    pub p256: p256::ecdsa::SigningKey,
    pub p384: p384::ecdsa::SigningKey,
    pub p521: p521::ecdsa::SigningKey,
    pub ed25519: ed25519_dalek::SigningKey,
    pub hmac: &'static [u8],
}

impl Keys {
    pub fn get() -> &'static Keys {
        static K: OnceLock<Keys> = OnceLock::new();
        K.get_or_init(|| {
            // P-521 scalars are 66 bytes; the leading 0 keeps this one below the group order.
            let p521_scalar = [[0].as_slice(), &[3; 65]].concat();
            Keys {
                rsa: RsaPrivateKey::from_pkcs8_der(RSA_PKCS8_DER).expect("RSA fixture key"),
                p256: p256::ecdsa::SigningKey::from_slice(&P256_SCALAR).expect("P-256 key"),
                p384: p384::ecdsa::SigningKey::from_slice(&P384_SCALAR).expect("P-384 key"),
                p521: p521::ecdsa::SigningKey::from_slice(&p521_scalar).expect("P-521 key"),
                ed25519: ed25519_dalek::SigningKey::from_bytes(&ED25519_SEED),
                hmac: HMAC_KEY,
            }
        })
    }
}

/// One of the keys, for naming it in a JWKS.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Key {
    Rsa,
    P256,
    P384,
    P521,
    Ed25519,
    Hmac,
}

impl Key {
    pub const ALL: [Key; 6] = [
        Key::Rsa,
        Key::P256,
        Key::P384,
        Key::P521,
        Key::Ed25519,
        Key::Hmac,
    ];

    /// The key `sign(alg, _)` signs with; None for "none" and names it does not know.
    pub fn for_alg(alg: &str) -> Option<Key> {
        match alg {
            "RS256" | "RS384" | "RS512" | "PS256" | "PS384" | "PS512" => Some(Key::Rsa),
            "ES256" => Some(Key::P256),
            "ES384" => Some(Key::P384),
            "ES512" => Some(Key::P521),
            "EdDSA" => Some(Key::Ed25519),
            "HS256" | "HS384" | "HS512" => Some(Key::Hmac),
            _ => None,
        }
    }

    /// Its JWK: the public key (the secret for HMAC), with `kid` and no `alg` or `use`.
    pub fn jwk(self, kid: &str) -> Value {
        let k = Keys::get();
        match self {
            Key::Rsa => {
                let public = k.rsa.to_public_key();
                json!({"kty": "RSA", "kid": kid,
                       "n": b64(&public.n().to_bytes_be()), "e": b64(&public.e().to_bytes_be())})
            }
            Key::P256 => {
                let p = k.p256.verifying_key().to_encoded_point(false);
                ec_jwk(kid, "P-256", p.x(), p.y())
            }
            Key::P384 => {
                let p = k.p384.verifying_key().to_encoded_point(false);
                ec_jwk(kid, "P-384", p.x(), p.y())
            }
            Key::P521 => {
                let p = p521::ecdsa::VerifyingKey::from(&k.p521).to_encoded_point(false);
                ec_jwk(kid, "P-521", p.x(), p.y())
            }
            Key::Ed25519 => json!({"kty": "OKP", "kid": kid, "crv": "Ed25519",
                                   "x": b64(k.ed25519.verifying_key().as_bytes())}),
            Key::Hmac => json!({"kty": "oct", "kid": kid, "k": b64(k.hmac)}),
        }
    }
}

fn ec_jwk<A: AsRef<[u8]>>(kid: &str, crv: &str, x: Option<A>, y: Option<A>) -> Value {
    json!({"kty": "EC", "kid": kid, "crv": crv,
           "x": b64(x.expect("uncompressed point").as_ref()),
           "y": b64(y.expect("uncompressed point").as_ref())})
}

/// A JWKS document (JSON text) of these keys under these kids, in this order.
pub fn jwks_json(keys: &[(Key, &str)]) -> String {
    let keys: Vec<Value> = keys.iter().map(|(key, kid)| key.jwk(kid)).collect();
    json!({ "keys": keys }).to_string()
}

/// Base64url without padding, as in JWS.
pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// HMAC of `input` under `key` with the digest `$d`.
macro_rules! mac {
    ($d:ty, $key:expr, $input:expr) => {
        <Hmac<$d> as Mac>::new_from_slice($key)
            .expect("HMAC takes any key length")
            .chain_update($input)
            .finalize()
            .into_bytes()
            .to_vec()
    };
}

/// The JWS signature of `input` under `alg`: RS/PS/ES 256/384/512, EdDSA, HS256/384/512 with the
/// key `Key::for_alg` names, `HS256_RSA_PUB`, or "none" (empty). The same input always gives the
/// same bytes: PSS salts and ES512 nonces come from an rng seeded with a hash of the input
/// (ES256/384 and RSA PKCS#1 v1.5 are deterministic by themselves). Panics on any other name.
pub fn sign(alg: &str, input: &[u8]) -> Vec<u8> {
    let k = Keys::get();
    let rng = &mut StdRng::seed_from_u64(u64::from_le_bytes(
        Sha256::digest(input)[..8].try_into().unwrap(),
    ));
    let rsa = match alg {
        "RS256" => k
            .rsa
            .sign(Pkcs1v15Sign::new::<Sha256>(), &Sha256::digest(input)),
        "RS384" => k
            .rsa
            .sign(Pkcs1v15Sign::new::<Sha384>(), &Sha384::digest(input)),
        "RS512" => k
            .rsa
            .sign(Pkcs1v15Sign::new::<Sha512>(), &Sha512::digest(input)),
        "PS256" => k
            .rsa
            .sign_with_rng(rng, Pss::new::<Sha256>(), &Sha256::digest(input)),
        "PS384" => k
            .rsa
            .sign_with_rng(rng, Pss::new::<Sha384>(), &Sha384::digest(input)),
        "PS512" => k
            .rsa
            .sign_with_rng(rng, Pss::new::<Sha512>(), &Sha512::digest(input)),
        "ES256" => return p256::ecdsa::Signature::to_vec(&k.p256.sign(input)),
        "ES384" => return p384::ecdsa::Signature::to_vec(&k.p384.sign(input)),
        "ES512" => {
            use p521::ecdsa::signature::RandomizedSigner as _;
            let sig: p521::ecdsa::Signature = k.p521.sign_with_rng(rng, input);
            return sig.to_vec();
        }
        "EdDSA" => return k.ed25519.sign(input).to_vec(),
        "HS256" => return mac!(Sha256, k.hmac, input),
        "HS384" => return mac!(Sha384, k.hmac, input),
        "HS512" => return mac!(Sha512, k.hmac, input),
        HS256_RSA_PUB => return mac!(Sha256, &k.rsa.to_public_key().n().to_bytes_be(), input),
        "none" => return Vec::new(),
        _ => panic!("test_tokens::sign: no signer for {alg:?}"),
    };
    rsa.expect("RSA signature")
}

/// A compact JWS of `claims` under `header`, signed with `sign(header.alg, _)`. A header member
/// "x-signer" (removed from the token) picks another signer than `alg`, for tokens whose
/// signature must not verify: `{"alg": "RS256", "x-signer": "RS512"}`, `HS256_RSA_PUB`.
pub fn mint(header: &Value, claims: &Value) -> String {
    let mut header = header.clone();
    let signer = match header.as_object_mut().and_then(|h| h.remove("x-signer")) {
        Some(Value::String(s)) => s,
        _ => header["alg"].as_str().unwrap_or("none").to_string(),
    };
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let sig = sign(&signer, input.as_bytes());
    format!("{input}.{}", b64(&sig))
}

/// `mint` under `{"alg": "HS256", "kid": kid}`: the runtime tests' tokens.
pub fn hs256(kid: &str, claims: &Value) -> String {
    mint(&json!({"alg": "HS256", "kid": kid}), claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_deterministic_and_keyed_as_named() {
        for alg in [
            "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512",
            "EdDSA", "HS256", "HS384", "HS512",
        ] {
            assert!(Key::for_alg(alg).is_some(), "{alg}");
            let a = sign(alg, b"header.payload");
            assert!(!a.is_empty(), "{alg}");
            assert_eq!(a, sign(alg, b"header.payload"), "{alg}");
            assert_ne!(a, sign(alg, b"header.payload2"), "{alg}");
        }
        assert!(sign("none", b"x").is_empty());
        assert_ne!(sign(HS256_RSA_PUB, b"x"), sign("HS256", b"x"));
    }

    #[test]
    fn mint_drops_x_signer() {
        let claims = json!({"sub": "alice"});
        let t = mint(
            &json!({"alg": "HS256", "kid": "k", "x-signer": "HS384"}),
            &claims,
        );
        let header = t.split('.').next().unwrap();
        assert_eq!(header, b64(br#"{"alg":"HS256","kid":"k"}"#));
        assert_eq!(
            t.rsplit('.').next().unwrap().len(),
            64,
            "an HS384 signature"
        );
    }

    #[test]
    fn jwks_names_every_key() {
        let all: Vec<(Key, String)> = Key::ALL.iter().map(|k| (*k, format!("{k:?}"))).collect();
        let pairs: Vec<(Key, &str)> = all.iter().map(|(k, kid)| (*k, kid.as_str())).collect();
        let doc: Value = serde_json::from_str(&jwks_json(&pairs)).unwrap();
        let kids: Vec<&str> = doc["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap())
            .collect();
        assert_eq!(kids, ["Rsa", "P256", "P384", "P521", "Ed25519", "Hmac"]);
    }
}
