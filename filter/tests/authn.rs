//! The whole decision, table-driven, with tokens signed by real keys.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use base64::Engine;
use mesh_authn::authn::{admit_connection, authenticate, Admission, Env, NoRemotes, Verdict};
use mesh_authn::config::{self, Config};
use mesh_authn::error::AuthError;
use mesh_authn::jwt::B64URL;
use mesh_authn::peer::Workload;
use mesh_authn::request::Request;
use serde_json::{json, Value};
use test_tokens::{mint, Key, HS256_RSA_PUB};

const NOW: u64 = 1_800_000_000;
const ISS: &str = "testing@secure.istio.io";

fn b64(b: &[u8]) -> String {
    B64URL.encode(b)
}

/// The shared test keys (`test_tokens`) under the kids these tests name; rsa1 only for RS256.
fn jwks() -> String {
    let rsa1 = with(Key::Rsa.jwk("rsa1"), json!({"alg": "RS256", "use": "sig"}));
    json!({"keys": [
        rsa1,
        Key::Rsa.jwk("rsa-any"),
        Key::P256.jwk("ec1"),
        Key::P384.jwk("ec384"),
        Key::Ed25519.jwk("ed1"),
        Key::Hmac.jwk("hs1"),
    ]})
    .to_string()
}

fn claims() -> Value {
    json!({"iss": ISS, "sub": "alice", "exp": NOW + 3600, "aud": "svc-a",
           "group": {"name": "eng", "level": 3}})
}

fn config(extra: Value) -> Config {
    let mut rule = json!({"issuer": ISS, "jwks": jwks()});
    let mut top = json!({});
    if let (Some(r), Some(e)) = (rule.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            if [
                "requireToken",
                "clockSkewSeconds",
                "requireExpiration",
                "triggerRules",
            ]
            .contains(&k.as_str())
            {
                top[k] = v.clone();
            } else {
                r.insert(k.clone(), v.clone());
            }
        }
    }
    top["jwtRules"] = json!([rule]);
    config::load(top.to_string().as_bytes(), &Workload::default()).unwrap()
}

