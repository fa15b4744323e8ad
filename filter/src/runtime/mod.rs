//! The runtime: the contexts the proxy creates and calls back, in plain Rust over the `Host` trait
//! (the ABI bindings implement it; unit tests fake it). Each root context (one per plugin)
//! compiles its configuration once and owns the shared state: remote key sets, their fetches, the
//! requests waiting for them, the token cache and the counters. A request asks the core for a
//! verdict and applies it, or is parked with its root.
//!
//! Here the context registry, configuration and the tick; the HTTP stream in `stream`, the
//! connection-level plugin in `network`, `http_call` callouts in `callouts`, one plugin's state in
//! `root`, counters in `metrics`.
//!
//! No `RefCell` borrow is held across a host call that may call back into the VM: a local reply
//! or a resumed request can end a stream synchronously, and the proxy then calls `on_done`.

mod callouts;
mod host;
mod metrics;
mod network;
mod root;
mod stream;
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
}
