//! Remote JWKS fetching, coordinated across Envoy's worker VMs through proxy-wasm shared data.
//!
//! Each worker keeps a `Source` per remote key set. They share two entries per source: a small
//! `Record` (who holds the fetch lease, failures, backoff, a version) and the last good JWKS body.
//! A worker fetches only after winning the lease with a compare-and-swap, so N workers cause one
//! fetch; the others pick the new keys up from shared data when the version moves.

mod jitter;
mod record;
mod source;

#[cfg(test)]
pub(crate) mod tests;

use super::RemoteJwks;

pub use jitter::Jitter;
pub use record::{Record, SharedStore};
pub use source::{Outcome, Poll, Source, Ticket};

/// An unknown `kid` refetches a source at most this often.
pub const REFETCH_INTERVAL_MS: u64 = 30_000;
pub const BACKOFF_FIRST_MS: u64 = 1_000;
pub const BACKOFF_MAX_MS: u64 = 30_000;
/// Refresh this long before keys expire (at most a tenth of the cache duration).
pub const REFRESH_AHEAD_MS: u64 = 30_000;

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
