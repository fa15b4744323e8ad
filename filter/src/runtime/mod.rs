//! The runtime: the contexts the proxy creates and calls back, in plain Rust over the `Host` trait
//! (the ABI bindings implement it; unit tests fake it). Each root context (one per plugin)
//! compiles its configuration once and owns the shared state: remote key sets, their fetches, the
//! requests waiting for them, the token cache and the counters. A request asks the core for a
//! verdict and applies it, or is parked with its root.
//!
//! Here the context registry, configuration and the tick; the HTTP stream in `stream`, the
//! connection-level plugin in `network` (its held connections in `held`), `http_call` callouts in
//! `callouts`, one plugin's state in `root`, counters in `metrics`. Every callback opens a `Gate`,
//! without which neither state is borrowed nor a host call that may re-enter the VM is made.

mod callouts;
mod gate;
mod held;
mod host;
mod metrics;
mod network;
mod root;
mod stream;
#[cfg(test)]
mod tests;

use std::rc::Rc;

pub use host::{Host, HostError, MetricKind, Quiet};

use crate::config::{self, SignatureVerifier as Configured};
use crate::crypto::policy::{host_verifier_works, Policy};
use crate::error::{AuthError, ConfigError};
use crate::peer::Workload;
use crate::remote::fetch::Source;
use crate::replay;
use crate::request::{wire, Connection, Request};
use callouts::Shared;
use gate::{Gate, Guarded, Proxy};
use metrics::{Census, Metrics};
use root::{verify_signature_call, Root, SharedRoot};

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
    roots: Vec<(u32, SharedRoot)>,
    /// (stream, its root), from creation until the request headers arrive.
    new_streams: Vec<(u32, u32)>,
}

pub struct Runtime<H> {
    host: Proxy<H>,
    contexts: Guarded<Contexts>,
}

impl<H: Host> Runtime<H> {
    pub fn new(host: H) -> Self {
        Self {
            host: Proxy::new(host),
            contexts: Guarded::default(),
        }
    }

    #[cfg(test)]
    pub fn host(&self) -> &H {
        self.host.host()
    }

    fn root(&self, gate: &mut Gate, root_id: u32) -> Option<SharedRoot> {
        self.contexts.with(gate, |c| {
            c.roots
                .iter()
                .find(|(id, _)| *id == root_id)
                .map(|(_, root)| Rc::clone(root))
        })
    }

    /// The `i`th root, for walking the roots without holding the registry.
    fn root_at(&self, gate: &mut Gate, i: usize) -> Option<SharedRoot> {
        self.contexts
            .with(gate, |c| c.roots.get(i).map(|(_, root)| Rc::clone(root)))
    }

    pub fn on_context_create(&self, context_id: u32, root_context_id: u32) {
        if root_context_id == 0 {
            return;
        }
        self.contexts.with(&mut Gate::open(), |c| {
            if c.new_streams.len() >= MAX_NEW_STREAMS {
                c.new_streams.remove(0);
            }
            c.new_streams.push((context_id, root_context_id));
        });
    }

    /// Compiles the plugin's configuration; false (the plugin refuses to start) when it is invalid.
    pub fn on_configure(&self, root_id: u32, config_size: usize) -> bool {
        let gate = &mut Gate::open();
        let host = self.host.quiet();
        log::set_max_level(host.log_level());
        let root = match self.configure(config_size) {
            Ok(root) => Rc::new(Guarded::new(root)),
            Err(e) => {
                log::error!("{e}");
                return false;
            }
        };
        let previous = self.contexts.with(gate, |c| {
            let previous = c
                .roots
                .iter()
                .position(|(id, _)| *id == root_id)
                .map(|i| c.roots.swap_remove(i).1);
            c.roots.push((root_id, Rc::clone(&root)));
            previous
        });
        let config = root.with(gate, |r| Rc::clone(r.config()));
        for spec in &config.remotes {
            Source::ensure_record(spec, &mut Shared(host));
        }
        if config.dpop {
            replay::ensure_shards(&mut Shared(host), config.dpop_replay_shards);
        }
        let previous = previous.map(|p| {
            p.with(gate, |p| {
                p.flush(host);
                p.take_paused()
            })
        });
        root.with(gate, |r| {
            let adopted = previous.as_ref().is_some_and(|p| !p.is_empty());
            if let Some(paused) = previous {
                r.adopt(paused);
            }
            let tick = if adopted || !config.remotes.is_empty() {
                TICK_NOW_MS
            } else {
                TICK_IDLE_MS
            };
            r.set_tick(host, tick);
        });
        true
    }

    pub fn on_tick(&self, root_id: u32) {
        let gate = &mut Gate::open();
        let host = self.host.quiet();
        log::set_max_level(host.log_level());
        if let Some(root) = self.root(gate, root_id) {
            let now = host.now_ms().unwrap_or(0);
            self.poll_handshakes(gate, root_id, &root, now);
            self.pump(gate, root_id, &root, now);
            root.with(gate, |r| r.flush(host));
        }
    }

