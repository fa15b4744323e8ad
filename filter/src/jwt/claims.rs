//! Registered claims: their types, the time window, audiences; and claim values for headers.

use std::collections::HashSet;

use serde_json::{Map, Value};

use super::confirmation::Confirmation;
use crate::error::AuthError;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claims {
    pub iss: Option<String>,
    pub sub: Option<String>,
    pub aud: Vec<String>,
    pub exp: Option<u64>,
    pub nbf: Option<u64>,
    /// What the token is bound to, for rules with `certificateBinding` or `dpop`.
    pub cnf: Confirmation,
}

impl Claims {
    pub fn from_payload(p: &Map<String, Value>) -> Result<Self, AuthError> {
        let string = |name: &str, err: AuthError| match p.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(err),
        };
        let aud = match p.get("aud") {
            None => Vec::new(),
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(String::from)
                        .ok_or(AuthError::AudNotStringList)
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(AuthError::AudNotStringList),
        };
        numeric_date(
            p.get("iat"),
            AuthError::IatNotInteger,
            AuthError::IatOutOfRange,
        )?;
        Ok(Self {
            iss: string("iss", AuthError::IssNotString)?,
            sub: string("sub", AuthError::SubNotString)?,
            aud,
            exp: numeric_date(
                p.get("exp"),
                AuthError::ExpNotInteger,
                AuthError::ExpOutOfRange,
            )?,
            nbf: numeric_date(
                p.get("nbf"),
                AuthError::NbfNotInteger,
                AuthError::NbfOutOfRange,
            )?,
            cnf: Confirmation::from_payload(p),
        })
    }

    /// `exp` and `nbf` against `now` (seconds since the epoch), allowing `skew` seconds either way.
    pub fn check_time(&self, now: u64, skew: u64, require_exp: bool) -> Result<(), AuthError> {
        if let Some(nbf) = self.nbf {
            if nbf > now.saturating_add(skew) {
                return Err(AuthError::NotYetValid);
            }
        }
        match self.exp {
            Some(exp) if exp.saturating_add(skew) < now => Err(AuthError::Expired),
            None if require_exp => Err(AuthError::ExpirationMissing),
            _ => Ok(()),
        }
    }

    /// Envoy's `max_lifetime`: what is left of the token's life (`exp` - now, to the millisecond)
    /// must be under `max_ms`; a token without `exp` fails.
    pub fn check_lifetime(&self, now_ms: u64, max_ms: u64) -> Result<(), AuthError> {
        match self.exp {
            Some(exp) if exp.saturating_mul(1000).saturating_sub(now_ms) < max_ms => Ok(()),
            _ => Err(AuthError::VerificationFailed),
        }
    }

    /// Any-of match against sanitized allowed audiences; an empty allow-list checks nothing.
    pub fn check_audience(&self, allowed: &HashSet<String>) -> Result<(), AuthError> {
        if allowed.is_empty()
            || self
                .aud
                .iter()
                .any(|a| allowed.contains(sanitize_audience(a)))
        {
            Ok(())
        } else {
            Err(AuthError::AudienceNotAllowed)
        }
    }
}

/// Envoy compares audiences without scheme and trailing slash.
pub fn sanitize_audience(aud: &str) -> &str {
    let a = aud
        .strip_prefix("https://")
        .or_else(|| aud.strip_prefix("http://"))
        .unwrap_or(aud);
    a.strip_suffix('/').unwrap_or(a)
}

