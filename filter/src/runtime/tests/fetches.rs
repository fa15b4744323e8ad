//! Remote keys: paused requests, fetches, backoff, refetch, shared fetches, discovery.

use super::*;

#[test]
fn a_request_waiting_for_keys_is_resumed_exactly_once() {
    let mut p = Proxy::new(remote_config());
    assert_eq!(p.fake().tick_ms, TICK_NOW_MS, "a fetch is due at once");
    let (id, action) = p.request(Some(&token("a")));
    assert_eq!(action, Action::Pause);
    assert!(p.replies_to(id).is_empty());
    p.tick();
    assert_eq!(p.callouts(), 1);
    assert_eq!(
        p.fake().callouts[0].1,
        "outbound|443||idp.example.com",
        "Istio's cluster for the URI"
    );
    assert_eq!(p.fake().callouts[0].2, "/keys");
    p.tick();
    assert_eq!(p.callouts(), 1, "one fetch in flight");
    assert!(p.resumed().is_empty());

    p.answer(Some(200), jwks("a").as_bytes());
    assert_eq!(p.resumed(), vec![id]);
    assert!(p.replies_to(id).is_empty());
    assert_eq!(p.fake().current, ROOT, "the root is current again");
    for _ in 0..3 {
        p.advance(1_000);
        p.tick();
    }
    assert_eq!(p.resumed(), vec![id], "resumed once");
    assert_eq!(p.fake().tick_ms, TICK_IDLE_MS);
    let headers = p.fake().headers[&id].clone();
    assert!(
        !headers.iter().any(|(k, _)| k == "authorization"),
        "the token header is removed from the resumed request"
    );
    let (_, action) = p.request(Some(&token("a")));
    assert_eq!(action, Action::Continue, "keys are loaded now");
}

#[test]
fn a_request_that_leaves_while_waiting_is_forgotten() {
    let mut p = Proxy::new(remote_config());
    let (gone, _) = p.request(Some(&token("a")));
    let (stays, _) = p.request(Some(&token("a")));
    p.tick();
    p.done(gone);
    p.answer(Some(200), jwks("a").as_bytes());
    assert_eq!(p.resumed(), vec![stays]);
    assert!(p.replies_to(gone).is_empty());
}

#[test]
fn paused_requests_are_capped_per_plugin() {
    let mut cfg = remote_config();
    cfg["maxPausedRequests"] = json!(2);
    let mut p = Proxy::new(cfg);
    let (first, a) = p.request(Some(&token("a")));
    let (second, b) = p.request(Some(&token("a")));
    let (third, c) = p.request(Some(&token("a")));
    assert_eq!((a, b, c), (Action::Pause, Action::Pause, Action::Pause));
    assert!(p.replies_to(first).is_empty() && p.replies_to(second).is_empty());
    assert_eq!(
        p.replies_to(third),
        vec![(401, "Jwks remote fetch is failed".to_string())],
        "answered at once, as a failed fetch would be"
    );
    p.tick();
    p.answer(Some(200), jwks("a").as_bytes());
    assert_eq!(p.resumed(), vec![first, second]);
    let (_, action) = p.request(Some(&token("a")));
    assert_eq!(action, Action::Continue);
}

#[test]
fn a_resumed_request_is_read_again_from_the_host() {
    let mut p = Proxy::new(remote_config());
    let (id, _) = p.request(Some(&token("a")));
    p.tick();
    // What the waiter decides on is what Envoy holds when it resumes, not a copy.
    p.fake()
        .headers
        .get_mut(&id)
        .unwrap()
        .retain(|(k, _)| k != "authorization");
    p.fake()
        .headers
        .get_mut(&id)
        .unwrap()
        .push(("authorization".into(), "Bearer not-a-jwt".into()));
    p.answer(Some(200), jwks("a").as_bytes());
    assert!(p.resumed().is_empty());
    assert_eq!(p.replies_to(id).len(), 1);
    assert_eq!(p.replies_to(id)[0].0, 401);
}

#[test]
fn a_waiting_request_is_refused_at_its_deadline() {
    let mut p = Proxy::new(remote_config());
    let (id, _) = p.request(Some(&token("a")));
    p.tick();
    p.advance(5_999);
    p.tick();
    assert!(p.replies_to(id).is_empty());
    p.advance(1);
    p.tick();
    assert_eq!(
        p.replies_to(id),
        vec![(401, "Jwks remote fetch is failed".to_string())]
    );
    assert!(p.resumed().is_empty());
}