fn request(path: &str, headers: &[(&str, &str)]) -> Request {
    let mut h = vec![
        (":method".to_string(), "GET".to_string()),
        (":path".to_string(), path.to_string()),
        (":authority".to_string(), "example.com".to_string()),
    ];
    h.extend(headers.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Request::new(h)
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

fn verdict(cfg: &Config, token: &str) -> Result<(), AuthError> {
    match authenticate(
        cfg,
        &request("/headers", &[("authorization", &bearer(token))]),
        NOW * 1000,
        &mut Env::new(&NoRemotes),
    ) {
        Verdict::Allow(_) => Ok(()),
        Verdict::Deny(e) => Err(e),
        Verdict::Wait { .. } => panic!("inline keys never wait"),
    }
}

fn with(mut base: Value, patch: Value) -> Value {
    if let (Some(b), Some(p)) = (base.as_object_mut(), patch.as_object()) {
        for (k, v) in p {
            if v.is_null() {
                b.remove(k);
            } else {
                b.insert(k.clone(), v.clone());
            }
        }
    }
    base
}

#[test]
fn algorithms_and_keys() {
    let cfg = config(json!({}));
    let cases: Vec<(Value, Result<(), AuthError>)> = vec![
        (json!({"alg": "RS256", "kid": "rsa1"}), Ok(())),
        (json!({"alg": "RS512", "kid": "rsa-any"}), Ok(())),
        // rsa1 declares alg RS256, so an RS512 token may not use it.
        (
            json!({"alg": "RS512", "kid": "rsa1"}),
            Err(AuthError::NoMatchingKey),
        ),
        (json!({"alg": "PS256", "kid": "rsa-any"}), Ok(())),
        (json!({"alg": "ES256", "kid": "ec1"}), Ok(())),
        (json!({"alg": "ES256"}), Ok(())),
        (json!({"alg": "ES384", "kid": "ec384"}), Ok(())),
        (json!({"alg": "EdDSA", "kid": "ed1"}), Ok(())),
        (json!({"alg": "HS256", "kid": "hs1"}), Ok(())),
        (
            json!({"alg": "RS256", "kid": "nope"}),
            Err(AuthError::NoMatchingKey),
        ),
        (
            json!({"alg": "ES256", "kid": "rsa1"}),
            Err(AuthError::NoMatchingKey),
        ),
        (
            json!({"alg": "RS256", "kid": "rsa1", "x-signer": "RS512"}),
            Err(AuthError::VerificationFailed),
        ),
        (
            json!({"alg": "ES256", "kid": "ec1", "x-signer": "EdDSA"}),
            Err(AuthError::VerificationFailed),
        ),
        // Algorithm confusion: HMAC keyed with the RSA public key's modulus.
        (
            json!({"alg": "HS256", "kid": "rsa1", "x-signer": HS256_RSA_PUB}),
            Err(AuthError::NoMatchingKey),
        ),
        (
            json!({"alg": "HS256", "x-signer": HS256_RSA_PUB}),
            Err(AuthError::VerificationFailed),
        ),
        (json!({"alg": "none"}), Err(AuthError::AlgNotSupported)),
        (
            json!({"alg": "RS256", "kid": "rsa1", "crit": ["b64"]}),
            Err(AuthError::CritNotSupported),
        ),
    ];
    for (header, want) in cases {
        let t = mint(&header, &claims());
        assert_eq!(verdict(&cfg, &t), want, "{header}");
    }
}

#[test]
fn tampering_is_detected() {
    let cfg = config(json!({}));
    let t = mint(&json!({"alg": "ES256", "kid": "ec1"}), &claims());
    let parts: Vec<&str> = t.split('.').collect();
    let forged_payload = b64(with(claims(), json!({"sub": "admin"}))
        .to_string()
        .as_bytes());
    let forged = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
    assert_eq!(verdict(&cfg, &forged), Err(AuthError::VerificationFailed));
    let unsigned = format!("{}.{}.", parts[0], parts[1]);
    assert_eq!(verdict(&cfg, &unsigned), Err(AuthError::VerificationFailed));
}

#[test]
fn claims_in_envoy_order() {
    let h = json!({"alg": "ES256", "kid": "ec1"});
    let cfg = config(json!({"audiences": ["svc-a", "https://api.example.com"]}));
    let cases: Vec<(Value, Result<(), AuthError>)> = vec![
        (json!({}), Ok(())),
        (json!({"exp": NOW - 30}), Ok(())),
        (json!({"exp": NOW - 90}), Err(AuthError::Expired)),
        (json!({"nbf": NOW + 30}), Ok(())),
        (json!({"nbf": NOW + 90}), Err(AuthError::NotYetValid)),
        (json!({"exp": null}), Ok(())),
        (json!({"aud": ["x", "svc-a"]}), Ok(())),
        (json!({"aud": "api.example.com/"}), Ok(())),
        (json!({"aud": "svc-b"}), Err(AuthError::AudienceNotAllowed)),
        (json!({"aud": null}), Err(AuthError::AudienceNotAllowed)),
        (json!({"iss": "other"}), Err(AuthError::UnknownIssuer)),
        (json!({"iss": null}), Err(AuthError::UnknownIssuer)),
        (
            json!({"iss": "other", "exp": NOW - 90}),
            Err(AuthError::UnknownIssuer),
        ),
        (
            json!({"exp": NOW - 90, "aud": "svc-b"}),
            Err(AuthError::Expired),
        ),
        (json!({"exp": "soon"}), Err(AuthError::ExpNotInteger)),
        (json!({"aud": {"a": 1}}), Err(AuthError::AudNotStringList)),
    ];
    for (patch, want) in cases {
        let t = mint(&h, &with(claims(), patch.clone()));
        assert_eq!(verdict(&cfg, &t), want, "{patch}");
    }
    let no_aud_check = config(json!({}));
    let t = mint(&h, &with(claims(), json!({"aud": "anything"})));
    assert_eq!(verdict(&no_aud_check, &t), Ok(()));
}

#[test]
fn skew_and_required_expiration() {
    let h = json!({"alg": "ES256", "kid": "ec1"});
    let strict = config(json!({"clockSkewSeconds": 0, "requireExpiration": true}));
    assert_eq!(
        verdict(&strict, &mint(&h, &with(claims(), json!({"exp": NOW - 1})))),
        Err(AuthError::Expired)
    );
    assert_eq!(
        verdict(&strict, &mint(&h, &with(claims(), json!({"exp": null})))),
        Err(AuthError::ExpirationMissing)
    );
    assert_eq!(verdict(&strict, &mint(&h, &claims())), Ok(()));
    // As in Envoy, the audience is checked before a missing exp (403 rather than 401).
    let with_aud = config(json!({"requireExpiration": true, "audiences": ["svc-a"]}));
    assert_eq!(
        verdict(
            &with_aud,
            &mint(&h, &with(claims(), json!({"exp": null, "aud": "svc-b"})))
        ),
        Err(AuthError::AudienceNotAllowed)
    );
}

#[test]
fn missing_token_follows_require_token() {
    let optional = config(json!({}));
    let required = config(json!({"requireToken": true}));
    let r = request("/headers", &[]);
    assert!(matches!(
        authenticate(&optional, &r, NOW * 1000, &mut Env::new(&NoRemotes)),
        Verdict::Allow(_)
    ));
    assert_eq!(
        authenticate(&required, &r, NOW * 1000, &mut Env::new(&NoRemotes)),
        Verdict::Deny(AuthError::Missing)
    );
    let basic = request("/headers", &[("authorization", "Basic dXNlcjpwYXNz")]);
    assert_eq!(
        authenticate(&required, &basic, NOW * 1000, &mut Env::new(&NoRemotes)),
        Verdict::Deny(AuthError::Missing)
    );
    assert_eq!(verdict(&optional, "deadbeef"), Err(AuthError::BadFormat));
}

#[test]
fn every_token_must_verify() {
    let cfg = config(json!({}));
    let good = mint(&json!({"alg": "ES256", "kid": "ec1"}), &claims());
    let expired = mint(
        &json!({"alg": "ES256", "kid": "ec1"}),
        &with(claims(), json!({"exp": NOW - 999})),
    );
    let r = request(
        &format!("/headers?access_token={expired}"),
        &[("authorization", &bearer(&good))],
    );
    assert_eq!(
        authenticate(&cfg, &r, NOW * 1000, &mut Env::new(&NoRemotes)),
        Verdict::Deny(AuthError::Expired)
    );
    let r = request(
        "/h",
        &[
            ("authorization", &bearer(&good)),
            ("authorization", "Bearer x"),
        ],
    );
    assert_eq!(
        authenticate(&cfg, &r, NOW * 1000, &mut Env::new(&NoRemotes)),
        Verdict::Deny(AuthError::BadFormat)
    );
}

#[test]
fn locations_bind_issuers() {
    let cookie_only = config(json!({"fromCookies": ["session"]}));
    let t = mint(&json!({"alg": "ES256", "kid": "ec1"}), &claims());
    // The default location is not read when a rule names its own.
    let r = request("/h", &[("authorization", &bearer("garbage"))]);
    assert!(matches!(
        authenticate(&cookie_only, &r, NOW * 1000, &mut Env::new(&NoRemotes)),
        Verdict::Allow(_)
    ));
    let r = request("/h", &[("cookie", &format!("a=b; session={t}"))]);
    assert!(matches!(
        authenticate(&cookie_only, &r, NOW * 1000, &mut Env::new(&NoRemotes)),
        Verdict::Allow(_)
    ));

    // Two issuers on two headers: a token for one issuer in the other's header is refused.
    let two = config::load(
        json!({"jwtRules": [
            {"issuer": ISS, "jwks": jwks(), "fromHeaders": [{"name": "x-a"}]},
            {"issuer": "other", "jwks": jwks(), "fromHeaders": [{"name": "x-b"}]},
        ]})
        .to_string()
        .as_bytes(),
        &Workload::default(),
    )
    .unwrap();
    assert!(matches!(
        authenticate(
            &two,
            &request("/", &[("x-a", &t)]),
            NOW * 1000,
            &mut Env::new(&NoRemotes)
        ),
        Verdict::Allow(_)
    ));
    assert_eq!(
        authenticate(
            &two,
            &request("/", &[("x-b", &t)]),
            NOW * 1000,
            &mut Env::new(&NoRemotes)
        ),
        Verdict::Deny(AuthError::UnknownIssuer)
    );
}

#[test]
fn forward_and_outputs() {
    let cfg = config(json!({
        "outputPayloadToHeader": "x-jwt-payload",
        "outputClaimToHeaders": [
            {"header": "x-jwt-sub", "claim": "sub"},
            {"header": "x-jwt-level", "claim": "group.level"},
            {"header": "x-jwt-missing", "claim": "nope"},
        ],
    }));
    let t = mint(&json!({"alg": "ES256", "kid": "ec1"}), &claims());
    let Verdict::Allow(fwd) = authenticate(
        &cfg,
        &request("/", &[("authorization", &bearer(&t))]),
        NOW * 1000,
        &mut Env::new(&NoRemotes),
    ) else {
        panic!("denied");
    };
    // Only headers the request carries are removed (each removal is a host call).
    assert_eq!(fwd.remove.as_slice(), ["authorization"]);
    let payload = t.split('.').nth(1).unwrap().to_string();
    assert_eq!(
        fwd.headers().collect::<Vec<_>>(),
        vec![
            ("x-jwt-payload", payload.as_str()),
            ("x-jwt-sub", "alice"),
            ("x-jwt-level", "3"),
        ]
    );

    // Spoofed output headers are removed even when no token is sent.
    let Verdict::Allow(fwd) = authenticate(
        &cfg,
        &request("/", &[("x-jwt-sub", "admin")]),
        NOW * 1000,
        &mut Env::new(&NoRemotes),
    ) else {
        panic!("denied");
    };
    assert!(fwd.remove.iter().any(|r| r == "x-jwt-sub"));
    assert!(fwd.headers().next().is_none());

    let keep = config(json!({"forwardOriginalToken": true}));
    let Verdict::Allow(fwd) = authenticate(
        &keep,
        &request("/", &[("authorization", &bearer(&t))]),
        NOW * 1000,
        &mut Env::new(&NoRemotes),
    ) else {
        panic!("denied");
    };
    assert!(!fwd.remove.iter().any(|r| r == "authorization"));
}

#[test]
fn verified_query_tokens_leave_the_path() {
    let t = mint(&json!({"alg": "ES256", "kid": "ec1"}), &claims());
    let allow = |cfg: &Config, path: &str| match authenticate(
        cfg,
        &request(path, &[]),
        NOW * 1000,
        &mut Env::new(&NoRemotes),
    ) {
        Verdict::Allow(fwd) => fwd.path,
        other => panic!("{path}: {other:?}"),
    };
    let cfg = config(json!({"fromParams": ["access_token"]}));
    assert_eq!(
        allow(&cfg, &format!("/x?a=1&access_token={t}&b=%41")).as_deref(),
        Some("/x?a=1&b=%41")
    );
    assert_eq!(
        allow(&cfg, &format!("/x?access_token={t}")).as_deref(),
        Some("/x")
    );
    assert_eq!(allow(&cfg, "/x?a=1"), None);
    let keep = config(json!({"fromParams": ["access_token"], "forwardOriginalToken": true}));
    assert_eq!(allow(&keep, &format!("/x?access_token={t}")), None);
}

#[test]
fn trigger_rules_and_cors() {
    let cfg = config(json!({
        "requireToken": true,
        "triggerRules": [{"excludedPaths": [{"exact": "/user-agent"}]}],
    }));
    let at = |path: &str, headers: &[(&str, &str)]| {
        authenticate(
            &cfg,
            &request(path, headers),
            NOW * 1000,
            &mut Env::new(&NoRemotes),
        )
    };
    assert!(matches!(at("/user-agent", &[]), Verdict::Allow(_)));
    assert!(matches!(
        at("/user-agent?x=1", &[("authorization", "Bearer junk")]),
        Verdict::Allow(_)
    ));
    assert_eq!(at("/headers", &[]), Verdict::Deny(AuthError::Missing));

    let only_ip = config(
        json!({"requireToken": true, "triggerRules": [{"includedPaths": [{"exact": "/ip"}]}]}),
    );
    assert_eq!(
        authenticate(
            &only_ip,
            &request("/ip", &[]),
            NOW * 1000,
            &mut Env::new(&NoRemotes)
        ),
        Verdict::Deny(AuthError::Missing)
    );
    assert!(matches!(
        authenticate(
            &only_ip,
            &request("/headers", &[]),
            NOW * 1000,
            &mut Env::new(&NoRemotes)
        ),
        Verdict::Allow(_)
    ));

    let preflight = Request::new(
        [(":method", "OPTIONS")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .chain(
                [
                    (":path", "/headers"),
                    ("origin", "https://a.example"),
                    ("access-control-request-method", "GET"),
                ]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
            )
            .collect(),
    );
    assert!(matches!(
        authenticate(&cfg, &preflight, NOW * 1000, &mut Env::new(&NoRemotes)),
        Verdict::Allow(_)
    ));
}

struct FakeRemote {
    keys: Option<mesh_authn::jwt::jwks::Jwks>,
    failed: bool,
    may_refetch: bool,
}

impl mesh_authn::authn::KeyStore for FakeRemote {
    fn remote(&self, _index: usize) -> mesh_authn::authn::RemoteKeys<'_> {
        use mesh_authn::authn::RemoteKeys;
        match (&self.keys, self.failed) {
            (Some(k), _) => RemoteKeys::Ready(k),
            (None, false) => RemoteKeys::Loading,
            (None, true) => RemoteKeys::Failed,
        }
    }
    fn may_refetch(&self, _index: usize) -> bool {
        self.may_refetch
    }
}

#[test]
fn remote_key_states() {
    let cfg = config::load(
        json!({"jwtRules": [{"issuer": ISS, "jwksUri": "https://idp.example.com/jwks"}]})
            .to_string()
            .as_bytes(),
        &Workload::default(),
    )
    .unwrap();
    let (jwks, _) = mesh_authn::jwt::jwks::parse(jwks().as_bytes()).unwrap();
    let good = mint(&json!({"alg": "ES256", "kid": "ec1"}), &claims());
    let rotated = mint(
        &json!({"alg": "ES256", "kid": "not-yet-published"}),
        &claims(),
    );
    let at = |store: &FakeRemote, t: &str| {
        authenticate(
            &cfg,
            &request("/", &[("authorization", &bearer(t))]),
            NOW * 1000,
            &mut Env::new(store),
        )
    };
    let loading = FakeRemote {
        keys: None,
        failed: false,
        may_refetch: false,
    };
    let failed = FakeRemote {
        keys: None,
        failed: true,
        may_refetch: false,
    };
    let ready = FakeRemote {
        keys: Some(jwks.clone()),
        failed: false,
        may_refetch: true,
    };
    let limited = FakeRemote {
        keys: Some(jwks),
        failed: false,
        may_refetch: false,
    };

    assert_eq!(
        at(&loading, &good),
        Verdict::Wait {
            remote: 0,
            refetch: false
        }
    );
    assert_eq!(
        at(&failed, &good),
        Verdict::Deny(AuthError::JwksFetchFailed)
    );
    assert!(matches!(at(&ready, &good), Verdict::Allow(_)));
    assert_eq!(
        at(&ready, &rotated),
        Verdict::Wait {
            remote: 0,
            refetch: true
        }
    );
    assert_eq!(
        at(&limited, &rotated),
        Verdict::Deny(AuthError::NoMatchingKey)
    );
    // Claims are checked before keys are needed: an expired token never waits.
    let expired = mint(
        &json!({"alg": "ES256", "kid": "ec1"}),
        &with(claims(), json!({"exp": NOW - 999})),
    );
    assert_eq!(at(&loading, &expired), Verdict::Deny(AuthError::Expired));
    // A kid the keys hold under another algorithm is no reason to refetch.
    let wrong_alg = mint(
        &json!({"alg": "ES384", "kid": "ec1", "x-signer": "ES384"}),
        &claims(),
    );
    assert_eq!(
        at(&ready, &wrong_alg),
        Verdict::Deny(AuthError::NoMatchingKey)
    );
    // Requests without a token never wait for keys.
    assert!(matches!(
        authenticate(
            &cfg,
            &request("/", &[]),
            NOW * 1000,
            &mut Env::new(&loading)
        ),
        Verdict::Allow(_)
    ));
}

fn peer_config(extra: Value) -> Config {
    let mut top = json!({"jwtRules": [{"issuer": ISS, "jwks": jwks()}],
        "outputPeerPrincipalToHeader": "x-peer", "outputRequestPrincipalToHeader": "x-req",
        "outputPrincipalToHeader": "x-principal"});
    if let (Some(t), Some(e)) = (top.as_object_mut(), extra.as_object()) {
        t.extend(e.clone());
    }
    config::load(top.to_string().as_bytes(), &Workload::default()).unwrap()
}

fn on_connection(
    cfg: &Config,
    conn: mesh_authn::request::Connection,
    headers: &[(&str, &str)],
) -> Verdict {
    authenticate(
        cfg,
        &request("/ip", headers).with_connection(conn),
        NOW * 1000,
        &mut Env::new(&NoRemotes),
    )
}

fn mtls(uri: &str, port: u32) -> mesh_authn::request::Connection {
    mesh_authn::request::Connection {
        mtls: true,
        tls: true,
        port: Some(port),
        uri_san: Some(uri.into()),
        ..Default::default()
    }
}

fn plain(port: u32) -> mesh_authn::request::Connection {
    mesh_authn::request::Connection {
        mtls: false,
        tls: false,
        port: Some(port),
        uri_san: None,
        ..Default::default()
    }
}

fn set_headers(v: &Verdict) -> Vec<(String, String)> {
    match v {
        Verdict::Allow(f) => f
            .headers()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        other => panic!("not allowed: {other:?}"),
    }
}

#[test]
fn peer_modes_and_principals() {
    let foo_curl = "spiffe://cluster.local/ns/foo/sa/curl";
    let strict = peer_config(
        json!({"mtls": {"mode": "STRICT"}, "portLevelMtls": {"8080": {"mode": "DISABLE"}}}),
    );
    assert_eq!(
        on_connection(&strict, plain(9000), &[]),
        Verdict::Deny(AuthError::PeerAuthenticationFailed)
    );
    assert!(matches!(
        on_connection(&strict, plain(8080), &[]),
        Verdict::Allow(_)
    ));
    let v = on_connection(&strict, mtls(foo_curl, 9000), &[("x-peer", "spoofed")]);
    assert_eq!(
        set_headers(&v),
        vec![
            (
                "x-peer".to_string(),
                "cluster.local/ns/foo/sa/curl".to_string()
            ),
            (
                "x-principal".to_string(),
                "cluster.local/ns/foo/sa/curl".to_string()
            ),
        ]
    );
    let Verdict::Allow(f) = &v else {
        unreachable!()
    };
    assert_eq!(
        f.remove.as_slice(),
        ["x-peer"],
        "the spoofed copy is stripped"
    );
    // A client certificate without a SPIFFE identity is still mTLS.
    assert!(set_headers(&on_connection(
        &strict,
        mtls("https://x.example", 9000),
        &[]
    ))
    .is_empty());

    let permissive = peer_config(json!({"mtls": {"mode": "PERMISSIVE"}}));
    assert!(set_headers(&on_connection(&permissive, plain(9000), &[])).is_empty());

    let tds = peer_config(json!({"mtls": {"mode": "STRICT"}, "trustDomains": ["cluster.local"]}));
    assert!(matches!(
        on_connection(&tds, mtls(foo_curl, 1), &[]),
        Verdict::Allow(_)
    ));
    assert_eq!(
        on_connection(&tds, mtls("spiffe://evil.local/ns/foo/sa/curl", 1), &[]),
        Verdict::Deny(AuthError::PeerUntrusted)
    );
}

#[test]
fn peer_and_jwt_combine_with_principal_binding() {
    let foo_curl = "spiffe://cluster.local/ns/foo/sa/curl";
    let t = mint(&json!({"alg": "ES256", "kid": "ec1"}), &claims());
    let auth = bearer(&t);
    let origin = peer_config(
        json!({"mtls": {"mode": "STRICT"}, "principalBinding": "USE_ORIGIN", "requireToken": true}),
    );
    let got = set_headers(&on_connection(
        &origin,
        mtls(foo_curl, 1),
        &[("authorization", &auth)],
    ));
    assert!(got.contains(&("x-req".to_string(), format!("{ISS}/alice"))));
    assert!(got.contains(&("x-principal".to_string(), format!("{ISS}/alice"))));
    assert!(got.contains(&(
        "x-peer".to_string(),
        "cluster.local/ns/foo/sa/curl".to_string()
    )));
    // Both must pass: the peer check comes first, the token is still required.
    assert_eq!(
        on_connection(&origin, plain(1), &[("authorization", &auth)]),
        Verdict::Deny(AuthError::PeerAuthenticationFailed)
    );
    assert_eq!(
        on_connection(&origin, mtls(foo_curl, 1), &[]),
        Verdict::Deny(AuthError::Missing)
    );
}

#[test]
fn mesh_policies_resolve_for_the_node() {
    let policies = json!({"peerAuthentications": [
        {"metadata": {"name": "default", "namespace": "istio-system"}, "spec": {"mtls": {"mode": "STRICT"}}},
        {"metadata": {"name": "wl", "namespace": "foo", "creationTimestamp": "2026-01-01T00:00:00Z"},
         "spec": {"selector": {"matchLabels": {"app": "httpbin"}}, "portLevelMtls": {"8080": {"mode": "DISABLE"}}}}
    ]});
    let raw = config::parse(policies.to_string().as_bytes()).unwrap();
    assert_eq!(raw.node_label_keys(), Some(vec!["app"]));
    assert_eq!(config::parse(b"{}").unwrap().node_label_keys(), None);
    let node = Workload {
        namespace: "foo".into(),
        labels: [("app".to_string(), "httpbin".to_string())].into(),
        gateway: false,
    };
    let cfg = config::compile(&raw, &node).unwrap();
    assert_eq!(
        on_connection(&cfg, plain(9000), &[]),
        Verdict::Deny(AuthError::PeerAuthenticationFailed)
    );
    assert!(matches!(
        on_connection(&cfg, plain(8080), &[]),
        Verdict::Allow(_)
    ));
    assert!(config::load(
        br#"{"mtls":{"mode":"STRICT"},"peerAuthentications":[]}"#,
        &node
    )
    .err()
    .is_some_and(|e| e.to_string().contains("peerAuthentications")));
    assert!(
        config::load(br#"{"portLevelMtls":{"http":{"mode":"STRICT"}}}"#, &node)
            .err()
            .is_some_and(|e| e.to_string().contains("portLevelMtls.http"))
    );
    assert!(config::load(br#"{"mtls":{"mode":"STRICTER"}}"#, &node)
        .err()
        .is_some_and(|e| e.to_string().contains("mtls.mode")));
}

struct Counting(std::cell::Cell<usize>);

impl mesh_authn::crypto::Verifier for Counting {
    fn verify(
        &self,
        alg: mesh_authn::crypto::Alg,
        key: &mesh_authn::crypto::Key,
        input: &[u8],
        sig: &[u8],
    ) -> bool {
        self.0.set(self.0.get() + 1);
        mesh_authn::crypto::verify(alg, &key.material, input, sig)
    }
}

struct Generation(u64);

impl mesh_authn::authn::KeyStore for Generation {
    fn remote(&self, _index: usize) -> mesh_authn::authn::RemoteKeys<'_> {
        mesh_authn::authn::RemoteKeys::Failed
    }
    fn may_refetch(&self, _index: usize) -> bool {
        false
    }
    fn generation(&self) -> u64 {
        self.0
    }
}

#[test]
fn verified_tokens_are_cached_and_rechecked() {
    let cfg = config(
        json!({"audiences": ["svc-a"], "outputClaimToHeaders": [{"header": "x-sub", "claim": "sub"}]}),
    );
    let counting = Counting(std::cell::Cell::new(0));
    let mut cache = mesh_authn::jwt::cache::TokenCache::new(1 << 20, 16);
    let short_lived = mint(
        &json!({"alg": "ES256", "kid": "ec1"}),
        &with(claims(), json!({"exp": NOW + 10})),
    );
    let mut run = |t: &str, now: u64, generation: u64| {
        let store = Generation(generation);
        let mut env = Env {
            keys: &store,
            verifier: &counting,
            cache: Some(&mut cache),
            replay: None,
            dpop_memo: None,
        };
        authenticate(
            &cfg,
            &request("/", &[("authorization", &bearer(t))]),
            now * 1000,
            &mut env,
        )
    };
    let first = run(&short_lived, NOW, 0);
    assert!(matches!(&first, Verdict::Allow(f) if f.headers().eq([("x-sub", "alice")])));
    assert_eq!(counting.0.get(), 1);
    assert_eq!(
        run(&short_lived, NOW + 1, 0),
        first,
        "a hit gives the same answer"
    );
    assert_eq!(counting.0.get(), 1, "no second signature check");
    assert_eq!(
        run(&short_lived, NOW + 100, 0),
        Verdict::Deny(AuthError::Expired),
        "exp rechecked on a hit"
    );
    assert!(matches!(run(&short_lived, NOW, 0), Verdict::Allow(_)));
    assert_eq!(counting.0.get(), 2, "the expired entry was dropped");
    assert!(matches!(run(&short_lived, NOW, 1), Verdict::Allow(_)));
    assert_eq!(counting.0.get(), 3, "new keys: verified again");
    let forged = {
        let parts: Vec<&str> = short_lived.split('.').collect();
        format!(
            "{}.{}.{}",
            parts[0],
            b64(with(claims(), json!({"sub": "admin"}))
                .to_string()
                .as_bytes()),
            parts[2]
        )
    };
    assert_eq!(
        run(&forged, NOW, 1),
        Verdict::Deny(AuthError::VerificationFailed)
    );
    assert_eq!(
        run(&forged, NOW, 1),
        Verdict::Deny(AuthError::VerificationFailed),
        "failures are not cached"
    );
    assert_eq!(counting.0.get(), 5);
    assert_eq!((cache.hits, cache.misses), (2, 5));
}

#[test]
fn connections_are_admitted_as_requests_are() {
    let cfg = |mode: &str| {
        let raw = json!({"mtls": {"mode": mode}, "trustDomains": ["cluster.local"],
                         "portLevelMtls": {"9000": {"mode": "DISABLE"}}});
        config::load(raw.to_string().as_bytes(), &Workload::default()).unwrap()
    };
    let handshaking = mesh_authn::request::Connection {
        tls: true,
        ..plain(8080)
    };
    let foo = "spiffe://cluster.local/ns/foo/sa/curl";
    let evil = "spiffe://evil.local/ns/foo/sa/curl";
    let strict = cfg("STRICT");
    for (conn, done, want) in [
        (
            plain(8080),
            false,
            Admission::Refuse(
                AuthError::PeerAuthenticationFailed,
                "plaintext under STRICT",
            ),
        ),
        (plain(9000), false, Admission::Allow),
        (handshaking.clone(), false, Admission::AwaitHandshake),
        (
            handshaking.clone(),
            true,
            Admission::Refuse(
                AuthError::PeerAuthenticationFailed,
                "TLS without a client certificate under STRICT",
            ),
        ),
        (mtls(foo, 8080), false, Admission::Allow),
        (
            mtls(evil, 8080),
            true,
            Admission::Refuse(
                AuthError::PeerUntrusted,
                "the peer's trust domain is not in trustDomains",
            ),
        ),
        (mtls(evil, 9000), true, Admission::Allow),
    ] {
        assert_eq!(admit_connection(&strict, &conn, done), want, "{conn:?}");
        // The HTTP filter's peer check agrees.
        let verdict = on_connection(&strict, conn.clone(), &[]);
        assert_eq!(
            matches!(verdict, Verdict::Allow(_)),
            want == Admission::Allow,
            "{conn:?}"
        );
    }
    for mode in ["PERMISSIVE", "DISABLE"] {
        for conn in [plain(8080), handshaking.clone(), mtls(evil, 8080)] {
            assert_eq!(admit_connection(&cfg(mode), &conn, false), Admission::Allow);
        }
    }
}

#[test]
fn trigger_rules_per_issuer() {
    let other = "other@example.com";
    let cfg = config::load(
        json!({"requireToken": true, "jwtRules": [
            {"issuer": ISS, "jwks": jwks(),
             "triggerRules": [{"includedPaths": [{"prefix": "/a/"}]}]},
            {"issuer": other, "jwks": jwks(),
             "triggerRules": [{"includedPaths": [{"prefix": "/b/"}], "excludedPaths": [{"exact": "/b/health"}]}]},
        ]})
        .to_string()
        .as_bytes(),
        &Workload::default(),
    )
    .unwrap();
    assert!(cfg.per_rule_triggers);
    let token_a = mint(&json!({"alg": "ES256", "kid": "ec1"}), &claims());
    let token_b = mint(
        &json!({"alg": "ES256", "kid": "ec1"}),
        &with(claims(), json!({"iss": other})),
    );
    let counting = Counting(std::cell::Cell::new(0));
    let mut cache = mesh_authn::jwt::cache::TokenCache::new(1 << 20, 16);
    let mut at = |path: &str, token: Option<&str>| {
        let auth = token.map(bearer);
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("authorization", a.as_str())).collect();
        let store = Generation(0);
        let mut env = Env {
            keys: &store,
            verifier: &counting,
            cache: Some(&mut cache),
            replay: None,
            dpop_memo: None,
        };
        match authenticate(&cfg, &request(path, &headers), NOW * 1000, &mut env) {
            Verdict::Allow(_) => Ok(()),
            Verdict::Deny(e) => Err(e),
            Verdict::Wait { .. } => panic!("inline keys never wait"),
        }
    };
    // Where no issuer applies, no token is needed, even with requireToken.
    assert_eq!(at("/c/x", None), Ok(()));
    assert_eq!(at("/b/health", None), Ok(()));
    // Where one applies, its token is needed and the other issuer's does not count.
    assert_eq!(at("/a/x", None), Err(AuthError::Missing));
    assert_eq!(at("/a/x", Some(&token_a)), Ok(()));
    assert_eq!(at("/b/x", Some(&token_b)), Ok(()));
    assert_eq!(at("/a/x", Some(&token_b)), Err(AuthError::UnknownIssuer));
    // From the cache too: a token verified for /a/ is not accepted for /b/.
    assert_eq!(at("/b/x", Some(&token_a)), Err(AuthError::UnknownIssuer));
    // Spellings cannot leave an issuer's paths: ambiguous paths apply every issuer.
    assert_eq!(at("/x/../a/x", None), Err(AuthError::Missing));
    assert_eq!(at("/a%2Fx", None), Err(AuthError::Missing));

    // An issuer with no rules applies everywhere, beside one with rules.
    let cfg = config::load(
        json!({"requireToken": true, "jwtRules": [
            {"issuer": ISS, "jwks": jwks()},
            {"issuer": other, "jwks": jwks(), "triggerRules": [{"includedPaths": [{"prefix": "/b/"}]}]},
        ]})
        .to_string()
        .as_bytes(),
        &Workload::default(),
    )
    .unwrap();
    let run = |path: &str, token: Option<&str>| {
        let auth = token.map(bearer);
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("authorization", a.as_str())).collect();
        authenticate(
            &cfg,
            &request(path, &headers),
            NOW * 1000,
            &mut Env::new(&NoRemotes),
        )
    };
    assert_eq!(run("/c", None), Verdict::Deny(AuthError::Missing));
    assert!(matches!(run("/c", Some(&token_a)), Verdict::Allow(_)));
    assert_eq!(
        run("/c", Some(&token_b)),
        Verdict::Deny(AuthError::UnknownIssuer)
    );
    assert!(matches!(run("/b/x", Some(&token_b)), Verdict::Allow(_)));
    assert!(matches!(run("/b/x", Some(&token_a)), Verdict::Allow(_)));

    let bad = config::load(
        json!({"jwtRules": [{"issuer": "i", "jwks": jwks(),
                             "triggerRules": [{"includedPaths": [{"regex": "("}]}]}]})
        .to_string()
        .as_bytes(),
        &Workload::default(),
    )
    .unwrap_err();
    assert_eq!(
        bad.field,
        "jwtRules[0].triggerRules[0].includedPaths[0].regex"
    );
}

#[test]
fn subjects_and_max_lifetime_as_envoy_checks_them() {
    let rs = json!({"alg": "RS256", "kid": "rsa1"});
    let svid = config(json!({"subjects": {"prefix": "spiffe://example.org/"}}));
    let cases = [
        (json!({"sub": "spiffe://example.org/ns/a/sa/b"}), Ok(())),
        (
            json!({"sub": "spiffe://example.org.evil/x"}),
            Err(AuthError::VerificationFailed),
        ),
        (json!({"sub": null}), Err(AuthError::VerificationFailed)),
        // Audience before subject, as Envoy orders them.
        (
            json!({"sub": "x", "aud": "svc-b"}),
            Err(AuthError::VerificationFailed),
        ),
    ];
    for (patch, want) in cases {
        assert_eq!(
            verdict(&svid, &mint(&rs, &with(claims(), patch.clone()))),
            want,
            "{patch}"
        );
    }
    let with_aud = config(json!({"subjects": {"exact": "bob"}, "audiences": ["svc-a"]}));
    assert_eq!(
        verdict(
            &with_aud,
            &mint(&rs, &with(claims(), json!({"aud": "svc-b"})))
        ),
        Err(AuthError::AudienceNotAllowed)
    );

    let short = config(json!({"maxLifetime": "3600s"}));
    for (exp, want) in [
        (Some(NOW + 3599), Ok(())),
        (Some(NOW + 3600), Err(AuthError::VerificationFailed)),
        (Some(NOW + 86_400), Err(AuthError::VerificationFailed)),
        (Some(u64::MAX - 4096), Err(AuthError::VerificationFailed)),
        (None, Err(AuthError::VerificationFailed)),
    ] {
        let t = mint(&rs, &with(claims(), json!({ "exp": exp })));
        assert_eq!(verdict(&short, &t), want, "exp {exp:?}");
    }
}

#[test]
fn a_required_rule_needs_its_own_token() {
    let other_iss = "https://other.example";
    let rule = |iss: &str, header: &str, presence: &str| {
        json!({"issuer": iss, "jwks": jwks(), "presence": presence,
               "fromHeaders": [{"name": header, "prefix": "Bearer "}]})
    };
    let cfg = |rules: Value| {
        config::load(
            json!({ "jwtRules": rules }).to_string().as_bytes(),
            &Workload::default(),
        )
        .unwrap()
    };
    let both = cfg(json!([
        rule(ISS, "x-user", "REQUIRED"),
        rule(other_iss, "x-device", "REQUIRED")
    ]));
    let user = mint(&json!({"alg": "RS256", "kid": "rsa1"}), &claims());
    let device = mint(
        &json!({"alg": "RS256", "kid": "rsa1"}),
        &with(claims(), json!({"iss": other_iss})),
    );
    let run = |cfg: &Config, hs: &[(&str, &str)]| match authenticate(
        cfg,
        &request("/", hs),
        NOW * 1000,
        &mut Env::new(&NoRemotes),
    ) {
        Verdict::Allow(_) => Ok(()),
        Verdict::Deny(e) => Err(e),
        Verdict::Wait { .. } => panic!(),
    };
    let (u, d) = (bearer(&user), bearer(&device));
    assert_eq!(run(&both, &[("x-user", &u), ("x-device", &d)]), Ok(()));
    assert_eq!(run(&both, &[("x-user", &u)]), Err(AuthError::Missing));
    assert_eq!(run(&both, &[("x-device", &d)]), Err(AuthError::Missing));
    assert_eq!(run(&both, &[]), Err(AuthError::Missing));
    // A token of the other issuer where the user's is expected.
    assert_eq!(
        run(&both, &[("x-user", &d), ("x-device", &d)]),
        Err(AuthError::UnknownIssuer)
    );

    // One required, one optional: the optional one is checked when present.
    let mixed = cfg(json!([
        rule(ISS, "x-user", "REQUIRED"),
        rule(other_iss, "x-device", "OPTIONAL")
    ]));
    assert_eq!(run(&mixed, &[("x-user", &u)]), Ok(()));
    assert_eq!(
        run(&mixed, &[("x-user", &u), ("x-device", "Bearer deadbeef")]),
        Err(AuthError::BadFormat)
    );
    assert_eq!(run(&mixed, &[("x-device", &d)]), Err(AuthError::Missing));

    // Two rules reading one location: the token must verify under the required one.
    let shared = cfg(json!([
        rule(other_iss, "x-user", "OPTIONAL"),
        rule(ISS, "x-user", "REQUIRED")
    ]));
    assert_eq!(run(&shared, &[("x-user", &u)]), Ok(()));
    assert_eq!(
        run(&shared, &[("x-user", &d)]),
        Err(AuthError::UnknownIssuer)
    );
}

#[test]
fn space_delimited_claims_become_one_header_copy_each() {
    let cfg = config(json!({
        "spaceDelimitedClaims": ["scope", "group.name"],
        "outputClaimToHeaders": [
            {"header": "x-scope", "claim": "scope"},
            {"header": "x-perm", "claim": "permission"},
            {"header": "x-group", "claim": "group.name"},
            {"header": "x-roles", "claim": "roles"}
        ]
    }));
    let t = mint(
        &json!({"alg": "RS256", "kid": "rsa1"}),
        &with(
            claims(),
            json!({"scope": " read  write ", "permission": "a b", "roles": ["r1"],
                   "group": {"name": "eng ops"}}),
        ),
    );
    let got = set_headers(&authenticate(
        &cfg,
        &request("/headers", &[("authorization", &bearer(&t))]),
        NOW * 1000,
        &mut Env::new(&NoRemotes),
    ));
    let want: Vec<(String, String)> = [
        ("x-scope", "read"),
        ("x-scope", "write"),
        ("x-perm", "a b"),
        ("x-group", "eng"),
        ("x-group", "ops"),
        ("x-roles", "WyJyMSJd"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(got, want);
}

#[test]
fn certificate_bound_tokens_match_this_connections_certificate() {
    use mesh_authn::request::Connection;
    let (alice_cert, bob_cert) = ([0xa1u8; 32], [0xb0u8; 32]);
    let thumbprint = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(alice_cert);
    let bound = mint(
        &json!({"alg": "ES256", "kid": "ec1"}),
        &with(claims(), json!({"cnf": {"x5t#S256": thumbprint}})),
    );
    let unbound = mint(&json!({"alg": "ES256", "kid": "ec1"}), &claims());
    let malformed = [
        json!("x"),
        json!({"x5t#S256": 42}),
        json!({"x5t#S256": format!("{thumbprint}=")}),
        json!({"x5t#S256": &thumbprint[..42]}),
    ]
    .map(|cnf| {
        mint(
            &json!({"alg": "ES256", "kid": "ec1"}),
            &with(claims(), json!({ "cnf": cnf })),
        )
    });
    let over = |digest: Option<[u8; 32]>| Connection {
        mtls: digest.is_some(),
        certificate_sha256: digest,
        ..Default::default()
    };
    let mut cache = mesh_authn::jwt::cache::TokenCache::new(1 << 20, 16);
    for mode in ["REQUIRED", "OPTIONAL"] {
        let cfg = config(json!({ "certificateBinding": mode }));
        assert!(cfg.certificate_bound);
        let mut run = |token: &str, conn: Connection| {
            let req = request("/", &[("authorization", &bearer(token))]).with_connection(conn);
            let mut env = Env::new(&NoRemotes);
            env.cache = Some(&mut cache);
            match authenticate(&cfg, &req, NOW * 1000, &mut env) {
                Verdict::Allow(_) => Ok(()),
                Verdict::Deny(e) => Err(e),
                Verdict::Wait { .. } => panic!("inline keys never wait"),
            }
        };
        // The second and third requests are cache hits: the binding is checked on each.
        assert_eq!(run(&bound, over(Some(alice_cert))), Ok(()), "{mode}");
        assert_eq!(
            run(&bound, over(Some(bob_cert))),
            Err(AuthError::CertificateBindingMismatch),
            "{mode}"
        );
        assert_eq!(
            run(&bound, over(None)),
            Err(AuthError::CertificateBindingMismatch),
            "{mode}"
        );
        let unbound_answer = if mode == "REQUIRED" {
            Err(AuthError::CertificateBindingMissing)
        } else {
            Ok(())
        };
        assert_eq!(run(&unbound, over(Some(alice_cert))), unbound_answer);
        for t in &malformed {
            assert_eq!(
                run(t, over(Some(alice_cert))),
                Err(AuthError::CertificateBindingMissing),
                "{mode}"
            );
        }
    }
    // Without certificateBinding, cnf means nothing, as in Envoy and Istio.
    let cfg = config(json!({}));
    assert!(!cfg.certificate_bound);
    for t in malformed.iter().chain([&bound]) {
        assert_eq!(verdict(&cfg, t), Ok(()));
    }
}

/// A replay store in memory, as the shared one behaves.
#[derive(Default)]
struct SeenJtis(std::collections::HashSet<[u8; 32]>);

impl mesh_authn::replay::ReplayGuard for SeenJtis {
    fn first_use(
        &mut self,
        jti_hash: &[u8; 32],
        _until_s: u64,
        _now_s: u64,
    ) -> Result<(), mesh_authn::replay::Refusal> {
        if self.0.insert(*jti_hash) {
            Ok(())
        } else {
            Err(mesh_authn::replay::Refusal::Seen)
        }
    }
}

#[test]
fn dpop_bound_tokens_need_their_proof_once() {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use sha2::Digest;
    let public = |key: Key| {
        let mut jwk = key.jwk("x");
        jwk.as_object_mut().unwrap().remove("kid");
        jwk
    };
    let jkt = |key: Key| {
        let t = mesh_authn::jwt::dpop::thumbprint(public(key).as_object().unwrap()).unwrap();
        URL_SAFE_NO_PAD.encode(t)
    };
    let bound = mint(
        &json!({"alg": "RS256", "kid": "rsa1"}),
        &with(claims(), json!({"cnf": {"jkt": jkt(Key::P256)}})),
    );
    let unbound = mint(&json!({"alg": "RS256", "kid": "rsa1"}), &claims());
    let proof = |key: Key, jti: &str, token: &str, extra: Value| {
        let alg = if key == Key::Ed25519 {
            "EdDSA"
        } else {
            "ES256"
        };
        let ath = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(token.as_bytes()));
        let c = json!({"jti": jti, "htm": "GET", "htu": "https://example.com/orders",
                       "iat": NOW, "ath": ath});
        mint(
            &json!({"typ": "dpop+jwt", "alg": alg, "jwk": public(key)}),
            &with(c, extra),
        )
    };
    let mut seen = SeenJtis::default();
    let mut cache = mesh_authn::jwt::cache::TokenCache::new(1 << 20, 16);
    for mode in ["REQUIRED", "OPTIONAL"] {
        let cfg = config(json!({"dpop": {"mode": mode}}));
        let mut run = |headers: &[(&str, &str)]| {
            let mut h = vec![(":scheme", "https"), (":method", "GET")];
            h.extend_from_slice(headers);
            let req = request("/orders?page=2", &h);
            let mut env = Env::new(&NoRemotes);
            env.cache = Some(&mut cache);
            env.replay = Some(&mut seen);
            match authenticate(&cfg, &req, NOW * 1000, &mut env) {
                Verdict::Allow(f) => Ok(f.remove.to_vec()),
                Verdict::Deny(e) => Err(e),
                Verdict::Wait { .. } => panic!("inline keys never wait"),
            }
        };
        let as_dpop = format!("DPoP {bound}");
        let p1 = proof(Key::P256, &format!("{mode}-1"), &bound, json!({}));
        let removed = run(&[("authorization", &as_dpop), ("dpop", &p1)]).unwrap();
        assert!(removed.contains(&"dpop".to_string()), "{removed:?}");
        let forwarding = config(json!({"dpop": {"mode": mode}, "forwardOriginalToken": true}));
        let p0 = proof(Key::P256, &format!("{mode}-0"), &bound, json!({}));
        let req = request(
            "/orders",
            &[
                (":scheme", "https"),
                (":method", "GET"),
                ("authorization", &as_dpop),
                ("dpop", &p0),
            ],
        );
        let mut env = Env::new(&NoRemotes);
        let mut own = SeenJtis::default();
        env.replay = Some(&mut own);
        match authenticate(&forwarding, &req, NOW * 1000, &mut env) {
            Verdict::Allow(f) => assert!(
                f.remove.is_empty(),
                "forwardOriginalToken keeps both: {:?}",
                f.remove
            ),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            run(&[("authorization", &as_dpop), ("dpop", &p1)]),
            Err(AuthError::DpopProofReplayed),
            "{mode}: the same proof again"
        );
        let p2 = proof(Key::P256, &format!("{mode}-2"), &bound, json!({}));
        assert!(
            run(&[("authorization", &as_dpop), ("dpop", &p2)]).is_ok(),
            "{mode}"
        );
        for (what, headers, want) in [
            (
                "no proof",
                vec![("authorization", as_dpop.as_str())],
                AuthError::DpopProofMissing,
            ),
            (
                "two proofs",
                vec![("authorization", &as_dpop), ("dpop", &p1), ("dpop", &p2)],
                AuthError::DpopProofMultiple,
            ),
            (
                "bound token as bearer",
                vec![("authorization", &bearer(&bound))],
                AuthError::DpopBoundAsBearer,
            ),
        ] {
            assert_eq!(run(&headers), Err(want), "{mode}: {what}");
        }
        let other_key = proof(Key::Ed25519, &format!("{mode}-3"), &bound, json!({}));
        assert_eq!(
            run(&[("authorization", &as_dpop), ("dpop", &other_key)]),
            Err(AuthError::DpopKeyMismatch),
            "{mode}: a valid proof by another key"
        );
        let wrong_path = proof(
            Key::P256,
            &format!("{mode}-4"),
            &bound,
            json!({"htu": "https://example.com/other"}),
        );
        assert_eq!(
            run(&[("authorization", &as_dpop), ("dpop", &wrong_path)]),
            Err(AuthError::DpopProofWrongRequest)
        );
        let for_other_token = proof(Key::P256, &format!("{mode}-5"), &unbound, json!({}));
        assert_eq!(
            run(&[("authorization", &as_dpop), ("dpop", &for_other_token)]),
            Err(AuthError::DpopProofWrongToken)
        );
        let unbound_answer = if mode == "REQUIRED" {
            Err(AuthError::DpopRequired)
        } else {
            Ok(vec!["authorization".to_string()])
        };
        assert_eq!(
            run(&[("authorization", &bearer(&unbound))]),
            unbound_answer,
            "{mode}"
        );
        let unbound_as_dpop = format!("DPoP {unbound}");
        let p6 = proof(Key::P256, &format!("{mode}-6"), &unbound, json!({}));
        assert_eq!(
            run(&[("authorization", &unbound_as_dpop), ("dpop", &p6)]),
            Err(AuthError::DpopRequired),
            "{mode}: a DPoP-scheme token must be bound"
        );
    }
}
