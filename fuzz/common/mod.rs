//! Shared fixtures for the fuzz targets: a fixed JWKS (fixtures/jwks.json, the keys the seed tokens
//! in corpus/ are signed with), a fixed configuration, and a header-map reader.

#![allow(dead_code)]

use std::sync::OnceLock;

use mesh_authn::authn::{self, Env, NoRemotes, Verdict};
use mesh_authn::config::{self, Config};
use mesh_authn::error::AuthError;
use mesh_authn::jwt::cache::TokenCache;
use mesh_authn::jwt::jwks::{self, Jwks};
use mesh_authn::request::Request;

pub const ISSUER: &str = "testing@secure.istio.io";
/// The fixed "now" the targets evaluate tokens at (the seed tokens expire in 2100).
pub const NOW: u64 = 1_700_000_000;
pub const JWKS_JSON: &str = include_str!("../fixtures/jwks.json");

pub fn fixed_jwks() -> &'static Jwks {
    static J: OnceLock<Jwks> = OnceLock::new();
    J.get_or_init(|| {
        jwks::parse(JWKS_JSON.as_bytes())
            .expect("fixtures/jwks.json parses")
            .0
    })
}

/// Two rules for the same issuer and keys: one reading the default locations (Authorization
/// Bearer, ?access_token=), one reading a custom header, a param and a cookie, with outputs; plus
/// trigger rules.
pub fn fixed_config() -> &'static Config {
    static C: OnceLock<Config> = OnceLock::new();
    C.get_or_init(|| {
        let cfg = serde_json::json!({
            "jwtRules": [
                {"issuer": ISSUER, "jwks": JWKS_JSON, "audiences": ["svc-a", "https://svc-b/"]},
                {"issuer": ISSUER, "jwks": JWKS_JSON,
                 "fromHeaders": [{"name": "x-auth", "prefix": "Token "}, {"name": "x-raw"}],
                 "fromParams": ["t"], "fromCookies": ["session"],
                 "outputPayloadToHeader": "x-jwt-payload",
                 "outputClaimToHeaders": [{"header": "x-jwt-sub", "claim": "sub"},
                                          {"header": "x-jwt-team", "claim": "org.team"}]}
            ],
            "clockSkewSeconds": 60,
            "outputRequestPrincipalToHeader": "x-request-principal",
            "triggerRules": [{"excludedPaths": [{"exact": "/healthz"}],
                              "includedPaths": [{"prefix": "/"}]}]
        });
        config::load(cfg.to_string().as_bytes(), &Default::default())
            .expect("the fixed config loads")
    })
}

/// "name: value" lines (names lowercased; a leading ':' is part of the name, as in ":path: /x").
pub fn header_lines(text: &str) -> Vec<(String, String)> {
    text.split('\n')
        .filter_map(|line| {
            let from = usize::from(line.starts_with(':'));
            let at = line.get(from..)?.find(':')? + from;
            let (name, value) = (line.get(..at)?, line.get(at + 1..)?);
            Some((
                name.to_ascii_lowercase(),
                value.strip_prefix(' ').unwrap_or(value).to_string(),
            ))
        })
        .collect()
}

/// Authenticates and checks what must hold for every verdict: never an internal error, never a
/// wait (no remote keys here), 401/403 only, and the same verdict with the verified-token cache
/// (cold, then warm) as without it.
pub fn decide(cfg: &Config, req: &Request) -> Verdict {
    let v = authn::authenticate(cfg, req, NOW * 1000, &mut Env::new(&NoRemotes));
    let mut cache = TokenCache::new(1 << 20, 8);
    for round in ["cold", "warm"] {
        let mut env = Env::new(&NoRemotes);
        env.cache = Some(&mut cache);
        let cached = authn::authenticate(cfg, req, NOW * 1000, &mut env);
        assert_eq!(cached, v, "{round} cache changed the verdict for {req:?}");
    }
    match &v {
        Verdict::Allow(_) => {}
        Verdict::Deny(e) => {
            assert_ne!(*e, AuthError::Internal, "internal error for {req:?}");
            assert!(
                matches!(e.http_status(), 401 | 403),
                "status {} for {e:?}",
                e.http_status()
            );
            assert!(!e.reason().is_empty());
        }
        Verdict::Wait { .. } => panic!("wait without remote keys: {req:?}"),
    }
    v
}
