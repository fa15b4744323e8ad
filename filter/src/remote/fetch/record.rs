//! The two shared-data entries of a remote key set: the `Record` workers coordinate through, and
//! the last good JWKS body.

use serde::{Deserialize, Serialize};

use crate::remote::RemoteJwks;

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

pub(super) fn keys_key(spec: &RemoteJwks) -> String {
    format!("{}|keys", spec.shared_key())
}

pub(super) fn read_record(spec: &RemoteJwks, store: &dyn SharedStore) -> (Record, u32) {
    match store.get(&spec.shared_key()) {
        Some((bytes, cas)) => (serde_json::from_slice(&bytes).unwrap_or_default(), cas),
        None => (Record::default(), 0),
    }
}

pub(super) fn write_record(
    spec: &RemoteJwks,
    store: &mut dyn SharedStore,
    rec: &Record,
    cas: u32,
) -> bool {
    match serde_json::to_vec(rec) {
        Ok(bytes) => store.set(&spec.shared_key(), &bytes, cas),
        Err(_) => false,
    }
}
