//! The NETWORK plugin: connections admitted, held and refused.

use super::*;

#[test]
fn strict_closes_plaintext_at_once_and_permissive_lets_it_through() {
    let mut p = Proxy::with(strict(), as_network);
    let (id, action) = p.connect(Peer::Plaintext);
    assert_eq!((action, p.closed()), (Action::Pause, vec![id]));
    assert_eq!(
        p.data(id),
        Action::Continue,
        "a closed connection has no data"
    );

    let mut p = Proxy::with(json!({"mtls": {"mode": "PERMISSIVE"}}), as_network);
    let (id, action) = p.connect(Peer::Plaintext);
    assert_eq!(action, Action::Continue);
    assert_eq!(p.data(id), Action::Continue);
    assert!(p.closed().is_empty());
    p.tick();
    assert_eq!(p.metric("connections_allowed"), 1);
}

#[test]
fn a_tls_connection_is_decided_by_its_first_bytes() {
    let mut p = Proxy::with(strict(), as_network);
    let (good, action) = p.connect(Peer::Handshaking);
    assert_eq!(
        action,
        Action::Continue,
        "the handshake needs the next filters to read"
    );
    let (bad, _) = p.connect(Peer::Handshaking);
    let (foreign, _) = p.connect(Peer::Handshaking);
    assert!(p.closed().is_empty());

    p.set_peer(good, Peer::Mtls(SPIFFE_FOO));
    assert_eq!(p.data(good), Action::Continue);
    assert_eq!(p.data(good), Action::Continue);
    assert_eq!(p.data(bad), Action::Pause, "handshake over, no certificate");
    p.set_peer(foreign, Peer::Mtls("spiffe://evil.local/ns/foo/sa/curl"));
    assert_eq!(p.data(foreign), Action::Pause, "a trust domain not listed");
    assert_eq!(p.closed(), vec![bad, foreign]);
    p.tick();
    assert_eq!(p.metric("connections_allowed"), 1);
    assert_eq!(p.metric("connections_refused"), 2);
}

const TICK: u32 = held::TICK_HANDSHAKE_MS;

#[test]
fn a_silent_connection_is_decided_by_the_tick_and_upstream_bytes_wait_for_the_decision() {
    let mut p = Proxy::with(strict(), as_network);
    let (good, _) = p.connect(Peer::Handshaking);
    let (foreign, _) = p.connect(Peer::Handshaking);
    assert_eq!(p.fake().tick_ms, held::TICK_HANDSHAKE_MS);
    // Before the handshake ends the TLS socket holds what the upstream sends.
    assert_eq!(p.upstream_data(foreign), Action::Continue);
    p.advance(TICK.into());
    p.tick();
    assert!(p.closed().is_empty());
    p.set_peer(good, Peer::Mtls(SPIFFE_FOO));
    p.set_peer(foreign, Peer::Mtls("spiffe://evil.local/ns/foo/sa/curl"));
    assert_eq!(
        p.upstream_data(foreign),
        Action::Pause,
        "decided before a byte is relayed"
    );
    assert_eq!(p.closed(), vec![foreign]);
    p.advance((2 * TICK).into());
    p.tick();
    assert_eq!(p.fake().current, ROOT, "the root is current again");
    assert_eq!(p.closed(), vec![foreign]);
    assert_eq!(p.data(good), Action::Continue);
    assert_eq!(p.upstream_data(good), Action::Continue);
    p.advance(1_000);
    p.tick();
    assert_eq!(
        p.fake().tick_ms,
        TICK_IDLE_MS,
        "nothing held: the tick slows down"
    );
    assert_eq!(p.metric("connections_allowed"), 1);
    assert_eq!(p.metric("connections_refused"), 1);
}

