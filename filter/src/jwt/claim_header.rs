//! A claim as a request header value, as Envoy's jwt_authn writes it (`claim_to_headers`):
//! strings as they are; numbers as integers when they are whole and in `u64` range, else as C's
//! `%f`; booleans as `true`/`false`; arrays and objects as base64 (padded) of their JSON in
//! protobuf's JSON form (`1` for `1.0`, `1e+21`, `<` as `\u003c`). Envoy prints an object's keys
//! in its hash map's order, which changes from one process to the next; here they are sorted.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{Map, Value};

/// The value of the claim at `path` (each element one key of nested objects), if it has one that
/// can be a header: none for null or an empty string, and none for a string with control
/// characters, which could split or smuggle headers.
pub fn header_value(payload: &Map<String, Value>, path: &[String]) -> Option<String> {
    let v = claim_at(payload, path)?;
    match v {
        // Envoy adds no header for an empty value.
        Value::String(s) if s.is_empty() || s.chars().any(char::is_control) => None,
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(scalar_number(n.as_f64()?)),
        Value::Bool(b) => Some(b.to_string()),
        Value::Array(_) | Value::Object(_) => {
            let mut json = String::new();
            write_json(v, &mut json);
            Some(STANDARD.encode(json))
        }
        Value::Null => None,
    }
}

/// The elements of a string claim listed in `spaceDelimitedClaims`, split on spaces as Envoy's
/// `normalize_payload_in_metadata` splits them (empty elements skipped); none when the claim is
/// not a string or has control characters.
pub fn space_delimited<'p>(
    payload: &'p Map<String, Value>,
    path: &[String],
) -> Option<impl Iterator<Item = &'p str>> {
    match claim_at(payload, path)? {
        Value::String(s) if !s.chars().any(char::is_control) => {
            Some(s.split(' ').filter(|item| !item.is_empty()))
        }
        _ => None,
    }
}

/// The claim at `path`, each element one key of nested objects.
fn claim_at<'p>(payload: &'p Map<String, Value>, path: &[String]) -> Option<&'p Value> {
    let (first, rest) = path.split_first()?;
    rest.iter()
        .try_fold(payload.get(first)?, |v, key| v.as_object()?.get(key))
}

/// Envoy's `convertClaimDoubleToString`.
fn scalar_number(v: f64) -> String {
    // 2^64 as a double: the first value that does not fit a u64.
    const U64_END: f64 = 18_446_744_073_709_551_616.0;
    if !(0.0..U64_END).contains(&v) || v.fract() != 0.0 {
        format!("{v:.6}")
    } else {
        // Whole, in [0, 2^64): the cast is exact.
        (v as u64).to_string()
    }
}

fn write_json(v: &Value, out: &mut String) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.as_f64().map_or_else(|| "null".into(), shortest)),
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(item, out);
            }
            out.push(']');
        }
        Value::Object(fields) => {
            out.push('{');
            for (i, (k, item)) in fields.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(k, out);
                out.push(':');
                write_json(item, out);
            }
            out.push('}');
        }
    }
}

/// Protobuf's number form: C's `%.15g`, or `%.17g` when that does not read back as `v`.
fn shortest(v: f64) -> String {
    let short = format_g(v, 15);
    if short.parse::<f64>().ok() == Some(v) {
        short
    } else {
        format_g(v, 17)
    }
}

/// C's `%.<precision>g`.
fn format_g(v: f64, precision: usize) -> String {
    if v == 0.0 {
        return if v.is_sign_negative() { "-0" } else { "0" }.into();
    }
    let sci = format!("{:.*e}", precision - 1, v);
    let Some((mantissa, exp)) = sci.split_once('e') else {
        return sci;
    };
    let exp: i32 = exp.parse().unwrap_or(0);
    let p = i32::try_from(precision).unwrap_or(17);
    if exp < -4 || exp >= p {
        let sign = if exp < 0 { '-' } else { '+' };
        format!(
            "{}e{sign}{:02}",
            trim_fraction(mantissa),
            exp.unsigned_abs()
        )
    } else {
        let decimals = usize::try_from(p - 1 - exp).unwrap_or(0);
        trim_fraction(&format!("{v:.decimals$}")).to_string()
    }
}

