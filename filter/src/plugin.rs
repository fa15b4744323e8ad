//! The module's proxy-wasm entry points. Each root context (one per plugin) compiles its
//! configuration once and owns the shared state: remote key sets, their fetches, the requests
//! waiting for them, the token cache and the counters. A request asks the pure core for a verdict
//! and applies it, or is parked with its root.
//!
//! Only the callbacks this filter needs are exported: Envoy enters each exported one on every
//! request, at about 0.2 µs per entry (README, Performance).
//!
//! No `RefCell` borrow is ever held across a host call that may call back into the VM.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use crate::authn::{self, Env, KeyStore, RemoteKeys, Verdict};
use crate::cache::TokenCache;
use crate::config::{self, Config, SignatureVerifier};
use crate::error::{AuthError, Denial};
use crate::fetcher::{Outcome, Poll, Source, Ticket};
use crate::host::{self, LogLevel};
use crate::hostcrypto;
use crate::jwks::Jwk;
use crate::jws::{self, Alg, InModule, Verifier};
use crate::peer::Workload;
use crate::request::{Connection, Request};

const TICK_IDLE_MS: u32 = 1_000;
/// While requests wait or keys are missing, other workers' fetch results are picked up this fast.
const TICK_BUSY_MS: u32 = 50;
/// A callout's answer goes to the context that made it, and only roots take answers, so a request
/// that needs a fetch asks its root for a tick now.
const TICK_NOW_MS: u32 = 1;
/// Streams between creation and their request headers (normally one at a time).
const MAX_NEW_STREAMS: usize = 1024;

#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
enum Action {
    Continue = 0,
    Pause = 1,
}

#[derive(Default)]
struct Vm {
    roots: Vec<(u32, Rc<RefCell<State>>)>,
    new_streams: Vec<(u32, u32)>,
}

thread_local! {
    static VM: RefCell<Vm> = RefCell::default();
}

fn root_state(root_id: u32) -> Option<Rc<RefCell<State>>> {
    VM.with_borrow(|vm| {
        vm.roots
            .iter()
            .find(|(id, _)| *id == root_id)
            .map(|(_, st)| Rc::clone(st))
    })
}

#[cfg(target_os = "wasi")]
extern "C" {
    fn __wasm_call_ctors();
}

#[no_mangle]
pub extern "C" fn _initialize() {
    // SAFETY: run once by the host before any other export, as wasi reactors require.
    #[cfg(target_os = "wasi")]
    unsafe {
        __wasm_call_ctors();
    }
    std::panic::set_hook(Box::new(|info| {
        host::log(LogLevel::Critical, &info.to_string());
    }));
}

#[no_mangle]
pub extern "C" fn proxy_abi_version_0_2_1() {}

#[no_mangle]
pub extern "C" fn proxy_on_context_create(context_id: u32, root_context_id: u32) {
    if root_context_id == 0 {
        return;
    }
    VM.with_borrow_mut(|vm| {
        if vm.new_streams.len() >= MAX_NEW_STREAMS {
            vm.new_streams.remove(0);
        }
        vm.new_streams.push((context_id, root_context_id));
    });
}

#[no_mangle]
pub extern "C" fn proxy_on_configure(root_id: u32, plugin_configuration_size: usize) -> u32 {
    let Some(state) = configure(plugin_configuration_size) else {
        return 0;
    };
    let previous = VM.with_borrow_mut(|vm| {
        let previous = vm
            .roots
            .iter()
            .position(|(id, _)| *id == root_id)
            .map(|i| vm.roots.swap_remove(i).1);
        vm.roots.push((root_id, Rc::clone(&state)));
        previous
    });
    // A root configured again keeps its paused requests: they are decided under the new
    // configuration, at the latest at their deadline.
    if let Some(previous) = previous {
        flush_counters(&previous);
        let waiters = std::mem::take(&mut previous.borrow_mut().waiters);
        if !waiters.is_empty() {
            state.borrow_mut().waiters.extend(waiters);
            kick(&state);
        }
    }
    1
}

