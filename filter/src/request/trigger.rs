//! Path matching for the older authentication policy's `trigger_rules`.

use regex::Regex;
use serde::Deserialize;

use crate::error::ConfigError;

/// Istio's `StringMatch`: exactly one of `exact`, `prefix`, `suffix`, `regex` (RE2 syntax, full match).
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub enum StringMatch {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Regex(String),
}

/// Bounds what an operator's regex may cost to compile and to run.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

#[derive(Debug)]
pub enum PathMatcher {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Regex(Regex),
}

impl PathMatcher {
    pub fn new(m: &StringMatch) -> Result<Self, ConfigError> {
        Ok(match m {
            StringMatch::Exact(s) => Self::Exact(s.clone()),
            StringMatch::Prefix(s) => Self::Prefix(s.clone()),
            StringMatch::Suffix(s) => Self::Suffix(s.clone()),
            StringMatch::Regex(r) => Self::Regex(
                regex::RegexBuilder::new(&format!("^(?:{r})$"))
                    .size_limit(REGEX_SIZE_LIMIT)
                    .build()
                    .map_err(|e| ConfigError::new("regex", format!("invalid regex: {e}")))?,
            ),
        })
    }

    pub fn matches(&self, path: &str) -> bool {
        match self {
            Self::Exact(s) => path == s,
            Self::Prefix(s) => path.starts_with(s.as_str()),
            Self::Suffix(s) => path.ends_with(s.as_str()),
            Self::Regex(r) => r.is_match(path),
        }
    }
}

/// Whether JWT authentication applies to `path` (already without query). No rules: always.
pub fn triggered(rules: &[(Vec<PathMatcher>, Vec<PathMatcher>)], path: &str) -> bool {
    rules.is_empty()
        || rules.iter().any(|(excluded, included)| {
            !excluded.iter().any(|m| m.matches(path))
                && (included.is_empty() || included.iter().any(|m| m.matches(path)))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(json: &str) -> PathMatcher {
        let sm: StringMatch = serde_json::from_str(json).unwrap();
        PathMatcher::new(&sm).unwrap()
    }

    #[test]
    fn string_match_kinds() {
        let cases = [
            (r#"{"exact":"/healthz"}"#, "/healthz", true),
            (r#"{"exact":"/healthz"}"#, "/healthz/", false),
            (r#"{"exact":"/healthz"}"#, "/HEALTHZ", false),
            (r#"{"prefix":"/api/"}"#, "/api/v1", true),
            (r#"{"prefix":"/api/"}"#, "/api", false),
            (r#"{"suffix":".js"}"#, "/a/b.js", true),
            (r#"{"suffix":".js"}"#, "/a/b.jsx", false),
            (r#"{"regex":"/ip"}"#, "/ip", true),
            (r#"{"regex":"/ip"}"#, "/ipx", false),
            (r#"{"regex":"/ip"}"#, "/x/ip", false),
            (r#"{"regex":"/a|/b"}"#, "/b", true),
            (r#"{"regex":"/a|/b"}"#, "/ab", false),
            (r#"{"regex":"/users/[0-9]+"}"#, "/users/42", true),
        ];
        for (json, path, want) in cases {
            assert_eq!(m(json).matches(path), want, "{json} vs {path}");
        }
    }

    #[test]
    fn two_kinds_in_one_match_rejected() {
        assert!(serde_json::from_str::<StringMatch>(r#"{"exact":"/a","prefix":"/b"}"#).is_err());
    }

    #[test]
    fn trigger_semantics() {
        let excl_health = (vec![m(r#"{"exact":"/user-agent"}"#)], vec![]);
        let only_ip = (vec![], vec![m(r#"{"exact":"/ip"}"#)]);
        assert!(triggered(&[], "/anything"));
        let rules = [excl_health];
        assert!(!triggered(&rules, "/user-agent"));
        assert!(triggered(&rules, "/headers"));
        let rules = [only_ip];
        assert!(triggered(&rules, "/ip"));
        assert!(!triggered(&rules, "/headers"));
        let both = [(
            vec![m(r#"{"prefix":"/api/public/"}"#)],
            vec![m(r#"{"prefix":"/api/"}"#)],
        )];
        assert!(triggered(&both, "/api/x"));
        assert!(!triggered(&both, "/api/public/x"));
        assert!(!triggered(&both, "/other"));
    }
}
