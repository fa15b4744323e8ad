//! JSON with one meaning: a document that names an object member twice is refused, since readers
//! disagree on which value counts (serde_json keeps the last, many others the first, Envoy's
//! protobuf parser refuses it). Every JSON the filter reads goes through here: tokens' headers
//! and claims, key sets, discovery documents and `pluginConfig`.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Number, Value};

/// Parses one JSON value (serde_json's nesting bound of 128 applies) whose objects name each
/// member once.
pub fn from_slice(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let UniqueValue(v) = UniqueValue::deserialize(&mut de)?;
    de.end()?;
    Ok(v)
}

/// Checks a document for repeated members; a refusal names where, as serde_path_to_error reads
/// paths (`jwtRules[0].issuer`).
pub fn check_unique_members(bytes: &[u8]) -> Result<(), (String, String)> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize::<_, UniqueValue>(&mut de) {
        Ok(_) => Ok(()),
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

/// A member's value; for a repeated member, `Some(name)`: read, then refused from within, so that
/// the error's path ends at the member.
struct Member(Option<String>);

impl<'de> DeserializeSeed<'de> for Member {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        let v = d.deserialize_any(ValueVisitor)?;
        match self.0 {
            Some(name) => Err(de::Error::custom(format_args!(
                "member {name:?} is named twice in one object"
            ))),
            None => Ok(v),
        }
    }
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
        while let Some(name) = map.next_key::<String>()? {
            let repeated = members.contains_key(&name).then(|| name.clone());
            let v = map.next_value_seed(Member(repeated))?;
            members.insert(name, v);
        }
        Ok(Value::Object(members))
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
            assert!(err.contains("named twice"), "{doc}: {err}");
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
