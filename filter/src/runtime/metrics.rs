//! The plugin's counters on the proxy's `/stats`: `mesh_authn.<plugin>.<name>`.

use super::host::{MetricKind, Quiet};
use crate::error::REASON_KINDS;

const REASONS: usize = REASON_KINDS.len();

#[derive(Debug, Default, Clone, Copy)]
pub struct Metrics {
    allowed: Option<u32>,
    denied: Option<u32>,
    pub fetch_success: Option<u32>,
    pub fetch_failed: Option<u32>,
    /// Key sets longer than `jwks::MAX_KEYS` (each fetch, each inline set once configured).
    pub keys_cut: Option<u32>,
    cache_hit: Option<u32>,
    cache_miss: Option<u32>,
    host_verify_failed: Option<u32>,
    connections_allowed: Option<u32>,
    connections_refused: Option<u32>,
    /// DPoP proofs refused because the replay store could not record them.
    dpop_replay_full: Option<u32>,
    /// Per reason (`REASON_KINDS`): what was refused, and what a dry run would have refused.
    refused: [Option<u32>; REASONS],
    dry_run_refused: [Option<u32>; REASONS],
    vm_memory: Option<u32>,
    cache_entries: Option<u32>,
    cache_bytes: Option<u32>,
}

/// Per-request counts, added to the host's counters on each tick (at most a second late) rather
/// than with a host call per request.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counts {
    pub allowed: u64,
    pub denied: u64,
    pub cache_hit: u64,
    pub cache_miss: u64,
    pub host_verify_failed: u64,
    pub connections_allowed: u64,
    pub connections_refused: u64,
    pub dpop_replay_full: u64,
    pub refused: [u64; REASONS],
    pub dry_run_refused: [u64; REASONS],
}

impl Metrics {
    pub fn define(host: &impl Quiet) -> Self {
        let prefix = prefix(host);
        let counter =
            |name: &str| host.define_metric(MetricKind::Counter, &format!("{prefix}.{name}"));
        let gauge = |name: &str| host.define_metric(MetricKind::Gauge, &format!("{prefix}.{name}"));
        Self {
            allowed: counter("allowed"),
            denied: counter("denied"),
            fetch_success: counter("jwks_fetch_success"),
            fetch_failed: counter("jwks_fetch_failed"),
            keys_cut: counter("jwks_keys_cut"),
            cache_hit: counter("jwt_cache_hit"),
            cache_miss: counter("jwt_cache_miss"),
            host_verify_failed: counter("host_verify_failed"),
            connections_allowed: counter("connections_allowed"),
            connections_refused: counter("connections_refused"),
            dpop_replay_full: counter("dpop_replay_full"),
            refused: REASON_KINDS.map(|r| counter(&format!("refused_{r}"))),
            dry_run_refused: REASON_KINDS.map(|r| counter(&format!("dry_run_refused_{r}"))),
            vm_memory: gauge("vm_memory_bytes"),
            cache_entries: gauge("jwt_cache_entries"),
            cache_bytes: gauge("jwt_cache_bytes"),
        }
    }

    pub fn bump(host: &impl Quiet, id: Option<u32>) {
        Self::add(host, id, 1);
    }

    pub fn add(host: &impl Quiet, id: Option<u32>, by: u64) {
        if let (Some(id), 1..) = (id, by) {
            host.increment_metric(id, by);
        }
    }

    /// `cache`: how the token cache's entries and bytes changed since the last flush; the
    /// gauges are the sums over every VM of the plugin.
    pub fn flush(self, host: &impl Quiet, counts: &Counts, served: bool, cache: (i64, i64)) {
        // Gauges first: once the counters show a request, the gauges show what it left.
        for (id, delta) in [(self.cache_entries, cache.0), (self.cache_bytes, cache.1)] {
            if let (Some(id), false) = (id, delta == 0) {
                host.add_to_gauge(id, delta);
            }
        }
        // The main thread's VM serves no requests; its memory would overwrite the workers'.
        if let (Some(id), true) = (self.vm_memory, served) {
            host.record_metric(id, host.memory_bytes());
        }
        Self::add(host, self.allowed, counts.allowed);
        Self::add(host, self.denied, counts.denied);
        Self::add(host, self.cache_hit, counts.cache_hit);
        Self::add(host, self.cache_miss, counts.cache_miss);
        Self::add(host, self.host_verify_failed, counts.host_verify_failed);
        Self::add(host, self.connections_allowed, counts.connections_allowed);
        Self::add(host, self.connections_refused, counts.connections_refused);
        Self::add(host, self.dpop_replay_full, counts.dpop_replay_full);
        for (id, n) in self.refused.iter().zip(counts.refused) {
            Self::add(host, *id, n);
        }
        for (id, n) in self.dry_run_refused.iter().zip(counts.dry_run_refused) {
            Self::add(host, *id, n);
        }
    }
}

/// `mesh_authn.<plugin name>`, or `mesh_authn` for a name Envoy's stats would split.
fn prefix(host: &impl Quiet) -> String {
    host.property(&["plugin_name"])
        .and_then(|b| String::from_utf8(b).ok())
        .filter(|n| {
            n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
        })
        .map_or_else(|| "mesh_authn".to_string(), |n| format!("mesh_authn.{n}"))
}

/// Ports with their own `plaintext_port_<port>` counter; later ones share `plaintext_port_other`.
const CENSUS_PORTS: usize = 32;
/// A plaintext caller's address is logged at most this often.
const CENSUS_LOG_INTERVAL_MS: u64 = 60_000;

/// The plaintext census: under PERMISSIVE, requests (HTTP plugin) or connections (NETWORK plugin)
/// that came without mTLS, per destination port; what an operator watches fall to zero before
/// switching to STRICT.
#[derive(Debug, Default)]
pub struct Census {
    prefix: String,
    /// (port, its counter, count not yet flushed)
    ports: Vec<(u32, Option<u32>, u64)>,
    other: Option<(Option<u32>, u64)>,
    next_log_ms: u64,
}

impl Census {
    pub fn new(host: &impl Quiet) -> Self {
        Self {
            prefix: prefix(host),
            ..Self::default()
        }
    }

    /// Counts one plaintext caller; true when its address should be logged now.
    pub fn count(&mut self, host: &impl Quiet, port: Option<u32>, now_ms: u64) -> bool {
        let port = port.unwrap_or(0);
        if let Some(entry) = self.ports.iter_mut().find(|(p, ..)| *p == port) {
            entry.2 += 1;
        } else if self.ports.len() < CENSUS_PORTS {
            let name = format!("{}.plaintext_port_{port}", self.prefix);
            self.ports
                .push((port, host.define_metric(MetricKind::Counter, &name), 1));
        } else {
            let prefix = &self.prefix;
            let other = self.other.get_or_insert_with(|| {
                let name = format!("{prefix}.plaintext_port_other");
                (host.define_metric(MetricKind::Counter, &name), 0)
            });
            other.1 += 1;
        }
        if now_ms >= self.next_log_ms {
            self.next_log_ms = now_ms.saturating_add(CENSUS_LOG_INTERVAL_MS);
            return true;
        }
        false
    }

    pub fn flush(&mut self, host: &impl Quiet) {
        for (_, id, n) in &mut self.ports {
            Metrics::add(host, *id, std::mem::take(n));
        }
        if let Some((id, n)) = &mut self.other {
            Metrics::add(host, *id, std::mem::take(n));
        }
    }
}
