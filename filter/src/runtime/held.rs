//! TLS connections the NETWORK plugin holds at the gate until their handshake shows whether the
//! peer presented a certificate, with when each is next asked and when it is refused.

use std::collections::BTreeMap;

/// How soon a held TLS connection is first asked whether its peer presented a certificate; the
/// interval then doubles up to `MAX_POLL_MS`, so connections that stall cost little. Client-first
/// protocols are decided sooner, by their first bytes.
pub const TICK_HANDSHAKE_MS: u32 = 5;
const MAX_POLL_MS: u64 = 1_000;
/// A TLS connection that has shown no client certificate by then is refused.
const HANDSHAKE_TIMEOUT_MS: u64 = 10_000;
/// TLS connections one plugin holds at the gate per VM; past it a new one is refused.
pub const MAX_PAUSED_CONNECTIONS: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Handshake {
    deadline_ms: u64,
    next_poll_ms: u64,
    poll_interval_ms: u64,
}

/// Held connections by context id.
#[derive(Debug, Default)]
pub struct Held(BTreeMap<u32, Handshake>);

impl Held {
    /// Holds a connection arriving at `now_ms`; false when the cap is reached.
    pub fn hold(&mut self, context_id: u32, now_ms: u64) -> bool {
        if self.0.len() >= MAX_PAUSED_CONNECTIONS {
            return false;
        }
        self.0.insert(
            context_id,
            Handshake {
                deadline_ms: now_ms.saturating_add(HANDSHAKE_TIMEOUT_MS),
                next_poll_ms: now_ms.saturating_add(u64::from(TICK_HANDSHAKE_MS)),
                poll_interval_ms: u64::from(TICK_HANDSHAKE_MS),
            },
        );
        true
    }

    /// Lets a connection go from the gate; whether it was held.
    pub fn release(&mut self, context_id: u32) -> bool {
        !self.0.is_empty() && self.0.remove(&context_id).is_some()
    }

    pub fn contains(&self, context_id: u32) -> bool {
        !self.0.is_empty() && self.0.contains_key(&context_id)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The connections to ask now, with their deadlines.
    pub fn due(&self, now_ms: u64) -> Vec<(u32, u64)> {
        self.0
            .iter()
            .filter(|(_, h)| h.next_poll_ms <= now_ms)
            .map(|(id, h)| (*id, h.deadline_ms))
            .collect()
    }

    /// A connection asked in vain is asked again later, never after its deadline.
    pub fn back_off(&mut self, context_id: u32, now_ms: u64) {
        if let Some(h) = self.0.get_mut(&context_id) {
            h.poll_interval_ms = h.poll_interval_ms.saturating_mul(2).min(MAX_POLL_MS);
            h.next_poll_ms = now_ms.saturating_add(h.poll_interval_ms).min(h.deadline_ms);
        }
    }

    pub fn extend(&mut self, other: Held) {
        self.0.extend(other.0);
    }

    /// Every held connection's context id, leaving none held.
    pub fn take_all(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.0).into_keys().collect()
    }
}
