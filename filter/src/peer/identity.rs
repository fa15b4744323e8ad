//! The peer's identity, from the SPIFFE URI SAN of its certificate.

/// `spiffe://<trust domain>/ns/<ns>/sa/<sa>` → `<trust domain>/ns/<ns>/sa/<sa>`, Istio's principal.
pub fn spiffe_principal(uri: &str) -> Option<(&str, &str)> {
    let rest = uri.strip_prefix("spiffe://")?;
    let (td, path) = rest.split_once('/')?;
    let mut parts = path.split('/');
    let ok = parts.next() == Some("ns")
        && parts.next().is_some_and(|s| !s.is_empty())
        && parts.next() == Some("sa")
        && parts.next().is_some_and(|s| !s.is_empty())
        && parts.next().is_none();
    (ok && !td.is_empty() && !rest.chars().any(|c| c.is_control() || c == ' '))
        .then_some((rest, td))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spiffe_principals() {
        assert_eq!(
            spiffe_principal("spiffe://cluster.local/ns/foo/sa/curl"),
            Some(("cluster.local/ns/foo/sa/curl", "cluster.local"))
        );
        for bad in [
            "https://cluster.local/ns/foo/sa/curl",
            "spiffe://cluster.local/ns/foo",
            "spiffe://cluster.local/ns//sa/curl",
            "spiffe:///ns/foo/sa/curl",
            "spiffe://cluster.local/ns/foo/sa/curl/extra",
            "spiffe://cluster.local/ns/foo/sa/cu rl",
        ] {
            assert_eq!(spiffe_principal(bad), None, "{bad}");
        }
    }
}
