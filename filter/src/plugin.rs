//! proxy-wasm contexts. The root context compiles the configuration once and owns the shared
//! state: remote key sets, their fetches, and the requests waiting for them. Each HTTP context
//! asks the pure core for a verdict and applies it, or parks the request with the root.
//!
//! No `RefCell` borrow is ever held across a host call: the host may call back into the VM.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

use crate::authn::{self, Env, KeyStore, RemoteKeys, Verdict};
use crate::cache::TokenCache;
use crate::config::{self, Config, SignatureVerifier};
use crate::error::{AuthError, Denial};
use crate::fetcher::{Outcome, Poll, Source, Ticket};
use crate::host;
use crate::hostcrypto;
use crate::jwks::Jwk;
use crate::jws::{self, Alg, InModule, Verifier};
use crate::peer::Workload;
use crate::request::{Connection, Request};

const TICK_IDLE_MS: u32 = 1_000;
/// While requests wait or keys are missing, other workers' fetch results are picked up this fast.
const TICK_BUSY_MS: u32 = 50;
/// Only root-context callbacks may start fetches, so a request that needs one asks for a tick now.
const TICK_NOW_MS: u32 = 1;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|id| -> Box<dyn RootContext> { Box::new(Root::new(id)) });
}}

#[derive(Default, Clone, Copy)]
struct Metrics {
    allowed: Option<u32>,
    denied: Option<u32>,
    fetch_success: Option<u32>,
    fetch_failed: Option<u32>,
    cache_hit: Option<u32>,
    cache_miss: Option<u32>,
    vm_memory: Option<u32>,
}

impl Metrics {
    fn define() -> Self {
        let prefix = host::property(&["plugin_name"])
            .and_then(|b| String::from_utf8(b).ok())
            .filter(|n| {
                n.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
            })
            .map_or_else(|| "mesh_authn".to_string(), |n| format!("mesh_authn.{n}"));
        let counter = |name: &str| host::define_counter(&format!("{prefix}.{name}"));
        Self {
            allowed: counter("allowed"),
            denied: counter("denied"),
            fetch_success: counter("jwks_fetch_success"),
            fetch_failed: counter("jwks_fetch_failed"),
            cache_hit: counter("jwt_cache_hit"),
            cache_miss: counter("jwt_cache_miss"),
            vm_memory: host::define_gauge(&format!("{prefix}.vm_memory_bytes")),
        }
    }

    /// The VM's linear memory, which only grows: what a soak or benchmark watches.
    fn record_memory(self) {
        if let Some(id) = self.vm_memory {
            host::record_gauge(id, (core::arch::wasm32::memory_size(0) as u64) * 65_536);
        }
    }

    fn bump(id: Option<u32>) {
        Self::add(id, 1);
    }

    fn add(id: Option<u32>, by: u64) {
        if let (Some(id), 1..) = (id, by) {
            host::increment_counter(id, by);
        }
    }
}

struct Waiter {
    context_id: u32,
    remote: usize,
    ticket: Ticket,
    request: Request,
}

struct State {
    config: Rc<Config>,
    sources: Vec<Source>,
    waiters: Vec<Waiter>,
    calls: HashMap<u32, usize>,
    metrics: Metrics,
    tick_ms: u32,
    cache: TokenCache,
    host_signatures: bool,
    requests: u64,
}

impl State {
    /// The verdict for a request, from this worker's keys, cache and verifier.
    fn decide(&mut self, req: &Request, now_ms: u64) -> Verdict {
        let State {
            config,
            sources,
            cache,
            host_signatures,
            ..
        } = self;
        let view = KeyView { sources, now_ms };
        let verifier: &dyn Verifier = if *host_signatures {
            &HostVerifier
        } else {
            &InModule
        };
        let (hits, misses) = (cache.hits, cache.misses);
        let mut env = Env {
            keys: &view,
            verifier,
            cache: Some(cache),
        };
        let verdict = authn::authenticate(config, req, now_ms / 1000, &mut env);
        Metrics::add(self.metrics.cache_hit, self.cache.hits - hits);
        Metrics::add(self.metrics.cache_miss, self.cache.misses - misses);
        verdict
    }
}

