//! The runtime: the contexts the proxy creates and calls back, in plain Rust over the `Host` trait
//! (the ABI bindings implement it; unit tests fake it). Each root context (one per plugin)
//! compiles its configuration once and owns the shared state: remote key sets, their fetches, the
//! requests waiting for them, the token cache and the counters. A request asks the core for a
//! verdict and applies it, or is parked with its root.
//!
//! No `RefCell` borrow is held across a host call that may call back into the VM: a local reply
//! or a resumed request can end a stream synchronously, and the proxy then calls `on_done`.

mod host;
mod metrics;
mod network;
mod root;
#[cfg(test)]
mod tests;

use std::cell::RefCell;
use std::rc::Rc;

pub use host::{Host, HostError, MetricKind};

use crate::authn::Verdict;
use crate::config::{self, Config, SignatureVerifier as Configured};
use crate::crypto::policy::{host_verifier_works, Policy};
use crate::error::{AuthError, ConfigError, Denial, DenialBody};
use crate::jwt::jwks::{self, MAX_JWKS_BYTES};
use crate::peer::{Mode, Workload};
use crate::remote::discovery::{self, KeysTarget};
use crate::remote::fetch::{Outcome, Poll, Source};
use crate::remote::RemoteJwks;
use crate::request::{strip_query, wire, Connection, Request};
use metrics::{Census, Metrics};
use root::{verify_signature_call, Call, Decision, Root, Shared, Waiter};

const TICK_IDLE_MS: u32 = 1_000;
/// While requests wait or keys are missing, other workers' fetch results are picked up this fast.
const TICK_BUSY_MS: u32 = 50;
/// A callout's answer goes to the context that made it, and only roots take answers, so a request
/// that needs a fetch asks its root for a tick now.
const TICK_NOW_MS: u32 = 1;
/// Streams between creation and their request headers (normally one at a time).
const MAX_NEW_STREAMS: usize = 1024;
/// The root id (Istio's WasmPlugin `pluginName`) that loads the connection-level plugin.
pub const NETWORK_ROOT_ID: &str = "network";

/// What the proxy does with the request after `on_request_headers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Action {
    Continue = 0,
    Pause = 1,
}

#[derive(Default)]
struct Contexts {
    roots: Vec<(u32, Rc<RefCell<Root>>)>,
    /// (stream, its root), from creation until the request headers arrive.
    new_streams: Vec<(u32, u32)>,
}

pub struct Runtime<H> {
    host: H,
    contexts: RefCell<Contexts>,
}

impl<H: Host> Runtime<H> {
    pub fn new(host: H) -> Self {
        Self {
            host,
            contexts: RefCell::default(),
        }
    }

    pub fn host(&self) -> &H {
        &self.host
    }

    fn root(&self, root_id: u32) -> Option<Rc<RefCell<Root>>> {
        self.contexts
            .borrow()
            .roots
            .iter()
            .find(|(id, _)| *id == root_id)
            .map(|(_, root)| Rc::clone(root))
    }

    pub fn on_context_create(&self, context_id: u32, root_context_id: u32) {
        if root_context_id == 0 {
            return;
        }
        let mut contexts = self.contexts.borrow_mut();
        if contexts.new_streams.len() >= MAX_NEW_STREAMS {
            contexts.new_streams.remove(0);
        }
        contexts.new_streams.push((context_id, root_context_id));
    }

