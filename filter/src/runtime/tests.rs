//! The runtime against a fake proxy: contexts, callouts, shared data, metrics and the clock are
//! the fake's, the configuration, keys and tokens are real.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use base64::Engine;
use hmac::Mac;
use serde_json::json;

use super::*;
use crate::crypto::verify_signature;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;

const ROOT: u32 = 1;
const NOW_MS: u64 = 1_800_000_000_000;
const SECRET: &[u8] = b"a-shared-secret-of-thirty-two-by";
const ISS: &str = "https://idp.example.com";

type SharedData = Rc<RefCell<HashMap<String, (Vec<u8>, u32)>>>;
type ForeignFunction = Box<dyn Fn(&[u8]) -> Result<Vec<u8>, HostError>>;

/// A proxy with one plugin: what the runtime did to it is recorded for the tests to read.
#[derive(Default)]
struct Fake {
    now_ms: u64,
    config: Vec<u8>,
    properties: HashMap<String, Vec<u8>>,
    /// The context host calls act on.
    current: u32,
    headers: HashMap<u32, Vec<(String, String)>>,
    /// (context, status, body)
    replies: Vec<(u32, u32, String)>,
    resumed: Vec<u32>,
    tick_ms: u32,
    /// (token, cluster, :path)
    callouts: Vec<(u32, String, String)>,
    answer: Option<(Option<u32>, Vec<u8>)>,
    shared: SharedData,
    metrics: Vec<(String, u64)>,
    foreign_calls: usize,
    foreign: Option<ForeignFunction>,
    /// Connection contexts and their properties (`connection/mtls`, …).
    connections: HashMap<u32, HashMap<String, Vec<u8>>>,
    closed: Vec<u32>,
}

#[derive(Default)]
struct FakeHost(RefCell<Fake>);

impl Host for FakeHost {
    fn log(&self, _level: log::Level, _message: &str) {}

    fn log_level(&self) -> log::LevelFilter {
        log::LevelFilter::Trace
    }

    fn now_ms(&self) -> Result<u64, HostError> {
        Ok(self.0.borrow().now_ms)
    }

