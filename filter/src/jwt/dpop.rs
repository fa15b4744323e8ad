//! DPoP proofs (RFC 9449 §4.3): a `dpop+jwt` signed with the public key in its own header, naming
//! this request (`htm`, `htu`), fresh (`iat`) and made for this access token (`ath`). What is left
//! to the caller: that the key is the one the token is bound to (`cnf.jkt` against `jkt`), and
//! that the `jti` was not used before (the replay store, last, so that no invalid proof uses one).

use std::borrow::Cow;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::jwks;
use crate::crypto::{Alg, Key, Verifier};
use crate::error::AuthError;
use crate::json;
use claims::Claims;
pub use memo::DpopMemo;

/// A `DPoP` header longer than this is refused unread: an RSA-4096 proof is about 2 KiB.
pub const MAX_PROOF_BYTES: usize = 8 * 1024;
/// A longer `jti` is refused; RFC 9449 asks for 96 bits of randomness, 22 characters or so.
const MAX_JTI_BYTES: usize = 256;
/// JWK members that only a private key has (RFC 7518 §6): a proof carrying one is refused.
const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// The request a proof must name.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    pub method: &'a str,
    /// The request's URI as the client addressed it, without query (normalized here).
    pub uri: &'a str,
    pub access_token: &'a str,
    pub now_s: u64,
    pub max_age_s: u64,
    pub skew_s: u64,
}

/// What a valid proof leaves for the caller to check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checked {
    /// The RFC 7638 thumbprint of the proof's key.
    pub jkt: [u8; 32],
    /// The SHA-256 of the `jti`: what the replay store keeps.
    pub jti_hash: [u8; 32],
    /// Until when the `jti` must be remembered: past it, the proof is stale anyway.
    pub remember_until_s: u64,
}

/// What a proof's header says: its algorithm, its key prepared for verification, and the key's
/// RFC 7638 thumbprint. A function of the header's text alone, which a client sends unchanged
/// with every proof: `DpopMemo` keeps it.
#[derive(Debug, Clone)]
pub struct ProofHeader {
    pub alg: Alg,
    pub key: Key,
    pub jkt: [u8; 32],
}

pub fn check(
    proof: &str,
    expected: &Expected<'_>,
    verifier: &dyn Verifier,
    memo: &mut DpopMemo,
) -> Result<Checked, AuthError> {
    use AuthError::DpopProofMalformed as Malformed;
    if proof.len() > MAX_PROOF_BYTES {
        return Err(Malformed);
    }
    let token_ath = memo.ath(expected.access_token);
    let mut parts = proof.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Malformed);
    };
    let digest = memo.digest(h);
    let parsed = match memo.header(digest) {
        Some(_) => None,
        None => Some(proof_header(h)?),
    };
    let header = match &parsed {
        Some(header) => header,
        None => memo.header(digest).ok_or(Malformed)?,
    };
    let payload = URL_SAFE_NO_PAD.decode(p).map_err(|_| Malformed)?;
    let Claims {
        jti,
        htm,
        htu,
        ath,
        iat,
    } = claims::parse(&payload).ok_or(Malformed)?;
    if jti.is_empty() || jti.len() > MAX_JTI_BYTES {
        return Err(Malformed);
    }
    let signature = URL_SAFE_NO_PAD.decode(s).map_err(|_| Malformed)?;
    let signing_input = proof.get(..h.len() + 1 + p.len()).ok_or(Malformed)?;
    let jkt = header.jkt;
    if !verifier.verify(
        header.alg,
        &header.key,
        signing_input.as_bytes(),
        &signature,
    ) {
        return Err(AuthError::DpopProofSignature);
    }
    if let Some(header) = parsed {
        memo.keep(digest, header);
    }
    // The same text is the same URI when it is one at all: normalized once, not twice.
    let same_uri = if htu == expected.uri {
        normalize_uri(&htu).is_some()
    } else {
        normalize_uri(&htu).is_some_and(|u| Some(u) == normalize_uri(expected.uri))
    };
    if htm != expected.method || !same_uri {
        return Err(AuthError::DpopProofWrongRequest);
    }
    let window = expected.max_age_s.saturating_add(expected.skew_s);
    if iat > expected.now_s.saturating_add(expected.skew_s)
        || expected.now_s > iat.saturating_add(window)
    {
        return Err(AuthError::DpopProofStale);
    }
    if ath.as_bytes() != token_ath {
        return Err(AuthError::DpopProofWrongToken);
    }
    Ok(Checked {
        jkt,
        jti_hash: Sha256::digest(jti.as_bytes()).into(),
        remember_until_s: iat.saturating_add(window),
    })
}

/// A proof's header: `typ` dpop+jwt, no `crit`, an asymmetric `alg`, and a public `jwk` that
/// fits it.
fn proof_header(h: &str) -> Result<ProofHeader, AuthError> {
    use AuthError::DpopProofMalformed as Malformed;
    let header = object(h)?;
    let typ = string(&header, "typ")?;
    if !typ.eq_ignore_ascii_case("dpop+jwt") || header.contains_key("crit") {
        return Err(Malformed);
    }
    // "Ed25519" is RFC 9864's fully-specified name for EdDSA over Ed25519, which DPoP clients
    // (panva's dpop 2) use.
    let alg = match string(&header, "alg")? {
        "Ed25519" => Some(Alg::EdDsa),
        name => Alg::from_name(name),
    }
    .filter(|a| !matches!(a, Alg::Hs256 | Alg::Hs384 | Alg::Hs512))
    .ok_or(Malformed)?;
    let Some(Value::Object(jwk)) = header.get("jwk") else {
        return Err(Malformed);
    };
    if PRIVATE_MEMBERS.iter().any(|m| jwk.contains_key(*m)) {
        return Err(Malformed);
    }
    let key = jwks::parse_key(jwk).map_err(|_| Malformed)?.key;
    let jkt = thumbprint(jwk).ok_or(Malformed)?;
    if !alg.fits(&key.material) {
        return Err(Malformed);
    }
    Ok(ProofHeader { alg, key, jkt })
}

