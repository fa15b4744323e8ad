//! One plugin's state in one VM: its compiled configuration, this worker's view of the remote key
//! sets, the callouts in flight, the requests waiting for keys, the verified-token cache and the
//! counts not yet flushed.

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use super::host::Host;
use super::metrics::{Census, Counts, Metrics};
use crate::authn::{self, Env, KeyStore, RemoteKeys, Verdict};
use crate::config::Config;
use crate::crypto::policy::{Policy, PolicyVerifier};
use crate::crypto::verify_signature;
use crate::error::AuthError;
use crate::jwt::cache::TokenCache;
use crate::remote::fetch::{Jitter, SharedStore, Source, Ticket};
use crate::request::Request;

/// A request paused until its key set is ready. Its headers stay in Envoy and are read again
/// when it resumes, so what a client sends does not change what a waiter costs.
pub struct Waiter {
    pub context_id: u32,
    pub remote: usize,
    pub ticket: Ticket,
}

/// How a request or connection was decided, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    Refused(AuthError),
    /// Let through by `dryRun`; enforcement would have refused it.
    DryRun(AuthError),
}

/// What a callout in flight fetches, for the source at `index`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// The issuer's discovery document, whose `jwks_uri` names the keys.
    Discovery { index: usize },
    /// The keys, from `uri` (the source's own, or the one its discovery document named).
    Keys { index: usize, uri: String },
}

/// A TLS connection paused until its handshake shows whether the peer presented a certificate.
#[derive(Debug, Clone, Copy)]
pub struct Handshake {
    pub deadline_ms: u64,
    pub next_poll_ms: u64,
    pub poll_interval_ms: u64,
}

pub struct Root {
    pub config: Rc<Config>,
    /// Paused connections by context id (NETWORK plugin only).
    pub handshakes: BTreeMap<u32, Handshake>,
    /// The log line for a connection-level plugin given HTTP-only fields was written.
    pub http_only_logged: bool,
    pub sources: Vec<Source>,
    pub waiters: Vec<Waiter>,
    /// Callout token → the source it fetches for, and what it fetches.
    pub calls: HashMap<u32, Call>,
    pub metrics: Metrics,
    pub counts: Counts,
    pub census: Census,
    /// This VM has decided requests (the main thread's never does).
    pub served: bool,
    pub tick_ms: u32,
    pub cache: TokenCache,
    /// The cache's entries and bytes as last added to the plugin's gauges.
    pub cache_reported: (i64, i64),
    pub verifier: Policy,
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
            census,
            handshakes: BTreeMap::new(),
            http_only_logged: false,
            sources: (0..config.remotes.len() as u64)
                .map(|i| Source {
                    jitter: Jitter::seeded(seed ^ i.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
                    ..Source::default()
                })
                .collect(),
            cache: TokenCache::new(config.jwt_cache_bytes, config.jwt_cache_size),
            cache_reported: (0, 0),
            config: Rc::new(config),
            waiters: Vec::new(),
            calls: HashMap::new(),
            metrics,
            counts: Counts::default(),
            served: false,
            tick_ms: 0,
            verifier,
        }
    }

    /// The verdict for a request, from this worker's keys, cache and verifier.
    pub fn decide(&mut self, host: &impl Host, req: &Request, now_ms: u64) -> Verdict {
        let Root {
            config,
            sources,
            cache,
            verifier: mode,
            ..
        } = self;
        let view = KeyView { sources, now_ms };
        let verifier = PolicyVerifier::new(*mode, verify_signature_call(host));
        let (hits, misses) = (cache.hits, cache.misses);
        let mut env = Env {
            keys: &view,
            verifier: &verifier,
            cache: Some(cache),
        };
        let verdict = authn::authenticate(config, req, now_ms, &mut env);
        self.counts.cache_hit += self.cache.hits - hits;
        self.counts.cache_miss += self.cache.misses - misses;
        self.counts.host_verify_failed += verifier.failed();
        verdict
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
    }

    /// Whether some request waits or some key set has never been loaded.
    pub fn busy(&self) -> bool {
        !self.waiters.is_empty() || self.sources.iter().any(|s| s.keys.is_none())
    }
}

/// The host's shared data, as the fetch coordination sees it.
pub struct Shared<'h, H>(pub &'h H);

impl<H: Host> SharedStore for Shared<'_, H> {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        self.0.shared_data(key)
    }

    fn set(&mut self, key: &str, value: &[u8], cas: u32) -> bool {
        self.0.set_shared_data(key, value, cas)
    }
}

/// One call of the host's `verify_signature`, for `crypto::policy`.
pub fn verify_signature_call<H: Host>(host: &H) -> impl Fn(&[u8]) -> Result<Vec<u8>, String> + '_ {
    |args: &[u8]| {
        host.call_foreign_function(verify_signature::FUNCTION, args)
            .map_err(|e| format!("host status {}", e.0))
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