/// A NumericDate as Envoy reads it (jwt_verify_lib's `GetUInt64`): any JSON number, taken as a
/// double, in [0, 2^64), truncated toward zero. So `1.5e9` is 1500000000, while `-1`, `1e30` and
/// 18446744073709551615 (2^64 as a double) are out of range, not saturated into "never expires".
fn numeric_date(
    v: Option<&Value>,
    not_integer: AuthError,
    out_of_range: AuthError,
) -> Result<Option<u64>, AuthError> {
    match v {
        None => Ok(None),
        Some(Value::Number(n)) => match n.as_f64() {
            // The range check makes the cast exact up to truncation, which is jwt_verify_lib's
            // reading of a fractional date.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            Some(f) if (0.0..18_446_744_073_709_551_616.0).contains(&f) => Ok(Some(f as u64)),
            _ => Err(out_of_range),
        },
        Some(_) => Err(not_integer),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Result<Claims, AuthError> {
        match v {
            Value::Object(m) => Claims::from_payload(&m),
            _ => Err(AuthError::PayloadBadJson),
        }
    }

    #[test]
    fn claim_types() {
        let cases = [
            (json!({"iss": 1}), Some(AuthError::IssNotString)),
            (json!({"sub": []}), Some(AuthError::SubNotString)),
            (json!({"aud": {"a": 1}}), Some(AuthError::AudNotStringList)),
            (json!({"aud": ["a", 1]}), Some(AuthError::AudNotStringList)),
            (json!({"exp": "1700000000"}), Some(AuthError::ExpNotInteger)),
            (json!({"exp": -5}), Some(AuthError::ExpOutOfRange)),
            (json!({"exp": -0.5}), Some(AuthError::ExpOutOfRange)),
            (json!({"exp": null}), Some(AuthError::ExpNotInteger)),
            (json!({"nbf": true}), Some(AuthError::NbfNotInteger)),
            (json!({"iat": "x"}), Some(AuthError::IatNotInteger)),
            (json!({"exp": 1.5e9}), None),
            (json!({"exp": 1e30}), Some(AuthError::ExpOutOfRange)),
            (
                json!({"exp": 1.8446744073709552e19}),
                Some(AuthError::ExpOutOfRange),
            ),
            (json!({"nbf": 1e300}), Some(AuthError::NbfOutOfRange)),
            (json!({"iat": 1e20}), Some(AuthError::IatOutOfRange)),
            (json!({"iat": -1}), Some(AuthError::IatOutOfRange)),
            // 2^64 - 1 is 2^64 as a double.
            (json!({"exp": u64::MAX}), Some(AuthError::ExpOutOfRange)),
            (json!({"exp": u64::MAX - 4096}), None),
            (
                json!({"aud": "a", "iss": "i", "exp": 5, "nbf": 1, "iat": 1}),
                None,
            ),
            (json!({}), None),
        ];
        for (v, want) in cases {
            assert_eq!(claims(v.clone()).err(), want, "{v}");
        }
    }

    #[test]
    fn numeric_dates_as_envoy_reads_them() {
        let exp = |v: Value| claims(json!({ "exp": v })).map(|c| c.exp);
        assert_eq!(exp(json!(1.9)), Ok(Some(1)));
        assert_eq!(exp(json!(1_700_000_000.999)), Ok(Some(1_700_000_000)));
        assert_eq!(exp(json!(-0.0)), Ok(Some(0)));
        assert_eq!(
            exp(json!(9_007_199_254_740_993u64)),
            Ok(Some(9_007_199_254_740_992))
        );
    }

    #[test]
    fn time_window() {
        let now = 1_000_000;
        let at = |exp: Option<u64>, nbf: Option<u64>| Claims {
            exp,
            nbf,
            ..Claims::default()
        };
        let cases = [
            (at(Some(now - 30), None), 60, false, Ok(())),
            (at(Some(now - 60), None), 60, false, Ok(())),
            (at(Some(now - 61), None), 60, false, Err(AuthError::Expired)),
            (at(Some(now - 90), None), 60, false, Err(AuthError::Expired)),
            (at(Some(now - 1), None), 0, false, Err(AuthError::Expired)),
            (at(Some(now), None), 0, false, Ok(())),
            (at(None, Some(now + 60)), 60, false, Ok(())),
            (
                at(None, Some(now + 61)),
                60,
                false,
                Err(AuthError::NotYetValid),
            ),
            (at(None, None), 60, false, Ok(())),
            (at(None, None), 60, true, Err(AuthError::ExpirationMissing)),
            (at(Some(u64::MAX), None), u64::MAX, true, Ok(())),
            (
                at(Some(now + 10), Some(now + 100)),
                60,
                false,
                Err(AuthError::NotYetValid),
            ),
        ];
        for (c, skew, req, want) in cases {
            assert_eq!(c.check_time(now, skew, req), want, "{c:?} skew {skew}");
        }
    }

    #[test]
    fn lifetime_left_is_bounded() {
        let now_ms = 1_000_000_500;
        let exp = |e: Option<u64>| Claims {
            exp: e,
            ..Claims::default()
        };
        let hour = 3_600_000;
        // exp - now = 3599.5 s < 3600 s.
        assert_eq!(
            exp(Some(1_000_000 + 3600)).check_lifetime(now_ms, hour),
            Ok(())
        );
        assert_eq!(
            exp(Some(1_000_000 + 3601)).check_lifetime(now_ms, hour),
            Err(AuthError::VerificationFailed)
        );
        assert_eq!(
            exp(Some(1_000_000 + 3600)).check_lifetime(1_000_000_000, hour),
            Err(AuthError::VerificationFailed),
            "exactly the maximum is not under it"
        );
        assert_eq!(
            exp(None).check_lifetime(now_ms, hour),
            Err(AuthError::VerificationFailed)
        );
        // A huge exp is a huge lifetime (Envoy's int64 conversion wraps it to the past).
        assert_eq!(
            exp(Some(1 << 63)).check_lifetime(now_ms, hour),
            Err(AuthError::VerificationFailed)
        );
        assert_eq!(
            exp(Some(5)).check_lifetime(now_ms, hour),
            Ok(()),
            "expired: time's verdict"
        );
    }

    #[test]
    fn audiences() {
        let allowed: HashSet<String> = ["svc-a".to_string(), "api.example.com".to_string()].into();
        let with = |aud: &[&str]| Claims {
            aud: aud.iter().map(|s| s.to_string()).collect(),
            ..Claims::default()
        };
        assert!(with(&["svc-a"]).check_audience(&allowed).is_ok());
        assert!(with(&["x", "svc-a"]).check_audience(&allowed).is_ok());
        assert!(with(&["https://api.example.com/"])
            .check_audience(&allowed)
            .is_ok());
        assert_eq!(
            with(&["svc-b"]).check_audience(&allowed),
            Err(AuthError::AudienceNotAllowed)
        );
        assert_eq!(
            with(&[]).check_audience(&allowed),
            Err(AuthError::AudienceNotAllowed)
        );
        assert!(with(&[]).check_audience(&HashSet::new()).is_ok());
    }

    #[test]
    fn audiences_sanitized() {
        assert_eq!(
            sanitize_audience("https://svc.example.com/"),
            "svc.example.com"
        );
        assert_eq!(sanitize_audience("svc-a"), "svc-a");
    }
}
