//! Counters and gauges, refusals by reason, dry runs and the plaintext census.

use super::*;

#[test]
fn counters_are_flushed_on_tick() {
    let mut p = Proxy::new(inline_config());
    let good = token("a");
    for _ in 0..3 {
        assert_eq!(p.request(Some(&good)).1, Action::Continue);
    }
    assert_eq!(p.request(Some("x.y.z")).1, Action::Pause);
    assert_eq!(p.metric("allowed"), 0, "not before the tick");
    assert_eq!(p.metric("vm_memory_bytes"), 0);
    p.tick();
    assert_eq!(
        [
            p.metric("allowed"),
            p.metric("denied"),
            p.metric("jwt_cache_hit"),
            p.metric("jwt_cache_miss")
        ],
        [3, 1, 2, 2]
    );
    assert_eq!(p.metric("vm_memory_bytes"), 1 << 20);
    assert_eq!(p.metric("jwt_cache_entries"), 1);
    let bytes = p.metric("jwt_cache_bytes");
    assert!(
        (good.len() as u64..4096).contains(&bytes),
        "one entry: {bytes} bytes"
    );
    p.tick();
    assert_eq!(p.metric("allowed"), 3, "each count is added once");
    assert_eq!(p.metric("jwt_cache_bytes"), bytes, "and each gauge share");
    let bob = hs256(
        "a",
        json!({"iss": ISS, "sub": "bob", "exp": NOW_MS / 1000 + 3600}),
    );
    assert_eq!(p.request(Some(&bob)).1, Action::Continue);
    p.tick();
    assert_eq!(p.metric("jwt_cache_entries"), 2);
    p.rt.on_done(ROOT);
    assert_eq!(
        [p.metric("jwt_cache_entries"), p.metric("jwt_cache_bytes")],
        [0, 0],
        "a plugin that goes takes its share of the gauges"
    );
}

#[test]
fn a_vm_that_serves_nothing_records_no_memory() {
    let p = Proxy::new(inline_config());
    p.tick();
    assert_eq!(p.metric("vm_memory_bytes"), 0);
}

