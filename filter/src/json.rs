//! JSON with one meaning: a document that names an object member twice is refused, since readers
//! disagree on which value counts (serde_json keeps the last, many others the first, Envoy's
//! protobuf parser refuses it). Every JSON the filter reads goes through here: tokens' headers
//! and claims, key sets, discovery documents and `pluginConfig`.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::map::Entry;
use serde_json::{Map, Number, Value};

/// Parses one JSON value (serde_json's nesting bound of 128 applies) whose objects name each
/// member once.
pub fn from_slice(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let UniqueValue(v) = UniqueValue::deserialize(&mut de)?;
    de.end()?;
    Ok(v)
}

/// Checks a document for repeated members without building it; a refusal names where, as
/// serde_path_to_error reads paths (`jwtRules[0].issuer`).
pub fn check_unique_members(bytes: &[u8]) -> Result<(), (String, String)> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize::<_, Unique>(&mut de) {
        Ok(Unique) => Ok(()),
        Err(e) => Err((e.path().to_string(), e.into_inner().to_string())),
    }
}

/// A `serde_json::Value` deserialized with every object's member names checked for repeats.
pub struct UniqueValue(pub Value);

impl<'de> Deserialize<'de> for UniqueValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor).map(UniqueValue)
    }
}

fn duplicate<E: de::Error>(key: &str) -> E {
    E::custom(format_args!("duplicate member {key:?}"))
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }
    fn visit_i64<E>(self, n: i64) -> Result<Value, E> {
        Ok(Value::Number(n.into()))
    }
    fn visit_u64<E>(self, n: u64) -> Result<Value, E> {
        Ok(Value::Number(n.into()))
    }
    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Value, E> {
        Number::from_f64(n)
            .map(Value::Number)
            .ok_or_else(|| E::custom("number out of range"))
    }
    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(s.to_owned()))
    }
    fn visit_string<E>(self, s: String) -> Result<Value, E> {
        Ok(Value::String(s))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(UniqueValue(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut members = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let UniqueValue(v) = map.next_value()?;
            match members.entry(key) {
                Entry::Vacant(e) => {
                    e.insert(v);
                }
                Entry::Occupied(e) => return Err(duplicate(e.key())),
            }
        }
        Ok(Value::Object(members))
    }
}

/// Walks a document keeping only each object's member names, to find repeats.
struct Unique;

impl<'de> Deserialize<'de> for Unique {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UniqueVisitor)
    }
}

struct UniqueVisitor;

impl<'de> Visitor<'de> for UniqueVisitor {
    type Value = Unique;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_str<E>(self, _: &str) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_unit<E>(self) -> Result<Unique, E> {
        Ok(Unique)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Unique, A::Error> {
        while seq.next_element::<Unique>()?.is_some() {}
        Ok(Unique)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Unique, A::Error> {
        let mut seen = std::collections::BTreeSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key) {
                // Refused from within its value, so that the error's path ends at its name.
                map.next_value_seed(Repeated)?;
            }
            map.next_value::<Unique>()?;
        }
        Ok(Unique)
    }
}

/// The value of a repeated member: read past, then refused.
struct Repeated;

impl<'de> DeserializeSeed<'de> for Repeated {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        IgnoredAny::deserialize(d)?;
        Err(de::Error::custom("named twice in one object"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_members_refused_at_any_depth() {
        for doc in [
            r#"{"alg":"none","alg":"RS256"}"#,
            r#"{"alg":"RS256","alg":"none"}"#,
            r#"{"a":{"b":1,"b":1}}"#,
            r#"[{"x":[{"k":1,"k":2}]}]"#,
            r#"{"exp":1,"exp":2}"#,
            r#"{"\u0061":1,"a":2}"#,
        ] {
            let err = from_slice(doc.as_bytes()).unwrap_err().to_string();
            assert!(err.contains("duplicate member"), "{doc}: {err}");
            assert!(check_unique_members(doc.as_bytes()).is_err(), "{doc}");
        }
    }

    #[test]
    fn same_as_serde_json_without_repeats() {
        for doc in [
            r#"{"a":[1,-2,3.5,1e400,"s",null,true,{"b":{}}],"A":1,"a ":2}"#,
            "[]",
            "\"x\"",
            "18446744073709551615",
            "-9223372036854775808",
            "1.5e300",
        ] {
            let ours = from_slice(doc.as_bytes());
            let theirs = serde_json::from_slice::<Value>(doc.as_bytes());
            assert_eq!(ours.ok(), theirs.ok(), "{doc}");
            assert_eq!(
                check_unique_members(doc.as_bytes()).is_ok(),
                serde_json::from_slice::<Value>(doc.as_bytes()).is_ok(),
                "{doc}"
            );
        }
    }

    #[test]
    fn the_path_names_the_repeated_member() {
        let (path, msg) =
            check_unique_members(br#"{"jwtRules":[{"issuer":"a","issuer":"b"}]}"#).unwrap_err();
        assert_eq!(path, "jwtRules[0].issuer");
        assert!(msg.contains("twice"), "{msg}");
    }

    #[test]
    fn deep_and_trailing_input_refused() {
        let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
        assert!(from_slice(deep.as_bytes()).is_err());
        assert!(check_unique_members(deep.as_bytes()).is_err());
        assert!(from_slice(b"{} x").is_err());
    }
}
