//! Regular expressions as operators write them for Envoy's `safe_regex` and Istio's `StringMatch`:
//! RE2 syntax, matched against the whole string, with a bounded compiled size.

use regex::{Regex, RegexBuilder};

/// Bounds what an operator's regex may cost to compile and to run.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// `pattern` compiled to match whole strings only; the error is the reason, for a `ConfigError`.
pub fn whole_string(pattern: &str) -> Result<Regex, String> {
    RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|e| format!("invalid regex: {e}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn anchored_and_bounded() {
        let re = whole_string("a|b").unwrap();
        assert!(re.is_match("a") && re.is_match("b"));
        assert!(!re.is_match("ab") && !re.is_match("xa"));
        assert!(whole_string("(").is_err());
        assert!(whole_string("\\w{1000}{1000}").is_err());
    }
}