/// Envoy's `verify_signature` (BoringSSL) where it applies; the module otherwise, and should the
/// host call itself fail (the verdict is the same either way).
struct HostVerifier;

impl Verifier for HostVerifier {
    fn verify(&self, alg: Alg, key: &Jwk, input: &[u8], sig: &[u8]) -> bool {
        hostcrypto::request(alg, key, input, sig)
            .and_then(|args| host::call_foreign_function(hostcrypto::FUNCTION, &args).ok())
            .and_then(|result| hostcrypto::parse_result(&result))
            .unwrap_or_else(|| jws::verify(alg, &key.key, input, sig))
    }
}

/// Whether the host verifies the self-test signature and refuses it once altered.
fn host_verifier_works() -> bool {
    let call = |args: &[u8]| {
        host::call_foreign_function(hostcrypto::FUNCTION, args)
            .ok()
            .and_then(|r| hostcrypto::parse_result(&r))
    };
    hostcrypto::self_test_requests()
        .is_some_and(|(good, bad)| call(&good) == Some(true) && call(&bad) == Some(false))
}

/// The key store a request sees: this worker's view of each remote source at `now_ms`.
struct KeyView<'a> {
    sources: &'a [Source],
    now_ms: u64,
}

impl KeyStore for KeyView<'_> {
    fn remote(&self, index: usize) -> RemoteKeys<'_> {
        match self.sources.get(index) {
            Some(Source { keys: Some(k), .. }) => RemoteKeys::Ready(k),
            Some(s) if !s.failed() => RemoteKeys::Loading,
            _ => RemoteKeys::Failed,
        }
    }

    fn may_refetch(&self, index: usize) -> bool {
        self.sources
            .get(index)
            .is_some_and(|s| s.may_refetch(self.now_ms))
    }

    fn generation(&self) -> u64 {
        self.sources.iter().map(|s| s.version).sum()
    }
}

struct Root {
    id: u32,
    state: Option<Rc<RefCell<State>>>,
}

impl Root {
    fn new(id: u32) -> Self {
        Self { id, state: None }
    }
}