    /// A root goes away when its plugin is removed; a stream when it ends.
    pub fn on_done(&self, context_id: u32) -> bool {
        let gate = &mut Gate::open();
        let root = self.contexts.with(gate, |c| {
            c.new_streams.retain(|(id, _)| *id != context_id);
            c.roots
                .iter()
                .position(|(id, _)| *id == context_id)
                .map(|i| c.roots.swap_remove(i).1)
        });
        if let Some(root) = root {
            self.close_paused_connections(gate, &root);
            let host = self.host.quiet();
            root.with(gate, |r| {
                r.clear_cache();
                r.flush(host);
            });
            log::debug!("plugin root {context_id} done; its keys, cache and counts are freed");
            return true;
        }
        // A request or connection that goes away while paused leaves its root's queue.
        let mut i = 0;
        while let Some(root) = self.root_at(gate, i) {
            root.with(gate, |r| r.forget(context_id));
            i += 1;
        }
        true
    }

    /// The root of a stream the proxy created, once: it leaves the new streams.
    fn take_new_stream(&self, gate: &mut Gate, context_id: u32) -> Option<(u32, SharedRoot)> {
        self.contexts.with(gate, |c| {
            let at = c.new_streams.iter().position(|(id, _)| *id == context_id)?;
            let (_, root_id) = c.new_streams.swap_remove(at);
            c.roots
                .iter()
                .find(|(id, _)| *id == root_id)
                .map(|(id, r)| (*id, Rc::clone(r)))
        })
    }

    pub fn on_request_headers(&self, context_id: u32) -> Action {
        let gate = &mut Gate::open();
        match self.take_new_stream(gate, context_id) {
            Some((_, root)) => self.request_headers(gate, context_id, &root),
            None => {
                self.deny(gate, &Request::default(), AuthError::Internal, None);
                Action::Pause
            }
        }
    }

    pub fn on_http_call_response(&self, root_id: u32, token: u32, body_size: usize) {
        let gate = &mut Gate::open();
        if let Some(root) = self.root(gate, root_id) {
            self.http_call_response(gate, root_id, &root, token, body_size);
        }
    }

    fn configure(&self, config_size: usize) -> Result<Root, ConfigError> {
        let bytes = self.host.quiet().plugin_config(config_size).map_err(|e| {
            ConfigError::here(format!("cannot read pluginConfig (host status {})", e.0))
        })?;
        let raw = config::parse(&bytes)?;
        let network = self
            .host
            .quiet()
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
            && host_verifier_works(verify_signature_call(self.host.quiet()));
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
        let metrics = Metrics::define(self.host.quiet());
        Metrics::add(self.host.quiet(), metrics.keys_cut, cfg.keys_cut);
        Ok(Root::new(
            cfg,
            verifier,
            metrics,
            Census::new(self.host.quiet()),
            self.jitter_seed(),
        ))
    }

    /// Differs between proxies (node id) and plugins, and between configurations of one.
    fn jitter_seed(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        let host = self.host.quiet();
        host.property(&["xds", "node", "id"])
            .or_else(|| host.property(&["node", "id"]))
            .hash(&mut h);
        host.property(&["plugin_name"]).hash(&mut h);
        host.now_ms().unwrap_or(0).hash(&mut h);
        h.finish()
    }

    /// This proxy's workload as istio-agent describes it in node metadata; only the label keys
    /// that some policy selects on are read.
    fn node_workload(&self, label_keys: &[&str]) -> Workload {
        let node_string = |path: &[&str]| -> Option<String> {
            let xds: Vec<&str> = ["xds"].iter().chain(path).copied().collect();
            let host = self.host.quiet();
            host.property(&xds)
                .or_else(|| host.property(path))
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

    /// Only what a request's config needs costs a host call: under peer policies, the peer's mTLS,
    /// port and identity; for certificate-bound tokens, the client certificate's digest. A peer
    /// with a certificate needs its port only where ports have modes of their own (a plaintext
    /// caller's names it in the census).
    fn connection(&self, cfg: &config::Config) -> Connection {
        let with_peer = cfg.peer.needs_connection;
        let mtls = with_peer && self.connection_mtls();
        let needs_port = with_peer && (!mtls || cfg.peer.policy.depends_on_port());
        Connection {
            tls: false,
            mtls,
            port: needs_port.then(|| self.destination_port()).flatten(),
            uri_san: (with_peer && mtls).then(|| self.uri_san()).flatten(),
            certificate_sha256: cfg
                .certificate_bound
                .then(|| {
                    self.host
                        .quiet()
                        .property(&["connection", "sha256_peer_certificate_digest"])
                })
                .flatten()
                .and_then(|hex| Connection::digest_from_hex(&hex)),
        }
    }

    /// Whether the peer presented a client certificate (Envoy's `connection.mtls`).
    fn connection_mtls(&self) -> bool {
        self.host
            .quiet()
            .property(&["connection", "mtls"])
            .is_some_and(|b| wire::decode_bool(&b))
    }

    fn destination_port(&self) -> Option<u32> {
        self.host
            .quiet()
            .property(&["destination", "port"])
            .and_then(|b| wire::decode_int(&b))
            .and_then(|p| u32::try_from(p).ok())
    }

    /// The peer certificate's first URI SAN; only a client certificate has one.
    fn uri_san(&self) -> Option<String> {
        self.host
            .quiet()
            .property(&["connection", "uri_san_peer_certificate"])
            .and_then(|b| String::from_utf8(b).ok())
            .filter(|s| !s.is_empty())
    }
}
