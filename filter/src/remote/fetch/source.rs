//! One worker's view of a remote key set, and the lease protocol by which one worker fetches it.

use super::jitter::Jitter;
use super::record::{keys_key, read_record, write_record, Record, SharedStore};
use super::{backoff_ms, refresh_after_ms, refresh_at_ms, REFETCH_INTERVAL_MS};
use crate::jwt::jwks::{self, Jwks, MAX_JWKS_BYTES};
use crate::remote::RemoteJwks;

/// What a worker knows of one remote key set.
#[derive(Debug, Default)]
pub struct Source {
    pub keys: Option<Jwks>,
    pub version: u64,
    pub record: Record,
    /// This worker has an `http_call` in flight for the source.
    pub inflight: bool,
    /// A token carried a `kid` the keys lack.
    pub want_refetch: bool,
    pub jitter: Jitter,
}

/// What the caller must do after `poll`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Poll {
    Idle,
    /// This worker won the lease: dispatch the fetch now.
    Fetch,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `cut_from`: the document's key count, when it had more than `jwks::MAX_KEYS`.
    Published {
        keys: usize,
        cut_from: Option<usize>,
    },
    Failed {
        reason: String,
        retry_in_ms: u64,
    },
}

/// A paused request's claim on a source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    pub refetch: bool,
    pub attempts_seen: u64,
    pub deadline_ms: u64,
}

impl Source {
    /// Refreshes the local view from shared data; adopts newly published keys. Returns the
    /// record's compare-and-swap version.
    pub fn sync(&mut self, spec: &RemoteJwks, store: &dyn SharedStore) -> u32 {
        let (record, cas) = read_record(spec, store);
        if record.attempts != self.record.attempts {
            self.want_refetch = false;
        }
        if record.version != self.version {
            if let Some((body, _)) = store.get(&keys_key(spec)) {
                if let Ok((jwks, _)) = jwks::parse(&body) {
                    self.keys = Some(jwks);
                    self.version = record.version;
                }
            }
        }
        self.record = record;
        cas
    }

    /// Creates the shared record unless it exists. A compare-and-swap only guards an entry that
    /// exists (a version of 0 writes unconditionally), so two workers that both found none could
    /// both claim the fetch; Envoy configures a plugin on its main thread before the workers, and
    /// that first configuration creates the record.
    pub fn ensure_record(spec: &RemoteJwks, store: &mut dyn SharedStore) {
        if store.get(&spec.shared_key()).is_none() {
            let _ = write_record(spec, store, &Record::default(), 0);
        }
    }

    /// Syncs, then decides whether this worker should fetch now.
    pub fn poll(&mut self, spec: &RemoteJwks, store: &mut dyn SharedStore, now_ms: u64) -> Poll {
        let cas = self.sync(spec, store);
        if self.inflight {
            return Poll::Idle;
        }
        if cas == 0 {
            // No record yet: claims are exclusive only once it exists; the next poll claims.
            Self::ensure_record(spec, store);
            return Poll::Idle;
        }
        let r = &self.record;
        let forced = self.want_refetch
            && self.keys.is_some()
            && now_ms >= r.last_forced_ms.saturating_add(REFETCH_INTERVAL_MS);
        let due = self.keys.is_none() || now_ms >= refresh_at_ms(spec, r) || forced;
        if !due || now_ms < r.next_retry_ms || now_ms < r.lease_until_ms {
            return Poll::Idle;
        }
        // The compare-and-swap write fails if another worker changed the record since `sync`.
        let mut claimed = self.record.clone();
        claimed.lease_until_ms = now_ms
            .saturating_add(spec.fetch_timeout_ms())
            .saturating_add(1_000);
        if forced {
            claimed.last_forced_ms = now_ms;
        }
        if !write_record(spec, store, &claimed, cas) {
            return Poll::Idle;
        }
        self.record = claimed;
        self.inflight = true;
        Poll::Fetch
    }

    /// Records the result of this worker's fetch: `Ok(body)` for a 200 answer, `Err(reason)`
    /// otherwise. An invalid body never replaces good keys.
    pub fn complete(
        &mut self,
        spec: &RemoteJwks,
        store: &mut dyn SharedStore,
        now_ms: u64,
        result: Result<&[u8], String>,
    ) -> Outcome {
        self.inflight = false;
        let parsed = result.and_then(|body| {
            if body.len() > MAX_JWKS_BYTES {
                return Err(format!("body larger than {MAX_JWKS_BYTES} bytes"));
            }
            jwks::parse(body)
                .map(|(j, _)| (j, body))
                .map_err(|e| e.message)
        });
        let outcome = match &parsed {
            Ok((jwks, _)) => Outcome::Published {
                keys: jwks.keys.len(),
                cut_from: jwks.cut_from,
            },
            Err(reason) => Outcome::Failed {
                reason: reason.clone(),
                retry_in_ms: 0,
            },
        };
        if let Ok((_, body)) = &parsed {
            store.set(&keys_key(spec), body, 0);
        }
        // Other workers may be updating the record (e.g. a forced-refetch mark): retry on conflict.
        let mut written = Record::default();
        for _ in 0..8 {
            let (mut rec, cas) = read_record(spec, store);
            rec.lease_until_ms = 0;
            rec.attempts = rec.attempts.saturating_add(1);
            match &parsed {
                Ok(_) => {
                    rec.version = rec.version.saturating_add(1);
                    rec.fetched_at_ms = now_ms;
                    rec.refresh_at_ms =
                        now_ms.saturating_add(self.jitter.at_most(refresh_after_ms(spec)));
                    rec.failures = 0;
                    rec.next_retry_ms = 0;
                    rec.last_error.clear();
                }
                Err(reason) => {
                    rec.failures = rec.failures.saturating_add(1);
                    rec.next_retry_ms =
                        now_ms.saturating_add(self.jitter.around(backoff_ms(rec.failures)));
                    rec.last_error = reason.chars().take(200).collect();
                }
            }
            if write_record(spec, store, &rec, cas) {
                written = rec;
                break;
            }
        }
        let _ = self.sync(spec, store);
        match outcome {
            Outcome::Failed { reason, .. } => Outcome::Failed {
                reason,
                retry_in_ms: written.next_retry_ms.saturating_sub(now_ms),
            },
            published => published,
        }
    }

    /// Whether the source has never had keys and its last fetch failed.
    pub fn failed(&self) -> bool {
        self.keys.is_none() && self.record.failures > 0
    }

    pub fn may_refetch(&self, now_ms: u64) -> bool {
        self.keys.is_some()
            && now_ms
                >= self
                    .record
                    .last_forced_ms
                    .saturating_add(REFETCH_INTERVAL_MS)
            && now_ms >= self.record.next_retry_ms
    }

    pub fn ticket(&self, spec: &RemoteJwks, refetch: bool, now_ms: u64) -> Ticket {
        Ticket {
            refetch,
            attempts_seen: self.record.attempts,
            deadline_ms: now_ms
                .saturating_add(spec.fetch_timeout_ms())
                .saturating_add(1_000),
        }
    }

    /// A paused request resumes once a fetch has completed since it paused, when first keys
    /// arrive, or at its deadline.
    pub fn ready(&self, t: &Ticket, now_ms: u64) -> bool {
        self.record.attempts > t.attempts_seen
            || (!t.refetch && (self.keys.is_some() || self.failed()))
            || now_ms >= t.deadline_ms
    }
}
