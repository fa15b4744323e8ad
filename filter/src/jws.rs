//! Compact JWS: parsing (header, payload, signature) and signature verification.

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::{alphabet, Engine};
use hmac::{Hmac, Mac};
use rsa::{Pkcs1v15Sign, Pss, RsaPublicKey};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256, Sha384, Sha512};

use crate::claims::Claims;
use crate::error::AuthError;
use crate::jwks::{Jwk, KeyMaterial};

/// Tokens longer than this are refused before any decoding.
pub const MAX_TOKEN_BYTES: usize = 64 * 1024;

/// base64url, padding optional, non-canonical trailing bits refused.
pub const B64URL: GeneralPurpose = GeneralPurpose::new(
    &alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    Rs256,
    Rs384,
    Rs512,
    Ps256,
    Ps384,
    Ps512,
    Es256,
    Es384,
    EdDsa,
    Hs256,
    Hs384,
    Hs512,
}

impl Alg {
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "RS256" => Self::Rs256,
            "RS384" => Self::Rs384,
            "RS512" => Self::Rs512,
            "PS256" => Self::Ps256,
            "PS384" => Self::Ps384,
            "PS512" => Self::Ps512,
            "ES256" => Self::Es256,
            "ES384" => Self::Es384,
            "EdDSA" => Self::EdDsa,
            "HS256" => Self::Hs256,
            "HS384" => Self::Hs384,
            "HS512" => Self::Hs512,
            _ => return None,
        })
    }

    /// Whether a key of this material may verify this algorithm. An HMAC algorithm never uses an
    /// asymmetric key's bytes, which closes the RS256→HS256 confusion attack.
    pub fn fits(self, key: &KeyMaterial) -> bool {
        matches!(
            (self, key),
            (
                Self::Rs256 | Self::Rs384 | Self::Rs512 | Self::Ps256 | Self::Ps384 | Self::Ps512,
                KeyMaterial::Rsa(_)
            ) | (Self::Es256, KeyMaterial::P256(_))
                | (Self::Es384, KeyMaterial::P384(_))
                | (Self::EdDsa, KeyMaterial::Ed25519(_))
                | (
                    Self::Hs256 | Self::Hs384 | Self::Hs512,
                    KeyMaterial::Hmac(_)
                )
        )
    }
}

/// A parsed, not yet verified token.
#[derive(Debug)]
pub struct Jws<'t> {
    pub alg: Alg,
    pub kid: Option<String>,
    /// The payload segment exactly as received (base64url).
    pub payload_b64: &'t str,
    pub payload: Map<String, Value>,
    pub claims: Claims,
    signing_input: &'t str,
    signature: Vec<u8>,
}

pub fn parse(token: &str) -> Result<Jws<'_>, AuthError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(AuthError::TooLarge);
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::BadFormat);
    };
    let signing_input = token
        .get(..h.len() + 1 + p.len())
        .ok_or(AuthError::BadFormat)?;

    let header = decode_object(h, AuthError::HeaderBadBase64, AuthError::HeaderBadJson)?;
    let alg = match header.get("alg") {
        Some(Value::String(a)) => Alg::from_name(a).ok_or(AuthError::AlgNotSupported)?,
        _ => return Err(AuthError::HeaderBadAlg),
    };
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return Err(AuthError::HeaderBadKid),
    };
    // RFC 7515 §4.1.11: extensions listed in `crit` must be understood; this verifier knows none.
    if header.contains_key("crit") {
        return Err(AuthError::CritNotSupported);
    }

    let payload = decode_object(p, AuthError::PayloadBadBase64, AuthError::PayloadBadJson)?;
    let claims = Claims::from_payload(&payload)?;
    let signature = B64URL
        .decode(s)
        .map_err(|_| AuthError::SignatureBadBase64)?;
    Ok(Jws {
        alg,
        kid,
        payload_b64: p,
        payload,
        claims,
        signing_input,
        signature,
    })
}

fn decode_object(
    segment: &str,
    bad_base64: AuthError,
    bad_json: AuthError,
) -> Result<Map<String, Value>, AuthError> {
    let bytes = B64URL.decode(segment).map_err(|_| bad_base64)?;
    // serde_json bounds nesting depth (128), so hostile JSON cannot exhaust the stack.
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(bad_json),
    }
}

impl Jws<'_> {
    pub fn verify_with(&self, key: &Jwk, verifier: &dyn Verifier) -> bool {
        verifier.verify(
            self.alg,
            key,
            self.signing_input.as_bytes(),
            &self.signature,
        )
    }
}

/// Who checks signatures: this module, or the host (see `hostcrypto`).
pub trait Verifier {
    fn verify(&self, alg: Alg, key: &Jwk, input: &[u8], sig: &[u8]) -> bool;
}

/// Signature checks in the module, for every algorithm.
pub struct InModule;

