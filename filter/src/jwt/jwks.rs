//! JSON Web Key Sets: parsed defensively into keys prepared once for verification.

use base64::Engine;
use serde_json::{Map, Value};

use super::B64URL;
use crate::crypto::{Alg, Key};
use crate::error::ConfigError;
use crate::json;

/// A JWKS larger than this is refused unread.
pub const MAX_JWKS_BYTES: usize = 512 * 1024;
/// Keys beyond this count are not used, and the cut is logged and counted (`jwks_keys_cut`).
/// Envoy takes every key; within `MAX_JWKS_BYTES` only a set of small keys can be longer (about
/// 1 300 RSA-2048 or 4 000 P-256 keys fit), and no published set comes near it.
pub const MAX_KEYS: usize = 4096;

#[derive(Debug, Clone)]
pub struct Jwk {
    pub kid: Option<String>,
    pub alg: Option<Alg>,
    pub key: Key,
}

#[derive(Debug, Clone, Default)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
    /// How many keys the document had, when that was more than `MAX_KEYS`.
    pub cut_from: Option<usize>,
}

impl Jwks {
    /// Keys that may verify a token with this `alg` and `kid`: a token's kid selects only keys
    /// with that kid; a key's `alg`, when present, must equal the token's.
    pub fn candidates<'a>(
        &'a self,
        alg: Alg,
        kid: Option<&'a str>,
    ) -> impl Iterator<Item = &'a Jwk> + 'a {
        self.keys.iter().filter(move |k| {
            (kid.is_none() || k.kid.as_deref() == kid)
                && k.alg.is_none_or(|a| a == alg)
                && alg.fits(&k.key.material)
        })
    }
}

/// Parses a JWKS. Keys this verifier cannot use are skipped and described in the second value;
/// a set without any usable key is an error (its path is within the JWKS document: an inline
/// JWKS is configuration, a fetched one's reason is logged).
pub fn parse(bytes: &[u8]) -> Result<(Jwks, Vec<String>), ConfigError> {
    if bytes.len() > MAX_JWKS_BYTES {
        return Err(ConfigError::here(format!(
            "JWKS larger than {MAX_JWKS_BYTES} bytes"
        )));
    }
    let doc = json::from_slice(bytes)
        .map_err(|e| ConfigError::here(format!("JWKS is not valid JSON: {e}")))?;
    let Some(Value::Array(raw_keys)) = doc.get("keys") else {
        return Err(ConfigError::here(
            "JWKS must be an object with a \"keys\" array",
        ));
    };
    let mut keys = Vec::new();
    let mut skipped = Vec::new();
    for (i, raw) in raw_keys.iter().take(MAX_KEYS).enumerate() {
        match raw
            .as_object()
            .ok_or_else(|| "not an object".to_string())
            .and_then(parse_key)
        {
            Ok(k) => keys.push(k),
            Err(e) => skipped.push(format!("keys[{i}] skipped: {e}")),
        }
    }
    let cut_from = (raw_keys.len() > MAX_KEYS).then_some(raw_keys.len());
    if keys.is_empty() {
        let why = if skipped.is_empty() {
            String::new()
        } else {
            format!(" ({})", skipped.join("; "))
        };
        return Err(ConfigError::new(
            "keys",
            format!("JWKS has no usable key{why}"),
        ));
    }
    Ok((Jwks { keys, cut_from }, skipped))
}

/// What is logged when a set is cut.
pub fn cut_warning(keys_in_document: usize) -> String {
    format!("the key set has {keys_in_document} keys; only the first {MAX_KEYS} are used")
}

fn field<'a>(k: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, String> {
    match k.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("[{name}] is not a string")),
    }
}

fn bytes(k: &Map<String, Value>, name: &str) -> Result<Vec<u8>, String> {
    let s = field(k, name)?.ok_or_else(|| format!("[{name}] is missing"))?;
    B64URL
        .decode(s)
        .map_err(|_| format!("[{name}] is not base64url"))
}