#[no_mangle]
pub extern "C" fn proxy_on_tick(root_id: u32) {
    if let Some(state) = root_state(root_id) {
        let now = host::now_millis().unwrap_or(0);
        pump(root_id, &state, now);
        flush_counters(&state);
    }
}

/// A root goes away when its plugin is removed; a stream when it ends.
#[no_mangle]
pub extern "C" fn proxy_on_done(context_id: u32) -> u32 {
    let (root, states) = VM.with_borrow_mut(|vm| {
        vm.new_streams.retain(|(id, _)| *id != context_id);
        let root = vm
            .roots
            .iter()
            .position(|(id, _)| *id == context_id)
            .map(|i| vm.roots.swap_remove(i).1);
        // Only roots with paused requests (rarely any): nothing is allocated on the usual path.
        let states: Vec<_> = if root.is_none() {
            vm.roots
                .iter()
                .filter(|(_, st)| st.try_borrow().is_ok_and(|st| !st.waiters.is_empty()))
                .map(|(_, st)| Rc::clone(st))
                .collect()
        } else {
            Vec::new()
        };
        (root, states)
    });
    if let Some(state) = root {
        flush_counters(&state);
        host::log(
            LogLevel::Debug,
            &format!("plugin root {context_id} done; its keys, cache and counts are freed"),
        );
    }
    // A request that goes away while waiting leaves the waiters. When the state is borrowed
    // (a callback re-entered), its resume fails harmlessly instead: the context no longer exists.
    for state in states {
        if let Ok(mut st) = state.try_borrow_mut() {
            st.waiters.retain(|w| w.context_id != context_id);
        }
    }
    1
}

#[no_mangle]
pub extern "C" fn proxy_on_request_headers(context_id: u32, _headers: usize, _eos: u32) -> u32 {
    let root = VM.with_borrow_mut(|vm| {
        let i = vm
            .new_streams
            .iter()
            .position(|(id, _)| *id == context_id)?;
        let (_, root_id) = vm.new_streams.swap_remove(i);
        vm.roots
            .iter()
            .find(|(id, _)| *id == root_id)
            .map(|(_, st)| Rc::clone(st))
    });
    let action = match root {
        Some(state) => on_request_headers(context_id, &state),
        None => deny(&Request::default(), AuthError::Internal),
    };
    action as u32
}

#[no_mangle]
pub extern "C" fn proxy_on_http_call_response(
    root_id: u32,
    token: u32,
    _headers: usize,
    body_size: usize,
    _trailers: usize,
) {
    if let Some(state) = root_state(root_id) {
        on_http_call_response(root_id, &state, token, body_size);
    }
}

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

/// Per-request counts, added to the host's counters on each tick (at most a second late) rather
/// than with a host call per request.
#[derive(Default)]
struct Counts {
    allowed: u64,
    denied: u64,
    cache_hit: u64,
    cache_miss: u64,
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

    fn flush(self, counts: &Counts, served: bool) {
        Self::add(self.allowed, counts.allowed);
        Self::add(self.denied, counts.denied);
        Self::add(self.cache_hit, counts.cache_hit);
        Self::add(self.cache_miss, counts.cache_miss);
        // The main thread's VM serves no requests; its memory would overwrite the workers'.
        if served {
            self.record_memory();
        }
    }
}

