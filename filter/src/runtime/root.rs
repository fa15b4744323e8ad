//! One plugin's state in one VM: its compiled configuration, its callouts and this worker's view
//! of the remote key sets, the requests waiting for keys, the connections held for their
//! handshake, the verified-token cache and the counts not yet flushed.

use std::rc::Rc;

use super::callouts::{Callouts, Shared};
use super::gate::Guarded;
use super::held::Held;
use super::host::Quiet;
use super::metrics::{Census, Counts, Levels, Metrics};
use crate::authn::{self, Env, Verdict};
use crate::config::Config;
use crate::crypto::policy::{Policy, PolicyVerifier};
use crate::crypto::verify_signature;
use crate::error::AuthError;
use crate::jwt::cache::TokenCache;
use crate::jwt::dpop::DpopMemo;
use crate::peer::Mode;
use crate::remote::fetch::Ticket;
use crate::replay::{ReplayGuard, SharedReplay};
use crate::request::Request;

/// A root as the runtime's callbacks share it.
pub type SharedRoot = Rc<Guarded<Root>>;

/// A request paused until its key set is ready. Its headers stay in Envoy and are read again
/// when it resumes, so what a client sends does not change what a waiter costs.
pub struct Waiter {
    pub context_id: u32,
    remote: usize,
    ticket: Ticket,
}

/// What a root that is configured again hands to its successor.
#[derive(Default)]
pub struct Paused {
    waiters: Vec<Waiter>,
    held: Held,
}

impl Paused {
    pub fn is_empty(&self) -> bool {
        self.waiters.is_empty() && self.held.is_empty()
    }
}

/// How a request or connection was decided, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    Refused(AuthError),
    /// Let through by `dryRun`; enforcement would have refused it.
    DryRun(AuthError),
}

pub struct Root {
    config: Rc<Config>,
    verifier: Policy,
    callouts: Callouts,
    waiters: Vec<Waiter>,
    /// Connections paused for their handshake (NETWORK plugin only).
    held: Held,
    /// The log line for a connection-level plugin given HTTP-only fields was written.
    http_only_logged: bool,
    cache: TokenCache,
    dpop_memo: DpopMemo,
    /// The cache's entries and bytes as last added to the plugin's gauges.
    cache_reported: (i64, i64),
    /// The held connections as last added to the plugin's gauge.
    held_reported: i64,
    metrics: Metrics,
    counts: Counts,
    census: Census,
    /// This VM has decided requests (the main thread's never does).
    served: bool,
    tick_ms: u32,
}

impl Root {
    /// `seed` spreads this proxy's key refreshes and retries apart from other proxies'.
    pub fn new(
        config: Config,
        verifier: Policy,
        metrics: Metrics,
        census: Census,
        seed: u64,
    ) -> Self {
        Self {
            callouts: Callouts::new(config.remotes.len(), seed),
            cache: TokenCache::new(config.jwt_cache_bytes, config.jwt_cache_size),
            cache_reported: (0, 0),
            held_reported: 0,
            dpop_memo: DpopMemo::new(),
            config: Rc::new(config),
            verifier,
            waiters: Vec::new(),
            held: Held::default(),
            http_only_logged: false,
            metrics,
            counts: Counts::default(),
            census,
            served: false,
            tick_ms: 0,
        }
    }

    pub fn config(&self) -> &Rc<Config> {
        &self.config
    }

    pub fn metrics(&self) -> Metrics {
        self.metrics
    }

    pub fn callouts(&mut self) -> &mut Callouts {
        &mut self.callouts
    }

    pub fn held(&mut self) -> &mut Held {
        &mut self.held
    }

    pub fn holds_connections(&self) -> bool {
        !self.held.is_empty()
    }

    /// The verdict for a request, from this worker's keys, cache and verifier.
    pub fn decide(&mut self, host: &impl Quiet, req: &Request, now_ms: u64) -> Verdict {
        let verifier = PolicyVerifier::new(self.verifier, verify_signature_call(host));
        let (hits, misses) = (self.cache.hits, self.cache.misses);
        let keys = self.callouts.keys(now_ms);
        let mut shared = Shared(host);
        let mut replay = SharedReplay {
            store: &mut shared,
            shards: self.config.dpop_replay_shards,
        };
        let mut env = Env {
            keys: &keys,
            verifier: &verifier,
            cache: Some(&mut self.cache),
            replay: self
                .config
                .dpop
                .then_some(&mut replay as &mut dyn ReplayGuard),
            dpop_memo: Some(&mut self.dpop_memo),
        };
        let verdict = authn::authenticate(&self.config, req, now_ms, &mut env);
        self.counts.cache_hit += self.cache.hits - hits;
        self.counts.cache_miss += self.cache.misses - misses;
        self.counts.host_verify_failed += verifier.failed();
        verdict
    }

    /// Pauses a request until source `remote` has keys (or a refetch ended); past the cap, the
    /// error it is answered with instead, as a failed fetch would answer it.
    pub fn park(
        &mut self,
        context_id: u32,
        remote: usize,
        refetch: bool,
        now_ms: u64,
    ) -> Result<(), AuthError> {
        if self.waiters.len() >= self.config.max_paused_requests {
            return Err(if refetch {
                AuthError::NoMatchingKey
            } else {
                AuthError::JwksFetchFailed
            });
        }
        let spec = self.config.remotes.get(remote).ok_or(AuthError::Internal)?;
        let ticket = self
            .callouts
            .ticket(remote, spec, refetch, now_ms)
            .ok_or(AuthError::Internal)?;
        self.waiters.push(Waiter {
            context_id,
            remote,
            ticket,
        });
        Ok(())
    }