fn trim_fraction(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

/// Protobuf's JSON string escaping: the usual short forms, `\uXXXX` for control and format
/// characters and for `<` and `>`.
fn write_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if needs_escape(c) => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn needs_escape(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{1f}' | '<' | '>' | '\u{7f}'..='\u{9f}' | '\u{ad}'
        | '\u{600}'..='\u{605}' | '\u{61c}' | '\u{6dd}' | '\u{70f}' | '\u{180e}'
        | '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}' | '\u{2060}'..='\u{2064}'
        | '\u{2066}'..='\u{206f}' | '\u{feff}' | '\u{fff9}'..='\u{fffb}')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn value(claim: Value) -> Option<String> {
        let payload = json!({"c": claim});
        header_value(payload.as_object().unwrap(), &["c".to_string()])
    }

    fn decoded(claim: Value) -> String {
        String::from_utf8(STANDARD.decode(value(claim).unwrap()).unwrap()).unwrap()
    }

    #[test]
    fn scalars_as_envoy_prints_them() {
        for (claim, want) in [
            (json!("alice"), Some("alice")),
            (json!(42), Some("42")),
            (json!(1.5), Some("1.500000")),
            (json!(-3), Some("-3.000000")),
            (json!(1000.0), Some("1000")),
            (json!(12345678901234567890u64), Some("12345678901234567168")),
            (json!(true), Some("true")),
            (json!(null), None),
            (json!("a\r\nb"), None),
            (json!(""), None),
        ] {
            assert_eq!(value(claim.clone()).as_deref(), want, "{claim}");
        }
    }

    /// What Envoy 1.40 emitted for the same claims (`envoy-test/test_claim_headers.py` checks it
    /// against the running Envoy).
    #[test]
    fn arrays_and_objects_as_protobuf_json() {
        assert_eq!(
            value(json!(["a", "b", 3, true])).unwrap(),
            "WyJhIiwiYiIsMyx0cnVlXQ=="
        );
        assert_eq!(value(json!([])).unwrap(), "W10=");
        assert_eq!(
            decoded(json!([{"k": "v"}, null, 1.0])),
            r#"[{"k":"v"},null,1]"#
        );
        assert_eq!(
            decoded(json!([
                "<a>&'/\u{e9}\u{2028}\u{1}\"\\",
                1.0,
                0.1,
                1e21,
                -0.0,
                1.5e-7,
                123456789012345678u64,
                -3,
                2.5e300,
                100,
                1e16,
                12345678.9
            ])),
            r#"["\u003ca\u003e&'/é\u2028\u0001\"\\",1,0.1,1e+21,-0,1.5e-07,1.2345678901234568e+17,-3,2.5e+300,100,1e+16,12345678.9]"#
        );
        assert_eq!(
            decoded(json!(["\n\t\r\u{8}\u{c}\u{7f}\u{2029}\u{1F600}\u{80}\u{a0}\u{feff}=+", 5e-324,
                           1.7976931348623157e308, 0.30000000000000004, 1234567890123456u64,
                           123456789012345.6, 0.0001, 0.00001, {"k<": 1}])),
            "[\"\\n\\t\\r\\b\\f\\u007f\\u2029\u{1F600}\\u0080\u{a0}\\ufeff=+\",4.94065645841247e-324,\
             1.7976931348623157e+308,0.30000000000000004,1234567890123456,123456789012345.59,0.0001,\
             1e-05,{\"k\\u003c\":1}]"
        );
        assert_eq!(
            decoded(json!({"b": 2, "a": {"n": [1, "two"]}})),
            r#"{"a":{"n":[1,"two"]},"b":2}"#
        );
    }

    #[test]
    fn paths_walk_objects_only() {
        let payload = json!({"a": {"b": {"c": "deep"}}, "l": [{"x": 1}], "a.b": "dotted"});
        let p = payload.as_object().unwrap();
        let at = |path: &[&str]| {
            header_value(p, &path.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        };
        assert_eq!(at(&["a", "b", "c"]).as_deref(), Some("deep"));
        assert_eq!(at(&["a.b"]).as_deref(), Some("dotted"));
        assert_eq!(at(&["l", "0", "x"]), None);
        assert_eq!(at(&["a", "missing"]), None);
    }
}
