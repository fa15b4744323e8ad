//! Who checks signatures: the host's verify_signature or the module.

use super::*;

#[test]
fn the_host_verifier_decides_when_it_answers() {
    let mut p = Proxy::with(es256_config("host"), |f| {
        f.foreign = Some(host_verifier(Ok(false)));
    });
    assert_eq!(p.fake().foreign_calls, 2, "the self-test");
    let (id, action) = p.request(Some(&es256_token(claims())));
    assert_eq!(action, Action::Pause);
    assert_eq!(
        p.replies_to(id),
        vec![(401, "Jwt verification fails".to_string())]
    );
    assert_eq!(p.fake().foreign_calls, 3);
}

#[test]
fn a_failing_host_verifier_call_falls_back_to_the_module() {
    let mut p = Proxy::with(es256_config("auto"), |f| {
        f.foreign = Some(host_verifier(Err(HostError(1))));
    });
    let (_, action) = p.request(Some(&es256_token(claims())));
    assert_eq!(action, Action::Continue);
    let mut forged = es256_token(claims());
    let at = forged.rfind('.').unwrap() + 10;
    let flipped = if &forged[at..=at] == "A" { "B" } else { "A" };
    forged.replace_range(at..=at, flipped);
    let (id, action) = p.request(Some(&forged));
    assert_eq!(action, Action::Pause);
    assert_eq!(
        p.replies_to(id),
        vec![(401, "Jwt verification fails".to_string())]
    );
    assert_eq!(
        p.fake().foreign_calls,
        4,
        "both were asked of the host first"
    );
    p.tick();
    assert_eq!(
        p.metric("host_verify_failed"),
        2,
        "each fallback is counted"
    );
}

#[test]
fn in_host_mode_a_failing_host_call_refuses_the_token() {
    let mut p = Proxy::with(es256_config("host"), |f| {
        f.foreign = Some(host_verifier(Err(HostError(1))));
    });
    let (id, action) = p.request(Some(&es256_token(claims())));
    assert_eq!(action, Action::Pause, "the module does not stand in");
    assert_eq!(
        p.replies_to(id),
        vec![(401, "Jwt verification fails".to_string())]
    );
    p.fake().foreign = Some(host_verifier(Ok(true)));
    assert_eq!(p.request(Some(&es256_token(claims()))).1, Action::Continue);
    p.fake().foreign = Some(Box::new(|_: &[u8]| Ok(vec![0x1d])));
    assert_eq!(
        p.request(Some(&es256_token(claims()))).1,
        Action::Pause,
        "an unreadable answer is a failure too"
    );
    p.tick();
    assert_eq!(p.metric("host_verify_failed"), 2);
    assert_eq!(p.metric("denied"), 2);
}

#[test]
fn algorithms_the_host_does_not_take_stay_in_the_module() {
    let mut p = Proxy::with(
        json!({"jwtRules": [{"issuer": ISS, "jwks": jwks("a")}], "signatureVerifier": "host"}),
        |f| f.foreign = Some(host_verifier(Err(HostError(1)))),
    );
    assert_eq!(p.request(Some(&token("a"))).1, Action::Continue);
    assert_eq!(p.fake().foreign_calls, 2, "HS256 never goes to the host");
    p.tick();
    assert_eq!(p.metric("host_verify_failed"), 0);
}

#[test]
fn without_a_working_host_verifier() {
    let refused = Proxy {
        rt: fake_host::runtime(),
        next_stream: 2,
    };
    assert!(
        !refused.configure(es256_config("host")),
        "\"host\" requires the host's verifier"
    );
    let mut p = Proxy::new(es256_config("auto"));
    assert_eq!(p.request(Some(&es256_token(claims()))).1, Action::Continue);
    assert_eq!(
        p.fake().foreign_calls,
        1,
        "only the self-test was asked, and it failed at once"
    );
    let mut lying = Proxy::with(es256_config("auto"), |f| {
        f.foreign = Some(Box::new(|_| Ok(vec![0x08, 1])));
    });
    assert_eq!(
        lying.request(Some(&es256_token(claims()))).1,
        Action::Continue
    );
    assert_eq!(
        lying.fake().foreign_calls,
        2,
        "a host that accepts the altered self-test signature is not used"
    );
}
