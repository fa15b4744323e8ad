//! A proof's claims (RFC 9449 §4.2), read from its JSON straight into the five a proof must have,
//! without building a map: a fresh proof comes with every request. Strings are borrowed from the
//! decoded payload unless escaped. As `crate::json` asks of every document, a member named twice
//! anywhere in it refuses the whole.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};

use crate::json::UniqueValue;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims<'a> {
    pub jti: Cow<'a, str>,
    pub htm: Cow<'a, str>,
    pub htu: Cow<'a, str>,
    pub ath: Cow<'a, str>,
    /// Seconds, truncated, as every NumericDate here is read.
    pub iat: u64,
}

/// The claims of a payload that is one JSON object with all five, each of its type; None for
/// anything else.
pub fn parse(payload: &[u8]) -> Option<Claims<'_>> {
    let mut de = serde_json::Deserializer::from_slice(payload);
    let claims = de.deserialize_map(ClaimsVisitor).ok()?;
    de.end().ok()?;
    Some(claims)
}

struct ClaimsVisitor;

impl<'de> Visitor<'de> for ClaimsVisitor {
    type Value = Claims<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a DPoP proof's claims")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Claims<'de>, A::Error> {
        let (mut jti, mut htm, mut htu, mut ath, mut iat) = (None, None, None, None, None);
        let mut others = BTreeSet::new();
        while let Some(name) = map.next_key_seed(Text)? {
            let slot = match name.as_ref() {
                "jti" => &mut jti,
                "htm" => &mut htm,
                "htu" => &mut htu,
                "ath" => &mut ath,
                "iat" => {
                    once(&mut iat, map.next_value_seed(Seconds)?)?;
                    continue;
                }
                _ => {
                    map.next_value::<UniqueValue>()?;
                    if !others.insert(name) {
                        return Err(twice());
                    }
                    continue;
                }
            };
            once(slot, map.next_value_seed(Text)?)?;
        }
        let missing = de::Error::missing_field;
        Ok(Claims {
            jti: jti.ok_or_else(|| missing("jti"))?,
            htm: htm.ok_or_else(|| missing("htm"))?,
            htu: htu.ok_or_else(|| missing("htu"))?,
            ath: ath.ok_or_else(|| missing("ath"))?,
            iat: iat.ok_or_else(|| missing("iat"))?,
        })
    }
}

fn once<T, E: de::Error>(slot: &mut Option<T>, value: T) -> Result<(), E> {
    if slot.replace(value).is_some() {
        return Err(twice());
    }
    Ok(())
}

fn twice<E: de::Error>() -> E {
    E::custom("a member is named twice")
}

/// A JSON string, borrowed when it has no escapes.
struct Text;

impl<'de> DeserializeSeed<'de> for Text {
    type Value = Cow<'de, str>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Text {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(s))
    }
    fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(s.to_owned()))
    }
    fn visit_string<E>(self, s: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(s))
    }
}

/// A JSON number of seconds in [0, 2^64), truncated.
struct Seconds;

impl<'de> DeserializeSeed<'de> for Seconds {
    type Value = u64;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<u64, D::Error> {
        d.deserialize_any(self)
    }
}

impl Visitor<'_> for Seconds {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number of seconds")
    }
    #[allow(clippy::cast_precision_loss)] // as serde_json's own as_f64 reads it
    fn visit_u64<E: de::Error>(self, n: u64) -> Result<u64, E> {
        self.visit_f64(n as f64)
    }
    #[allow(clippy::cast_precision_loss)]
    fn visit_i64<E: de::Error>(self, n: i64) -> Result<u64, E> {
        self.visit_f64(n as f64)
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    fn visit_f64<E: de::Error>(self, f: f64) -> Result<u64, E> {
        if (0.0..18_446_744_073_709_551_616.0).contains(&f) {
            Ok(f as u64)
        } else {
            Err(E::custom("seconds out of range"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Map, Value};

    /// What the filter read before: the whole payload as a `Value`, then each member.
    fn through_value(payload: &[u8]) -> Option<(String, String, String, String, u64)> {
        let Ok(Value::Object(m)) = crate::json::from_slice(payload) else {
            return None;
        };
        let s = |m: &Map<String, Value>, k: &str| m.get(k)?.as_str().map(String::from);
        let iat = m.get("iat")?.as_f64()?;
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let iat = (0.0..18_446_744_073_709_551_616.0)
            .contains(&iat)
            .then_some(iat as u64)?;
        Some((
            s(&m, "jti")?,
            s(&m, "htm")?,
            s(&m, "htu")?,
            s(&m, "ath")?,
            iat,
        ))
    }

    fn owned(c: Claims<'_>) -> (String, String, String, String, u64) {
        (
            c.jti.into(),
            c.htm.into(),
            c.htu.into(),
            c.ath.into(),
            c.iat,
        )
    }

    #[test]
    fn reads_what_a_map_of_the_payload_reads() {
        let base = r#""jti":"j","htm":"GET","htu":"https://a/","ath":"x""#;
        for doc in [
            format!("{{{base},\"iat\":1700000000}}"),
            format!("{{{base},\"iat\":1.7e9}}"),
            format!("{{{base},\"iat\":1700000000.9}}"),
            format!("{{{base},\"iat\":0}}"),
            format!("{{{base},\"iat\":-1}}"),
            format!("{{{base},\"iat\":18446744073709551615}}"),
            format!("{{{base},\"iat\":1e30}}"),
            format!("{{{base},\"iat\":\"1\"}}"),
            format!("{{{base},\"iat\":null}}"),
            format!("{{{base}}}"),
            format!(r#"{{{base},"iat":1,"nonce":"n","extra":{{"a":[1,{{"b":2}}]}}}}"#),
            format!(r#"{{{base},"iat":1,"jti":"k"}}"#),
            format!(r#"{{{base},"iat":1,"iat":1}}"#),
            format!(r#"{{{base},"iat":1,"n":1,"n":1}}"#),
            format!(r#"{{{base},"iat":1,"n":{{"a":1,"a":1}}}}"#),
            format!(r#"{{{base},"iat":1,"\u006e":1,"n":1}}"#),
            r#"{"\u006a\u0074\u0069":"j\"","htm":"GET","htu":"u","ath":"a","iat":5}"#.into(),
            r#"{"jti":5,"htm":"GET","htu":"u","ath":"a","iat":5}"#.into(),
            r#"{"jti":"j","htm":"GET","htu":"u","ath":null,"iat":5}"#.into(),
            format!("[{{{base},\"iat\":1}}]"),
            format!("{{{base},\"iat\":1}} x"),
            format!("{{{base},\"iat\":1"),
            "\"s\"".into(),
            String::new(),
        ] {
            assert_eq!(
                parse(doc.as_bytes()).map(owned),
                through_value(doc.as_bytes()),
                "{doc}"
            );
        }
    }

    #[test]
    fn unescaped_strings_are_borrowed() {
        let doc = br#"{"jti":"j","htm":"GET","htu":"https://a/\u0062","ath":"x","iat":1}"#;
        let c = parse(doc).unwrap();
        assert!(matches!(c.jti, Cow::Borrowed("j")));
        assert!(matches!(c.htu, Cow::Owned(ref u) if u == "https://a/b"));
    }
}