    /// Compiles the plugin's configuration; false (the plugin refuses to start) when it is invalid.
    pub fn on_configure(&self, root_id: u32, config_size: usize) -> bool {
        log::set_max_level(self.host.log_level());
        let root = match self.configure(config_size) {
            Ok(root) => Rc::new(RefCell::new(root)),
            Err(e) => {
                log::error!("{e}");
                return false;
            }
        };
        let previous = {
            let mut contexts = self.contexts.borrow_mut();
            let previous = contexts
                .roots
                .iter()
                .position(|(id, _)| *id == root_id)
                .map(|i| contexts.roots.swap_remove(i).1);
            contexts.roots.push((root_id, Rc::clone(&root)));
            previous
        };
        for spec in &root.borrow().config.remotes {
            Source::ensure_record(spec, &mut Shared(&self.host));
        }
        let has_remotes = !root.borrow().config.remotes.is_empty();
        if has_remotes {
            self.kick(&root);
        } else {
            self.set_tick(&root, TICK_IDLE_MS);
        }
        // A root configured again keeps its paused requests and connections: they are decided
        // under the new configuration, at the latest at their deadline.
        if let Some(previous) = previous {
            self.flush_counters(&previous);
            let (waiters, handshakes) = {
                let mut p = previous.borrow_mut();
                (
                    std::mem::take(&mut p.waiters),
                    std::mem::take(&mut p.handshakes),
                )
            };
            if !waiters.is_empty() || !handshakes.is_empty() {
                let mut r = root.borrow_mut();
                r.waiters.extend(waiters);
                r.handshakes.extend(handshakes);
                drop(r);
                self.kick(&root);
            }
        }
        true
    }

    pub fn on_tick(&self, root_id: u32) {
        log::set_max_level(self.host.log_level());
        if let Some(root) = self.root(root_id) {
            let now = self.host.now_ms().unwrap_or(0);
            self.poll_handshakes(root_id, &root, now);
            self.pump(root_id, &root, now);
            self.flush_counters(&root);
        }
    }

    /// A root goes away when its plugin is removed; a stream when it ends.
    pub fn on_done(&self, context_id: u32) -> bool {
        let (root, waiting) = {
            let mut contexts = self.contexts.borrow_mut();
            contexts.new_streams.retain(|(id, _)| *id != context_id);
            let root = contexts
                .roots
                .iter()
                .position(|(id, _)| *id == context_id)
                .map(|i| contexts.roots.swap_remove(i).1);
            // Only roots with paused requests (rarely any): nothing is allocated on the usual path.
            let waiting: Vec<_> = if root.is_none() {
                contexts
                    .roots
                    .iter()
                    .filter(|(_, r)| {
                        r.try_borrow()
                            .is_ok_and(|r| !r.waiters.is_empty() || !r.handshakes.is_empty())
                    })
                    .map(|(_, r)| Rc::clone(r))
                    .collect()
            } else {
                Vec::new()
            };
            (root, waiting)
        };
        if let Some(root) = root {
            self.close_paused_connections(&root);
            // Its share of the cache gauges goes with it.
            root.borrow_mut().cache.clear();
            self.flush_counters(&root);
            log::debug!("plugin root {context_id} done; its keys, cache and counts are freed");
        }
        // A request that goes away while waiting leaves the waiters. When the root is borrowed
        // (a callback re-entered), its resume fails harmlessly instead: the context is gone.
        for root in waiting {
            if let Ok(mut r) = root.try_borrow_mut() {
                r.waiters.retain(|w| w.context_id != context_id);
                r.handshakes.remove(&context_id);
            }
        }
        true
    }

    /// The root of a stream the proxy created, once: it leaves the new streams.
    fn take_new_stream(&self, context_id: u32) -> Option<(u32, Rc<RefCell<Root>>)> {
        let mut contexts = self.contexts.borrow_mut();
        contexts
            .new_streams
            .iter()
            .position(|(id, _)| *id == context_id)
            .map(|i| contexts.new_streams.swap_remove(i).1)
            .and_then(|root_id| {
                contexts
                    .roots
                    .iter()
                    .find(|(id, _)| *id == root_id)
                    .map(|(id, r)| (*id, Rc::clone(r)))
            })
    }

    pub fn on_request_headers(&self, context_id: u32) -> Action {
        match self.take_new_stream(context_id).map(|(_, root)| root) {
            Some(root) => self.request_headers(context_id, &root),
            None => {
                self.deny(&Request::default(), AuthError::Internal, DenialBody::Text);
                Action::Pause
            }
        }
    }

