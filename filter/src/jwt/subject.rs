//! `subjects`: which `sub` a rule's tokens may assert, as Envoy's `JwtProvider.subjects` (a
//! `StringMatcher`); for instance the `spiffe://<trust domain>/` prefix of JWT-SVIDs.

use regex::Regex;
use serde::Deserialize;

use crate::error::ConfigError;
use crate::pattern;

/// Exactly one of `exact`, `prefix`, `suffix`, `contains`, `regex` (RE2 syntax, whole `sub`), as
/// Envoy's `StringMatcher` (`regex` for its `safe_regex`); `ignoreCase` for all but `regex`.
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SubjectMatch {
    #[serde(default)]
    pub exact: Option<String>,
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub suffix: Option<String>,
    #[serde(default)]
    pub contains: Option<String>,
    #[serde(default)]
    pub regex: Option<String>,
    #[serde(default)]
    pub ignore_case: bool,
}

#[derive(Debug)]
pub enum Kind {
    Exact,
    Prefix,
    Suffix,
    Contains,
}

/// A compiled `subjects`.
#[derive(Debug)]
pub enum SubjectMatcher {
    Text {
        kind: Kind,
        /// Lower-cased when `ignore_case`.
        value: String,
        ignore_case: bool,
    },
    Regex(Regex),
}

impl SubjectMatcher {
    pub fn new(m: &SubjectMatch) -> Result<Self, ConfigError> {
        let set: Vec<(&str, &String)> = [
            ("exact", &m.exact),
            ("prefix", &m.prefix),
            ("suffix", &m.suffix),
            ("contains", &m.contains),
            ("regex", &m.regex),
        ]
        .into_iter()
        .filter_map(|(name, v)| Some((name, v.as_ref()?)))
        .collect();
        let [(name, value)] = set.as_slice() else {
            return Err(ConfigError::here(
                "needs exactly one of exact, prefix, suffix, contains, regex",
            ));
        };
        let kind = match *name {
            "exact" => Kind::Exact,
            "prefix" => Kind::Prefix,
            "suffix" => Kind::Suffix,
            "contains" => Kind::Contains,
            _ => {
                if m.ignore_case {
                    return Err(ConfigError::new(
                        "ignoreCase",
                        "not with regex (write (?i) in it)",
                    ));
                }
                let re = pattern::whole_string(value).map_err(|e| ConfigError::new("regex", e))?;
                return Ok(Self::Regex(re));
            }
        };
        // Envoy refuses an empty prefix, suffix or contains (they would match everything).
        if value.is_empty() && !matches!(kind, Kind::Exact) {
            return Err(ConfigError::new(*name, "must not be empty"));
        }
        Ok(Self::Text {
            kind,
            value: if m.ignore_case {
                value.to_lowercase()
            } else {
                (*value).clone()
            },
            ignore_case: m.ignore_case,
        })
    }

    /// A token without `sub` is matched as the empty string, as Envoy does.
    pub fn matches(&self, sub: Option<&str>) -> bool {
        let sub = sub.unwrap_or("");
        match self {
            Self::Regex(re) => re.is_match(sub),
            Self::Text {
                kind,
                value,
                ignore_case,
            } => {
                let lowered;
                let s = if *ignore_case {
                    lowered = sub.to_lowercase();
                    lowered.as_str()
                } else {
                    sub
                };
                match kind {
                    Kind::Exact => s == value,
                    Kind::Prefix => s.starts_with(value.as_str()),
                    Kind::Suffix => s.ends_with(value.as_str()),
                    Kind::Contains => s.contains(value.as_str()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(json: &str) -> Result<SubjectMatcher, ConfigError> {
        SubjectMatcher::new(&serde_json::from_str(json).unwrap())
    }

    #[test]
    fn matches_as_envoy_string_matcher() {
        let spiffe = m(r#"{"prefix":"spiffe://example.org/"}"#).unwrap();
        assert!(spiffe.matches(Some("spiffe://example.org/ns/a/sa/b")));
        assert!(!spiffe.matches(Some("spiffe://example.org.evil/x")));
        assert!(!spiffe.matches(Some("SPIFFE://example.org/x")));
        assert!(!spiffe.matches(None));
        let ci = m(r#"{"exact":"Alice","ignoreCase":true}"#).unwrap();
        assert!(ci.matches(Some("aLICE")));
        assert!(!ci.matches(Some("alice2")));
        let re = m(r#"{"regex":"user-[0-9]+"}"#).unwrap();
        assert!(re.matches(Some("user-42")));
        assert!(!re.matches(Some("xuser-42")), "the whole sub");
        assert!(!re.matches(Some("user-42\n")));
        assert!(m(r#"{"suffix":"@corp"}"#).unwrap().matches(Some("a@corp")));
        assert!(m(r#"{"contains":"/sa/"}"#)
            .unwrap()
            .matches(Some("ns/x/sa/y")));
        assert!(m(r#"{"exact":""}"#).unwrap().matches(None));
    }

    #[test]
    fn bad_matchers_refused() {
        for bad in [
            "{}",
            r#"{"exact":"a","prefix":"b"}"#,
            r#"{"prefix":""}"#,
            r#"{"regex":"("}"#,
            r#"{"regex":"a","ignoreCase":true}"#,
        ] {
            assert!(m(bad).is_err(), "{bad}");
        }
    }
}