#[test]
fn a_failed_fetch_backs_off_and_recovers() {
    let mut p = Proxy::new(remote_config());
    p.tick();
    p.answer(Some(503), b"unavailable");
    assert_eq!(p.metric("jwks_fetch_failed"), 1);
    let (id, action) = p.request(Some(&token("a")));
    assert_eq!(action, Action::Pause);
    assert_eq!(
        p.replies_to(id),
        vec![(401, "Jwks remote fetch is failed".to_string())]
    );
    let (_, action) = p.request(None);
    assert_eq!(action, Action::Continue, "no token, no keys needed");

    // Backing off for 1 s, then 2 s, each spread by up to a tenth either way.
    let retried_after = |p: &Proxy, nominal: u64| {
        let before = p.callouts();
        let mut waited = 0;
        while p.callouts() == before {
            assert!(waited <= nominal + nominal / 10, "no retry by {waited} ms");
            p.advance(1);
            waited += 1;
            p.tick();
        }
        assert!(
            waited >= nominal - nominal / 10,
            "retried after {waited} ms"
        );
    };
    retried_after(&p, 1_000);
    p.answer(None, b"");
    assert_eq!(p.metric("jwks_fetch_failed"), 2);
    retried_after(&p, 2_000);
    assert_eq!(p.callouts(), 3);
    p.answer(Some(200), jwks("a").as_bytes());
    assert_eq!(p.metric("jwks_fetch_success"), 1);
    let (_, action) = p.request(Some(&token("a")));
    assert_eq!(action, Action::Continue);
}

#[test]
fn an_unknown_kid_refetches_and_the_request_waits_for_it() {
    let mut p = Proxy::new(remote_config());
    p.tick();
    p.answer(Some(200), jwks("a").as_bytes());
    p.advance(40_000);
    let (id, action) = p.request(Some(&token("b")));
    assert_eq!(action, Action::Pause);
    p.tick();
    assert_eq!(p.callouts(), 2);
    p.answer(Some(200), jwks("b").as_bytes());
    assert_eq!(p.resumed(), vec![id]);
    let (id, action) = p.request(Some(&token("c")));
    assert_eq!(action, Action::Pause, "refetches are rate limited");
    assert_eq!(
        p.replies_to(id),
        vec![(
            401,
            "Jwks doesn't have key to match kid or alg from Jwt".to_string()
        )]
    );
}

#[test]
fn workers_share_one_fetch() {
    let shared = SharedData::default();
    let worker = || {
        let shared = Rc::clone(&shared);
        Proxy::with(remote_config(), move |f| f.shared = shared)
    };
    let (a, mut b) = (worker(), worker());
    a.tick();
    b.tick();
    assert_eq!((a.callouts(), b.callouts()), (1, 0), "b sees a's lease");
    let (id, _) = b.request(Some(&token("a")));
    a.answer(Some(200), jwks("a").as_bytes());
    b.tick();
    assert_eq!(b.resumed(), vec![id], "b adopts a's keys");
    assert_eq!(b.callouts(), 0);
}

#[test]
fn reconfiguration_hands_waiting_requests_to_the_new_configuration() {
    let mut p = Proxy::new(remote_config());
    let (id, _) = p.request(Some(&token("a")));
    assert!(p.configure(json!({"jwtRules": [
        {"issuer": ISS, "jwksUri": "https://other.example.com/keys"}
    ]})));
    p.tick();
    assert_eq!(p.callouts(), 1);
    assert_eq!(p.fake().callouts[0].1, "outbound|443||other.example.com");
    p.answer(Some(200), jwks("a").as_bytes());
    assert_eq!(p.resumed(), vec![id]);

    assert!(
        !p.configure(json!({"jwtRules": [{"issuer": ""}]})),
        "refused"
    );
    let (_, action) = p.request(Some(&token("a")));
    assert_eq!(
        action,
        Action::Continue,
        "the last good configuration stays"
    );
}

