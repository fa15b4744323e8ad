//! Checks on the policies before resolution: the fields it relies on, named when wrong.

use super::PeerAuthentication;
use crate::error::ConfigError;

/// Checks what resolution relies on; names the offending field.
pub fn validate(policies: &[PeerAuthentication]) -> Result<Vec<String>, ConfigError> {
    let mut warnings = Vec::new();
    for (i, p) in policies.iter().enumerate() {
        let at = |f: &str| format!("peerAuthentications[{i}].{f}");
        if let Some(kind) = &p.kind {
            if kind != "PeerAuthentication" {
                return Err(ConfigError::new(
                    at("kind"),
                    format!("{kind:?} is not PeerAuthentication"),
                ));
            }
        }
        if p.metadata.name.is_empty() {
            return Err(ConfigError::new(at("metadata.name"), "must not be empty"));
        }
        if p.metadata.namespace.is_empty() {
            return Err(ConfigError::new(
                at("metadata.namespace"),
                "must not be empty",
            ));
        }
        if let Some(ts) = &p.metadata.creation_timestamp {
            if !is_rfc3339_utc(ts) {
                return Err(ConfigError::new(
                    at("metadata.creationTimestamp"),
                    format!("{ts:?} is not an RFC 3339 UTC time like 2026-01-01T00:00:00Z"),
                ));
            }
        }
        for port in p.spec.port_level_mtls.keys() {
            if !port.parse::<u32>().is_ok_and(|n| (1..=65535).contains(&n)) {
                return Err(ConfigError::new(
                    at(&format!("spec.portLevelMtls.{port}")),
                    "is not a port number",
                ));
            }
        }
        if !p.spec.port_level_mtls.is_empty()
            && p.spec
                .selector
                .as_ref()
                .is_none_or(|s| s.match_labels.is_empty())
        {
            warnings.push(format!(
                "{}: portLevelMtls is only honoured on a policy with a selector",
                at("spec")
            ));
        }
    }
    Ok(warnings)
}

/// `YYYY-MM-DDTHH:MM:SSZ`, optionally with fractional seconds; these sort chronologically as text.
pub(super) fn is_rfc3339_utc(s: &str) -> bool {
    let b = s.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    b.len() >= 20
        && digits(0..4)
        && b.get(4) == Some(&b'-')
        && digits(5..7)
        && b.get(7) == Some(&b'-')
        && digits(8..10)
        && b.get(10) == Some(&b'T')
        && digits(11..13)
        && b.get(13) == Some(&b':')
        && digits(14..16)
        && b.get(16) == Some(&b':')
        && digits(17..19)
        && b.last() == Some(&b'Z')
        && (b.len() == 20 || (b.get(19) == Some(&b'.') && digits(20..b.len().saturating_sub(1))))
}
