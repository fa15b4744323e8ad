//! The plugin's series on the proxy's stats, labelled the way Envoy's tag extraction reads them.
//!
//! A stat named `plugin=.=gw;.;reason=.=expired;.;dry_run=.=false;.;mesh_authn_refused_total`
//! becomes, with one `stats_tags` regex `(<tag>=\.=(.*?);\.;)` per label (what Istio renders for
//! each name in `extraStatTags`), `mesh_authn_refused_total{plugin="gw",reason="expired",…}` on
//! `/stats/prometheus`. Labels go first so that what is left once they are taken out is the bare
//! metric name. docs/operating.md ("Monitoring") lists the series and the tags to configure.

use super::host::{MetricKind, Quiet};
use crate::error::REASON_KINDS;
use crate::peer::Mode;

const REASONS: usize = REASON_KINDS.len();

/// Every label the plugin's series carry: what an operator lists in `extraStatTags`
/// (docs/monitoring/istio-stats.yaml, which a test compares with this list).
#[cfg(test)]
pub const LABELS: [&str; 7] = [
    "plugin", "decision", "reason", "dry_run", "port", "mode", "result",
];

/// A plugin name longer than this is cut in its label.
const MAX_PLUGIN_LABEL: usize = 128;

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
    keys_age: Option<u32>,
    held: Option<u32>,
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

/// What a flush records in the gauges besides the counts.
#[derive(Debug, Default, Clone, Copy)]
pub struct Levels {
    /// This VM has decided requests (the main thread's never does).
    pub served: bool,
    /// How the token cache's entries and bytes changed since the last flush.
    pub cache_delta: (i64, i64),
    /// The age of the oldest remote key set this VM serves; `None` without remote key sets.
    pub keys_age_s: Option<u64>,
    /// How the connections held awaiting their TLS handshake changed since the last flush.
    pub held_delta: i64,
}