impl Context for Root {
    fn on_http_call_response(&mut self, token: u32, _headers: usize, body_size: usize, _: usize) {
        let Some(state) = &self.state else { return };
        let now = host::now_millis().unwrap_or(0);
        let result = match host::http_call_status() {
            Some(200) if body_size > crate::jwks::MAX_JWKS_BYTES => Err(format!(
                "body larger than {} bytes",
                crate::jwks::MAX_JWKS_BYTES
            )),
            Some(200) => host::http_call_body(body_size)
                .map_err(|e| format!("cannot read body (host status {})", e.0)),
            Some(code) => Err(format!("HTTP status {code}")),
            None => Err("no response (connection failure or timeout)".into()),
        };
        let (uri, outcome, metrics) = {
            let mut st = state.borrow_mut();
            let Some(index) = st.calls.remove(&token) else {
                return;
            };
            let config = Rc::clone(&st.config);
            let Some((spec, source)) = config.remotes.get(index).zip(st.sources.get_mut(index))
            else {
                return;
            };
            let outcome = source.complete(
                spec,
                &mut host::Shared,
                now,
                result.as_ref().map(Vec::as_slice).map_err(Clone::clone),
            );
            (spec.uri.clone(), outcome, st.metrics)
        };
        match outcome {
            Outcome::Published { keys } => {
                Metrics::bump(metrics.fetch_success);
                host::log(
                    LogLevel::Info,
                    &format!("jwks {uri}: fetched {keys} key(s)"),
                );
            }
            Outcome::Failed {
                reason,
                retry_in_ms,
            } => {
                Metrics::bump(metrics.fetch_failed);
                host::log(
                    LogLevel::Warn,
                    &format!("jwks {uri}: fetch failed: {reason}; retrying in {retry_in_ms} ms"),
                );
            }
        }
        pump(self.id, state, now);
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        let bytes = match host::plugin_config(plugin_configuration_size) {
            Ok(b) => b,
            Err(e) => {
                host::log(
                    LogLevel::Error,
                    &format!("cannot read pluginConfig (host status {})", e.0),
                );
                return false;
            }
        };
        let mut cfg = match config::load(&bytes) {
            Ok(cfg) => cfg,
            Err(e) => {
                host::log(LogLevel::Error, &e.to_string());
                return false;
            }
        };
        for w in &cfg.warnings {
            host::log(LogLevel::Warn, w);
        }
        if cfg.peer.needs_workload() {
            let workload = node_workload(&cfg.peer.selector_keys());
            cfg.peer.resolve(&workload);
            host::log(
                LogLevel::Info,
                &format!(
                    "peer authentication for namespace {:?} labels {:?}: {:?}, ports {:?}",
                    workload.namespace,
                    workload.labels,
                    cfg.peer.policy.mode,
                    cfg.peer.policy.ports
                ),
            );
        }
        host::log(
            LogLevel::Info,
            &format!(
                "configured {} JWT rule(s), {} remote JWKS",
                cfg.rules.len(),
                cfg.remotes.len()
            ),
        );
        let host_signatures =
            cfg.signature_verifier != SignatureVerifier::Wasm && host_verifier_works();
        if cfg.signature_verifier == SignatureVerifier::Host && !host_signatures {
            host::log(
                LogLevel::Error,
                "invalid pluginConfig at signatureVerifier: \"host\", but this host has no working verify_signature",
            );
            return false;
        }
        host::log(
            LogLevel::Info,
            if host_signatures {
                "RS256/384/512 and ES256/384 signatures checked by the host (verify_signature)"
            } else {
                "signatures checked in the module"
            },
        );
        let has_remotes = !cfg.remotes.is_empty();
        let metrics = Metrics::define();
        metrics.record_memory();
        let state = Rc::new(RefCell::new(State {
            sources: cfg.remotes.iter().map(|_| Source::default()).collect(),
            cache: TokenCache::new(cfg.jwt_cache_size),
            config: Rc::new(cfg),
            waiters: Vec::new(),
            calls: HashMap::new(),
            metrics,
            tick_ms: 0,
            host_signatures,
            requests: 0,
        }));
        if has_remotes {
            kick(&state);
        }
        self.state = Some(state);
        true
    }

