//! Where a remote key set is fetched from: `jwksUri` → Envoy cluster, `:authority`, `:path`.

use crate::error::ConfigError;

/// A JWKS fetched over HTTP by the root context; shared by every rule with the same URI and cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteJwks {
    /// `jwksUri`, or with `discovery` the OpenID discovery document's URL.
    pub uri: String,
    pub cluster: String,
    pub authority: String,
    pub path: String,
    pub timeout_ms: u64,
    pub cache_duration_s: u64,
    /// `uri` is a discovery document whose `jwks_uri` names the keys: fetched through
    /// `jwks_cluster` when given, else Istio's cluster for that URI.
    pub discovery: bool,
    pub jwks_cluster: Option<String>,
}

impl RemoteJwks {
    /// Host calls one fetch makes: the discovery document first, when there is one.
    pub fn calls(&self) -> u64 {
        if self.discovery {
            2
        } else {
            1
        }
    }

    /// How long one fetch may take, every call included.
    pub fn fetch_timeout_ms(&self) -> u64 {
        self.timeout_ms.saturating_mul(self.calls())
    }

    /// Key under which workers share this source's keys and fetch state.
    pub fn shared_key(&self) -> String {
        format!("mesh-authn.jwks|{}|{}", self.cluster, self.uri)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedUri {
    pub https: bool,
    pub host: String,
    pub port: u16,
    /// `host` or `host:port` exactly as written.
    pub authority: String,
    pub path: String,
}

pub fn parse_uri(uri: &str) -> Result<ParsedUri, ConfigError> {
    parse(uri).map_err(ConfigError::here)
}

fn parse(uri: &str) -> Result<ParsedUri, String> {
    let (https, rest) = if let Some(r) = uri.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = uri.strip_prefix("http://") {
        (false, r)
    } else {
        return Err("must start with https:// or http://".into());
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => (rest.get(..i).unwrap_or(""), rest.get(i..).unwrap_or("")),
        None => (rest, ""),
    };
    let path = path.split('#').next().unwrap_or("");
    let path = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    if authority.is_empty() || authority.contains('@') {
        return Err("must name a host (and no user info)".into());
    }
    if !authority
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._:[]".contains(&b))
        || path.bytes().any(|b| b.is_ascii_control() || b == b' ')
    {
        return Err("contains characters not allowed in a URI".into());
    }
    let (host, port) = split_host_port(authority)?;
    let port = match port {
        None => {
            if https {
                443
            } else {
                80
            }
        }
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or("has an invalid port")?,
    };
    if host.is_empty() {
        return Err("must name a host".into());
    }
    Ok(ParsedUri {
        https,
        host,
        port,
        authority: authority.to_string(),
        path,
    })
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn split_host_port(authority: &str) -> Result<(String, Option<&str>), String> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or("has an unclosed IPv6 bracket")?;
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or("has junk after the IPv6 address")?,
            ),
        };
        return Ok((format!("[{host}]"), port));
    }
    match authority.split_once(':') {
        Some((h, p)) if !p.contains(':') => Ok((h.to_string(), Some(p))),
        Some(_) => Err("has more than one ':'".into()),
        None => Ok((authority.to_string(), None)),
    }
}

/// Istio's cluster for a ServiceEntry host: `outbound|<port>||<host>`.
pub fn istio_cluster(uri: &ParsedUri) -> String {
    let host = uri.host.trim_start_matches('[').trim_end_matches(']');
    format!("outbound|{}||{}", uri.port, host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_and_istio_clusters() {
        let cases = [
            (
                "https://issuer.example.com/.well-known/jwks.json",
                "outbound|443||issuer.example.com",
                "issuer.example.com",
                "/.well-known/jwks.json",
            ),
            (
                "http://127.0.0.1:8081/jwks?x=1#f",
                "outbound|8081||127.0.0.1",
                "127.0.0.1:8081",
                "/jwks?x=1",
            ),
            (
                "https://idp.example.com",
                "outbound|443||idp.example.com",
                "idp.example.com",
                "/",
            ),
            (
                "http://idp.example.com?k=v",
                "outbound|80||idp.example.com",
                "idp.example.com",
                "/?k=v",
            ),
            (
                "https://[::1]:9443/k",
                "outbound|9443||::1",
                "[::1]:9443",
                "/k",
            ),
            ("https://[::1]/k", "outbound|443||::1", "[::1]", "/k"),
        ];
        for (uri, cluster, authority, path) in cases {
            let p = parse_uri(uri).unwrap();
            assert_eq!(istio_cluster(&p), cluster, "{uri}");
            assert_eq!(p.authority, authority, "{uri}");
            assert_eq!(p.path, path, "{uri}");
        }
    }

    #[test]
    fn bad_uris() {
        for uri in [
            "ftp://x/",
            "issuer.example.com/jwks",
            "https:///jwks",
            "https://user@host/",
            "https://host:0/",
            "https://host:99999/",
            "https://host:x/",
            "https://a:1:2/",
            "https://[::1/",
            "https://host/a b",
            "https://ho st/",
        ] {
            assert!(parse_uri(uri).is_err(), "{uri}");
        }
    }
}