    pub fn on_http_call_response(&self, root_id: u32, token: u32, body_size: usize) {
        if let Some(root) = self.root(root_id) {
            self.http_call_response(root_id, &root, token, body_size);
        }
    }

    fn configure(&self, config_size: usize) -> Result<Root, ConfigError> {
        let bytes = self.host.plugin_config(config_size).map_err(|e| {
            ConfigError::here(format!("cannot read pluginConfig (host status {})", e.0))
        })?;
        let raw = config::parse(&bytes)?;
        let network = self
            .host
            .property(&["plugin_root_id"])
            .is_some_and(|id| id == NETWORK_ROOT_ID.as_bytes());
        if network {
            config::check_network(&raw)?;
        }
        let node = raw.node_label_keys().map(|keys| self.node_workload(&keys));
        let cfg = config::compile(&raw, node.as_ref().unwrap_or(&Workload::default()))?;
        for w in &cfg.warnings {
            log::warn!("{w}");
        }
        if let Some(workload) = node.as_ref().filter(|w| w.gateway) {
            log::info!(
                "a gateway (namespace {:?}): PeerAuthentications apply to sidecars only",
                workload.namespace
            );
        } else if let Some(workload) = &node {
            log::info!(
                "peer authentication for namespace {:?} labels {:?}: {:?}, ports {:?}",
                workload.namespace,
                workload.labels,
                cfg.peer.policy.mode,
                cfg.peer.policy.ports
            );
        }
        log::info!(
            "configured {} JWT rule(s), {} remote JWKS",
            cfg.rules.len(),
            cfg.remotes.len()
        );
        let host_works = cfg.signature_verifier != Configured::Wasm
            && host_verifier_works(verify_signature_call(&self.host));
        let verifier = match (cfg.signature_verifier, host_works) {
            (Configured::Host, true) => Policy::Host,
            (Configured::Host, false) => {
                return Err(ConfigError::new(
                    "signatureVerifier",
                    "\"host\", but this host has no working verify_signature",
                ))
            }
            (Configured::Auto, true) => Policy::HostOrModule,
            (Configured::Auto | Configured::Wasm, _) => Policy::Module,
        };
        log::info!(
            "{}",
            match verifier {
                Policy::Host => "RS256/384/512 and ES256/384/512 signatures checked by the host (verify_signature) only",
                Policy::HostOrModule => "RS256/384/512 and ES256/384/512 signatures checked by the host (verify_signature); by the module should a host call fail",
                Policy::Module => "signatures checked in the module",
            }
        );
        if network {
            log::info!("loaded as the connection-level (NETWORK) plugin: peer authentication only");
        }
        let metrics = Metrics::define(&self.host);
        Metrics::add(&self.host, metrics.keys_cut, cfg.keys_cut);
        Ok(Root::new(
            cfg,
            verifier,
            metrics,
            Census::new(&self.host),
            self.jitter_seed(),
        ))
    }

    /// Differs between proxies (node id) and plugins, and between configurations of one.
    fn jitter_seed(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.host
            .property(&["xds", "node", "id"])
            .or_else(|| self.host.property(&["node", "id"]))
            .hash(&mut h);
        self.host.property(&["plugin_name"]).hash(&mut h);
        self.host.now_ms().unwrap_or(0).hash(&mut h);
        h.finish()
    }