    fn plugin_config(&self, size: usize) -> Result<Vec<u8>, HostError> {
        let f = self.0.borrow();
        assert_eq!(size, f.config.len());
        Ok(f.config.clone())
    }

    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        let f = self.0.borrow();
        let key = path.join("/");
        match f.connections.get(&f.current) {
            Some(props) => props.get(&key).cloned(),
            None => f.properties.get(&key).cloned(),
        }
    }

    fn request_headers(&self) -> Result<Vec<u8>, HostError> {
        let f = self.0.borrow();
        let headers = f.headers.get(&f.current).ok_or(HostError(2))?;
        let pairs: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        Ok(wire::encode_map(&pairs))
    }

    fn remove_request_header(&self, name: &str) -> Result<(), HostError> {
        let mut f = self.0.borrow_mut();
        let current = f.current;
        let headers = f.headers.get_mut(&current).ok_or(HostError(2))?;
        headers.retain(|(k, _)| k != name);
        Ok(())
    }

    fn set_request_header(&self, name: &str, value: &str) -> Result<(), HostError> {
        self.remove_request_header(name)?;
        self.add_request_header(name, value)
    }

    fn add_request_header(&self, name: &str, value: &str) -> Result<(), HostError> {
        let mut f = self.0.borrow_mut();
        let current = f.current;
        let headers = f.headers.get_mut(&current).ok_or(HostError(2))?;
        headers.push((name.to_string(), value.to_string()));
        Ok(())
    }

    fn send_local_response(
        &self,
        status: u32,
        _headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<(), HostError> {
        let mut f = self.0.borrow_mut();
        let current = f.current;
        let body = String::from_utf8_lossy(body).into_owned();
        f.replies.push((current, status, body));
        Ok(())
    }

    fn resume_request(&self) -> Result<(), HostError> {
        let mut f = self.0.borrow_mut();
        let current = f.current;
        f.resumed.push(current);
        Ok(())
    }

    fn close_downstream(&self) -> Result<(), HostError> {
        let mut f = self.0.borrow_mut();
        let current = f.current;
        f.closed.push(current);
        Ok(())
    }

    fn set_effective_context(&self, context_id: u32) -> Result<(), HostError> {
        let mut f = self.0.borrow_mut();
        if context_id != ROOT
            && !f.headers.contains_key(&context_id)
            && !f.connections.contains_key(&context_id)
        {
            return Err(HostError(2));
        }
        f.current = context_id;
        Ok(())
    }

    fn set_tick_period_ms(&self, ms: u32) {
        self.0.borrow_mut().tick_ms = ms;
    }

    fn http_call(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        _timeout_ms: u64,
    ) -> Result<u32, HostError> {
        let mut f = self.0.borrow_mut();
        let token = u32::try_from(f.callouts.len()).unwrap() + 100;
        let path = headers.iter().find(|(k, _)| *k == ":path").unwrap().1;
        f.callouts
            .push((token, cluster.to_string(), path.to_string()));
        Ok(token)
    }

    fn http_call_status(&self) -> Option<u32> {
        self.0
            .borrow()
            .answer
            .as_ref()
            .and_then(|(status, _)| *status)
    }

    fn http_call_body(&self, size: usize) -> Result<Vec<u8>, HostError> {
        let f = self.0.borrow();
        let body = f
            .answer
            .as_ref()
            .map(|(_, b)| b.clone())
            .unwrap_or_default();
        assert_eq!(size, body.len());
        Ok(body)
    }

    fn shared_data(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.0.borrow().shared.borrow().get(key).cloned()
    }

    fn set_shared_data(&self, key: &str, value: &[u8], cas: u32) -> bool {
        let f = self.0.borrow();
        let mut shared = f.shared.borrow_mut();
        let current = shared.get(key).map_or(0, |(_, c)| *c);
        if cas != 0 && cas != current {
            return false;
        }
        shared.insert(key.to_string(), (value.to_vec(), current + 1));
        true
    }

    fn define_metric(&self, _kind: MetricKind, name: &str) -> Option<u32> {
        let mut f = self.0.borrow_mut();
        f.metrics.push((name.to_string(), 0));
        u32::try_from(f.metrics.len() - 1).ok()
    }

    fn increment_metric(&self, id: u32, by: u64) {
        self.0.borrow_mut().metrics[id as usize].1 += by;
    }

    fn record_metric(&self, id: u32, value: u64) {
        self.0.borrow_mut().metrics[id as usize].1 = value;
    }

    fn add_to_gauge(&self, id: u32, delta: i64) {
        let gauge = &mut self.0.borrow_mut().metrics[id as usize].1;
        *gauge = gauge
            .checked_add_signed(delta)
            .expect("a gauge never goes below 0");
    }

    fn call_foreign_function(&self, name: &str, args: &[u8]) -> Result<Vec<u8>, HostError> {
        assert_eq!(name, verify_signature::FUNCTION);
        let mut f = self.0.borrow_mut();
        f.foreign_calls += 1;
        match &f.foreign {
            Some(answer) => answer(args),
            None => Err(HostError(1)),
        }
    }

    fn memory_bytes(&self) -> u64 {
        1 << 20
    }
}

/// One worker's runtime with one configured plugin (root `ROOT`).
struct Proxy {
    rt: Runtime<FakeHost>,
    next_stream: u32,
}

impl Proxy {
    fn new(config: serde_json::Value) -> Self {
        Self::with(config, |_| {})
    }

    fn with(config: serde_json::Value, setup: impl FnOnce(&mut Fake)) -> Self {
        let proxy = Self {
            rt: Runtime::new(FakeHost::default()),
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

    fn metric(&self, name: &str) -> u64 {
        let f = self.fake();
        let full = format!("mesh_authn.test.{name}");
        f.metrics
            .iter()
            .filter(|(n, _)| *n == full)
            .map(|(_, v)| *v)
            .sum()
    }
}

fn jwks(kid: &str) -> String {
    json!({"keys": [{"kty": "oct", "kid": kid, "k": B64URL.encode(SECRET)}]}).to_string()
}

fn hs256(kid: &str, claims: serde_json::Value) -> String {
    let header = B64URL.encode(json!({"alg": "HS256", "kid": kid}).to_string());
    let payload = B64URL.encode(claims.to_string());
    let input = format!("{header}.{payload}");
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SECRET).unwrap();
    mac.update(input.as_bytes());
    format!("{input}.{}", B64URL.encode(mac.finalize().into_bytes()))
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
    let key = p256::ecdsa::SigningKey::from_slice(&[7u8; 32]).unwrap();
    let point = key.verifying_key().to_encoded_point(false);
    let jwks = json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "ec",
        "x": B64URL.encode(point.x().unwrap()), "y": B64URL.encode(point.y().unwrap())}]});
    json!({"jwtRules": [{"issuer": ISS, "jwks": jwks.to_string()}],
           "signatureVerifier": verifier, "jwtCacheSize": 0})
}

