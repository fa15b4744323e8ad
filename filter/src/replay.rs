//! DPoP proofs seen, shared by every worker of the proxy through proxy-wasm shared data, so that
//! a proof is accepted once per Envoy (RFC 9449 §11.1). A proof's `jti` hash lives in one of the
//! store's entries (`dpopReplayEntries` / `DPOP_REPLAY_PER_SHARD`), updated with
//! compare-and-swap, until its proof would be stale anyway. Bounded: an entry holds at most `DPOP_REPLAY_PER_SHARD` live `jti`s; when it is full, or
//! the swap keeps losing to other workers, the proof is refused, never let through.

use crate::config::DPOP_REPLAY_PER_SHARD;
use crate::remote::fetch::SharedStore;

/// Bytes of a `jti`'s SHA-256 kept: 128 bits, so no two proofs meet by chance.
const KEPT: usize = 16;
/// A kept hash and until when (seconds since the epoch, big-endian).
const ENTRY: usize = KEPT + 8;
/// Compare-and-swap attempts before giving up (and refusing).
const ATTEMPTS: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The `jti` is in the store: a replay.
    Seen,
    /// The store could not record it: its entry is full, or was never created.
    Full,
}

/// What a decision asks of the replay store.
pub trait ReplayGuard {
    /// Records a proof's `jti` until `until_s`, unless it is there already.
    fn first_use(&mut self, jti_hash: &[u8; 32], until_s: u64, now_s: u64) -> Result<(), Refusal>;
}

fn shard_key(shard: usize) -> String {
    format!("mesh_authn.dpop_jti.{shard}")
}

/// Creates every entry unless it exists. A compare-and-swap only guards an entry that exists, so
/// the entries are made when the plugin is configured, on Envoy's main thread, before any worker
/// records a proof; a missing entry later refuses proofs rather than risk an unguarded write.
pub fn ensure_shards(store: &mut dyn SharedStore, shards: usize) {
    for shard in 0..shards {
        let key = shard_key(shard);
        if store.get(&key).is_none() {
            store.set(&key, &[], 0);
        }
    }
}

/// The shared store of proofs seen.
pub struct SharedReplay<'s> {
    pub store: &'s mut dyn SharedStore,
    /// How many entries `ensure_shards` made.
    pub shards: usize,
}

impl ReplayGuard for SharedReplay<'_> {
    fn first_use(&mut self, jti_hash: &[u8; 32], until_s: u64, now_s: u64) -> Result<(), Refusal> {
        let [a, b, c, d, ..] = *jti_hash;
        let which = u32::from_be_bytes([a, b, c, d]) as usize % self.shards.max(1);
        let key = shard_key(which);
        let kept = jti_hash.get(..KEPT).ok_or(Refusal::Full)?;
        for _ in 0..ATTEMPTS {
            let (value, cas) = self.store.get(&key).ok_or(Refusal::Full)?;
            let mut next = Vec::with_capacity(value.len() + ENTRY);
            let mut live = 0;
            for entry in value.chunks_exact(ENTRY) {
                let (hash, until) = entry.split_at(KEPT);
                let until = u64::from_be_bytes(until.try_into().map_err(|_| Refusal::Full)?);
                if until < now_s {
                    continue;
                }
                if hash == kept {
                    return Err(Refusal::Seen);
                }
                next.extend_from_slice(entry);
                live += 1;
            }
            if live >= DPOP_REPLAY_PER_SHARD {
                return Err(Refusal::Full);
            }
            next.extend_from_slice(kept);
            next.extend_from_slice(&until_s.to_be_bytes());
            if self.store.set(&key, &next, cas) {
                return Ok(());
            }
        }
        Err(Refusal::Full)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;
    use crate::remote::fetch::tests::Mem;

    const SHARDS: usize = 1024;

    fn hash(i: u32) -> [u8; 32] {
        let mut h = [0u8; 32];
        h[..4].copy_from_slice(&7u32.to_be_bytes()); // one shard
        h[4..8].copy_from_slice(&i.to_be_bytes());
        h
    }

    #[test]
    fn a_jti_is_accepted_once_within_its_window() {
        let mut mem = Mem::default();
        ensure_shards(&mut mem, SHARDS);
        assert_eq!(mem.0.len(), SHARDS);
        let mut replay = SharedReplay {
            store: &mut mem,
            shards: SHARDS,
        };
        assert_eq!(replay.first_use(&hash(1), 160, 100), Ok(()));
        assert_eq!(replay.first_use(&hash(1), 170, 110), Err(Refusal::Seen));
        assert_eq!(replay.first_use(&hash(2), 170, 110), Ok(()));
        // Past its window the entry is dropped: a proof that old is refused as stale anyway.
        assert_eq!(replay.first_use(&hash(1), 230, 161), Ok(()));
    }

    #[test]
    fn a_full_entry_refuses_until_its_proofs_expire() {
        let mut mem = Mem::default();
        ensure_shards(&mut mem, SHARDS);
        let mut replay = SharedReplay {
            store: &mut mem,
            shards: SHARDS,
        };
        for i in 0..DPOP_REPLAY_PER_SHARD as u32 {
            assert_eq!(replay.first_use(&hash(i), 160, 100), Ok(()));
        }
        let one_more = hash(DPOP_REPLAY_PER_SHARD as u32);
        assert_eq!(replay.first_use(&one_more, 160, 100), Err(Refusal::Full));
        assert_eq!(replay.first_use(&hash(0), 160, 100), Err(Refusal::Seen));
        assert_eq!(replay.first_use(&one_more, 260, 200), Ok(()));
        let bytes = mem.0[&shard_key(7)].0.len();
        assert_eq!(bytes, ENTRY, "the expired entries went with that write");
    }

    #[test]
    fn contention_retries_then_refuses_and_missing_entries_refuse() {
        let mut mem = Mem::default();
        ensure_shards(&mut mem, SHARDS);
        mem.1 = ATTEMPTS - 1;
        let mut replay = SharedReplay {
            store: &mut mem,
            shards: SHARDS,
        };
        assert_eq!(replay.first_use(&hash(1), 160, 100), Ok(()));
        let mut lost = Mem::default();
        ensure_shards(&mut lost, SHARDS);
        lost.1 = ATTEMPTS;
        let mut replay = SharedReplay {
            store: &mut lost,
            shards: SHARDS,
        };
        assert_eq!(replay.first_use(&hash(1), 160, 100), Err(Refusal::Full));
        let mut empty = Mem::default();
        let mut replay = SharedReplay {
            store: &mut empty,
            shards: SHARDS,
        };
        assert_eq!(replay.first_use(&hash(1), 160, 100), Err(Refusal::Full));
        assert!(empty.0.is_empty(), "no unguarded write");
    }
}
