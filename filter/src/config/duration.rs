//! The protobuf-JSON durations Istio writes for `timeout` and `jwksCacheDuration`.

use crate::error::ConfigError;

/// A protobuf-JSON duration (`"5s"`, `"0.25s"`), as Istio writes `timeout`, in milliseconds.
pub fn parse_duration_ms(s: &str) -> Result<u64, ConfigError> {
    let expected = || ConfigError::here(format!("{s:?} is not a duration like \"5s\" or \"1.5s\""));
    let num = s.strip_suffix('s').ok_or_else(expected)?;
    let (whole, frac) = num.split_once('.').unwrap_or((num, ""));
    if whole.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
        || frac.len() > 9
    {
        return Err(expected());
    }
    let secs: u64 = whole.parse().map_err(|_| expected())?;
    let millis: u64 = format!("{frac:0<3}")
        .get(..3)
        .unwrap_or("0")
        .parse()
        .map_err(|_| expected())?;
    secs.checked_mul(1000)
        .and_then(|ms| ms.checked_add(millis))
        .ok_or_else(expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("5s"), Ok(5000));
        assert_eq!(parse_duration_ms("0.25s"), Ok(250));
        assert_eq!(parse_duration_ms("1.000340012s"), Ok(1000));
        assert_eq!(parse_duration_ms("600s"), Ok(600_000));
        for bad in [
            "5",
            "5m",
            "-1s",
            ".5s",
            "1.s5",
            "s",
            "1e3s",
            "99999999999999999999s",
            "1.0000000001s",
        ] {
            assert!(parse_duration_ms(bad).is_err(), "{bad}");
        }
    }
}