fn es256_token(claims: serde_json::Value) -> String {
    use p256::ecdsa::signature::Signer;
    let key = p256::ecdsa::SigningKey::from_slice(&[7u8; 32]).unwrap();
    let header = B64URL.encode(json!({"alg": "ES256", "kid": "ec"}).to_string());
    let input = format!("{header}.{}", B64URL.encode(claims.to_string()));
    let sig: p256::ecdsa::Signature = key.sign(input.as_bytes());
    format!("{input}.{}", B64URL.encode(sig.to_bytes()))
}

fn claims() -> serde_json::Value {
    json!({"iss": ISS, "sub": "alice", "exp": NOW_MS / 1000 + 3600})
}

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
        rt: Runtime::new(FakeHost::default()),
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

// --------------------------------------------------------------------------- NETWORK plugin

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

#[test]
fn a_silent_connection_is_decided_by_the_tick_and_upstream_bytes_wait_for_the_decision() {
    let mut p = Proxy::with(strict(), as_network);
    let (good, _) = p.connect(Peer::Handshaking);
    let (foreign, _) = p.connect(Peer::Handshaking);
    assert_eq!(p.fake().tick_ms, network::TICK_HANDSHAKE_MS);
    // Before the handshake ends the TLS socket holds what the upstream sends.
    assert_eq!(p.upstream_data(foreign), Action::Continue);
    p.advance(5);
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
    p.advance(10);
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
    for _ in 0..1_999 {
        p.advance(5);
        p.tick();
        assert!(p.closed().is_empty());
    }
    p.advance(5);
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
            rt: Runtime::new(FakeHost::default()),
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
fn paused_connections_are_capped_forgotten_when_gone_and_closed_with_their_plugin() {
    let mut p = Proxy::with(strict(), as_network);
    let ids: Vec<u32> = (0..network::MAX_PAUSED_CONNECTIONS)
        .map(|_| p.connect(Peer::Handshaking).0)
        .collect();
    assert!(p.closed().is_empty());
    let (over, action) = p.connect(Peer::Handshaking);
    assert_eq!((action, p.closed()), (Action::Pause, vec![over]));
    p.disconnect(ids[0]);
    let (again, action) = p.connect(Peer::Handshaking);
    assert_eq!(action, Action::Continue);
    assert_eq!(p.closed(), vec![over], "room for one more");
    p.rt.on_done(ROOT);
    assert_eq!(p.closed().len(), network::MAX_PAUSED_CONNECTIONS + 1);
    assert!(p.closed().contains(&again) && !p.closed().contains(&ids[0]));
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

// --------------------------------------------------------------------------- OpenID discovery

fn last_callout(p: &Proxy) -> (String, String) {
    let f = p.fake();
    let (_, cluster, path) = f.callouts.last().unwrap();
    (cluster.clone(), path.clone())
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
fn a_rule_without_issuer_accepts_any_iss() {
    assert!(
        !Proxy {
            rt: Runtime::new(FakeHost::default()),
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

// --------------------------------------------------------------------------- dry run, reasons

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
    assert!(p
        .fake()
        .metrics
        .iter()
        .all(|(n, _)| !n.contains("plaintext_port")));

    // The NETWORK plugin counts plaintext connections.
    let mut p = Proxy::with(json!({"mtls": {"mode": "PERMISSIVE"}}), as_network);
    p.connect(Peer::Plaintext);
    p.connect(Peer::Handshaking);
    p.tick();
    assert_eq!(p.metric(&format!("plaintext_port_{APP_PORT}")), 1);
}

#[test]
fn a_key_set_that_is_cut_is_counted() {
    let key = json!({"kty": "oct", "kid": "a", "k": B64URL.encode(SECRET)});
    let long = json!({ "keys": vec![key; jwks::MAX_KEYS + 1] }).to_string();
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
