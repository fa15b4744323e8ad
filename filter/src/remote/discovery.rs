//! OpenID discovery: a rule with an issuer and no keys finds them from the issuer's provider
//! configuration document (OpenID Connect Discovery 1.0 §4), as istiod does.

use serde_json::Value;

use super::uri::{istio_cluster, parse_uri, RemoteJwks};

/// Where the keys a discovery document names are fetched from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeysTarget {
    pub uri: String,
    pub cluster: String,
    pub authority: String,
    pub path: String,
}

/// The document's `jwks_uri`, as an http(s) URL, and the cluster it is fetched through
/// (`jwksCluster` when the rule names one, else Istio's cluster for its host and port).
pub fn keys_target(spec: &RemoteJwks, document: &[u8]) -> Result<KeysTarget, String> {
    let doc = crate::json::from_slice(document)
        .map_err(|e| format!("the discovery document is not JSON: {e}"))?;
    let uri = match doc.get("jwks_uri") {
        Some(Value::String(u)) => u,
        Some(_) => return Err("the discovery document's jwks_uri is not a string".into()),
        None => return Err("the discovery document has no jwks_uri".into()),
    };
    let parsed = parse_uri(uri)
        .map_err(|e| format!("the discovery document's jwks_uri {uri:?} {}", e.message))?;
    Ok(KeysTarget {
        uri: uri.clone(),
        cluster: spec
            .jwks_cluster
            .clone()
            .unwrap_or_else(|| istio_cluster(&parsed)),
        authority: parsed.authority,
        path: parsed.path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(jwks_cluster: Option<&str>) -> RemoteJwks {
        RemoteJwks {
            uri: "https://idp.example.com/.well-known/openid-configuration".into(),
            cluster: "outbound|443||idp.example.com".into(),
            authority: "idp.example.com".into(),
            path: "/.well-known/openid-configuration".into(),
            timeout_ms: 5_000,
            cache_duration_s: 600,
            discovery: true,
            jwks_cluster: jwks_cluster.map(String::from),
        }
    }

    #[test]
    fn the_jwks_uri_and_its_cluster() {
        let doc = br#"{"issuer":"https://idp.example.com","jwks_uri":"https://keys.example.com:8443/v1/jwks?x=1"}"#;
        let t = keys_target(&spec(None), doc).unwrap();
        assert_eq!(t.cluster, "outbound|8443||keys.example.com");
        assert_eq!(
            (t.authority.as_str(), t.path.as_str()),
            ("keys.example.com:8443", "/v1/jwks?x=1")
        );
        assert_eq!(
            keys_target(&spec(Some("jwks")), doc).unwrap().cluster,
            "jwks"
        );
    }

    #[test]
    fn documents_that_name_no_usable_keys_are_failures() {
        for (doc, why) in [
            (&b"<html>"[..], "not JSON"),
            (br#"{"issuer":"x"}"#, "no jwks_uri"),
            (br#"{"jwks_uri":7}"#, "not a string"),
            (br#"{"jwks_uri":"ftp://idp/keys"}"#, "https://"),
            (br#"{"jwks_uri":"file:///etc/passwd"}"#, "https://"),
            (br#"[]"#, "no jwks_uri"),
        ] {
            let err = keys_target(&spec(None), doc).unwrap_err();
            assert!(err.contains(why), "{err}");
        }
    }
}