impl Metrics {
    pub fn define(host: &impl Quiet) -> Self {
        let plugin = plugin_label(host);
        let define = |kind, metric: &str, labels: &[(&str, &str)]| {
            host.define_metric(kind, &series(&plugin, labels, metric))
        };
        let counter =
            |metric: &str, labels: &[(&str, &str)]| define(MetricKind::Counter, metric, labels);
        let gauge = |metric: &str| define(MetricKind::Gauge, metric, &[]);
        let refused = |dry_run: &str| {
            REASON_KINDS.map(|r| {
                counter(
                    "mesh_authn_refused_total",
                    &[("reason", r), ("dry_run", dry_run)],
                )
            })
        };
        Self {
            allowed: counter("mesh_authn_requests_total", &[("decision", "allowed")]),
            denied: counter("mesh_authn_requests_total", &[("decision", "denied")]),
            fetch_success: counter("mesh_authn_jwks_fetches_total", &[("result", "success")]),
            fetch_failed: counter("mesh_authn_jwks_fetches_total", &[("result", "failed")]),
            keys_cut: counter("mesh_authn_jwks_keys_cut_total", &[]),
            cache_hit: counter("mesh_authn_jwt_cache_lookups_total", &[("result", "hit")]),
            cache_miss: counter("mesh_authn_jwt_cache_lookups_total", &[("result", "miss")]),
            host_verify_failed: counter("mesh_authn_host_verify_failed_total", &[]),
            connections_allowed: counter(
                "mesh_authn_connections_total",
                &[("decision", "allowed")],
            ),
            connections_refused: counter("mesh_authn_connections_total", &[("decision", "denied")]),
            dpop_replay_full: counter("mesh_authn_dpop_replay_full_total", &[]),
            refused: refused("false"),
            dry_run_refused: refused("true"),
            vm_memory: gauge("mesh_authn_vm_memory_bytes"),
            cache_entries: gauge("mesh_authn_jwt_cache_entries"),
            cache_bytes: gauge("mesh_authn_jwt_cache_bytes"),
            keys_age: gauge("mesh_authn_jwks_age_seconds"),
            held: gauge("mesh_authn_held_connections"),
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

    /// The cache and held-connection gauges are the sums over every VM of the plugin; the others
    /// are the same in every VM that records them.
    pub fn flush(self, host: &impl Quiet, counts: &Counts, levels: Levels) {
        // Gauges first: once the counters show a request, the gauges show what it left.
        let (entries, bytes) = levels.cache_delta;
        for (id, delta) in [
            (self.cache_entries, entries),
            (self.cache_bytes, bytes),
            (self.held, levels.held_delta),
        ] {
            if let (Some(id), false) = (id, delta == 0) {
                host.add_to_gauge(id, delta);
            }
        }
        // The main thread's VM serves no requests; its memory would overwrite the workers'.
        if let (Some(id), true) = (self.vm_memory, levels.served) {
            host.record_metric(id, host.memory_bytes());
        }
        if let (Some(id), Some(age)) = (self.keys_age, levels.keys_age_s) {
            host.record_metric(id, age);
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

/// The stat name of `metric` with the plugin's label and `labels`, labels first.
pub fn series(plugin: &str, labels: &[(&str, &str)], metric: &str) -> String {
    let mut name = format!("plugin=.={plugin};.;");
    for (label, value) in labels {
        name.push_str(label);
        name.push_str("=.=");
        name.push_str(value);
        name.push_str(";.;");
    }
    name.push_str(metric);
    name
}

/// The plugin's name (istiod names it `<namespace>.<WasmPlugin name>`), kept to the bytes a
/// Kubernetes name may hold so that no value can end its label early.
fn plugin_label(host: &impl Quiet) -> String {
    let name = host.property(&["plugin_name"]).unwrap_or_default();
    let label: String = name
        .iter()
        .take(MAX_PLUGIN_LABEL)
        .map(|&b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'-' | b'_' => char::from(b),
            _ => '_',
        })
        .collect();
    if label.is_empty() {
        "unnamed".to_string()
    } else {
        label
    }
}

/// Ports with their own census series; later ones share `port="other"`.
const CENSUS_PORTS: usize = 32;
/// A plaintext caller's address is logged at most this often.
const CENSUS_LOG_INTERVAL_MS: u64 = 60_000;

/// The plaintext census: requests (HTTP plugin) or connections (NETWORK plugin) that came without
/// mTLS to a PERMISSIVE port, or to a STRICT one under `dryRun`, per destination port; what an
/// operator watches fall to zero before switching to STRICT.
#[derive(Debug, Default)]
pub struct Census {
    plugin: String,
    /// (port, its mode, its counter, count not yet flushed)
    ports: Vec<(Option<u32>, Mode, Option<u32>, u64)>,
    other: Vec<(Mode, Option<u32>, u64)>,
    next_log_ms: u64,
}

impl Census {
    pub fn new(host: &impl Quiet) -> Self {
        Self {
            plugin: plugin_label(host),
            ..Self::default()
        }
    }

    fn define(&self, host: &impl Quiet, port: &str, mode: Mode) -> Option<u32> {
        let labels = [("port", port), ("mode", mode.name())];
        let name = series(&self.plugin, &labels, "mesh_authn_plaintext_total");
        host.define_metric(MetricKind::Counter, &name)
    }

    /// Counts one plaintext caller; true when its address should be logged now.
    pub fn count(&mut self, host: &impl Quiet, port: Option<u32>, mode: Mode, now_ms: u64) -> bool {
        if let Some(entry) = self
            .ports
            .iter_mut()
            .find(|(p, m, ..)| *p == port && *m == mode)
        {
            entry.3 += 1;
        } else if self.ports.len() < CENSUS_PORTS {
            let label = port.map_or_else(|| "unknown".to_string(), |p| p.to_string());
            let id = self.define(host, &label, mode);
            self.ports.push((port, mode, id, 1));
        } else if let Some(entry) = self.other.iter_mut().find(|(m, ..)| *m == mode) {
            entry.2 += 1;
        } else {
            let id = self.define(host, "other", mode);
            self.other.push((mode, id, 1));
        }
        if now_ms >= self.next_log_ms {
            self.next_log_ms = now_ms.saturating_add(CENSUS_LOG_INTERVAL_MS);
            return true;
        }
        false
    }

    pub fn flush(&mut self, host: &impl Quiet) {
        for (.., id, n) in &mut self.ports {
            Metrics::add(host, *id, std::mem::take(n));
        }
        for (_, id, n) in &mut self.other {
            Metrics::add(host, *id, std::mem::take(n));
        }
    }
}
