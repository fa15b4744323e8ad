//! Arbitrary bytes as a token: parsed, verified against every key of a fixed JWKS with every
//! algorithm, and authenticated as a request (as a bearer token, and as "name: value" header
//! lines). An accepted bearer token must parse, name the issuer and verify with a candidate key.
//! Every signature verdict of the module is compared with an independent verifier
//! (`common/reference.rs`: keys read from the JWKS JSON, the crates called directly).
//!
//! Input starting with a 0 byte instead: [0] [alg, mutation] header [0 payload]. The harness
//! signs header.payload under that algorithm with the tests' keys (`test_tokens`, in a second
//! JWKS and config: `signing` below), then alters the result or not, so valid signatures reach
//! the verifiers and accepted tokens reach the claim checks. An empty header or payload stands
//! for a default one; with both default, the token must be accepted unaltered and refused altered.
#![no_main]

#[path = "../common/mod.rs"]
mod common;
#[path = "../common/reference.rs"]
mod reference;

use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use libfuzzer_sys::fuzz_target;
use mesh_authn::authn::Verdict;
use mesh_authn::config::{self, Config};
use mesh_authn::crypto::{self, Alg, InModule};
use mesh_authn::jwt::jwks::{self, Jwks};
use mesh_authn::jwt::jws;
use mesh_authn::request::Request;
use reference::{RefKey, B64};
use test_tokens::{sign, Key};

const ALGS: [&str; 14] = [
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
    "HS256", "HS384", "HS512", "none",
];

/// The module's keys of a JWKS paired with the reference's, read from the same JSON.
struct KeySet {
    module: &'static Jwks,
    reference: Vec<(Option<String>, RefKey)>,
}

impl KeySet {
    fn new(module: &'static Jwks, json: &str) -> Self {
        let reference = reference::keys(json);
        assert_eq!(
            module.keys.len(),
            reference.len(),
            "the module skipped a key"
        );
        for (m, (kid, _)) in module.keys.iter().zip(&reference) {
            assert_eq!(&m.kid, kid);
        }
        Self { module, reference }
    }

    /// `crypto::verify` under every algorithm and key against the reference.
    fn check_raw(&self, input: &[u8], sig: &[u8]) {
        for name in ALGS {
            let Some(alg) = Alg::from_name(name) else {
                continue;
            };
            for (m, (kid, r)) in self.module.keys.iter().zip(&self.reference) {
                let ours = crypto::verify(alg, &m.key.material, input, sig);
                let theirs = reference::verify(name, r, input, sig);
                assert_eq!(ours, theirs, "{name} with key {kid:?}: module {ours}");
            }
        }
    }

    /// A parsed token: `verify_with` every key against the reference, with the signing input,
    /// signature and alg read from the token again here.
    fn check_jws(&self, token: &str, jws: &jws::Jws<'_>) {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s)) = (parts.next(), parts.next(), parts.next()) else {
            panic!("a parsed token has three segments: {token:?}");
        };
        let header: serde_json::Value =
            serde_json::from_slice(&B64.decode(h).expect("header base64")).expect("header JSON");
        let name = header["alg"].as_str().expect("alg");
        assert_eq!(Alg::from_name(name), Some(jws.alg));
        let input = format!("{h}.{p}");
        let sig = B64.decode(s).expect("signature base64");
        for (m, (kid, r)) in self.module.keys.iter().zip(&self.reference) {
            let ours = jws.verify_with(&m.key, &InModule);
            let theirs = reference::verify(name, r, input.as_bytes(), &sig);
            assert_eq!(
                ours, theirs,
                "{name} with key {kid:?}: module {ours}, {token:?}"
            );
        }
    }
}

fn fixed_keys() -> &'static KeySet {
    static K: OnceLock<KeySet> = OnceLock::new();
    K.get_or_init(|| KeySet::new(common::fixed_jwks(), common::JWKS_JSON))
}

/// The harness's keys (`test_tokens`, shared with the tests) under these kids, in this order.
const SIGNING_KIDS: [(Key, &str); 6] = [
    (Key::Rsa, "s-rsa"),
    (Key::P256, "s-ec256"),
    (Key::P384, "s-ec384"),
    (Key::P521, "s-ec521"),
    (Key::Ed25519, "s-ed25519"),
    (Key::Hmac, "s-hmac"),
];

struct Signing {
    keys: KeySet,
    config: Config,
}

