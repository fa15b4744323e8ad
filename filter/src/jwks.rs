//! JSON Web Key Sets: parsed defensively into keys prepared once for verification.

use rsa::traits::PublicKeyParts;
use rsa::{BigUint, RsaPublicKey};
use serde_json::{Map, Value};

use crate::jws::{Alg, B64URL};
use base64::Engine;

/// A JWKS larger than this is refused unread.
pub const MAX_JWKS_BYTES: usize = 512 * 1024;
/// Keys beyond this count are ignored.
pub const MAX_KEYS: usize = 256;
/// RSA keys shorter than this are refused (NIST SP 800-131A).
pub const MIN_RSA_BITS: usize = 2048;

#[derive(Debug, Clone)]
pub enum KeyMaterial {
    /// The key, and its Montgomery form for PKCS#1 v1.5 checks in the module.
    Rsa(Box<(RsaPublicKey, Option<crate::rsa_pkcs1::MontKey>)>),
    P256(Box<crate::ecdsa::EcKey<p256::NistP256>>),
    P384(Box<crate::ecdsa::EcKey<p384::NistP384>>),
    Ed25519(ed25519_dalek::VerifyingKey),
    Hmac(Vec<u8>),
}

#[derive(Debug, Clone)]
pub struct Jwk {
    pub kid: Option<String>,
    pub alg: Option<Alg>,
    pub key: KeyMaterial,
    /// SubjectPublicKeyInfo DER, prepared at load for the host's verifier (RSA and EC keys).
    pub host_der: Option<Vec<u8>>,
}

#[derive(Debug, Clone, Default)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
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
                && alg.fits(&k.key)
        })
    }
}

/// Parses a JWKS. Keys this verifier cannot use are skipped and described in the second value;
/// a set without any usable key is an error.
pub fn parse(bytes: &[u8]) -> Result<(Jwks, Vec<String>), String> {
    if bytes.len() > MAX_JWKS_BYTES {
        return Err(format!("JWKS larger than {MAX_JWKS_BYTES} bytes"));
    }
    let doc: Value =
        serde_json::from_slice(bytes).map_err(|e| format!("JWKS is not valid JSON: {e}"))?;
    let Some(Value::Array(raw_keys)) = doc.get("keys") else {
        return Err("JWKS must be an object with a \"keys\" array".into());
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
    if raw_keys.len() > MAX_KEYS {
        skipped.push(format!("keys beyond the first {MAX_KEYS} ignored"));
    }
    if keys.is_empty() {
        let why = if skipped.is_empty() {
            String::new()
        } else {
            format!(" ({})", skipped.join("; "))
        };
        return Err(format!("JWKS has no usable key{why}"));
    }
    Ok((Jwks { keys }, skipped))
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

fn parse_key(k: &Map<String, Value>) -> Result<Jwk, String> {
    if let Some(usage) = field(k, "use")? {
        if usage != "sig" {
            return Err(format!("[use] is {usage:?}, not \"sig\""));
        }
    }
    let kid = field(k, "kid")?.map(String::from);
    let alg = match field(k, "alg")? {
        None => None,
        Some(a) => Some(Alg::from_name(a).ok_or_else(|| format!("[alg] {a:?} is not supported"))?),
    };
    let kty = field(k, "kty")?.ok_or("[kty] is missing")?;
    let mut host_der = None;
    let key = match kty {
        "RSA" => {
            let key = RsaPublicKey::new(
                BigUint::from_bytes_be(&bytes(k, "n")?),
                BigUint::from_bytes_be(&bytes(k, "e")?),
            )
            .map_err(|e| format!("invalid RSA key: {e}"))?;
            if key.n().bits() < MIN_RSA_BITS {
                return Err(format!("RSA key shorter than {MIN_RSA_BITS} bits"));
            }
            host_der = Some(crate::der::rsa_spki(
                &key.n().to_bytes_be(),
                &key.e().to_bytes_be(),
            ));
            let mont = crate::rsa_pkcs1::MontKey::new(&key);
            KeyMaterial::Rsa(Box::new((key, mont)))
        }
        "EC" => {
            let crv = field(k, "crv")?.ok_or("[crv] is missing")?;
            let mut sec1 = vec![0x04];
            sec1.extend(bytes(k, "x")?);
            sec1.extend(bytes(k, "y")?);
            let key = match crv {
                "P-256" => KeyMaterial::P256(Box::new(
                    crate::ecdsa::EcKey::<p256::NistP256>::from_sec1(&sec1)
                        .ok_or("invalid P-256 point")?,
                )),
                "P-384" => KeyMaterial::P384(Box::new(
                    crate::ecdsa::EcKey::<p384::NistP384>::from_sec1(&sec1)
                        .ok_or("invalid P-384 point")?,
                )),
                other => return Err(format!("EC curve {other:?} is not supported")),
            };
            let oid = if crv == "P-256" {
                crate::der::OID_P256
            } else {
                crate::der::OID_P384
            };
            host_der = Some(crate::der::ec_spki(oid, &sec1));
            key
        }
        "OKP" => match field(k, "crv")? {
            Some("Ed25519") => {
                let x: [u8; 32] = bytes(k, "x")?
                    .try_into()
                    .map_err(|_| "Ed25519 [x] must be 32 bytes")?;
                KeyMaterial::Ed25519(
                    ed25519_dalek::VerifyingKey::from_bytes(&x)
                        .map_err(|_| "invalid Ed25519 key")?,
                )
            }
            other => return Err(format!("OKP curve {other:?} is not supported")),
        },
        "oct" => {
            let secret = bytes(k, "k")?;
            if secret.is_empty() {
                return Err("[k] is empty".into());
            }
            KeyMaterial::Hmac(secret)
        }
        other => return Err(format!("[kty] {other:?} is not supported")),
    };
    if let Some(a) = alg {
        if !a.fits(&key) {
            return Err(format!("[alg] {a:?} does not fit [kty] {kty:?}"));
        }
    }
    Ok(Jwk {
        kid,
        alg,
        key,
        host_der,
    })
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
        assert!(parse(huge.as_bytes()).unwrap_err().contains("larger"));
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