#[test]
fn keys_are_discovered_from_the_issuer() {
    let mut p = Proxy::new(json!({"jwtRules": [{"issuer": ISS}]}));
    p.tick();
    assert_eq!(
        last_callout(&p),
        (
            "outbound|443||idp.example.com".to_string(),
            "/.well-known/openid-configuration".to_string()
        )
    );
    let (waiting, action) = p.request(Some(&token("a")));
    assert_eq!(action, Action::Pause);
    p.answer(
        Some(200),
        json!({"issuer": ISS, "jwks_uri": "https://keys.example.com:8443/v1/keys"})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(p.callouts(), 2, "the keys, at once");
    assert_eq!(
        last_callout(&p),
        (
            "outbound|8443||keys.example.com".to_string(),
            "/v1/keys".to_string()
        )
    );
    assert!(p.resumed().is_empty(), "still waiting for the keys");
    p.answer(Some(200), jwks("a").as_bytes());
    assert_eq!(p.replies_to(waiting), vec![]);
    assert_eq!(p.resumed(), vec![waiting]);
    assert_eq!(p.metric("jwks_fetch_success"), 1);
    assert_eq!(p.request(Some(&token("a"))).1, Action::Continue);

    // An unknown kid refetches through the document, which may name new keys.
    let (_, action) = p.request(Some(&token("b")));
    assert_eq!(action, Action::Pause);
    p.tick();
    assert_eq!(last_callout(&p).1, "/.well-known/openid-configuration");
    p.answer(
        Some(200),
        json!({"jwks_uri": "https://keys.example.com:8443/v2/keys"})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(last_callout(&p).1, "/v2/keys");
    p.answer(Some(200), jwks("b").as_bytes());
    assert_eq!(p.request(Some(&token("b"))).1, Action::Continue);
}

#[test]
fn a_discovery_document_without_usable_keys_is_a_failed_fetch() {
    let cfg = json!({"jwtRules": [{"issuer": ISS, "jwksCluster": "idp"}]});
    for (status, doc) in [
        (Some(200), &br#"{"issuer":"x"}"#[..]),
        (Some(200), b"not json"),
        (Some(200), br#"{"jwks_uri":"ftp://idp/keys"}"#),
        (Some(404), b"{}"),
        (None, b""),
    ] {
        let mut p = Proxy::new(cfg.clone());
        p.tick();
        assert_eq!(last_callout(&p).0, "idp");
        p.answer(status, doc);
        assert_eq!(p.callouts(), 1, "no keys fetched after {doc:?}");
        assert_eq!(p.metric("jwks_fetch_failed"), 1);
        let (id, _) = p.request(Some(&token("a")));
        assert_eq!(
            p.replies_to(id),
            vec![(401, "Jwks remote fetch is failed".to_string())]
        );
        // Retried from the document, through the rule's cluster for both calls.
        p.advance(1_100);
        p.tick();
        assert_eq!(
            last_callout(&p),
            ("idp".into(), "/.well-known/openid-configuration".into())
        );
        p.answer(Some(200), br#"{"jwks_uri":"https://idp.example.com/k"}"#);
        assert_eq!(last_callout(&p), ("idp".into(), "/k".into()));
        p.answer(Some(200), jwks("a").as_bytes());
        assert_eq!(p.request(Some(&token("a"))).1, Action::Continue);
    }
}

#[test]
fn a_key_set_that_is_cut_is_counted() {
    let key = json!({"kty": "oct", "kid": "a", "k": B64URL.encode(SECRET)});
    let long = json!({ "keys": vec![key; crate::jwt::jwks::MAX_KEYS + 1] }).to_string();
    let p = Proxy::new(json!({"jwtRules": [{"issuer": ISS, "jwks": long}]}));
    assert_eq!(p.metric("jwks_keys_cut"), 1);

    let mut p = Proxy::new(remote_config());
    p.tick();
    p.answer(Some(200), long.as_bytes());
    assert_eq!(p.metric("jwks_fetch_success"), 1);
    assert_eq!(p.metric("jwks_keys_cut"), 1);
    let (_, action) = p.request(Some(&token("a")));
    assert_eq!(action, Action::Continue);
    let p = Proxy::new(inline_config());
    assert_eq!(p.metric("jwks_keys_cut"), 0);
}

#[test]
fn streams_that_end_inside_a_host_call_leave_no_borrow_behind() {
    let mut p = Proxy::with(remote_config(), |f| f.end_streams_at_once = true);
    let (refused, action) = p.request(Some("not-a-jwt"));
    assert_eq!(action, Action::Pause);
    let (resumed, _) = p.request(Some(&token("a")));
    let (late, _) = p.request(Some(&token("b")));
    p.tick();
    // Both resume on the answer: one goes on, the other's kid is not in the set.
    p.answer(Some(200), jwks("a").as_bytes());
    let f = p.fake();
    assert_eq!(f.resumed, vec![resumed]);
    assert_eq!(f.ended, vec![refused, resumed, late]);
    assert_eq!(
        f.replies.iter().map(|r| r.0).collect::<Vec<_>>(),
        vec![refused, late]
    );
    drop(f);
    let (_, action) = p.request(Some(&token("a")));
    assert_eq!(action, Action::Continue, "the plugin goes on serving");
}
