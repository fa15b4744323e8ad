//! Remote JWKS fetching, coordinated across Envoy's worker VMs through proxy-wasm shared data.
//!
//! Each worker keeps a `Source` per remote key set. They share two entries per source: a small
//! `Record` (who holds the fetch lease, failures, backoff, a version) and the last good JWKS body.
//! A worker fetches only after winning the lease with a compare-and-swap, so N workers cause one
//! fetch; the others pick the new keys up from shared data when the version moves.

use serde::{Deserialize, Serialize};

use super::RemoteJwks;
use crate::jwt::jwks::{self, Jwks, MAX_JWKS_BYTES};

/// An unknown `kid` refetches a source at most this often.
pub const REFETCH_INTERVAL_MS: u64 = 30_000;
pub const BACKOFF_FIRST_MS: u64 = 1_000;
pub const BACKOFF_MAX_MS: u64 = 30_000;
/// Refresh this long before keys expire (at most a tenth of the cache duration).
pub const REFRESH_AHEAD_MS: u64 = 30_000;

/// Proxy-wasm shared data: values with a compare-and-swap version.
pub trait SharedStore {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)>;
    /// `cas` 0 writes unconditionally; otherwise the write fails unless the entry still has it.
    fn set(&mut self, key: &str, value: &[u8], cas: u32) -> bool;
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Bumped each time a good key set is published.
    pub version: u64,
    pub fetched_at_ms: u64,
    pub lease_until_ms: u64,
    /// Consecutive failures since the last success.
    pub failures: u32,
    pub next_retry_ms: u64,
    pub last_forced_ms: u64,
    /// Completed fetches, good or bad: waiters resume when it moves.
    pub attempts: u64,
    pub last_error: String,
    /// When the keys are refreshed: set with the keys, spread by the jitter of the worker that
    /// fetched them (0 in records of an older module: derived from `fetched_at_ms`).
    #[serde(default)]
    pub refresh_at_ms: u64,
}

/// Spreads refreshes and retries so that a fleet configured at once does not call the identity
/// provider in step: a seeded generator (SplitMix64) per worker and key set. Unseeded, it
/// spreads nothing (unit tests that count milliseconds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Jitter(u64);

impl Jitter {
    pub fn seeded(seed: u64) -> Self {
        Self(seed | 1)
    }

    fn next(&mut self) -> u64 {
        if self.0 == 0 {
            return 0;
        }
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Up to a tenth of `ms` either way.
    pub fn around(&mut self, ms: u64) -> u64 {
        let tenth = ms / 10;
        if self.0 == 0 || tenth == 0 {
            return ms;
        }
        ms - tenth + self.next() % (2 * tenth + 1)
    }

    /// Up to a tenth of `ms` earlier, never later.
    pub fn at_most(&mut self, ms: u64) -> u64 {
        let tenth = ms / 10;
        if self.0 == 0 || tenth == 0 {
            return ms;
        }
        ms - self.next() % (tenth + 1)
    }
}

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

fn keys_key(spec: &RemoteJwks) -> String {
    format!("{}|keys", spec.shared_key())
}

pub fn backoff_ms(failures: u32) -> u64 {
    let doublings = failures.saturating_sub(1).min(16);
    BACKOFF_FIRST_MS
        .saturating_mul(1u64 << doublings)
        .min(BACKOFF_MAX_MS)
}

/// How long after a fetch its keys are refreshed, before any jitter.
fn refresh_after_ms(spec: &RemoteJwks) -> u64 {
    let cache_ms = spec.cache_duration_s.saturating_mul(1000);
    let ahead = (cache_ms / 10).min(REFRESH_AHEAD_MS);
    cache_ms - ahead
}

fn refresh_at_ms(spec: &RemoteJwks, r: &Record) -> u64 {
    if r.refresh_at_ms > 0 {
        r.refresh_at_ms
    } else {
        r.fetched_at_ms.saturating_add(refresh_after_ms(spec))
    }
}

impl Source {
    fn read_record(spec: &RemoteJwks, store: &dyn SharedStore) -> (Record, u32) {
        match store.get(&spec.shared_key()) {
            Some((bytes, cas)) => (serde_json::from_slice(&bytes).unwrap_or_default(), cas),
            None => (Record::default(), 0),
        }
    }

