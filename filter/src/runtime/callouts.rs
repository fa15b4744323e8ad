//! Callouts a root makes through Envoy's `http_call`: key sets and discovery documents fetched by
//! the worker that won the shared lease, their answers published to every worker, and the pump
//! that starts due fetches and resumes the requests that waited for them.

use std::collections::HashMap;

use super::gate::Gate;
use super::host::{Host, Quiet};
use super::metrics::Metrics;
use super::root::SharedRoot;
use super::{Runtime, TICK_BUSY_MS, TICK_IDLE_MS};
use crate::authn::{KeyStore, RemoteKeys};
use crate::jwt::jwks::{self, MAX_JWKS_BYTES};
use crate::remote::discovery::{self, KeysTarget};
use crate::remote::fetch::{Jitter, Outcome, Poll, SharedStore, Source, Ticket};
use crate::remote::RemoteJwks;

/// What a callout in flight fetches, for the source at `index`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// The issuer's discovery document, whose `jwks_uri` names the keys.
    Discovery { index: usize },
    /// The keys, from `uri` (the source's own, or the one its discovery document named).
    Keys { index: usize, uri: String },
}

impl Call {
    fn index(&self) -> usize {
        match self {
            Call::Discovery { index } | Call::Keys { index, .. } => *index,
        }
    }
}

/// One root's remote key sets as this worker sees them, and its callouts in flight.
pub struct Callouts {
    /// By index in the configuration's `remotes`.
    sources: Vec<Source>,
    /// Callout token → what it fetches.
    in_flight: HashMap<u32, Call>,
}

impl Callouts {
    /// `seed` spreads this proxy's key refreshes and retries apart from other proxies'.
    pub fn new(remotes: usize, seed: u64) -> Self {
        Self {
            sources: (0..remotes as u64)
                .map(|i| Source {
                    jitter: Jitter::seeded(seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
                    ..Source::default()
                })
                .collect(),
            in_flight: HashMap::new(),
        }
    }

    /// The key store a request sees at `now_ms`.
    pub fn keys(&self, now_ms: u64) -> impl KeyStore + '_ {
        KeyView {
            sources: &self.sources,
            now_ms,
        }
    }

    /// When the oldest key set this worker serves was fetched; `None` while it serves none.
    pub fn oldest_fetch_ms(&self) -> Option<u64> {
        self.sources
            .iter()
            .filter(|s| s.keys.is_some())
            .map(|s| s.record.fetched_at_ms)
            .min()
    }

    /// Whether every key set has been loaded once.
    pub fn loaded(&self) -> bool {
        self.sources.iter().all(|s| s.keys.is_some())
    }

    /// What a request paused for source `index` waits for; asks for a refetch when `refetch`.
    pub fn ticket(
        &mut self,
        index: usize,
        spec: &RemoteJwks,
        refetch: bool,
        now_ms: u64,
    ) -> Option<Ticket> {
        let src = self.sources.get_mut(index)?;
        if refetch {
            src.want_refetch = true;
        }
        Some(src.ticket(spec, refetch, now_ms))
    }

    /// Whether a request paused for source `index` can go on.
    pub fn ready(&self, index: usize, ticket: &Ticket, now_ms: u64) -> bool {
        self.sources
            .get(index)
            .is_none_or(|s| s.ready(ticket, now_ms))
    }

    /// Syncs every source with shared data; the sources this worker won a fetch for.
    pub fn due(
        &mut self,
        remotes: &[RemoteJwks],
        store: &mut dyn SharedStore,
        now_ms: u64,
    ) -> Vec<usize> {
        let mut due = Vec::new();
        for (i, (spec, src)) in remotes.iter().zip(self.sources.iter_mut()).enumerate() {
            if src.poll(spec, store, now_ms) == Poll::Fetch {
                due.push(i);
            }
        }
        due
    }

    pub fn sent(&mut self, token: u32, call: Call) {
        self.in_flight.insert(token, call);
    }

    /// The call a callout answer belongs to, once.
    pub fn answered(&mut self, token: u32) -> Option<Call> {
        self.in_flight.remove(&token)
    }

    /// Records a fetch's result for source `index` and publishes it to the other workers.
    pub fn complete(
        &mut self,
        index: usize,
        spec: &RemoteJwks,
        store: &mut dyn SharedStore,
        now_ms: u64,
        result: Result<&[u8], String>,
    ) -> Option<Outcome> {
        let src = self.sources.get_mut(index)?;
        Some(src.complete(spec, store, now_ms, result))
    }
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

/// The host's shared data, as the fetch coordination sees it.
pub struct Shared<'h, Q>(pub &'h Q);

impl<Q: Quiet> SharedStore for Shared<'_, Q> {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.0.shared_data(key)
    }

    fn set(&mut self, key: &str, value: &[u8], cas: u32) -> bool {
        self.0.set_shared_data(key, value, cas)
    }
}

