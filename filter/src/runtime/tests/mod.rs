//! The runtime against a fake proxy (`fake_host`): contexts, callouts, shared data, metrics and
//! the clock are the fake's, the configuration, keys and tokens are real. Here the driver
//! (`Proxy`) and the tokens; the tests by concern in the submodules.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::HashMap;

use base64::Engine;
use serde_json::json;

use super::*;
use crate::crypto::verify_signature;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;

const ROOT: u32 = 1;
const NOW_MS: u64 = 1_800_000_000_000;
const SECRET: &[u8] = test_tokens::HMAC_KEY;
const ISS: &str = "https://idp.example.com";

mod connections;
mod counters;
mod fake_host;
mod fetches;
mod requests;
mod series;
mod verifier;

use fake_host::{Fake, FakeHost, ForeignFunction, SharedData};

/// One worker's runtime with one configured plugin (root `ROOT`).
struct Proxy {
    rt: std::rc::Rc<Runtime<FakeHost>>,
    next_stream: u32,
}

impl Proxy {
    fn new(config: serde_json::Value) -> Self {
        Self::with(config, |_| {})
    }

    fn with(config: serde_json::Value, setup: impl FnOnce(&mut Fake)) -> Self {
        let proxy = Self {
            rt: fake_host::runtime(),
            next_stream: 2,
        };
        {
            let mut f = proxy.fake();
            f.now_ms = NOW_MS;
            f.properties.insert("plugin_name".into(), b"test".to_vec());
            setup(&mut f);
        }
        assert!(proxy.configure(config), "the configuration is refused");
        proxy
    }

    fn fake(&self) -> std::cell::RefMut<'_, Fake> {
        self.rt.host().0.borrow_mut()
    }

    fn configure(&self, config: serde_json::Value) -> bool {
        let size = {
            let mut f = self.fake();
            f.config = config.to_string().into_bytes();
            f.current = ROOT;
            f.config.len()
        };
        self.rt.on_configure(ROOT, size)
    }

    /// A request on a new stream; its context id and what the filter answered.
    fn request(&mut self, token: Option<&str>) -> (u32, Action) {
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> =
            auth.iter().map(|a| ("authorization", a.as_str())).collect();
        self.request_with(&headers)
    }

    fn done(&self, id: u32) {
        self.fake().headers.remove(&id);
        self.rt.on_done(id);
    }

    fn tick(&self) {
        self.fake().current = ROOT;
        self.rt.on_tick(ROOT);
    }

    fn advance(&self, ms: u64) {
        self.fake().now_ms += ms;
    }

    /// Answers the latest callout.
    fn answer(&self, status: Option<u32>, body: &[u8]) {
        let (token, size) = {
            let mut f = self.fake();
            f.answer = Some((status, body.to_vec()));
            f.current = ROOT;
            (f.callouts.last().expect("a callout was made").0, body.len())
        };
        self.rt.on_http_call_response(ROOT, token, size);
    }

    fn callouts(&self) -> usize {
        self.fake().callouts.len()
    }

    fn replies_to(&self, id: u32) -> Vec<(u32, String)> {
        let f = self.fake();
        f.replies
            .iter()
            .filter(|(c, ..)| *c == id)
            .map(|(_, s, b)| (*s, b.clone()))
            .collect()
    }

    fn resumed(&self) -> Vec<u32> {
        self.fake().resumed.clone()
    }

    /// Whether any series of `metric` was defined.
    fn defines(&self, metric: &str) -> bool {
        self.fake().metrics.iter().any(|(n, _)| n.ends_with(metric))
    }

    /// A series by the short name the tests use (`refused_expired`, `plaintext_port_8080`, …).
    fn metric(&self, name: &str) -> u64 {
        let f = self.fake();
        let full = series_of(name);
        f.metrics
            .iter()
            .filter(|(n, _)| *n == full)
            .map(|(_, v)| *v)
            .sum()
    }
}

/// The stat name of a short name, for the plugin `test`.
fn series_of(name: &str) -> String {
    let series = |labels: &[(&str, &str)], metric: &str| metrics::series("test", labels, metric);
    if let Some(reason) = name.strip_prefix("dry_run_refused_") {
        return series(
            &[("reason", reason), ("dry_run", "true")],
            "mesh_authn_refused_total",
        );
    }
    if let Some(reason) = name.strip_prefix("refused_") {
        return series(
            &[("reason", reason), ("dry_run", "false")],
            "mesh_authn_refused_total",
        );
    }
    if let Some(rest) = name.strip_prefix("plaintext_port_") {
        let (port, mode) = rest.split_once('_').unwrap_or((rest, "PERMISSIVE"));
        return series(
            &[("port", port), ("mode", mode)],
            "mesh_authn_plaintext_total",
        );
    }
    let (labels, metric): (&[(&str, &str)], &str) = match name {
        "allowed" => (&[("decision", "allowed")], "mesh_authn_requests_total"),
        "denied" => (&[("decision", "denied")], "mesh_authn_requests_total"),
        "connections_allowed" => (&[("decision", "allowed")], "mesh_authn_connections_total"),
        "connections_refused" => (&[("decision", "denied")], "mesh_authn_connections_total"),
        "jwks_fetch_success" => (&[("result", "success")], "mesh_authn_jwks_fetches_total"),
        "jwks_fetch_failed" => (&[("result", "failed")], "mesh_authn_jwks_fetches_total"),
        "jwt_cache_hit" => (&[("result", "hit")], "mesh_authn_jwt_cache_lookups_total"),
        "jwt_cache_miss" => (&[("result", "miss")], "mesh_authn_jwt_cache_lookups_total"),
        other => (&[], other),
    };
    let metric = match metric {
        "jwks_keys_cut" | "host_verify_failed" | "dpop_replay_full" => {
            format!("mesh_authn_{metric}_total")
        }
        m if m.starts_with("mesh_authn_") => m.to_string(),
        m => format!("mesh_authn_{m}"),
    };
    series(labels, &metric)
}