    /// Refreshes the local view from shared data; adopts newly published keys. Returns the
    /// record's compare-and-swap version.
    pub fn sync(&mut self, spec: &RemoteJwks, store: &dyn SharedStore) -> u32 {
        let (record, cas) = Self::read_record(spec, store);
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
            let (mut rec, cas) = Self::read_record(spec, store);
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

fn write_record(spec: &RemoteJwks, store: &mut dyn SharedStore, rec: &Record, cas: u32) -> bool {
    match serde_json::to_vec(rec) {
        Ok(bytes) => store.set(&spec.shared_key(), &bytes, cas),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[derive(Default)]
    struct Mem(HashMap<String, (Vec<u8>, u32)>);

    impl SharedStore for Mem {
        fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
            self.0.get(key).cloned()
        }
        fn set(&mut self, key: &str, value: &[u8], cas: u32) -> bool {
            let current = self.0.get(key).map_or(0, |(_, c)| *c);
            if cas != 0 && cas != current {
                return false;
            }
            self.0
                .insert(key.to_string(), (value.to_vec(), current + 1));
            true
        }
    }

    /// Shared data as a plugin's configuration leaves it.
    fn configured() -> Mem {
        let mut m = Mem::default();
        Source::ensure_record(&spec(), &mut m);
        m
    }

    #[test]
    fn the_first_poll_without_a_record_creates_it_and_claims_nothing() {
        let (s, mut store) = (spec(), Mem::default());
        let (mut a, mut b) = (Source::default(), Source::default());
        assert_eq!(a.poll(&s, &mut store, 0), Poll::Idle);
        // The entry exists now: a claim is a compare-and-swap, and only one worker wins.
        assert_eq!(b.poll(&s, &mut store, 1), Poll::Fetch);
        assert_eq!(a.poll(&s, &mut store, 2), Poll::Idle);
    }

    fn spec() -> RemoteJwks {
        RemoteJwks {
            uri: "http://idp/jwks".into(),
            cluster: "jwks".into(),
            authority: "idp".into(),
            path: "/jwks".into(),
            timeout_ms: 5_000,
            cache_duration_s: 600,
            discovery: false,
            jwks_cluster: None,
        }
    }

    const GOOD: &[u8] = br#"{"keys":[{"kty":"oct","kid":"a","k":"c2VjcmV0"}]}"#;
    const ROTATED: &[u8] = br#"{"keys":[{"kty":"oct","kid":"b","k":"c2VjcmV0"}]}"#;

    #[test]
    fn one_worker_fetches_others_adopt() {
        let (s, mut store) = (spec(), configured());
        let (mut a, mut b) = (Source::default(), Source::default());
        assert_eq!(a.poll(&s, &mut store, 1_000), Poll::Fetch);
        assert_eq!(b.poll(&s, &mut store, 1_001), Poll::Idle, "lease is held");
        assert_eq!(
            a.poll(&s, &mut store, 1_002),
            Poll::Idle,
            "already in flight"
        );
        let t = b.ticket(&s, false, 1_001);
        assert!(!b.ready(&t, 1_002));
        assert_eq!(
            a.complete(&s, &mut store, 1_100, Ok(GOOD)),
            Outcome::Published {
                keys: 1,
                cut_from: None
            }
        );
        assert_eq!(b.poll(&s, &mut store, 1_200), Poll::Idle);
        assert!(b.keys.is_some() && b.ready(&t, 1_200));
        assert_eq!(a.poll(&s, &mut store, 2_000), Poll::Idle, "fresh keys");
    }

    #[test]
    fn refreshes_before_expiry_once() {
        let (s, mut store) = (spec(), configured());
        let (mut a, mut b) = (Source::default(), Source::default());
        assert_eq!(a.poll(&s, &mut store, 0), Poll::Fetch);
        a.complete(&s, &mut store, 0, Ok(GOOD));
        assert_eq!(b.poll(&s, &mut store, 569_999), Poll::Idle);
        assert_eq!(b.poll(&s, &mut store, 570_000), Poll::Fetch);
        assert_eq!(a.poll(&s, &mut store, 570_001), Poll::Idle);
    }

    #[test]
    fn failures_keep_good_keys_and_back_off() {
        let (s, mut store) = (spec(), configured());
        let mut a = Source::default();
        assert_eq!(a.poll(&s, &mut store, 0), Poll::Fetch);
        a.complete(&s, &mut store, 0, Ok(GOOD));
        let mut now = 570_000;
        let mut expected_backoff = vec![1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000];
        expected_backoff.reverse();
        for bad in [
            Err("status 500".to_string()),
            Ok(&b"garbage"[..]),
            Ok(&b"{\"keys\":[]}"[..]),
        ]
        .into_iter()
        .cycle()
        .take(7)
        {
            assert_eq!(a.poll(&s, &mut store, now), Poll::Fetch, "at {now}");
            let Outcome::Failed { retry_in_ms, .. } = a.complete(&s, &mut store, now, bad) else {
                panic!("bad body accepted");
            };
            assert_eq!(Some(retry_in_ms), expected_backoff.pop());
            assert_eq!(a.poll(&s, &mut store, now + retry_in_ms - 1), Poll::Idle);
            assert!(a
                .keys
                .as_ref()
                .is_some_and(|k| k.keys[0].kid.as_deref() == Some("a")));
            assert!(!a.failed());
            now += retry_in_ms;
        }
        assert_eq!(a.poll(&s, &mut store, now), Poll::Fetch);
        a.complete(&s, &mut store, now, Ok(ROTATED));
        assert_eq!(a.record.failures, 0);
        assert!(a
            .keys
            .as_ref()
            .is_some_and(|k| k.keys[0].kid.as_deref() == Some("b")));
    }

    #[test]
    fn never_loaded_then_failed_then_recovers() {
        let (s, mut store) = (spec(), configured());
        let (mut a, mut b) = (Source::default(), Source::default());
        assert_eq!(a.poll(&s, &mut store, 0), Poll::Fetch);
        let t = b.ticket(&s, false, 0);
        a.complete(&s, &mut store, 10, Err("connection refused".into()));
        b.sync(&s, &store);
        assert!(a.failed() && b.failed());
        assert!(b.ready(&t, 11));
        assert_eq!(b.poll(&s, &mut store, 500), Poll::Idle, "backing off");
        assert_eq!(b.poll(&s, &mut store, 1_010), Poll::Fetch);
        b.complete(&s, &mut store, 1_020, Ok(GOOD));
        a.sync(&s, &store);
        assert!(!a.failed() && a.keys.is_some());
    }

    #[test]
    fn unknown_kid_refetch_is_rate_limited() {
        let (s, mut store) = (spec(), configured());
        let mut a = Source::default();
        a.poll(&s, &mut store, 0);
        a.complete(&s, &mut store, 0, Ok(GOOD));
        assert!(a.may_refetch(40_000));
        a.want_refetch = true;
        let t = a.ticket(&s, true, 40_000);
        assert_eq!(a.poll(&s, &mut store, 40_000), Poll::Fetch);
        assert!(!a.ready(&t, 40_001), "refetch waiters wait for the fetch");
        a.complete(&s, &mut store, 40_100, Ok(ROTATED));
        assert!(a.ready(&t, 40_101));
        assert!(!a.want_refetch);
        assert!(!a.may_refetch(60_000));
        a.want_refetch = true;
        assert_eq!(a.poll(&s, &mut store, 60_000), Poll::Idle);
        assert!(a.may_refetch(70_000));
    }

    #[test]
    fn lease_expires_when_holder_vanishes() {
        let (s, mut store) = (spec(), configured());
        let (mut a, mut b) = (Source::default(), Source::default());
        assert_eq!(a.poll(&s, &mut store, 0), Poll::Fetch);
        let t = b.ticket(&s, false, 0);
        assert_eq!(b.poll(&s, &mut store, 5_999), Poll::Idle);
        assert!(b.ready(&t, 6_000), "waiter deadline");
        assert_eq!(b.poll(&s, &mut store, 6_000), Poll::Fetch);
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let got: Vec<u64> = (1..=8).map(backoff_ms).collect();
        assert_eq!(
            got,
            [1_000, 2_000, 4_000, 8_000, 16_000, 30_000, 30_000, 30_000]
        );
        assert_eq!(backoff_ms(u32::MAX), BACKOFF_MAX_MS);
    }

    #[test]
    fn a_fleet_spreads_its_refreshes_and_retries_within_a_tenth() {
        let s = spec();
        let nominal = refresh_after_ms(&s);
        let (mut refresh, mut retry) = (Vec::new(), Vec::new());
        for seed in 0..1_000u64 {
            let mut store = configured();
            let mut w = Source {
                jitter: Jitter::seeded(seed.wrapping_mul(0x2545_F491_4F6C_DD1D)),
                ..Source::default()
            };
            assert_eq!(w.poll(&s, &mut store, 0), Poll::Fetch);
            let Outcome::Failed { retry_in_ms, .. } =
                w.complete(&s, &mut store, 0, Err("refused".into()))
            else {
                panic!("a failure")
            };
            retry.push(retry_in_ms);
            assert_eq!(w.poll(&s, &mut store, retry_in_ms), Poll::Fetch);
            w.complete(&s, &mut store, retry_in_ms, Ok(GOOD));
            let at = w.record.refresh_at_ms - retry_in_ms;
            refresh.push(at);
            assert_eq!(w.poll(&s, &mut store, retry_in_ms + at - 1), Poll::Idle);
            assert_eq!(w.poll(&s, &mut store, retry_in_ms + at), Poll::Fetch);
        }
        let span = |v: &[u64]| (*v.iter().min().unwrap(), *v.iter().max().unwrap());
        let (lo, hi) = span(&refresh);
        assert!(
            lo >= nominal - nominal / 10 && hi <= nominal,
            "never later than before"
        );
        assert!(
            hi - lo > nominal / 12,
            "spread over most of the window: {lo}..{hi}"
        );
        let (lo, hi) = span(&retry);
        assert!(lo >= 900 && hi <= 1_100, "{lo}..{hi}");
        assert!(hi - lo > 160, "{lo}..{hi}");
        let mut distinct = refresh.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert!(
            distinct.len() > 900,
            "{} distinct refresh times",
            distinct.len()
        );
    }

    #[test]
    fn jitter_is_reproducible_and_off_by_default() {
        let (mut a, mut b) = (Jitter::seeded(42), Jitter::seeded(42));
        let xs: Vec<u64> = (0..5).map(|_| a.around(10_000)).collect();
        let ys: Vec<u64> = (0..5).map(|_| b.around(10_000)).collect();
        assert_eq!(xs, ys);
        assert!(xs.iter().all(|x| (9_000..=11_000).contains(x)));
        let mut off = Jitter::default();
        assert_eq!((off.around(10_000), off.at_most(10_000)), (10_000, 10_000));
        assert_eq!(
            Jitter::seeded(7).around(9),
            9,
            "under ten milliseconds nothing moves"
        );
    }
}
