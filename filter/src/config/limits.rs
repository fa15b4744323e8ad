//! Every default and every limit of `pluginConfig`, in one place: serde's defaults, the JSON
//! Schema's defaults, `compile`'s checks and their messages all read them from here.

/// Largest `pluginConfig` accepted; istiod refuses far smaller WasmPlugins, so this only guards the VM.
pub const MAX_CONFIG_BYTES: usize = 4 << 20;

/// `clockSkewSeconds`.
pub const DEFAULT_CLOCK_SKEW_SECONDS: u64 = 60;
/// `rootNamespace`.
pub const DEFAULT_ROOT_NAMESPACE: &str = "istio-system";

/// A rule's `timeout` (JWKS fetch), as Istio's default.
pub const DEFAULT_TIMEOUT_MS: u64 = 5_000;
/// A rule's `jwksCacheDuration`.
pub const DEFAULT_CACHE_DURATION_S: u64 = 600;
/// Istio's CRD bound on a rule's `spaceDelimitedClaims`.
pub const MAX_SPACE_DELIMITED_CLAIMS: usize = 64;

/// `jwtCacheBytes`: memory the verified-token cache of one VM may hold.
pub const DEFAULT_JWT_CACHE_BYTES: usize = 8 << 20;
pub const MAX_JWT_CACHE_BYTES: usize = 256 << 20;
/// `jwtCacheSize`, when set.
pub const MAX_JWT_CACHE_SIZE: usize = 1_000_000;

/// A rule's `dpop.maxAge`: how old a proof may be. Its bound also bounds how long a `jti` is kept.
pub const DEFAULT_DPOP_MAX_AGE_S: u64 = 60;
pub const MAX_DPOP_MAX_AGE_S: u64 = 3_600;
/// `dpopReplayEntries`: DPoP proofs the replay store shared by every worker keeps, in shared-data
/// entries of at most `DPOP_REPLAY_PER_SHARD` each, 24 bytes a proof (6 MiB at the default). A
/// proof whose entry is full is refused, never let through, and counted (`dpop_replay_full`).
pub const DEFAULT_DPOP_REPLAY_ENTRIES: usize = 262_144;
pub const MIN_DPOP_REPLAY_ENTRIES: usize = DPOP_REPLAY_PER_SHARD;
pub const MAX_DPOP_REPLAY_ENTRIES: usize = 4 << 20;
pub const DPOP_REPLAY_PER_SHARD: usize = 256;

/// `maxPausedRequests`.
pub const DEFAULT_MAX_PAUSED_REQUESTS: usize = 10_000;
pub const MAX_MAX_PAUSED_REQUESTS: usize = 100_000;

// serde's and the schema's defaults.

pub(super) fn default_clock_skew() -> u64 {
    DEFAULT_CLOCK_SKEW_SECONDS
}

pub(super) fn default_root_namespace() -> String {
    DEFAULT_ROOT_NAMESPACE.into()
}

pub(super) fn default_jwt_cache_bytes() -> usize {
    DEFAULT_JWT_CACHE_BYTES
}

pub(super) fn default_dpop_replay_entries() -> usize {
    DEFAULT_DPOP_REPLAY_ENTRIES
}

pub(super) fn default_max_paused_requests() -> usize {
    DEFAULT_MAX_PAUSED_REQUESTS
}

#[cfg(feature = "schema")]
pub(super) fn default_timeout() -> Option<String> {
    Some(format!("{}s", DEFAULT_TIMEOUT_MS / 1000))
}

#[cfg(feature = "schema")]
pub(super) fn default_dpop_max_age() -> Option<String> {
    Some(format!("{DEFAULT_DPOP_MAX_AGE_S}s"))
}

#[cfg(feature = "schema")]
pub(super) fn default_cache_duration() -> Option<String> {
    Some(format!("{DEFAULT_CACHE_DURATION_S}s"))
}