fn flush_counters(state: &Rc<RefCell<State>>) {
    let (metrics, counts, served) = {
        let mut st = state.borrow_mut();
        (st.metrics, std::mem::take(&mut st.counts), st.served)
    };
    metrics.flush(&counts, served);
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
    counts: Counts,
    /// This VM has decided requests (the main thread's never does).
    served: bool,
    tick_ms: u32,
    cache: TokenCache,
    host_signatures: bool,
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
        self.counts.cache_hit += self.cache.hits - hits;
        self.counts.cache_miss += self.cache.misses - misses;
        verdict
    }

    fn count(&mut self, action: Action) {
        self.served = true;
        match action {
            Action::Continue => self.counts.allowed += 1,
            Action::Pause => self.counts.denied += 1,
        }
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

/// Compiles this plugin's configuration; `None` (the plugin refuses to start) when it is invalid.
fn configure(plugin_configuration_size: usize) -> Option<Rc<RefCell<State>>> {
    let bytes = match host::plugin_config(plugin_configuration_size) {
        Ok(b) => b,
        Err(e) => {
            host::log(
                LogLevel::Error,
                &format!("cannot read pluginConfig (host status {})", e.0),
            );
            return None;
        }
    };
    let mut cfg = match config::load(&bytes) {
        Ok(cfg) => cfg,
        Err(e) => {
            host::log(LogLevel::Error, &e.to_string());
            return None;
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
                workload.namespace, workload.labels, cfg.peer.policy.mode, cfg.peer.policy.ports
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
        return None;
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
    let state = Rc::new(RefCell::new(State {
        sources: cfg.remotes.iter().map(|_| Source::default()).collect(),
        cache: TokenCache::new(cfg.jwt_cache_size),
        config: Rc::new(cfg),
        waiters: Vec::new(),
        calls: HashMap::new(),
        metrics,
        tick_ms: 0,
        host_signatures,
        counts: Counts::default(),
        served: false,
    }));
    if has_remotes {
        kick(&state);
    } else {
        host::set_tick_period_ms(TICK_IDLE_MS);
        state.borrow_mut().tick_ms = TICK_IDLE_MS;
    }
    Some(state)
}

fn on_http_call_response(root_id: u32, state: &Rc<RefCell<State>>, token: u32, body_size: usize) {
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
        let Some((spec, source)) = config.remotes.get(index).zip(st.sources.get_mut(index)) else {
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
    pump(root_id, state, now);
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
        let action = apply(verdict, &w.request);
        state.borrow_mut().count(action);
        if action == Action::Continue {
            let _ = host::resume_request();
        }
    }
    let _ = host::set_effective_context(root_id);
}

/// Applies a final verdict to the current request; `Continue` when it may go on.
fn apply(verdict: Verdict, req: &Request) -> Action {
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
                Ok(()) => Action::Continue,
                // A spoofed output header that could not be removed must not reach the upstream.
                Err(_) => deny(req, AuthError::Internal),
            }
        }
        Verdict::Deny(e) => deny(req, e),
        Verdict::Wait { .. } => deny(req, AuthError::Internal),
    }
}

/// Answers the current request with the error's local reply; always `Pause`.
fn deny(req: &Request, error: AuthError) -> Action {
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

fn on_request_headers(context_id: u32, state: &Rc<RefCell<State>>) -> Action {
    let (mut req, now_ms) = match (host::request_headers(), host::now_millis()) {
        (Ok(r), Ok(now)) => (r, now),
        _ => {
            state.borrow_mut().count(Action::Pause);
            return deny(&Request::default(), AuthError::Internal);
        }
    };
    if state.borrow().config.peer.needs_connection() {
        req = req.with_connection(connection());
    }
    // The only host call made while the state is borrowed is verify_signature, which never calls
    // back into the VM.
    let verdict = state.borrow_mut().decide(&req, now_ms);
    let Verdict::Wait { remote, refetch } = verdict else {
        let action = apply(verdict, &req);
        state.borrow_mut().count(action);
        return action;
    };
    {
        let mut st = state.borrow_mut();
        let config = Rc::clone(&st.config);
        let (Some(spec), Some(src)) = (config.remotes.get(remote), st.sources.get_mut(remote))
        else {
            st.count(Action::Pause);
            drop(st);
            return deny(&req, AuthError::Internal);
        };
        if refetch {
            src.want_refetch = true;
        }
        let ticket = src.ticket(spec, refetch, now_ms);
        st.waiters.push(Waiter {
            context_id,
            remote,
            ticket,
            request: req,
        });
    }
    kick(state);
    Action::Pause
}