#[test]
fn a_tls_connection_that_never_shows_a_certificate_is_refused_at_its_deadline() {
    let mut p = Proxy::with(strict(), as_network);
    let (id, _) = p.connect(Peer::Handshaking);
    for _ in 1..10_000 / TICK {
        p.advance(TICK.into());
        p.tick();
        assert!(p.closed().is_empty());
    }
    p.advance(TICK.into());
    p.tick();
    assert_eq!(p.closed(), vec![id], "10 s after it connected");
}

#[test]
fn ports_keep_their_own_mode() {
    let cfg = json!({"mtls": {"mode": "STRICT"},
                     "portLevelMtls": {APP_PORT.to_string(): {"mode": "DISABLE"}}});
    let mut p = Proxy::with(cfg, as_network);
    assert_eq!(p.connect(Peer::Plaintext).1, Action::Continue);
    let cfg = json!({"mtls": {"mode": "PERMISSIVE"},
                     "portLevelMtls": {APP_PORT.to_string(): {"mode": "STRICT"}}});
    let mut p = Proxy::with(cfg, as_network);
    assert_eq!(p.connect(Peer::Plaintext).1, Action::Pause);
}

#[test]
fn a_held_connection_keeps_the_port_it_came_in_on() {
    let cfg = json!({"mtls": {"mode": "PERMISSIVE"},
                     "portLevelMtls": {APP_PORT.to_string(): {"mode": "STRICT"}}});
    let mut p = Proxy::with(cfg, as_network);
    let (id, action) = p.connect(Peer::Handshaking);
    assert_eq!(action, Action::Continue);
    // Were the port read again and gone, the default PERMISSIVE would let it through.
    p.fake()
        .connections
        .get_mut(&id)
        .unwrap()
        .remove("destination/port");
    assert_eq!(
        p.data(id),
        Action::Pause,
        "the port's STRICT: no certificate"
    );
    assert_eq!(p.closed(), vec![id]);
}

#[test]
fn a_connection_is_read_once_its_port_only_for_port_modes_its_identity_for_trust_domains() {
    let port_modes = json!({"mtls": {"mode": "STRICT"},
                            "portLevelMtls": {"9090": {"mode": "PERMISSIVE"}}});
    for (cfg, arriving, decided) in [
        (
            json!({"mtls": {"mode": "STRICT"}}),
            vec!["connection/tls_version"],
            vec!["connection/mtls"],
        ),
        (
            port_modes,
            vec!["connection/tls_version", "destination/port"],
            vec!["connection/mtls"],
        ),
        (
            strict(),
            vec!["connection/tls_version"],
            vec!["connection/mtls", "connection/uri_san_peer_certificate"],
        ),
    ] {
        let mut p = Proxy::with(cfg, as_network);
        p.fake().property_reads.clear();
        let (id, _) = p.connect(Peer::Handshaking);
        assert_eq!(p.fake().property_reads, arriving);
        p.set_peer(id, Peer::Mtls(SPIFFE_FOO));
        p.fake().property_reads.clear();
        assert_eq!(p.data(id), Action::Continue);
        assert_eq!(p.fake().property_reads, decided);
    }
}

#[test]
fn a_network_plugin_refuses_http_only_fields_at_configure() {
    for (extra, field) in [
        (
            json!({"jwtRules": [{"issuer": ISS, "jwks": jwks("k1")}]}),
            "jwtRules",
        ),
        (json!({"requireToken": true}), "requireToken"),
        (
            json!({"triggerRules": [{"excludedPaths": [{"exact": "/x"}]}]}),
            "triggerRules",
        ),
        (
            json!({"outputPeerPrincipalToHeader": "x-peer"}),
            "outputPeerPrincipalToHeader",
        ),
    ] {
        let mut cfg = strict();
        cfg.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let p = Proxy {
            rt: fake_host::runtime(),
            next_stream: 2,
        };
        as_network(&mut p.fake());
        assert!(!p.configure(cfg.clone()), "{field}");
        let raw = config::parse(cfg.to_string().as_bytes()).unwrap();
        let err = config::check_network(&raw).unwrap_err().to_string();
        assert!(err.contains(&format!("at {field}:")), "{err}");
        // Loaded without the network root id it starts, and refuses every connection.
        let mut p = Proxy::new(cfg);
        let (id, action) = p.connect(Peer::Mtls(SPIFFE_FOO));
        assert_eq!((action, p.closed()), (Action::Pause, vec![id]));
    }
}