impl Verifier for InModule {
    fn verify(&self, alg: Alg, key: &Jwk, input: &[u8], sig: &[u8]) -> bool {
        verify(alg, &key.key, input, sig)
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
    match (alg, key) {
        (Alg::Rs256, KeyMaterial::Rsa(k)) => match &k.1 {
            Some(m) => m.verify(crate::rsa_pkcs1::SHA256_PREFIX, &Sha256::digest(input), sig),
            None => rsa_verify::<Sha256>(&k.0, Pkcs1v15Sign::new::<Sha256>(), input, sig),
        },
        (Alg::Rs384, KeyMaterial::Rsa(k)) => match &k.1 {
            Some(m) => m.verify(crate::rsa_pkcs1::SHA384_PREFIX, &Sha384::digest(input), sig),
            None => rsa_verify::<Sha384>(&k.0, Pkcs1v15Sign::new::<Sha384>(), input, sig),
        },
        (Alg::Rs512, KeyMaterial::Rsa(k)) => match &k.1 {
            Some(m) => m.verify(crate::rsa_pkcs1::SHA512_PREFIX, &Sha512::digest(input), sig),
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
    scheme: impl rsa::traits::SignatureScheme,
    input: &[u8],
    sig: &[u8],
) -> bool {
    key.verify(scheme, &D::digest(input), sig).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(json: &str) -> String {
        B64URL.encode(json)
    }

    fn tok(header: &str, payload: &str) -> String {
        format!("{}.{}.{}", seg(header), seg(payload), B64URL.encode(b"sig"))
    }

    #[test]
    fn format_errors() {
        let ok_h = r#"{"alg":"RS256","kid":"k"}"#;
        let ok_p = r#"{"iss":"i"}"#;
        let cases: Vec<(String, AuthError)> = vec![
            ("deadbeef".into(), AuthError::BadFormat),
            ("a.b".into(), AuthError::BadFormat),
            ("a.b.c.d".into(), AuthError::BadFormat),
            ("a.b.c.d.e".into(), AuthError::BadFormat),
            (format!("!!.{}.c", seg(ok_p)), AuthError::HeaderBadBase64),
            (
                format!("{}.{}.c", seg("not json"), seg(ok_p)),
                AuthError::HeaderBadJson,
            ),
            (
                format!("{}.{}.c", seg("[1]"), seg(ok_p)),
                AuthError::HeaderBadJson,
            ),
            (tok(r#"{"kid":"k"}"#, ok_p), AuthError::HeaderBadAlg),
            (tok(r#"{"alg":5}"#, ok_p), AuthError::HeaderBadAlg),
            (tok(r#"{"alg":"none"}"#, ok_p), AuthError::AlgNotSupported),
            (tok(r#"{"alg":"ES512"}"#, ok_p), AuthError::AlgNotSupported),
            (tok(r#"{"alg":"rs256"}"#, ok_p), AuthError::AlgNotSupported),
            (
                tok(r#"{"alg":"RS256","kid":7}"#, ok_p),
                AuthError::HeaderBadKid,
            ),
            (
                tok(r#"{"alg":"RS256","crit":["exp"]}"#, ok_p),
                AuthError::CritNotSupported,
            ),
            (format!("{}.%%.c", seg(ok_h)), AuthError::PayloadBadBase64),
            (
                format!("{}.{}.c", seg(ok_h), seg("{")),
                AuthError::PayloadBadJson,
            ),
            (
                format!("{}.{}.c", seg(ok_h), seg("\"s\"")),
                AuthError::PayloadBadJson,
            ),
            (
                format!("{}.{}.@", seg(ok_h), seg(ok_p)),
                AuthError::SignatureBadBase64,
            ),
            ("x".repeat(MAX_TOKEN_BYTES + 1), AuthError::TooLarge),
        ];
        for (t, want) in cases {
            assert_eq!(parse(&t).err(), Some(want), "token {t:.80}");
        }
    }

    #[test]
    fn deep_json_is_refused_not_crashed() {
        let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
        let t = format!("{}.{}.c", seg(r#"{"alg":"RS256"}"#), seg(&deep));
        assert_eq!(parse(&t).err(), Some(AuthError::PayloadBadJson));
    }

    #[test]
    fn parses_parts() {
        let t = tok(
            r#"{"alg":"ES256","kid":"k1","typ":"JWT"}"#,
            r#"{"iss":"i","sub":"s"}"#,
        );
        let j = parse(&t).unwrap();
        assert_eq!(j.alg, Alg::Es256);
        assert_eq!(j.kid.as_deref(), Some("k1"));
        assert_eq!(j.payload_b64, seg(r#"{"iss":"i","sub":"s"}"#));
        assert_eq!(j.claims.iss.as_deref(), Some("i"));
        assert_eq!(j.signature, b"sig");
    }

    #[test]
    fn padded_base64_accepted() {
        let p = base64::engine::general_purpose::URL_SAFE.encode(r#"{"iss":"abc"}"#);
        assert!(p.ends_with('='));
        let t = format!("{}.{}.c2ln", seg(r#"{"alg":"HS256"}"#), p);
        assert!(parse(&t).is_ok());
    }

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
