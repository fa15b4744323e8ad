//! TLS connections the NETWORK plugin holds at the gate until their handshake shows whether the
//! peer presented a certificate, with their port, when each is next asked and when it is refused.

use std::collections::BTreeMap;

/// How soon a held TLS connection is first asked whether its peer presented a certificate, and
/// the root's tick while it holds any; the interval then doubles up to `MAX_POLL_MS`, so
/// connections that stall cost little. Nothing waits on the asking: a held connection goes on,
/// and its first bytes either way decide it. Asking only catches the silent ones, so it need not
/// be soon: at 5 ms, most connections of a busy listener were asked once before their first
/// bytes came (two more host calls each).
pub const TICK_HANDSHAKE_MS: u32 = 50;
const MAX_POLL_MS: u64 = 1_000;
/// A TLS connection that has shown no client certificate by then is refused.
const HANDSHAKE_TIMEOUT_MS: u64 = 10_000;
/// TLS connections one plugin holds at the gate per VM; past it the one held longest is refused
/// to make room: a handshake takes milliseconds, so under a flood of stalled handshakes the
/// longest held is a stalled one, and a client's new connection still gets through.
pub const MAX_PAUSED_CONNECTIONS: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Handshake {
    /// Its place in the order connections arrived in.
    arrival: u64,
    /// The workload port it came in on, read when it arrived: one host call fewer when it is
    /// decided.
    port: Option<u32>,
    deadline_ms: u64,
    next_poll_ms: u64,
    poll_interval_ms: u64,
}

/// A held connection that is due to be asked again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    pub context_id: u32,
    pub deadline_ms: u64,
    pub port: Option<u32>,
}

/// Held connections by context id, and by arrival.
#[derive(Debug, Default)]
pub struct Held {
    by_id: BTreeMap<u32, Handshake>,
    arrivals: BTreeMap<u64, u32>,
    next_arrival: u64,
}

impl Held {
    /// Holds a connection to `port` arriving at `now_ms`. At the cap, the connection held
    /// longest leaves to make room: its context id is returned, for it to be refused.
    pub fn hold(&mut self, context_id: u32, port: Option<u32>, now_ms: u64) -> Option<u32> {
        let evicted = if self.by_id.len() >= MAX_PAUSED_CONNECTIONS {
            let oldest = self.arrivals.first_key_value().map(|(_, id)| *id);
            oldest.filter(|id| self.release(*id).is_some())
        } else {
            None
        };
        self.insert(
            context_id,
            Handshake {
                arrival: 0,
                port,
                deadline_ms: now_ms.saturating_add(HANDSHAKE_TIMEOUT_MS),
                next_poll_ms: now_ms.saturating_add(u64::from(TICK_HANDSHAKE_MS)),
                poll_interval_ms: u64::from(TICK_HANDSHAKE_MS),
            },
        );
        evicted
    }

    /// Adds a connection as the newest arrival.
    fn insert(&mut self, context_id: u32, mut handshake: Handshake) {
        self.release(context_id);
        handshake.arrival = self.next_arrival;
        self.next_arrival += 1;
        self.by_id.insert(context_id, handshake);
        self.arrivals.insert(handshake.arrival, context_id);
    }

    /// Lets a connection go from the gate; if it was held, the port it came in on.
    pub fn release(&mut self, context_id: u32) -> Option<Option<u32>> {
        let h = self.by_id.remove(&context_id)?;
        self.arrivals.remove(&h.arrival);
        Some(h.port)
    }

    pub fn contains(&self, context_id: u32) -> bool {
        !self.by_id.is_empty() && self.by_id.contains_key(&context_id)
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// The connections to ask now.
    pub fn due(&self, now_ms: u64) -> Vec<Due> {
        self.by_id
            .iter()
            .filter(|(_, h)| h.next_poll_ms <= now_ms)
            .map(|(id, h)| Due {
                context_id: *id,
                deadline_ms: h.deadline_ms,
                port: h.port,
            })
            .collect()
    }

    /// A connection asked in vain is asked again later, never after its deadline.
    pub fn back_off(&mut self, context_id: u32, now_ms: u64) {
        if let Some(h) = self.by_id.get_mut(&context_id) {
            h.poll_interval_ms = h.poll_interval_ms.saturating_mul(2).min(MAX_POLL_MS);
            h.next_poll_ms = now_ms.saturating_add(h.poll_interval_ms).min(h.deadline_ms);
        }
    }

    /// Takes over another plugin's held connections (a reconfigured plugin's), after its own.
    pub fn extend(&mut self, other: Held) {
        let mut others: Vec<(u32, Handshake)> = other.by_id.into_iter().collect();
        others.sort_by_key(|(_, h)| h.arrival);
        for (id, h) in others {
            self.insert(id, h);
        }
    }

    /// Every held connection's context id, leaving none held.
    pub fn take_all(&mut self) -> Vec<u32> {
        self.arrivals.clear();
        std::mem::take(&mut self.by_id).into_keys().collect()
    }
}