#[test]
fn a_dry_run_refuses_nothing_and_says_what_it_would_have_refused() {
    let cfg = json!({"jwtRules": [{"issuer": ISS, "jwks": jwks("a"),
                     "outputClaimToHeaders": [{"header": "x-sub", "claim": "sub"}]}],
                     "requireToken": true, "dryRun": true, "outputDecisionToHeader": "x-decision"});
    let mut p = Proxy::new(cfg);
    let forged = [("x-decision", "allow"), ("x-sub", "admin")];
    let (missing, action) = p.request_with(&forged);
    assert_eq!(action, Action::Continue);
    assert!(p.replies_to(missing).is_empty());
    assert_eq!(
        p.header(missing, "x-decision"),
        vec![r#"deny; reason="Jwt is missing""#]
    );
    assert!(
        p.header(missing, "x-sub").is_empty(),
        "no identity from a refused request"
    );
    let expired = hs256(
        "a",
        json!({"iss": ISS, "sub": "bob", "exp": NOW_MS / 1000 - 3600}),
    );
    let auth = format!("Bearer {expired}");
    let (id, action) = p.request_with(&[("authorization", &auth), forged[0], forged[1]]);
    assert_eq!(action, Action::Continue);
    assert_eq!(
        p.header(id, "x-decision"),
        vec![r#"deny; reason="Jwt is expired""#]
    );
    assert!(p.header(id, "x-sub").is_empty());
    let good = format!("Bearer {}", token("a"));
    let (id, action) = p.request_with(&[("authorization", &good), forged[0], forged[1]]);
    assert_eq!(action, Action::Continue);
    assert_eq!(p.header(id, "x-decision"), vec!["allow"]);
    assert_eq!(p.header(id, "x-sub"), vec!["alice"]);
    p.tick();
    assert_eq!(p.metric("allowed"), 3);
    assert_eq!(p.metric("denied"), 0);
    assert_eq!(p.metric("dry_run_refused_missing"), 1);
    assert_eq!(p.metric("dry_run_refused_expired"), 1);
    assert_eq!(p.metric("refused_missing"), 0);
}

#[test]
fn refusals_are_counted_by_reason() {
    let cfg = json!({"jwtRules": [{"issuer": ISS, "jwks": jwks("a")}], "requireToken": true,
                     "mtls": {"mode": "STRICT"}, "trustDomains": ["cluster.local"]});
    let mut p = Proxy::with(cfg, |f| {
        f.properties.insert("connection/mtls".into(), vec![1]);
        f.properties.insert(
            "connection/uri_san_peer_certificate".into(),
            SPIFFE_FOO.as_bytes().to_vec(),
        );
    });
    p.request(None);
    p.request(Some("not-a-jwt"));
    p.request(Some(&hs256(
        "b",
        json!({"iss": ISS, "exp": NOW_MS / 1000 + 60}),
    )));
    p.request(Some(&hs256(
        "a",
        json!({"iss": "other", "exp": NOW_MS / 1000 + 60}),
    )));
    p.fake()
        .properties
        .insert("connection/mtls".into(), vec![0]);
    p.request(Some(&token("a")));
    p.fake()
        .properties
        .insert("connection/mtls".into(), vec![1]);
    p.fake().properties.insert(
        "connection/uri_san_peer_certificate".into(),
        b"spiffe://evil.local/ns/foo/sa/curl".to_vec(),
    );
    p.request(Some(&token("a")));
    p.tick();
    for (reason, n) in [
        ("missing", 1),
        ("malformed", 1),
        ("key_not_found", 1),
        ("issuer", 1),
        ("peer_plaintext", 1),
        ("peer_untrusted", 1),
        ("expired", 0),
    ] {
        assert_eq!(p.metric(&format!("refused_{reason}")), n, "{reason}");
    }
    assert_eq!(p.metric("denied"), 6);
}

#[test]
fn a_dry_run_lets_refused_connections_through() {
    let mut cfg = strict();
    cfg["dryRun"] = json!(true);
    let mut p = Proxy::with(cfg, as_network);
    let (_, action) = p.connect(Peer::Plaintext);
    assert_eq!(action, Action::Continue);
    let (foreign, _) = p.connect(Peer::Handshaking);
    p.set_peer(foreign, Peer::Mtls("spiffe://evil.local/ns/foo/sa/curl"));
    assert_eq!(p.data(foreign), Action::Continue);
    assert!(p.closed().is_empty());
    p.tick();
    assert_eq!(p.metric("dry_run_refused_peer_plaintext"), 1);
    assert_eq!(p.metric("dry_run_refused_peer_untrusted"), 1);
    assert_eq!(p.metric("connections_refused"), 0);
    assert_eq!(p.metric("connections_allowed"), 2);
}

#[test]
fn the_plaintext_census_counts_callers_without_mtls_under_permissive() {
    let cfg =
        json!({"mtls": {"mode": "PERMISSIVE"}, "portLevelMtls": {"9443": {"mode": "STRICT"}}});
    let mut p = Proxy::with(cfg, |f| {
        f.properties
            .insert("destination/port".into(), 8080i64.to_le_bytes().to_vec());
    });
    p.request(None);
    p.request(None);
    p.fake()
        .properties
        .insert("connection/mtls".into(), vec![1]);
    p.request(None);
    p.fake()
        .properties
        .insert("connection/mtls".into(), vec![0]);
    p.fake()
        .properties
        .insert("destination/port".into(), 9443i64.to_le_bytes().to_vec());
    p.request(None);
    p.tick();
    assert_eq!(
        p.metric("plaintext_port_8080"),
        2,
        "mTLS callers are not counted"
    );
    assert_eq!(
        p.metric("plaintext_port_9443"),
        0,
        "STRICT refuses them instead"
    );
    assert_eq!(p.metric("refused_peer_plaintext"), 1);

    // Without any peer policy there is no census (and no connection read per request).
    let mut p = Proxy::new(inline_config());
    p.request(None);
    p.tick();
    assert!(!p.defines("mesh_authn_plaintext_total"));

    // The NETWORK plugin counts plaintext connections.
    let mut p = Proxy::with(json!({"mtls": {"mode": "PERMISSIVE"}}), as_network);
    p.connect(Peer::Plaintext);
    p.connect(Peer::Handshaking);
    p.tick();
    assert_eq!(p.metric(&format!("plaintext_port_{APP_PORT}")), 1);
}

#[test]
fn a_full_dpop_replay_store_refuses_and_counts() {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use sha2::Digest;
    let mut jwk = test_tokens::Key::P256.jwk("x");
    jwk.as_object_mut().unwrap().remove("kid");
    let jkt = crate::jwt::dpop::thumbprint(jwk.as_object().unwrap()).unwrap();
    let token = hs256(
        "a",
        json!({"iss": ISS, "sub": "alice", "exp": NOW_MS / 1000 + 3600,
               "cnf": {"jkt": URL_SAFE_NO_PAD.encode(jkt)}}),
    );
    // One entry of 256 proofs: the smallest store.
    let config = json!({"jwtRules": [{"issuer": ISS, "jwks": jwks("a"), "dpop": {"mode": "REQUIRED"}}],
                        "dpopReplayEntries": 256});
    let mut p = Proxy::new(config);
    assert!(
        p.fake()
            .shared
            .borrow()
            .contains_key("mesh_authn.dpop_jti.0"),
        "the entry is made at configure"
    );
    let ath = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(token.as_bytes()));
    let auth = format!("DPoP {token}");
    let send = |p: &mut Proxy, jti: usize, iat_s: u64| {
        let proof = test_tokens::mint(
            &json!({"typ": "dpop+jwt", "alg": "ES256", "jwk": jwk}),
            &json!({"jti": format!("j{jti}"), "htm": "GET", "htu": "https://example.com/ip",
                    "iat": iat_s, "ath": ath}),
        );
        let headers = [
            (":scheme", "https"),
            ("authorization", auth.as_str()),
            ("dpop", &proof),
        ];
        p.request_with(&headers)
    };
    let now_s = NOW_MS / 1000;
    for jti in 0..crate::config::DPOP_REPLAY_PER_SHARD {
        assert_eq!(send(&mut p, jti, now_s).1, Action::Continue, "proof {jti}");
    }
    let (id, action) = send(&mut p, 9999, now_s);
    assert_eq!(action, Action::Pause);
    assert_eq!(
        p.replies_to(id),
        vec![(401, AuthError::DpopReplayStoreFull.reason().to_string())]
    );
    p.tick();
    assert_eq!(p.metric("dpop_replay_full"), 1);
    assert_eq!(p.metric("refused_dpop"), 1);
    // Past the proofs' window (maxAge 60 s and skew 60 s) their places are free again.
    p.advance(121_000);
    assert_eq!(send(&mut p, 9999, now_s + 121).1, Action::Continue);
}