fn jwks(kid: &str) -> String {
    test_tokens::jwks_json(&[(test_tokens::Key::Hmac, kid)])
}

fn hs256(kid: &str, claims: serde_json::Value) -> String {
    test_tokens::hs256(kid, &claims)
}

fn token(kid: &str) -> String {
    hs256(
        kid,
        json!({"iss": ISS, "sub": "alice", "exp": NOW_MS / 1000 + 3600}),
    )
}

fn remote_config() -> serde_json::Value {
    json!({"jwtRules": [{"issuer": ISS, "jwksUri": "https://idp.example.com/keys"}]})
}

fn inline_config() -> serde_json::Value {
    json!({"jwtRules": [{"issuer": ISS, "jwks": jwks("a")}]})
}

impl Proxy {
    fn request_with(&mut self, extra: &[(&str, &str)]) -> (u32, Action) {
        let id = self.next_stream;
        self.next_stream += 1;
        let mut headers = vec![
            (":method".to_string(), "GET".to_string()),
            (":path".to_string(), "/ip".to_string()),
            (":authority".to_string(), "example.com".to_string()),
        ];
        headers.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        {
            let mut f = self.fake();
            f.headers.insert(id, headers);
            f.current = id;
        }
        self.rt.on_context_create(id, ROOT);
        (id, self.rt.on_request_headers(id))
    }

    fn header(&self, id: u32, name: &str) -> Vec<String> {
        self.fake().headers[&id]
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

/// The host's `verify_signature`, passing the start-up self-test, then answering `later`.
fn host_verifier(later: Result<bool, HostError>) -> ForeignFunction {
    let (good, bad) = verify_signature::self_test_requests().unwrap();
    Box::new(move |args: &[u8]| {
        let result = if args == good.as_slice() {
            Ok(true)
        } else if args == bad.as_slice() {
            Ok(false)
        } else {
            later
        };
        result.map(|valid| vec![0x08, u8::from(valid)])
    })
}

fn es256_config(verifier: &str) -> serde_json::Value {
    let jwks = test_tokens::jwks_json(&[(test_tokens::Key::P256, "ec")]);
    json!({"jwtRules": [{"issuer": ISS, "jwks": jwks}],
           "signatureVerifier": verifier, "jwtCacheSize": 0})
}

fn es256_token(claims: serde_json::Value) -> String {
    test_tokens::mint(&json!({"alg": "ES256", "kid": "ec"}), &claims)
}

fn claims() -> serde_json::Value {
    json!({"iss": ISS, "sub": "alice", "exp": NOW_MS / 1000 + 3600})
}

// NETWORK plugin

const APP_PORT: i64 = 8080;
const SPIFFE_FOO: &str = "spiffe://cluster.local/ns/foo/sa/curl";

fn strict() -> serde_json::Value {
    json!({"mtls": {"mode": "STRICT"}, "trustDomains": ["cluster.local"]})
}

fn as_network(f: &mut Fake) {
    f.properties
        .insert("plugin_root_id".into(), NETWORK_ROOT_ID.as_bytes().to_vec());
}

/// How a connection looks to the filter: plaintext, TLS before its handshake ends, or mTLS.
#[derive(Clone, Copy)]
enum Peer<'a> {
    Plaintext,
    Handshaking,
    Mtls(&'a str),
}

impl Proxy {
    fn set_peer(&self, id: u32, peer: Peer<'_>) {
        let mut props: HashMap<String, Vec<u8>> = HashMap::new();
        props.insert("destination/port".into(), APP_PORT.to_le_bytes().to_vec());
        props.insert("source/address".into(), b"127.0.0.1:40000".to_vec());
        if !matches!(peer, Peer::Plaintext) {
            props.insert("connection/tls_version".into(), b"TLSv1.3".to_vec());
        }
        props.insert(
            "connection/mtls".into(),
            vec![u8::from(matches!(peer, Peer::Mtls(_)))],
        );
        if let Peer::Mtls(uri) = peer {
            props.insert(
                "connection/uri_san_peer_certificate".into(),
                uri.as_bytes().to_vec(),
            );
        }
        self.fake().connections.insert(id, props);
    }

    /// A new downstream connection; its context id and what the filter answered.
    fn connect(&mut self, peer: Peer<'_>) -> (u32, Action) {
        let id = self.next_stream;
        self.next_stream += 1;
        self.set_peer(id, peer);
        self.fake().current = id;
        self.rt.on_context_create(id, ROOT);
        (id, self.rt.on_new_connection(id))
    }

    fn data(&self, id: u32) -> Action {
        self.fake().current = id;
        self.rt.on_downstream_data(id)
    }

    fn closed(&self) -> Vec<u32> {
        self.fake().closed.clone()
    }

    fn upstream_data(&self, id: u32) -> Action {
        self.fake().current = id;
        self.rt.on_upstream_data(id)
    }

    fn disconnect(&self, id: u32) {
        self.fake().connections.remove(&id);
        self.rt.on_done(id);
    }
}

fn last_callout(p: &Proxy) -> (String, String) {
    let f = p.fake();
    let (_, cluster, path) = f.callouts.last().unwrap();
    (cluster.clone(), path.clone())
}
