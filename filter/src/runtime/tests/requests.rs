//! Requests: mesh policies from node metadata, unknown roots, rules without issuer, output headers,
//! the connection properties a request reads.

use super::*;

#[test]
fn mesh_policies_resolve_from_node_metadata_at_configure() {
    let config = json!({"peerAuthentications": [
        {"metadata": {"name": "default", "namespace": "istio-system"}, "spec": {"mtls": {"mode": "STRICT"}}},
        {"metadata": {"name": "legacy", "namespace": "foo"},
         "spec": {"selector": {"matchLabels": {"app": "legacy"}}, "mtls": {"mode": "PERMISSIVE"}}}
    ]});
    let at = |ns: &str, app: &str| {
        let (ns, app) = (ns.as_bytes().to_vec(), app.as_bytes().to_vec());
        move |f: &mut Fake| {
            f.properties
                .insert("xds/node/metadata/NAMESPACE".into(), ns);
            f.properties.insert("node/metadata/LABELS/app".into(), app);
        }
    };
    let mut strict = Proxy::with(config.clone(), at("foo", "httpbin"));
    let (id, action) = strict.request(None);
    assert_eq!(action, Action::Pause);
    assert_eq!(
        strict.replies_to(id),
        vec![(401, "Peer authentication failed.".to_string())]
    );
    let mut legacy = Proxy::with(config.clone(), at("foo", "legacy"));
    assert_eq!(legacy.request(None).1, Action::Continue);
    // PeerAuthentication applies to sidecars, not to gateways (node type "router").
    let mut gateway = Proxy::with(config, |f| {
        at("istio-system", "istio-ingressgateway")(f);
        f.properties.insert(
            "xds/node/id".into(),
            b"router~10.0.0.1~istio-ingressgateway-5d8f.istio-system~istio-system.svc.cluster.local"
                .to_vec(),
        );
    });
    assert_eq!(gateway.request(None).1, Action::Continue);
}

#[test]
fn streams_of_unknown_roots_are_refused() {
    let p = Proxy::new(inline_config());
    p.fake().headers.insert(50, vec![]);
    p.fake().current = 50;
    p.rt.on_context_create(50, 9);
    assert_eq!(p.rt.on_request_headers(50), Action::Pause);
    assert_eq!(
        p.replies_to(50),
        vec![(500, "Authentication failed: internal error".to_string())]
    );
}

#[test]
fn a_rule_without_issuer_accepts_any_iss() {
    assert!(
        !Proxy {
            rt: fake_host::runtime(),
            next_stream: 2,
        }
        .configure(json!({"jwtRules": [{"jwks": jwks("a")}]})),
        "issuer and jwksUri may not both be left out"
    );
    let mut p = Proxy::new(json!({"jwtRules": [{"jwksUri": "https://idp.example.com/keys"}]}));
    p.tick();
    p.answer(Some(200), jwks("a").as_bytes());
    let other = hs256(
        "a",
        json!({"iss": "https://elsewhere.example.com", "sub": "bob", "exp": NOW_MS / 1000 + 60}),
    );
    assert_eq!(p.request(Some(&other)).1, Action::Continue);
    assert_eq!(p.request(Some(&token("a"))).1, Action::Continue);
}

#[test]
fn a_space_delimited_claim_is_written_as_copies() {
    let mut p = Proxy::new(json!({"jwtRules": [{
        "issuer": ISS, "jwks": jwks("a"), "spaceDelimitedClaims": ["scope"],
        "outputClaimToHeaders": [{"header": "x-scope", "claim": "scope"},
                                 {"header": "x-sub", "claim": "sub"}]}]}));
    let t = hs256(
        "a",
        json!({"iss": ISS, "sub": "ann", "scope": "read write"}),
    );
    let auth = format!("Bearer {t}");
    let (id, action) = p.request_with(&[("x-scope", "forged"), ("authorization", &auth)]);
    assert_eq!(action, Action::Continue);
    assert_eq!(p.header(id, "x-scope"), ["read", "write"]);
    assert_eq!(p.header(id, "x-sub"), ["ann"]);
}

#[test]
fn a_request_reads_its_port_only_where_it_can_change_the_mode() {
    let port_modes = json!({"mtls": {"mode": "STRICT"},
                            "portLevelMtls": {"9090": {"mode": "PERMISSIVE"}}});
    let (mtls, port, san) = (
        "connection/mtls",
        "destination/port",
        "connection/uri_san_peer_certificate",
    );
    for (cfg, with_certificate, reads) in [
        (json!({"mtls": {"mode": "STRICT"}}), true, vec![mtls, san]),
        (port_modes, true, vec![mtls, port, san]),
        // A plaintext caller's port names it in the census.
        (
            json!({"mtls": {"mode": "PERMISSIVE"}}),
            false,
            vec![mtls, port],
        ),
    ] {
        let mut p = Proxy::with(cfg, |f| {
            f.properties
                .insert(mtls.into(), vec![u8::from(with_certificate)]);
            f.properties
                .insert(port.into(), 8080i64.to_le_bytes().to_vec());
            f.properties
                .insert(san.into(), SPIFFE_FOO.as_bytes().to_vec());
        });
        p.fake().property_reads.clear();
        assert_eq!(p.request(None).1, Action::Continue);
        let asked: Vec<String> = p
            .fake()
            .property_reads
            .iter()
            .filter(|r| r.starts_with("connection/") || r.starts_with("destination/"))
            .cloned()
            .collect();
        assert_eq!(asked, reads);
    }
}
