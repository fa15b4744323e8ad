//! Arbitrary bytes as a token: parsed, verified against every key of a fixed JWKS with every
//! algorithm, and authenticated as a request (as a bearer token, and as "name: value" header
//! lines). An accepted bearer token must parse, name the issuer and verify with a candidate key.
#![no_main]

#[path = "../common/mod.rs"]
mod common;

use libfuzzer_sys::fuzz_target;
use mesh_authn::authn::Verdict;
use mesh_authn::crypto::{self, Alg, InModule};
use mesh_authn::jwt::jws;
use mesh_authn::request::Request;

const ALGS: [&str; 13] = [
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA", "HS256",
    "HS384", "HS512", "none",
];

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let keys = common::fixed_jwks();

    // The bytes as a compact JWS.
    if let Ok(jws) = jws::parse(&text) {
        for key in &keys.keys {
            let _ = jws.verify_with(&key.key, &InModule);
        }
        let _ = jws.claims.check_time(common::NOW, 60, true);
    }
    // The bytes as a raw signature, under every algorithm and key.
    for alg in ALGS.iter().filter_map(|a| Alg::from_name(a)) {
        for key in &keys.keys {
            let _ = crypto::verify(alg, &key.key.material, b"eyJhbGciOiJSUzI1NiJ9.e30", data);
        }
    }

    let cfg = common::fixed_config();
    let token = text.trim();
    let bearer = Request::new(vec![
        (":path".into(), "/api/x".into()),
        (":method".into(), "GET".into()),
        ("authorization".into(), format!("Bearer {text}")),
    ]);
    if let Verdict::Allow(fwd) = common::decide(cfg, &bearer) {
        if !token.is_empty() {
            let jws = jws::parse(token).expect("an accepted token parses");
            assert_eq!(jws.claims.iss.as_deref(), Some(common::ISSUER));
            assert!(
                keys.candidates(jws.alg, jws.kid.as_deref())
                    .any(|k| jws.verify_with(&k.key, &InModule)),
                "accepted without a verifying key: {token:?}"
            );
            assert!(fwd.remove.iter().any(|h| h == "authorization"));
        }
    }
    let lines = Request::new(common::header_lines(&text));
    let _ = common::decide(cfg, &lines);
});