    fn on_tick(&mut self) {
        if let Some(state) = &self.state {
            pump(self.id, state, host::now_millis().unwrap_or(0));
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Http {
            id: context_id,
            state: self.state.clone(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

fn kick(state: &Rc<RefCell<State>>) {
    host::set_tick_period_ms(TICK_NOW_MS);
    state.borrow_mut().tick_ms = TICK_NOW_MS;
}

/// This proxy's workload as istio-agent describes it in node metadata; only the label keys that
/// some policy selects on are read.
fn node_workload(label_keys: &[&str]) -> Workload {
    let node_string = |path: &[&str]| -> Option<String> {
        let xds: Vec<&str> = ["xds"].iter().chain(path).copied().collect();
        host::property(&xds)
            .or_else(|| host::property(path))
            .and_then(|b| String::from_utf8(b).ok())
    };
    Workload {
        namespace: node_string(&["node", "metadata", "NAMESPACE"]).unwrap_or_default(),
        labels: label_keys
            .iter()
            .filter_map(|k| {
                Some((
                    k.to_string(),
                    node_string(&["node", "metadata", "LABELS", k])?,
                ))
            })
            .collect(),
    }
}

fn connection() -> Connection {
    Connection {
        mtls: host::property(&["connection", "mtls"]).is_some_and(|b| crate::wire::decode_bool(&b)),
        port: host::property(&["destination", "port"])
            .and_then(|b| crate::wire::decode_int(&b))
            .and_then(|p| u32::try_from(p).ok()),
        uri_san: host::property(&["connection", "uri_san_peer_certificate"])
            .and_then(|b| String::from_utf8(b).ok())
            .filter(|s| !s.is_empty()),
    }
}

/// Runs in root-context callbacks only. Starts the fetches this worker won, resumes the waiters that can go on, and sets the tick.
fn pump(root_id: u32, state: &Rc<RefCell<State>>, now_ms: u64) {
    let to_fetch: Vec<usize> = {
        let mut st = state.borrow_mut();
        let config = Rc::clone(&st.config);
        let mut due = Vec::new();
        for (i, (spec, src)) in config.remotes.iter().zip(st.sources.iter_mut()).enumerate() {
            if src.poll(spec, &mut host::Shared, now_ms) == Poll::Fetch {
                due.push(i);
            }
        }
        due
    };
    for index in to_fetch {
        dispatch_fetch(state, index, now_ms);
    }
    resume_ready(root_id, state, now_ms);

    let (wanted, current) = {
        let st = state.borrow();
        let busy = !st.waiters.is_empty() || st.sources.iter().any(|s| s.keys.is_none());
        (if busy { TICK_BUSY_MS } else { TICK_IDLE_MS }, st.tick_ms)
    };
    if wanted != current {
        host::set_tick_period_ms(wanted);
        state.borrow_mut().tick_ms = wanted;
    }
}

fn dispatch_fetch(state: &Rc<RefCell<State>>, index: usize, now_ms: u64) {
    let Some(spec) = state.borrow().config.remotes.get(index).cloned() else {
        return;
    };
    let headers = [
        (":method", "GET"),
        (":path", spec.path.as_str()),
        (":authority", spec.authority.as_str()),
        ("accept", "application/json"),
    ];
    match host::dispatch_http_call(&spec.cluster, &headers, spec.timeout_ms) {
        Ok(token) => {
            host::log(
                LogLevel::Debug,
                &format!(
                    "jwks {}: fetching through cluster {:?}",
                    spec.uri, spec.cluster
                ),
            );
            state.borrow_mut().calls.insert(token, index);
        }
        Err(e) => {
            let metrics = {
                let mut st = state.borrow_mut();
                if let Some(src) = st.sources.get_mut(index) {
                    src.complete(
                        &spec,
                        &mut host::Shared,
                        now_ms,
                        Err(format!(
                            "cannot call cluster {:?} (host status {})",
                            spec.cluster, e.0
                        )),
                    );
                }
                st.metrics
            };
            Metrics::bump(metrics.fetch_failed);
            host::log(
                LogLevel::Warn,
                &format!(
                    "jwks {}: cannot call cluster {:?} (host status {}); is the cluster defined?",
                    spec.uri, spec.cluster, e.0
                ),
            );
        }
    }
}

/// Resumes, exactly once each, the waiters whose keys arrived, whose fetch ended, or whose
/// deadline passed.
fn resume_ready(root_id: u32, state: &Rc<RefCell<State>>, now_ms: u64) {
    let ready: Vec<Waiter> = {
        let mut st = state.borrow_mut();
        let (ready, waiting): (Vec<Waiter>, Vec<Waiter>) =
            std::mem::take(&mut st.waiters).into_iter().partition(|w| {
                st.sources
                    .get(w.remote)
                    .is_none_or(|s| s.ready(&w.ticket, now_ms))
            });
        st.waiters = waiting;
        ready
    };
    if ready.is_empty() {
        return;
    }
    for w in ready {
        if host::set_effective_context(w.context_id).is_err() {
            continue;
        }
        // Resumed requests never wait again.
        let verdict = match state.borrow_mut().decide(&w.request, now_ms) {
            Verdict::Wait { refetch: true, .. } => Verdict::Deny(AuthError::NoMatchingKey),
            Verdict::Wait { .. } => Verdict::Deny(AuthError::JwksFetchFailed),
            v => v,
        };
        let metrics = state.borrow().metrics;
        if apply(verdict, &w.request, metrics) == Action::Continue {
            let _ = host::resume_request();
        }
    }
    let _ = host::set_effective_context(root_id);
}

/// Applies a final verdict to the current request; `Continue` when it may go on.
fn apply(verdict: Verdict, req: &Request, metrics: Metrics) -> Action {
    match verdict {
        Verdict::Allow(fwd) => {
            let applied = fwd
                .remove
                .iter()
                .try_for_each(|h| host::remove_request_header(h))
                .and_then(|()| {
                    fwd.set
                        .iter()
                        .try_for_each(|(k, v)| host::set_request_header(k, v))
                });
            match applied {
                Ok(()) => {
                    Metrics::bump(metrics.allowed);
                    Action::Continue
                }
                // A spoofed output header that could not be removed must not reach the upstream.
                Err(_) => deny(req, AuthError::Internal, metrics),
            }
        }
        Verdict::Deny(e) => deny(req, e, metrics),
        Verdict::Wait { .. } => deny(req, AuthError::Internal, metrics),
    }
}

fn deny(req: &Request, error: AuthError, metrics: Metrics) -> Action {
    Metrics::bump(metrics.denied);
    let d = Denial::new(error, &req.realm());
    host::log(
        LogLevel::Debug,
        &format!(
            "{} {}: {}",
            d.status,
            crate::paths::strip_query(req.path()),
            d.body
        ),
    );
    let headers: Vec<(&str, &str)> = d.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    if host::send_local_response(d.status, &headers, d.body.as_bytes()).is_err() {
        host::log(LogLevel::Error, "could not send the local reply");
    }
    Action::Pause
}

struct Http {
    id: u32,
    state: Option<Rc<RefCell<State>>>,
}

impl Context for Http {}

impl Drop for Http {
    fn drop(&mut self) {
        // A request that goes away while waiting leaves the waiters.
        if let Some(state) = &self.state {
            if let Ok(mut st) = state.try_borrow_mut() {
                st.waiters.retain(|w| w.context_id != self.id);
            }
        }
    }
}

impl HttpContext for Http {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let Some(state) = self.state.clone() else {
            return deny(&Request::default(), AuthError::Internal, Metrics::default());
        };
        let metrics = state.borrow().metrics;
        let (mut req, now_ms) = match (host::request_headers(), host::now_millis()) {
            (Ok(r), Ok(now)) => (r, now),
            _ => return deny(&Request::default(), AuthError::Internal, metrics),
        };
        if state.borrow().config.peer.needs_connection() {
            req = req.with_connection(connection());
        }
        let verdict = {
            let mut st = state.borrow_mut();
            st.requests = st.requests.wrapping_add(1);
            if st.requests % 4096 == 0 {
                st.metrics.record_memory();
            }
            // The only host call made while the state is borrowed is verify_signature, which
            // never calls back into the VM.
            st.decide(&req, now_ms)
        };
        let Verdict::Wait { remote, refetch } = verdict else {
            return apply(verdict, &req, metrics);
        };
        {
            let mut st = state.borrow_mut();
            let config = Rc::clone(&st.config);
            let (Some(spec), Some(src)) = (config.remotes.get(remote), st.sources.get_mut(remote))
            else {
                drop(st);
                return deny(&req, AuthError::Internal, metrics);
            };
            if refetch {
                src.want_refetch = true;
            }
            let ticket = src.ticket(spec, refetch, now_ms);
            st.waiters.push(Waiter {
                context_id: self.id,
                remote,
                ticket,
                request: req,
            });
        }
        kick(&state);
        Action::Pause
    }
}
