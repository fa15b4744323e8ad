//! Compact JWS parsing: header, payload and signature, checked in Envoy's order and with its
//! reasons. Verification is `crypto`'s.

use base64::Engine;
use serde_json::{Map, Value};

use super::claims::Claims;
use super::B64URL;
use crate::crypto::{Alg, Key, Verifier};
use crate::error::AuthError;
use crate::json;

/// Tokens longer than this are refused before any decoding.
pub const MAX_TOKEN_BYTES: usize = 64 * 1024;

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
    // Bounded nesting (128), so hostile JSON cannot exhaust the stack; a member named twice is
    // refused, as Envoy's parser refuses it.
    match json::from_slice(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(bad_json),
    }
}

impl Jws<'_> {
    pub fn verify_with(&self, key: &Key, verifier: &dyn Verifier) -> bool {
        verifier.verify(
            self.alg,
            key,
            self.signing_input.as_bytes(),
            &self.signature,
        )
    }
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
            (tok(r#"{"alg":"ES521"}"#, ok_p), AuthError::AlgNotSupported),
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
                tok(r#"{"alg":"none","alg":"RS256"}"#, ok_p),
                AuthError::HeaderBadJson,
            ),
            (
                tok(r#"{"alg":"RS256","kid":"a","kid":"b"}"#, ok_p),
                AuthError::HeaderBadJson,
            ),
            (
                tok(ok_h, r#"{"iss":"i","exp":1,"exp":99999999999}"#),
                AuthError::PayloadBadJson,
            ),
            (
                tok(ok_h, r#"{"iss":"a","iss":"i"}"#),
                AuthError::PayloadBadJson,
            ),
            (
                tok(ok_h, r#"{"iss":"i","x":{"y":1,"y":2}}"#),
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
}