impl<H: Host> Runtime<H> {
    pub(super) fn http_call_response(
        &self,
        gate: &mut Gate,
        root_id: u32,
        root: &SharedRoot,
        token: u32,
        body_size: usize,
    ) {
        let host = self.host.quiet();
        let now = host.now_ms().unwrap_or(0);
        let Some((call, config)) = root.with(gate, |r| {
            let call = r.callouts().answered(token)?;
            Some((call, std::rc::Rc::clone(r.config())))
        }) else {
            return;
        };
        let what = match &call {
            Call::Discovery { .. } => "discovery document",
            Call::Keys { .. } => "JWKS",
        };
        let result = match host.http_call_status() {
            Some(200) if body_size > MAX_JWKS_BYTES => {
                Err(format!("{what}: body larger than {MAX_JWKS_BYTES} bytes"))
            }
            Some(200) => host
                .http_call_body(body_size)
                .map_err(|e| format!("{what}: cannot read body (host status {})", e.0)),
            Some(code) => Err(format!("{what}: HTTP status {code}")),
            None => Err(format!(
                "{what}: no response (connection failure or timeout)"
            )),
        };
        let index = call.index();
        let Some(spec) = config.remotes.get(index) else {
            return;
        };
        let result = match call {
            Call::Keys { uri, .. } => {
                log::debug!("jwks: answer from {uri}");
                result
            }
            Call::Discovery { .. } => {
                match result.and_then(|doc| discovery::keys_target(spec, &doc)) {
                    Ok(target) => {
                        log::debug!(
                            "jwks {}: keys at {} (cluster {:?})",
                            spec.uri,
                            target.uri,
                            target.cluster
                        );
                        let call = Call::Keys {
                            index,
                            uri: target.uri.clone(),
                        };
                        self.call(gate, root, spec, call, &target, now);
                        return;
                    }
                    Err(reason) => Err(reason),
                }
            }
        };
        let Some((outcome, metrics)) = root.with(gate, |r| {
            let outcome = r.callouts().complete(
                index,
                spec,
                &mut Shared(host),
                now,
                result.as_deref().map_err(Clone::clone),
            )?;
            Some((outcome, r.metrics()))
        }) else {
            return;
        };
        let uri = &spec.uri;
        match outcome {
            Outcome::Published { keys, cut_from } => {
                Metrics::bump(host, metrics.fetch_success);
                log::info!("jwks {uri}: fetched {keys} key(s)");
                if let Some(n) = cut_from {
                    Metrics::bump(host, metrics.keys_cut);
                    log::warn!("jwks {uri}: {}", jwks::cut_warning(n));
                }
            }
            Outcome::Failed {
                reason,
                retry_in_ms,
            } => {
                Metrics::bump(host, metrics.fetch_failed);
                log::warn!("jwks {uri}: fetch failed: {reason}; retrying in {retry_in_ms} ms");
            }
        }
        self.pump(gate, root_id, root, now);
    }

    /// Runs in root-context callbacks only. Starts the fetches this worker won, resumes the
    /// waiters that can go on, and sets the tick.
    pub(super) fn pump(&self, gate: &mut Gate, root_id: u32, root: &SharedRoot, now_ms: u64) {
        let host = self.host.quiet();
        let (due, config) = root.with(gate, |r| {
            let config = std::rc::Rc::clone(r.config());
            let due = r.callouts().due(&config.remotes, &mut Shared(host), now_ms);
            (due, config)
        });
        for index in due {
            if let Some(spec) = config.remotes.get(index) {
                self.fetch(gate, root, index, spec, now_ms);
            }
        }
        self.resume_ready(gate, root_id, root, now_ms);
        root.with(gate, |r| {
            let wanted = if r.holds_connections() {
                super::held::TICK_HANDSHAKE_MS
            } else if r.busy() {
                TICK_BUSY_MS
            } else {
                TICK_IDLE_MS
            };
            r.tick_every(host, wanted);
        });
    }

    /// Starts a fetch this worker won: the discovery document first, when the source has one.
    fn fetch(
        &self,
        gate: &mut Gate,
        root: &SharedRoot,
        index: usize,
        spec: &RemoteJwks,
        now_ms: u64,
    ) {
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
        self.call(gate, root, spec, call, &target, now_ms);
    }

    fn call(
        &self,
        gate: &mut Gate,
        root: &SharedRoot,
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
        let sent = self
            .host
            .reentrant(gate)
            .http_call(&target.cluster, &headers, spec.timeout_ms);
        let host = self.host.quiet();
        match sent {
            Ok(token) => {
                log::debug!(
                    "jwks {}: fetching {} through cluster {:?}",
                    spec.uri,
                    target.uri,
                    target.cluster
                );
                root.with(gate, |r| r.callouts().sent(token, call));
            }
            Err(e) => {
                let reason = format!(
                    "cannot call cluster {:?} (host status {})",
                    target.cluster, e.0
                );
                let metrics = root.with(gate, |r| {
                    let _ = r.callouts().complete(
                        call.index(),
                        spec,
                        &mut Shared(host),
                        now_ms,
                        Err(reason.clone()),
                    );
                    r.metrics()
                });
                Metrics::bump(host, metrics.fetch_failed);
                log::warn!("jwks {}: {reason}; is the cluster defined?", spec.uri);
            }
        }
    }
}
