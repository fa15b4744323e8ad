//! Arbitrary bytes as pluginConfig; a configuration that loads is resolved for a workload (if it
//! needs one) and decides a few fixed requests.
#![no_main]

#[path = "../common/mod.rs"]
mod common;

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use mesh_authn::authn::{self, Admission, Env, NoRemotes, Verdict};
use mesh_authn::config;
use mesh_authn::error::AuthError;
use mesh_authn::peer::Workload;
use mesh_authn::request::{Connection, Request};

fuzz_target!(|data: &[u8]| {
    let raw = match config::parse(data) {
        Ok(raw) => raw,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let mut node = Workload::default();
    if raw.node_label_keys().is_some() {
        let mut labels = BTreeMap::new();
        labels.insert("app".to_string(), "httpbin".to_string());
        node = Workload {
            namespace: "foo".into(),
            labels,
            gateway: data.len() % 7 == 0,
        };
    }
    let cfg = match config::compile(&raw, &node) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    let _ = cfg.peer.needs_connection;
    let requests = [
        Request::new(vec![(":path".into(), "/".into())]),
        Request::new(vec![
            (":path".into(), "/api/x?access_token=a.b.c".into()),
            (
                "authorization".into(),
                "Bearer eyJhbGciOiJSUzI1NiJ9.e30.c2ln".into(),
            ),
            ("cookie".into(), "session=x.y.z".into()),
        ])
        .with_connection(Connection {
            mtls: true,
            tls: true,
            port: Some(8080),
            uri_san: Some("spiffe://cluster.local/ns/foo/sa/curl".into()),
            certificate_sha256: Some([7; 32]),
        }),
    ];
    for req in &requests {
        let verdict = authn::authenticate(&cfg, req, common::NOW * 1000, &mut Env::new(&NoRemotes));
        if let Verdict::Deny(e) = verdict {
            assert_ne!(e, AuthError::Internal, "internal error");
        }
        // A connection the NETWORK plugin admits is one whose requests pass the peer check.
        let admitted = authn::admit_connection(&cfg, req.connection(), true) == Admission::Allow;
        assert_eq!(
            admitted,
            !matches!(
                verdict,
                Verdict::Deny(AuthError::PeerAuthenticationFailed | AuthError::PeerUntrusted)
            ),
            "the NETWORK and HTTP peer checks disagree"
        );
    }
    let _ = config::check_network(&raw).map_err(|e| e.to_string());
});