/// One JWK, as a key set holds it or a DPoP proof carries it.
pub fn parse_key(k: &Map<String, Value>) -> Result<Jwk, String> {
    // `jwt-svid` marks a SPIFFE trust bundle's JWT signing keys (SPIFFE Trust Domain and Bundle
    // §4.2.2); `x509-svid` and `enc` keys must not verify JWTs.
    if let Some(usage) = field(k, "use")? {
        if usage != "sig" && usage != "jwt-svid" {
            return Err(format!("[use] is {usage:?}, not \"sig\" or \"jwt-svid\""));
        }
    }
    let kid = field(k, "kid")?.map(String::from);
    let alg = match field(k, "alg")? {
        None => None,
        Some(a) => Some(Alg::from_name(a).ok_or_else(|| format!("[alg] {a:?} is not supported"))?),
    };
    let kty = field(k, "kty")?.ok_or("[kty] is missing")?;
    let key = match kty {
        "RSA" => Key::rsa(&bytes(k, "n")?, &bytes(k, "e")?)?,
        "EC" => {
            let crv = field(k, "crv")?.ok_or("[crv] is missing")?;
            Key::ec(crv, &bytes(k, "x")?, &bytes(k, "y")?)?
        }
        "OKP" => match field(k, "crv")? {
            Some("Ed25519") => Key::ed25519(&bytes(k, "x")?)?,
            other => return Err(format!("OKP curve {other:?} is not supported")),
        },
        "oct" => Key::hmac(bytes(k, "k")?)?,
        other => return Err(format!("[kty] {other:?} is not supported")),
    };
    if let Some(a) = alg {
        if !a.fits(&key.material) {
            return Err(format!("[alg] {a:?} does not fit [kty] {kty:?}"));
        }
    }
    Ok(Jwk { kid, alg, key })
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7515 A.3 (P-256) and RFC 8037 A.2 (Ed25519) public keys.
    const EC: &str = r#"{"kty":"EC","crv":"P-256","kid":"ec1","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}"#;
    const ED: &str = r#"{"kty":"OKP","crv":"Ed25519","kid":"ed1","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}"#;
    const OCT: &str = r#"{"kty":"oct","kid":"h1","alg":"HS256","k":"c2VjcmV0"}"#;

    fn set(keys: &[&str]) -> String {
        format!(r#"{{"keys":[{}]}}"#, keys.join(","))
    }

    #[test]
    fn parses_supported_kinds() {
        let (j, skipped) = parse(set(&[EC, ED, OCT]).as_bytes()).unwrap();
        assert_eq!(j.keys.len(), 3, "{skipped:?}");
        assert!(skipped.is_empty());
    }

    #[test]
    fn skips_unusable_keys_with_reasons() {
        let bad = [
            r#"{"kty":"EC","crv":"P-521","x":"AA","y":"AA"}"#,
            r#"{"kty":"EC","crv":"P-256","x":"AAAA","y":"AAAA"}"#,
            r#"{"kty":"RSA","n":"AQAB","e":"AQAB"}"#,
            r#"{"kty":"RSA","e":"AQAB"}"#,
            r#"{"kty":"oct","k":"c2VjcmV0","use":"enc"}"#,
            r#"{"kty":"oct","k":"c2VjcmV0","alg":"RS256"}"#,
            r#"{"kty":"oct","k":"c2VjcmV0","alg":"RSA-OAEP"}"#,
            r#"{"kty":"XYZ"}"#,
            r#"{"kid":5,"kty":"oct","k":"c2VjcmV0"}"#,
            r#""string key""#,
        ];
        let mut all: Vec<&str> = bad.to_vec();
        all.push(EC);
        let (j, skipped) = parse(set(&all).as_bytes()).unwrap();
        assert_eq!(j.keys.len(), 1);
        assert_eq!(skipped.len(), bad.len(), "{skipped:?}");
    }

    #[test]
    fn spiffe_bundle_signing_keys_are_used() {
        let bundle = format!(
            r#"{{"keys":[{},{}],"spiffe_sequence":3,"spiffe_refresh_hint":300}}"#,
            EC.replace(r#""kid":"ec1""#, r#""kid":"ec1","use":"jwt-svid""#),
            r#"{"kty":"EC","crv":"P-256","use":"x509-svid","x5c":["AA=="],"x":"AA","y":"AA"}"#
        );
        let (j, skipped) = parse(bundle.as_bytes()).unwrap();
        assert_eq!(j.keys.len(), 1);
        assert_eq!(j.keys[0].kid.as_deref(), Some("ec1"));
        assert!(skipped[0].contains("x509-svid"), "{skipped:?}");
    }

    #[test]
    fn long_sets_are_cut_and_say_so() {
        let keys = vec![OCT; MAX_KEYS + 5];
        let (j, _) = parse(set(&keys).as_bytes()).unwrap();
        assert_eq!(j.keys.len(), MAX_KEYS);
        assert_eq!(j.cut_from, Some(MAX_KEYS + 5));
        let (j, _) = parse(set(&keys[..MAX_KEYS]).as_bytes()).unwrap();
        assert_eq!((j.keys.len(), j.cut_from), (MAX_KEYS, None));
    }

    #[test]
    fn repeated_members_refuse_the_set() {
        for doc in [
            r#"{"keys":[],"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#,
            r#"{"keys":[{"kty":"oct","k":"c2VjcmV0","k":"b3RoZXI"}]}"#,
            r#"{"keys":[{"kty":"oct","kid":"a","kid":"b","k":"c2VjcmV0"}]}"#,
        ] {
            let e = parse(doc.as_bytes()).unwrap_err();
            assert!(e.message.contains("named twice"), "{doc}: {e}");
        }
    }

    #[test]
    fn unusable_sets_are_errors() {
        for doc in [
            "",
            "[]",
            "{}",
            r#"{"keys":{}}"#,
            r#"{"keys":[]}"#,
            r#"{"keys":[{"kty":"XYZ"}]}"#,
        ] {
            assert!(parse(doc.as_bytes()).is_err(), "{doc}");
        }
        let huge = format!(r#"{{"keys":["{}"]}}"#, "a".repeat(MAX_JWKS_BYTES));
        assert!(parse(huge.as_bytes())
            .unwrap_err()
            .message
            .contains("larger"));
    }

    #[test]
    fn candidate_selection() {
        let (j, _) =
            parse(set(&[EC, ED, OCT, r#"{"kty":"oct","k":"c2VjcmV0"}"#]).as_bytes()).unwrap();
        let kids = |alg, kid| {
            j.candidates(alg, kid)
                .map(|k| k.kid.clone().unwrap_or_default())
                .collect::<Vec<_>>()
        };
        assert_eq!(kids(Alg::Es256, Some("ec1")), vec!["ec1"]);
        assert_eq!(kids(Alg::Es256, None), vec!["ec1"]);
        assert!(kids(Alg::Es256, Some("other")).is_empty());
        assert!(kids(Alg::Es384, Some("ec1")).is_empty());
        assert_eq!(kids(Alg::EdDsa, None), vec!["ed1"]);
        assert_eq!(kids(Alg::Hs256, None), vec!["h1", ""]);
        assert_eq!(kids(Alg::Hs384, None), vec![""]);
        assert!(kids(Alg::Hs256, Some("ec1")).is_empty());
        assert!(kids(Alg::Rs256, None).is_empty());
    }
}