fn signing() -> &'static Signing {
    static S: OnceLock<Signing> = OnceLock::new();
    S.get_or_init(|| {
        let json = test_tokens::jwks_json(&SIGNING_KIDS);
        let module: &'static Jwks = Box::leak(Box::new(
            jwks::parse(json.as_bytes()).expect("signing JWKS").0,
        ));
        let cfg = serde_json::json!({"jwtRules": [
            {"issuer": common::ISSUER, "jwks": json, "audiences": ["svc-a"]}
        ]});
        let config =
            config::load(cfg.to_string().as_bytes(), &Default::default()).expect("signing config");
        Signing {
            keys: KeySet::new(module, &json),
            config,
        }
    })
}

fn kid(alg: &str) -> &'static str {
    let key = Key::for_alg(alg).expect("a signing algorithm");
    SIGNING_KIDS
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, kid)| *kid)
        .expect("every key has a kid")
}

/// A token the harness signs: `alg` from the low 4 bits of `select`, the alteration from the next
/// two (none, last signature bit flipped, last signature byte dropped, other payload signed).
/// Returns it and whether it must be accepted (Some(true)) or refused (Some(false)).
fn signed_token(select: u8, rest: &[u8]) -> (String, Option<bool>) {
    let alg = ALGS[usize::from(select & 0x0f) % 12];
    let (header, payload) = match rest.iter().position(|b| *b == 0) {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (rest, &[][..]),
    };
    let default_header = format!(r#"{{"alg":"{alg}","kid":"{}"}}"#, kid(alg));
    let default_payload = format!(
        r#"{{"iss":"{}","sub":"fuzz","aud":"svc-a","exp":4102444800}}"#,
        common::ISSUER
    );
    let header = if header.is_empty() {
        default_header.as_bytes()
    } else {
        header
    };
    let payload = if payload.is_empty() {
        default_payload.as_bytes()
    } else {
        payload
    };
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let alteration = select >> 4 & 3;
    let mut sig = if alteration == 3 {
        sign(alg, format!("{input}e30").as_bytes())
    } else {
        sign(alg, input.as_bytes())
    };
    match alteration {
        1 => {
            if let Some(b) = sig.last_mut() {
                *b ^= 1;
            }
        }
        2 => {
            sig.pop();
        }
        _ => {}
    }
    let defaults = header == default_header.as_bytes() && payload == default_payload.as_bytes();
    let token = format!("{input}.{}", URL_SAFE_NO_PAD.encode(&sig));
    (token, defaults.then_some(alteration == 0))
}

fn bearer(token: &str) -> Request {
    Request::new(vec![
        (":path".into(), "/api/x".into()),
        (":method".into(), "GET".into()),
        ("authorization".into(), format!("Bearer {token}")),
    ])
}

/// What an accepted bearer token must satisfy.
fn check_accepted(keys: &Jwks, token: &str, remove: &[String]) {
    let jws = jws::parse(token).expect("an accepted token parses");
    assert_eq!(jws.claims.iss.as_deref(), Some(common::ISSUER));
    assert!(
        keys.candidates(jws.alg, jws.kid.as_deref())
            .any(|k| jws.verify_with(&k.key, &InModule)),
        "accepted without a verifying key: {token:?}"
    );
    assert!(remove.iter().any(|h| h == "authorization"));
}

fuzz_target!(|data: &[u8]| {
    if let Some((&0, rest)) = data.split_first() {
        let Some((&select, rest)) = rest.split_first() else {
            return;
        };
        let s = signing();
        let (token, must_accept) = signed_token(select, rest);
        if let Ok(jws) = jws::parse(&token) {
            s.keys.check_jws(&token, &jws);
        }
        let verdict = common::decide(&s.config, &bearer(&token));
        if let Verdict::Allow(fwd) = &verdict {
            check_accepted(s.keys.module, &token, &fwd.remove);
        }
        if let Some(accept) = must_accept {
            assert_eq!(
                matches!(verdict, Verdict::Allow(_)),
                accept,
                "{token:?}: {verdict:?}"
            );
        }
        return;
    }

    let text = String::from_utf8_lossy(data);
    let keys = fixed_keys();

    // The bytes as a compact JWS.
    if let Ok(jws) = jws::parse(&text) {
        keys.check_jws(&text, &jws);
        let _ = jws.claims.check_time(common::NOW, 60, true);
    }
    // The bytes as a raw signature, under every algorithm and key.
    keys.check_raw(b"eyJhbGciOiJSUzI1NiJ9.e30", data);

    let cfg = common::fixed_config();
    let token = text.trim();
    if let Verdict::Allow(fwd) = common::decide(cfg, &bearer(&text)) {
        if !token.is_empty() {
            check_accepted(keys.module, token, &fwd.remove);
        }
    }
    let lines = Request::new(common::header_lines(&text));
    let _ = common::decide(cfg, &lines);
});