fn object(segment: &str) -> Result<Map<String, Value>, AuthError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| AuthError::DpopProofMalformed)?;
    match json::from_slice(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(AuthError::DpopProofMalformed),
    }
}

fn string<'m>(m: &'m Map<String, Value>, name: &str) -> Result<&'m str, AuthError> {
    m.get(name)
        .and_then(Value::as_str)
        .ok_or(AuthError::DpopProofMalformed)
}

/// RFC 7638: the SHA-256 of the key's required members, in lexicographic order, without spaces.
pub fn thumbprint(jwk: &Map<String, Value>) -> Option<[u8; 32]> {
    let member =
        |name: &str| -> Option<String> { serde_json::to_string(jwk.get(name)?.as_str()?).ok() };
    let canonical = match jwk.get("kty")?.as_str()? {
        "RSA" => format!(
            r#"{{"e":{},"kty":"RSA","n":{}}}"#,
            member("e")?,
            member("n")?
        ),
        "EC" => format!(
            r#"{{"crv":{},"kty":"EC","x":{},"y":{}}}"#,
            member("crv")?,
            member("x")?,
            member("y")?
        ),
        "OKP" => format!(
            r#"{{"crv":{},"kty":"OKP","x":{}}}"#,
            member("crv")?,
            member("x")?
        ),
        _ => return None,
    };
    Some(Sha256::digest(canonical.as_bytes()).into())
}

/// An `http(s)` URI without query and fragment, normalized as RFC 3986 §6.2.2–6.2.3 describes:
/// scheme and host lower-cased, the scheme's default port dropped, percent-encodings upper-cased
/// and those of unreserved characters decoded, dot segments removed, an empty path as `/`. None for
/// anything else (user info, a bad percent-encoding, another scheme), which then matches nothing.
pub fn normalize_uri(uri: &str) -> Option<Cow<'_, str>> {
    if is_normal(uri) {
        return Some(Cow::Borrowed(uri));
    }
    normalize_uri_in_full(uri).map(Cow::Owned)
}

/// Whether `uri` is what `normalize_uri_in_full` makes of it already, told without allocating:
/// the form both a client's `htu` and the request's own URI usually have. A host of lower-case
/// letters, digits, dots and dashes, a port only when not the default, a path with no
/// percent-encoding and no dot segments.
fn is_normal(uri: &str) -> bool {
    let (rest, default_port) = match (uri.strip_prefix("https://"), uri.strip_prefix("http://")) {
        (Some(rest), _) => (rest, "443"),
        (None, Some(rest)) => (rest, "80"),
        (None, None) => return false,
    };
    let Some((authority, path)) = rest.find('/').map(|at| rest.split_at(at)) else {
        return false;
    };
    let (host, port) = match authority.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    };
    let host_byte = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-';
    !host.is_empty()
        && host.bytes().all(host_byte)
        && port.is_none_or(|p| {
            !p.is_empty() && p != default_port && p.bytes().all(|b| b.is_ascii_digit())
        })
        && path
            .bytes()
            .all(|b| b.is_ascii() && !matches!(b, b'%' | b'?' | b'#'))
        && !path.split('/').any(|s| s == "." || s == "..")
}

/// `normalize_uri` without its shortcut: the fuzz target holds the two to the same answers.
#[doc(hidden)]
pub fn normalize_uri_in_full(uri: &str) -> Option<String> {
    let uri = uri.split(['?', '#']).next()?;
    let (scheme, rest) = uri.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "https" => "443",
        "http" => "80",
        _ => return None,
    };
    let (authority, path) = match rest.find('/') {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    if !uri.is_ascii() || authority.contains(['@', '%']) {
        return None;
    }
    let authority = authority.to_ascii_lowercase();
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (inside, after) = v6.split_once(']')?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':')?),
            };
            (format!("[{inside}]"), port)
        }
        None => match authority.split_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (authority.clone(), None),
        },
    };
    if host.is_empty() || port.is_some_and(|p| !p.bytes().all(|b| b.is_ascii_digit())) {
        return None;
    }
    let port = match port {
        Some(p) if !p.is_empty() && p != default_port => format!(":{p}"),
        _ => String::new(),
    };
    let path = remove_dot_segments(&normalize_percent(path)?);
    Some(format!(
        "{scheme}://{host}{port}{}",
        if path.is_empty() { "/" } else { &path }
    ))
}

fn normalize_percent(path: &str) -> Option<String> {
    let mut out = String::with_capacity(path.len());
    let mut bytes = path.bytes();
    while let Some(b) = bytes.next() {
        if b != b'%' {
            out.push(char::from(b));
            continue;
        }
        let hex = |b: Option<u8>| char::from(b?).to_digit(16);
        let value = u8::try_from(hex(bytes.next())? * 16 + hex(bytes.next())?).ok()?;
        if value.is_ascii_alphanumeric() || b"-._~".contains(&value) {
            out.push(char::from(value));
        } else {
            out.push_str(&format!("%{value:02X}"));
        }
    }
    Some(out)
}

/// RFC 3986 §5.2.4.
fn remove_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    for (i, seg) in segments.iter().enumerate() {
        match *seg {
            "." | ".." => {
                if *seg == ".." {
                    out.pop();
                }
                if i == last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    if path.is_empty() {
        return String::new();
    }
    format!("/{}", out.join("/"))
}

mod claims;
mod memo;
#[cfg(test)]
mod tests;