    /// The waiters whose keys arrived, whose fetch ended, or whose deadline passed, each once.
    pub fn take_ready(&mut self, now_ms: u64) -> Vec<Waiter> {
        let callouts = &self.callouts;
        let (ready, waiting) = std::mem::take(&mut self.waiters)
            .into_iter()
            .partition(|w| callouts.ready(w.remote, &w.ticket, now_ms));
        self.waiters = waiting;
        ready
    }

    /// A stream or connection that went away waits no more.
    pub fn forget(&mut self, context_id: u32) {
        if !self.waiters.is_empty() {
            self.waiters.retain(|w| w.context_id != context_id);
        }
        self.held.release(context_id);
    }

    /// Everything paused here, for the root that replaces this one.
    pub fn take_paused(&mut self) -> Paused {
        Paused {
            waiters: std::mem::take(&mut self.waiters),
            held: std::mem::take(&mut self.held),
        }
    }

    /// A root configured again keeps its paused requests and connections: they are decided
    /// under the new configuration, at the latest at their deadline.
    pub fn adopt(&mut self, paused: Paused) {
        self.waiters.extend(paused.waiters);
        self.held.extend(paused.held);
    }

    /// Whether some request waits or some key set has never been loaded.
    pub fn busy(&self) -> bool {
        !self.waiters.is_empty() || !self.callouts.loaded()
    }

    /// Sets the root's tick period.
    pub fn set_tick(&mut self, host: &impl Quiet, ms: u32) {
        host.set_tick_period_ms(ms);
        self.tick_ms = ms;
    }

    /// Makes the tick at least this frequent.
    pub fn tick_within(&mut self, host: &impl Quiet, ms: u32) {
        if self.tick_ms == 0 || self.tick_ms > ms {
            self.set_tick(host, ms);
        }
    }

    /// Sets the tick period unless it is set already.
    pub fn tick_every(&mut self, host: &impl Quiet, ms: u32) {
        if self.tick_ms != ms {
            self.set_tick(host, ms);
        }
    }

    /// A request decided: let through, refused, or let through by a dry run that would have
    /// refused it.
    pub fn count(&mut self, decision: Decision) {
        self.tally(decision, false);
    }

    pub fn count_connection(&mut self, decision: Decision) {
        self.tally(decision, true);
    }

    fn tally(&mut self, decision: Decision, connection: bool) {
        self.served = true;
        let c = &mut self.counts;
        let (allowed, refused) = if connection {
            (&mut c.connections_allowed, &mut c.connections_refused)
        } else {
            (&mut c.allowed, &mut c.denied)
        };
        let (per_reason, e) = match decision {
            Decision::Allowed => {
                *allowed += 1;
                return;
            }
            Decision::Refused(e) => {
                *refused += 1;
                (&mut c.refused, e)
            }
            Decision::DryRun(e) => {
                *allowed += 1;
                (&mut c.dry_run_refused, e)
            }
        };
        if let Some(n) = per_reason.get_mut(e.kind()) {
            *n += 1;
        }
        if e == AuthError::DpopReplayStoreFull {
            c.dpop_replay_full += 1;
        }
    }

    /// Counts a caller without mTLS (the plaintext census); true when its address should be
    /// logged now.
    pub fn count_plaintext(
        &mut self,
        host: &impl Quiet,
        port: Option<u32>,
        mode: Mode,
        now_ms: u64,
    ) -> bool {
        self.census.count(host, port, mode, now_ms)
    }

    /// The HTTP-only field a connection-level plugin was given, and whether this is the first
    /// time it is asked (when it is logged).
    pub fn http_only_field(&mut self) -> Option<(&'static str, bool)> {
        let field = self.config.http_only_field?;
        let first = !std::mem::replace(&mut self.http_only_logged, true);
        Some((field, first))
    }

    /// Adds the counts since the last flush to the host's metrics.
    pub fn flush(&mut self, host: &impl Quiet) {
        self.census.flush(host);
        let now = (self.cache.len() as i64, self.cache.bytes() as i64);
        let before = std::mem::replace(&mut self.cache_reported, now);
        let delta = (now.0 - before.0, now.1 - before.1);
        let counts = std::mem::take(&mut self.counts);
        let keys_age_s = (!self.config.remotes.is_empty()).then(|| {
            let now = host.now_ms().unwrap_or(0);
            self.callouts
                .oldest_fetch_ms()
                .map_or(0, |at| now.saturating_sub(at) / 1000)
        });
        let held = self.held.len() as i64;
        let held_delta = held - std::mem::replace(&mut self.held_reported, held);
        let levels = Levels {
            served: self.served,
            cache_delta: delta,
            keys_age_s,
            held_delta,
        };
        self.metrics.flush(host, &counts, levels);
    }

    /// A root going away frees its cache, and with it its share of the cache gauges.
    pub fn clear_cache(&mut self) {
        self.cache.clear();
        self.dpop_memo = DpopMemo::new();
    }
}

/// One call of the host's `verify_signature`, for `crypto::policy`.
pub fn verify_signature_call<Q: Quiet>(host: &Q) -> impl Fn(&[u8]) -> Result<Vec<u8>, String> + '_ {
    |args: &[u8]| {
        host.call_foreign_function(verify_signature::FUNCTION, args)
            .map_err(|e| format!("host status {}", e.0))
    }
}
