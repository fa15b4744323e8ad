//! `cnf` (RFC 7800): what a token is bound to. RFC 8705's `x5t#S256` (the client certificate) and
//! RFC 9449's `jkt` (a DPoP key) are each the base64url SHA-256 of it. A token may carry anything
//! there: this only reads it; a rule decides whether it matters.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{Map, Value};
use subtle::ConstantTimeEq;

/// One thumbprint member of `cnf`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Thumbprint {
    #[default]
    Absent,
    Sha256([u8; 32]),
    /// Present but not 43 characters of canonical base64url (or `cnf` is not an object): never
    /// a match, and never a bearer token either.
    Malformed,
}

impl Thumbprint {
    fn from_member(v: Option<&Value>) -> Self {
        let Some(v) = v else {
            return Self::Absent;
        };
        let decoded = v
            .as_str()
            .filter(|s| s.len() == 43)
            .and_then(|s| URL_SAFE_NO_PAD.decode(s).ok())
            .and_then(|b| <[u8; 32]>::try_from(b).ok());
        decoded.map_or(Self::Malformed, Self::Sha256)
    }

    /// Whether this is the thumbprint `digest`, in time that does not depend on where they differ.
    pub fn matches(&self, digest: &[u8; 32]) -> bool {
        match self {
            Self::Sha256(t) => bool::from(t.ct_eq(digest)),
            Self::Absent | Self::Malformed => false,
        }
    }
}

/// A token's `cnf` claim.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Confirmation {
    pub x5t_s256: Thumbprint,
    pub jkt: Thumbprint,
}

impl Confirmation {
    pub fn from_payload(p: &Map<String, Value>) -> Self {
        match p.get("cnf") {
            None => Self::default(),
            Some(Value::Object(cnf)) => Self {
                x5t_s256: Thumbprint::from_member(cnf.get("x5t#S256")),
                jkt: Thumbprint::from_member(cnf.get("jkt")),
            },
            Some(_) => Self {
                x5t_s256: Thumbprint::Malformed,
                jkt: Thumbprint::Malformed,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use serde_json::json;

    use super::*;

    fn cnf(v: Value) -> Confirmation {
        Confirmation::from_payload(json!({ "cnf": v }).as_object().unwrap())
    }

    #[test]
    fn thumbprints_are_43_characters_of_canonical_base64url() {
        let digest = [0xfbu8; 32]; // "-_v7…": both URL-safe characters
        let good = URL_SAFE_NO_PAD.encode(digest);
        assert_eq!(
            cnf(json!({"x5t#S256": good})).x5t_s256,
            Thumbprint::Sha256(digest)
        );
        assert_eq!(cnf(json!({"jkt": good})).jkt, Thumbprint::Sha256(digest));
        assert!(cnf(json!({"x5t#S256": good})).x5t_s256.matches(&digest));
        assert!(!cnf(json!({"x5t#S256": good})).x5t_s256.matches(&[0; 32]));
        let mut last_bits = good.clone().into_bytes();
        // 43 characters carry 258 bits: the last two must be zero in the canonical spelling.
        *last_bits.last_mut().unwrap() = b'V';
        let non_canonical = String::from_utf8(last_bits).unwrap();
        for bad in [
            json!(format!("{good}=")),
            json!(&good[..42]),
            json!(good.replace('-', "+").replace('_', "/")),
            json!(non_canonical),
            json!(42),
            json!(null),
            json!([good]),
            json!(hex(&digest)),
        ] {
            let c = cnf(json!({ "x5t#S256": bad }));
            assert_eq!(c.x5t_s256, Thumbprint::Malformed, "{bad}");
            assert!(!c.x5t_s256.matches(&digest));
        }
        assert_eq!(cnf(json!("x")).x5t_s256, Thumbprint::Malformed);
        assert_eq!(cnf(json!([])).jkt, Thumbprint::Malformed);
        assert_eq!(cnf(json!({})).x5t_s256, Thumbprint::Absent);
        assert_eq!(
            Confirmation::from_payload(json!({}).as_object().unwrap()),
            Confirmation::default()
        );
    }

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }
}