    /// This proxy's workload as istio-agent describes it in node metadata; only the label keys
    /// that some policy selects on are read.
    fn node_workload(&self, label_keys: &[&str]) -> Workload {
        let node_string = |path: &[&str]| -> Option<String> {
            let xds: Vec<&str> = ["xds"].iter().chain(path).copied().collect();
            self.host
                .property(&xds)
                .or_else(|| self.host.property(path))
                .and_then(|b| String::from_utf8(b).ok())
        };
        Workload {
            gateway: node_string(&["node", "id"]).is_some_and(|id| id.starts_with("router~")),
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

    /// `with_tls`: also whether the connection is TLS (a connection-level plugin needs it).
    fn connection(&self, with_tls: bool) -> Connection {
        let host = &self.host;
        Connection {
            tls: with_tls && host.property(&["connection", "tls_version"]).is_some(),
            mtls: host
                .property(&["connection", "mtls"])
                .is_some_and(|b| wire::decode_bool(&b)),
            port: host
                .property(&["destination", "port"])
                .and_then(|b| wire::decode_int(&b))
                .and_then(|p| u32::try_from(p).ok()),
            uri_san: host
                .property(&["connection", "uri_san_peer_certificate"])
                .and_then(|b| String::from_utf8(b).ok())
                .filter(|s| !s.is_empty()),
        }
    }

    /// The current stream's request, with its connection when the config needs it.
    fn current_request(&self, root: &Rc<RefCell<Root>>) -> Option<Request> {
        let req = Request::from_wire(self.host.request_headers().ok()?)?;
        Some(if root.borrow().config.peer.needs_connection {
            req.with_connection(self.connection(false))
        } else {
            req
        })
    }

    fn request_headers(&self, context_id: u32, root: &Rc<RefCell<Root>>) -> Action {
        let cfg = Rc::clone(&root.borrow().config);
        let (Some(req), Ok(now_ms)) = (self.current_request(root), self.host.now_ms()) else {
            let d = self.deny(&Request::default(), AuthError::Internal, cfg.denial_body);
            root.borrow_mut().count(d);
            return Action::Pause;
        };
        if cfg.peer.census {
            self.census(root, &cfg, req.connection(), now_ms);
        }
        // The only host call made while the root is borrowed is verify_signature, which never
        // calls back into the VM.
        let verdict = root.borrow_mut().decide(&self.host, &req, now_ms);
        let Verdict::Wait { remote, refetch } = verdict else {
            let decision = self.apply(verdict, &req, &cfg);
            root.borrow_mut().count(decision);
            return action(decision);
        };
        {
            let mut r = root.borrow_mut();
            let config = Rc::clone(&r.config);
            // Past the cap a request is answered as a failed fetch would answer it.
            let refused = if r.waiters.len() >= config.max_paused_requests {
                Some(if refetch {
                    AuthError::NoMatchingKey
                } else {
                    AuthError::JwksFetchFailed
                })
            } else {
                None
            };
            let found = config.remotes.get(remote).zip(r.sources.get_mut(remote));
            let (Some((spec, src)), None) = (found, refused) else {
                drop(r);
                let decision = self.refuse(&req, refused.unwrap_or(AuthError::Internal), &cfg);
                root.borrow_mut().count(decision);
                return action(decision);
            };
            if refetch {
                src.want_refetch = true;
            }
            let ticket = src.ticket(spec, refetch, now_ms);
            r.waiters.push(Waiter {
                context_id,
                remote,
                ticket,
            });
        }
        self.kick(root);
        Action::Pause
    }

    fn http_call_response(
        &self,
        root_id: u32,
        root: &Rc<RefCell<Root>>,
        token: u32,
        body_size: usize,
    ) {
        let now = self.host.now_ms().unwrap_or(0);
        let Some(call) = root.borrow_mut().calls.remove(&token) else {
            return;
        };
        let what = match &call {
            Call::Discovery { .. } => "discovery document",
            Call::Keys { .. } => "JWKS",
        };
        let result = match self.host.http_call_status() {
            Some(200) if body_size > MAX_JWKS_BYTES => {
                Err(format!("{what}: body larger than {MAX_JWKS_BYTES} bytes"))
            }
            Some(200) => self
                .host
                .http_call_body(body_size)
                .map_err(|e| format!("{what}: cannot read body (host status {})", e.0)),
            Some(code) => Err(format!("{what}: HTTP status {code}")),
            None => Err(format!(
                "{what}: no response (connection failure or timeout)"
            )),
        };
        let (index, result) = match call {
            Call::Keys { index, uri } => {
                log::debug!("jwks: answer from {uri}");
                (index, result)
            }
            Call::Discovery { index } => {
                let spec = root.borrow().config.remotes.get(index).cloned();
                let target = spec
                    .as_ref()
                    .ok_or_else(String::new)
                    .and_then(|spec| result.and_then(|doc| discovery::keys_target(spec, &doc)));
                match target {
                    Ok(target) => {
                        log::debug!(
                            "jwks {}: keys at {} (cluster {:?})",
                            spec.as_ref().map_or("", |s| s.uri.as_str()),
                            target.uri,
                            target.cluster
                        );
                        self.fetch_keys(root, index, &target, now);
                        return;
                    }
                    Err(reason) => (index, Err(reason)),
                }
            }
        };
        let (uri, outcome, metrics) = {
            let mut r = root.borrow_mut();
            let config = Rc::clone(&r.config);
            let Some((spec, source)) = config.remotes.get(index).zip(r.sources.get_mut(index))
            else {
                return;
            };
            let outcome = source.complete(
                spec,
                &mut Shared(&self.host),
                now,
                result.as_deref().map_err(Clone::clone),
            );
            (spec.uri.clone(), outcome, r.metrics)
        };
        match outcome {
            Outcome::Published { keys, cut_from } => {
                Metrics::bump(&self.host, metrics.fetch_success);
                log::info!("jwks {uri}: fetched {keys} key(s)");
                if let Some(n) = cut_from {
                    Metrics::bump(&self.host, metrics.keys_cut);
                    log::warn!("jwks {uri}: {}", jwks::cut_warning(n));
                }
            }
            Outcome::Failed {
                reason,
                retry_in_ms,
            } => {
                Metrics::bump(&self.host, metrics.fetch_failed);
                log::warn!("jwks {uri}: fetch failed: {reason}; retrying in {retry_in_ms} ms");
            }
        }
        self.pump(root_id, root, now);
    }

    fn set_tick(&self, root: &Rc<RefCell<Root>>, ms: u32) {
        self.host.set_tick_period_ms(ms);
        root.borrow_mut().tick_ms = ms;
    }

    fn kick(&self, root: &Rc<RefCell<Root>>) {
        self.set_tick(root, TICK_NOW_MS);
    }

    fn flush_counters(&self, root: &Rc<RefCell<Root>>) {
        let (metrics, counts, served, cache) = {
            let mut r = root.borrow_mut();
            r.census.flush(&self.host);
            let now = (r.cache.len() as i64, r.cache.bytes() as i64);
            let before = std::mem::replace(&mut r.cache_reported, now);
            let delta = (now.0 - before.0, now.1 - before.1);
            (r.metrics, std::mem::take(&mut r.counts), r.served, delta)
        };
        metrics.flush(&self.host, &counts, served, cache);
    }

    /// Runs in root-context callbacks only. Starts the fetches this worker won, resumes the
    /// waiters that can go on, and sets the tick.
    fn pump(&self, root_id: u32, root: &Rc<RefCell<Root>>, now_ms: u64) {
        let due: Vec<usize> = {
            let mut r = root.borrow_mut();
            let config = Rc::clone(&r.config);
            let mut due = Vec::new();
            for (i, (spec, src)) in config.remotes.iter().zip(r.sources.iter_mut()).enumerate() {
                if src.poll(spec, &mut Shared(&self.host), now_ms) == Poll::Fetch {
                    due.push(i);
                }
            }
            due
        };
        for index in due {
            self.fetch(root, index, now_ms);
        }
        self.resume_ready(root_id, root, now_ms);

        let (wanted, current) = {
            let r = root.borrow();
            let wanted = if !r.handshakes.is_empty() {
                network::TICK_HANDSHAKE_MS
            } else if r.busy() {
                TICK_BUSY_MS
            } else {
                TICK_IDLE_MS
            };
            (wanted, r.tick_ms)
        };
        if wanted != current {
            self.set_tick(root, wanted);
        }
    }

    /// Starts a fetch this worker won: the discovery document first, when the source has one.
    fn fetch(&self, root: &Rc<RefCell<Root>>, index: usize, now_ms: u64) {
        let Some(spec) = root.borrow().config.remotes.get(index).cloned() else {
            return;
        };
        let call = if spec.discovery {
            Call::Discovery { index }
        } else {
            Call::Keys {
                index,
                uri: spec.uri.clone(),
            }
        };
        let target = KeysTarget {
            uri: spec.uri.clone(),
            cluster: spec.cluster.clone(),
            authority: spec.authority.clone(),
            path: spec.path.clone(),
        };
        self.call(root, &spec, call, &target, now_ms);
    }

    fn fetch_keys(&self, root: &Rc<RefCell<Root>>, index: usize, target: &KeysTarget, now_ms: u64) {
        let Some(spec) = root.borrow().config.remotes.get(index).cloned() else {
            return;
        };
        let call = Call::Keys {
            index,
            uri: target.uri.clone(),
        };
        self.call(root, &spec, call, target, now_ms);
    }

    fn call(
        &self,
        root: &Rc<RefCell<Root>>,
        spec: &RemoteJwks,
        call: Call,
        target: &KeysTarget,
        now_ms: u64,
    ) {
        let headers = [
            (":method", "GET"),
            (":path", target.path.as_str()),
            (":authority", target.authority.as_str()),
            ("accept", "application/json"),
        ];
        match self
            .host
            .http_call(&target.cluster, &headers, spec.timeout_ms)
        {
            Ok(token) => {
                log::debug!(
                    "jwks {}: fetching {} through cluster {:?}",
                    spec.uri,
                    target.uri,
                    target.cluster
                );
                root.borrow_mut().calls.insert(token, call);
            }
            Err(e) => {
                let reason = format!(
                    "cannot call cluster {:?} (host status {})",
                    target.cluster, e.0
                );
                let index = match call {
                    Call::Discovery { index } | Call::Keys { index, .. } => index,
                };
                let metrics = {
                    let mut r = root.borrow_mut();
                    if let Some(src) = r.sources.get_mut(index) {
                        src.complete(spec, &mut Shared(&self.host), now_ms, Err(reason.clone()));
                    }
                    r.metrics
                };
                Metrics::bump(&self.host, metrics.fetch_failed);
                log::warn!("jwks {}: {reason}; is the cluster defined?", spec.uri);
            }
        }
    }

    /// Resumes, exactly once each, the waiters whose keys arrived, whose fetch ended, or whose
    /// deadline passed.
    fn resume_ready(&self, root_id: u32, root: &Rc<RefCell<Root>>, now_ms: u64) {
        let ready: Vec<Waiter> = {
            let mut r = root.borrow_mut();
            let (ready, waiting): (Vec<Waiter>, Vec<Waiter>) =
                std::mem::take(&mut r.waiters).into_iter().partition(|w| {
                    r.sources
                        .get(w.remote)
                        .is_none_or(|s| s.ready(&w.ticket, now_ms))
                });
            r.waiters = waiting;
            ready
        };
        if ready.is_empty() {
            return;
        }
        let cfg = Rc::clone(&root.borrow().config);
        for w in ready {
            if self.host.set_effective_context(w.context_id).is_err() {
                continue;
            }
            let Some(req) = self.current_request(root) else {
                let d = self.deny(&Request::default(), AuthError::Internal, cfg.denial_body);
                root.borrow_mut().count(d);
                continue;
            };
            // Resumed requests never wait again.
            let verdict = match root.borrow_mut().decide(&self.host, &req, now_ms) {
                Verdict::Wait { refetch: true, .. } => Verdict::Deny(AuthError::NoMatchingKey),
                Verdict::Wait { .. } => Verdict::Deny(AuthError::JwksFetchFailed),
                v => v,
            };
            let decision = self.apply(verdict, &req, &cfg);
            root.borrow_mut().count(decision);
            if action(decision) == Action::Continue {
                let _ = self.host.resume_request();
            }
        }
        let _ = self.host.set_effective_context(root_id);
    }

    /// Counts a caller without mTLS on a PERMISSIVE port (the plaintext census); logs its address
    /// now and then.
    fn census(&self, root: &Rc<RefCell<Root>>, cfg: &Config, conn: &Connection, now_ms: u64) {
        if conn.mtls || cfg.peer.policy.for_port(conn.port) != Mode::Permissive {
            return;
        }
        let log_now = root
            .borrow_mut()
            .census
            .count(&self.host, conn.port, now_ms);
        if log_now && log::log_enabled!(log::Level::Info) {
            let peer = self
                .host
                .property(&["source", "address"])
                .and_then(|b| String::from_utf8(b).ok())
                .unwrap_or_default();
            log::info!(
                "plaintext census: {peer} called port {:?} without mTLS (PERMISSIVE); \
                 STRICT would refuse it",
                conn.port
            );
        }
    }

    /// Applies a final verdict to the current request.
    fn apply(&self, verdict: Verdict, req: &Request, cfg: &Config) -> Decision {
        match verdict {
            Verdict::Allow(fwd) => {
                let applied = fwd
                    .remove
                    .iter()
                    .try_for_each(|h| self.host.remove_request_header(h))
                    .and_then(|()| {
                        fwd.writes().try_for_each(|(k, v, copy)| {
                            if copy {
                                self.host.add_request_header(k, v)
                            } else {
                                self.host.set_request_header(k, v)
                            }
                        })
                    })
                    .and_then(|()| match &fwd.path {
                        Some(path) => self.host.set_request_header(":path", path),
                        None => Ok(()),
                    })
                    .and_then(|()| match &cfg.decision_header {
                        Some(h) => self.host.set_request_header(h, "allow"),
                        None => Ok(()),
                    });
                match applied {
                    Ok(()) => Decision::Allowed,
                    // A spoofed output header that could not be removed must not reach the upstream.
                    Err(_) => self.deny(req, AuthError::Internal, cfg.denial_body),
                }
            }
            Verdict::Deny(e) => self.refuse(req, e, cfg),
            Verdict::Wait { .. } => self.deny(req, AuthError::Internal, cfg.denial_body),
        }
    }

    /// Refuses the current request; in a dry run lets it go on instead, with no identity from
    /// it (every output header a client sent is removed) and the decision it would have had.
    fn refuse(&self, req: &Request, error: AuthError, cfg: &Config) -> Decision {
        if !cfg.dry_run || error == AuthError::Internal {
            return self.deny(req, error, cfg.denial_body);
        }
        let passed = cfg
            .output_headers
            .iter()
            .filter(|h| req.header(h).is_some())
            .try_for_each(|h| self.host.remove_request_header(h))
            .and_then(|()| match &cfg.decision_header {
                Some(h) => self
                    .host
                    .set_request_header(h, &format!("deny; reason=\"{}\"", error.reason())),
                None => Ok(()),
            });
        if passed.is_err() {
            return self.deny(req, AuthError::Internal, cfg.denial_body);
        }
        log::info!(
            "dry run: would refuse {} {}: {}",
            error.http_status(),
            strip_query(req.path()),
            error.reason()
        );
        Decision::DryRun(error)
    }

    /// Answers the current request with the error's local reply.
    fn deny(&self, req: &Request, error: AuthError, style: DenialBody) -> Decision {
        let d = Denial::new(error, &req.realm(), style);
        log::debug!(
            "{} {}: {}",
            d.status,
            strip_query(req.path()),
            error.reason()
        );
        let headers: Vec<(&str, &str)> = d.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        if self
            .host
            .send_local_response(d.status, &headers, d.body.as_bytes())
            .is_err()
        {
            log::error!("could not send the local reply");
        }
        Decision::Refused(error)
    }
}

/// What the proxy does with a decided request: a refused one stays paused behind its reply.
fn action(decision: Decision) -> Action {
    match decision {
        Decision::Allowed | Decision::DryRun(_) => Action::Continue,
        Decision::Refused(_) => Action::Pause,
    }
}
