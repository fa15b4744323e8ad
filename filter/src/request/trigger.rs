//! Path matching for the older authentication policy's `trigger_rules`, on the canonical form of
//! the path (see `path`).

use regex::Regex;
use serde::Deserialize;

use super::path;
use crate::error::ConfigError;
use crate::pattern;

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
            StringMatch::Exact(s) => Self::Exact(path::normalize_pattern(s)),
            StringMatch::Prefix(s) => Self::Prefix(path::normalize_pattern(s)),
            StringMatch::Suffix(s) => Self::Suffix(path::normalize_pattern(s)),
            StringMatch::Regex(r) => {
                Self::Regex(pattern::whole_string(r).map_err(|e| ConfigError::new("regex", e))?)
            }
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

/// One `triggerRules` entry: (excluded, included).
pub type Trigger = (Vec<PathMatcher>, Vec<PathMatcher>);

/// Whether JWT authentication applies to the request's `:path`. No rules: always. An ambiguous
/// path is never excluded and counts as included, so it is always authenticated.
pub fn triggered(rules: &[Trigger], raw_path: &str) -> bool {
    rules.is_empty() || triggered_at(rules, &path::canonical(raw_path))
}

/// `triggered`, for a path already in canonical form (several rule sets, one path).
pub fn triggered_at(rules: &[Trigger], canonical: &path::Canonical<'_>) -> bool {
    if rules.is_empty() || canonical.ambiguous {
        return true;
    }
    let path = canonical.path.as_ref();
    rules.iter().any(|(excluded, included)| {
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

    #[test]
    fn spellings_cannot_sidestep_rules() {
        let include_ip = [(vec![], vec![m(r#"{"exact":"/ip"}"#)])];
        let include_api = [(vec![], vec![m(r#"{"prefix":"/api/"}"#)])];
        let exclude_health = [(vec![m(r#"{"exact":"/healthz"}"#)], vec![])];
        let exclude_public = [(vec![m(r#"{"prefix":"/public/"}"#)], vec![])];
        for spelling in [
            "/ip", "/x/../ip", "/./ip", "//ip", "/%69p", "/%2e/ip", "/ip?x", "/ip#f",
        ] {
            assert!(triggered(&include_ip, spelling), "{spelling}");
        }
        for spelling in [
            "/api/x",
            "//api/x",
            "/public/../api/x",
            "/%61pi/x",
            "/api/./x",
            "/ap%69/",
        ] {
            assert!(triggered(&include_api, spelling), "{spelling}");
        }
        for escaped in [
            "/public/../admin",
            "/public/%2e%2e/admin",
            "/public/%2E./admin",
            "/public//../admin",
            "/public/..%2fadmin",
            "/public/..\\admin",
            "/public/..;/admin",
            "/public/x%00",
            "/public/%zz",
        ] {
            assert!(triggered(&exclude_public, escaped), "{escaped}");
        }
        for exempt in [
            "/public/a.css",
            "/public/",
            "//public/a",
            "/%70ublic/a",
            "/public/a/../b",
        ] {
            assert!(!triggered(&exclude_public, exempt), "{exempt}");
        }
        for exempt in [
            "/healthz",
            "/healthz?full=1",
            "/x/../healthz",
            "/%68ealthz",
            "//healthz",
        ] {
            assert!(!triggered(&exclude_health, exempt), "{exempt}");
        }
        // Ambiguous paths are never exempted, even from an inclusion they do not resemble.
        assert!(triggered(&include_ip, "/other;x"));
        assert!(triggered(&exclude_health, "/healthz;x"));
        assert!(!triggered(&include_ip, "/other"));
    }

    #[test]
    fn patterns_are_matched_in_canonical_encoding() {
        let rules = [(vec![m(r#"{"prefix":"/caf%c3%a9/"}"#)], vec![])];
        assert!(!triggered(&rules, "/café/menu"));
        assert!(!triggered(&rules, "/caf%C3%A9/menu"));
        let rules = [(vec![], vec![m(r#"{"regex":"/é+"}"#)])];
        assert!(triggered(&rules, "/%C3%A9%c3%a9"));
        assert!(!triggered(&rules, "/e"));
    }
}