#[test]
fn past_the_cap_the_longest_held_makes_room_and_all_close_with_their_plugin() {
    let mut p = Proxy::with(strict(), as_network);
    let ids: Vec<u32> = (0..held::MAX_PAUSED_CONNECTIONS)
        .map(|_| p.connect(Peer::Handshaking).0)
        .collect();
    assert!(p.closed().is_empty());
    let (newest, action) = p.connect(Peer::Handshaking);
    assert_eq!((action, p.closed()), (Action::Continue, vec![ids[0]]));
    p.tick();
    let cap = held::MAX_PAUSED_CONNECTIONS as u64;
    assert_eq!(p.metric("held_connections"), cap);
    assert_eq!(
        (p.metric("refused_overload"), p.metric("refused_internal")),
        (1, 0)
    );
    p.disconnect(ids[2]);
    let (again, action) = p.connect(Peer::Handshaking);
    assert_eq!(action, Action::Continue);
    assert_eq!(p.closed(), vec![ids[0]], "a connection gone made room");
    p.connect(Peer::Handshaking);
    assert_eq!(
        p.closed(),
        vec![ids[0], ids[1]],
        "then the next longest held"
    );
    p.set_peer(ids[3], Peer::Mtls(SPIFFE_FOO));
    assert_eq!(p.data(ids[3]), Action::Continue);
    p.connect(Peer::Handshaking);
    assert_eq!(p.closed().len(), 2, "a decided one made room");
    p.connect(Peer::Handshaking);
    assert_eq!(p.closed().last(), Some(&ids[4]), "and is not held");
    p.rt.on_done(ROOT);
    assert_eq!(p.closed().len(), held::MAX_PAUSED_CONNECTIONS + 3);
    assert!(p.closed().contains(&again) && p.closed().contains(&newest));
    assert!(!p.closed().contains(&ids[2]) && !p.closed().contains(&ids[3]));
    assert_eq!(p.metric("held_connections"), 0, "a plugin gone holds none");
}

#[test]
fn past_the_cap_a_dry_run_lets_the_longest_held_go_and_counts_it() {
    let mut cfg = strict();
    cfg["dryRun"] = json!(true);
    let mut p = Proxy::with(cfg, as_network);
    for _ in 0..held::MAX_PAUSED_CONNECTIONS {
        p.connect(Peer::Handshaking);
    }
    let (_, action) = p.connect(Peer::Handshaking);
    p.tick();
    assert_eq!((action, p.closed()), (Action::Continue, vec![]));
    assert_eq!(p.metric("dry_run_refused_overload"), 1);
    assert_eq!(
        p.metric("held_connections"),
        held::MAX_PAUSED_CONNECTIONS as u64
    );
}

#[test]
fn a_reconfigured_plugin_keeps_its_paused_connections() {
    let mut p = Proxy::with(strict(), as_network);
    let (id, _) = p.connect(Peer::Handshaking);
    assert!(p.configure(json!({"mtls": {"mode": "PERMISSIVE"}})));
    p.set_peer(id, Peer::Handshaking);
    assert_eq!(
        p.data(id),
        Action::Continue,
        "decided under the new configuration"
    );
}

#[test]
fn connections_of_unknown_plugins_are_refused() {
    let p = Proxy::with(strict(), as_network);
    p.set_peer(77, Peer::Mtls(SPIFFE_FOO));
    p.fake().current = 77;
    p.rt.on_context_create(77, 9);
    assert_eq!(p.rt.on_new_connection(77), Action::Pause);
    assert_eq!(p.closed(), vec![77]);
}
