//! The configuration: `pluginConfig` parsed (`plugin_config`), then compiled once into the
//! immutable structure every request reads.

mod duration;
mod keys;
pub mod limits;
mod peer_auth;
pub mod plugin_config;
mod rules;

pub use duration::parse_duration_ms;
pub use limits::*;
pub use plugin_config::{
    Binding, ClaimToHeader, Dpop, JwtHeader, JwtRule, PluginConfig, Presence, PrincipalBinding,
    SignatureVerifier, TriggerRule,
};

use std::collections::HashSet;

use peer_auth::compile_peer;
use rules::Gathered;

use crate::error::{ConfigError, DenialBody};
use crate::jwt::jwks::Jwks;
use crate::jwt::subject::SubjectMatcher;
use crate::peer::{EffectivePolicy, Workload};
use crate::remote::RemoteJwks;
use crate::request::token::{Location, LocationKind};
use crate::request::trigger::{PathMatcher, StringMatch, Trigger};

/// One issuer, ready to verify tokens.
#[derive(Debug)]
pub struct Rule {
    /// None: any `iss` is accepted (a rule with `jwksUri` and no issuer).
    pub issuer: Option<String>,
    /// Sanitized as Envoy does: scheme and trailing slash removed.
    pub audiences: HashSet<String>,
    pub keys: KeySource,
    pub forward_original_token: bool,
    pub output_payload_to_header: Option<String>,
    pub output_claim_to_headers: Vec<ClaimHeader>,
    /// Where this rule applies (empty: every path).
    pub trigger_rules: Vec<Trigger>,
    /// `presence: REQUIRED`.
    pub required: bool,
    pub subjects: Option<SubjectMatcher>,
    pub max_lifetime_ms: Option<u64>,
    pub certificate_binding: Option<Binding>,
    pub dpop: Option<DpopRule>,
}

/// A rule's `dpop`, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DpopRule {
    pub mode: Binding,
    pub max_age_s: u64,
    /// `scheme://authority`, normalized, when `origin` is set.
    pub origin: Option<String>,
}

/// One `outputClaimToHeaders` entry.
#[derive(Debug)]
pub struct ClaimHeader {
    pub header: String,
    /// Keys of nested objects.
    pub path: Vec<String>,
    /// Named in `spaceDelimitedClaims`: one header copy per space-separated element.
    pub space_delimited: bool,
}

#[derive(Debug)]
pub enum KeySource {
    Inline(Jwks),
    /// Index into `Config::remotes`.
    Remote(usize),
}

#[derive(Debug, Clone)]
pub struct Peer {
    /// The policy in force for this workload.
    pub policy: EffectivePolicy,
    pub trust_domains: Vec<String>,
    pub output_peer_principal: Option<String>,
    pub output_request_principal: Option<String>,
    pub output_principal: Option<String>,
    pub binding: PrincipalBinding,
    /// A peer policy is configured: plaintext callers under PERMISSIVE are counted.
    pub census: bool,
    /// Requests need the connection's peer properties at all (each costs host calls).
    pub needs_connection: bool,
}

impl Peer {
    fn with_needs_connection(mut self) -> Self {
        self.needs_connection = self.census
            || self.policy.checks_anything()
            || self.output_peer_principal.is_some()
            || (self.output_principal.is_some() && self.binding == PrincipalBinding::UsePeer);
        self
    }
}

/// The compiled, immutable configuration shared by every request of a plugin.
#[derive(Debug)]
pub struct Config {
    pub rules: Vec<Rule>,
    /// Remote key sets, one per distinct URI and cluster.
    pub remotes: Vec<RemoteJwks>,
    /// Unique token locations; each knows which rules read it.
    pub locations: Vec<Location>,
    /// Every header the filter writes; removed from each incoming request first.
    pub output_headers: Vec<String>,
    pub require_token: bool,
    pub clock_skew_seconds: u64,
    pub require_expiration: bool,
    pub trigger_rules: Vec<Trigger>,
    /// Some rule has its own `triggerRules`.
    pub per_rule_triggers: bool,
    pub peer: Peer,
    pub signature_verifier: SignatureVerifier,
    pub jwt_cache_bytes: usize,
    /// Entries, besides the bytes; `usize::MAX` when only the bytes bound it.
    pub jwt_cache_size: usize,
    pub max_paused_requests: usize,
    pub denial_body: DenialBody,
    pub dry_run: bool,
    /// `outputDecisionToHeader`.
    pub decision_header: Option<String>,
    /// A field only an HTTP filter honours (`PluginConfig::http_only_field`); a connection-level
    /// plugin refuses every connection rather than enforce less than it was given.
    pub http_only_field: Option<&'static str>,
    /// Keys that were skipped while loading JWKS, for the configure-time log.
    pub warnings: Vec<String>,
    /// Inline key sets longer than `jwks::MAX_KEYS`, counted once configured.
    pub keys_cut: u64,
    /// Some rule has `certificateBinding`: requests need the client certificate's digest.
    pub certificate_bound: bool,
    /// Some rule has `dpop`: the replay store is used.
    pub dpop: bool,
    /// Shared-data entries of the DPoP replay store (`dpopReplayEntries`).
    pub dpop_replay_shards: usize,
}

/// Parses and compiles `pluginConfig` for the workload `node` describes (its namespace and the
/// labels `PluginConfig::node_label_keys` asks for).
pub fn load(bytes: &[u8], node: &Workload) -> Result<Config, ConfigError> {
    compile(&parse(bytes)?, node)
}

/// Parses `pluginConfig`; an empty one means "no rules".
pub fn parse(bytes: &[u8]) -> Result<PluginConfig, ConfigError> {
    if bytes.len() > MAX_CONFIG_BYTES {
        return Err(ConfigError::here(format!(
            "larger than {MAX_CONFIG_BYTES} bytes"
        )));
    }
    let bytes = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    if let Err((path, why)) = crate::json::check_unique_members(bytes) {
        return Err(ConfigError::new(path.trim_start_matches('.'), why));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed: Result<PluginConfig, _> = serde_path_to_error::deserialize(&mut de);
    let cfg = parsed.map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." { String::new() } else { path };
        ConfigError::new(field, e.into_inner().to_string())
    })?;
    de.end().map_err(|e| ConfigError::here(e.to_string()))?;
    Ok(cfg)
}

pub fn compile(raw: &PluginConfig, node: &Workload) -> Result<Config, ConfigError> {
    let mut g = Gathered::default();
    let rules = raw
        .jwt_rules
        .iter()
        .enumerate()
        .map(|(i, r)| rules::compile_rule(i, r, &mut g))
        .collect::<Result<Vec<_>, _>>()?;
    let Gathered {
        remotes,
        locations,
        mut output_headers,
        mut warnings,
        keys_cut,
    } = g;

    let trigger_rules = compile_trigger_rules(&raw.trigger_rules, "triggerRules")?;

    let certificate_bound = rules.iter().any(|r| r.certificate_binding.is_some());
    let dpop = rules.iter().any(|r| r.dpop.is_some());
    let peer = compile_peer(raw, node, &mut output_headers, &mut warnings)?;
    for l in &locations {
        if let LocationKind::Header { name, .. } = &l.kind {
            if output_headers.contains(name) {
                return Err(ConfigError::new(
                    "jwtRules",
                    format!("header {name:?} is both a token location and an output header"),
                ));
            }
        }
    }

    if raw.jwt_cache_size.is_some_and(|n| n > MAX_JWT_CACHE_SIZE) {
        return Err(ConfigError::new(
            "jwtCacheSize",
            format!("must be at most {MAX_JWT_CACHE_SIZE}"),
        ));
    }
    if raw.jwt_cache_bytes > MAX_JWT_CACHE_BYTES {
        return Err(ConfigError::new(
            "jwtCacheBytes",
            format!("must be at most {MAX_JWT_CACHE_BYTES} (256 MiB)"),
        ));
    }
    if !(MIN_DPOP_REPLAY_ENTRIES..=MAX_DPOP_REPLAY_ENTRIES).contains(&raw.dpop_replay_entries) {
        return Err(ConfigError::new(
            "dpopReplayEntries",
            format!("must be from {MIN_DPOP_REPLAY_ENTRIES} to {MAX_DPOP_REPLAY_ENTRIES}"),
        ));
    }
    if raw.max_paused_requests > MAX_MAX_PAUSED_REQUESTS {
        return Err(ConfigError::new(
            "maxPausedRequests",
            format!("must be at most {MAX_MAX_PAUSED_REQUESTS}"),
        ));
    }
    let per_rule_triggers = rules.iter().any(|r| !r.trigger_rules.is_empty());
    let decision_header = match &raw.output_decision_to_header {
        Some(h) => {
            let h = header_name(h, "outputDecisionToHeader")?;
            if output_headers.contains(&h) {
                return Err(ConfigError::new(
                    "outputDecisionToHeader",
                    format!("header {h:?} is already an output header"),
                ));
            }
            output_headers.push(h.clone());
            Some(h)
        }
        None => None,
    };
    Ok(Config {
        peer,
        signature_verifier: raw.signature_verifier,
        jwt_cache_bytes: raw.jwt_cache_bytes,
        jwt_cache_size: raw.jwt_cache_size.unwrap_or(usize::MAX),
        max_paused_requests: raw.max_paused_requests,
        denial_body: raw.denial_body,
        dry_run: raw.dry_run,
        decision_header,
        rules,
        remotes,
        locations,
        output_headers,
        require_token: raw.require_token,
        clock_skew_seconds: raw.clock_skew_seconds,
        require_expiration: raw.require_expiration,
        per_rule_triggers,
        trigger_rules,
        http_only_field: raw.http_only_field(),
        warnings,
        keys_cut,
        certificate_bound,
        dpop,
        dpop_replay_shards: raw.dpop_replay_entries.div_ceil(DPOP_REPLAY_PER_SHARD),
    })
}

fn compile_trigger_rules(
    raw: &[plugin_config::TriggerRule],
    at: &str,
) -> Result<Vec<Trigger>, ConfigError> {
    raw.iter()
        .enumerate()
        .map(|(i, t)| {
            let compile_all = |list: &[StringMatch], f: &str| {
                list.iter()
                    .enumerate()
                    .map(|(j, m)| {
                        PathMatcher::new(m).map_err(|e| e.within(&format!("{at}[{i}].{f}[{j}]")))
                    })
                    .collect::<Result<Vec<_>, _>>()
            };
            Ok((
                compile_all(&t.excluded_paths, "excludedPaths")?,
                compile_all(&t.included_paths, "includedPaths")?,
            ))
        })
        .collect()
}

/// A connection-level (NETWORK) plugin's configuration: peer authentication only.
pub fn check_network(raw: &PluginConfig) -> Result<(), ConfigError> {
    match raw.http_only_field() {
        Some(field) => Err(ConfigError::new(
            field,
            "needs the HTTP plugin: a NETWORK plugin sees connections, not requests; \
             attach a second WasmPlugin of type HTTP for it",
        )),
        None => Ok(()),
    }
}

fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn header_name(name: &str, field: &str) -> Result<String, ConfigError> {
    if name.is_empty() || !name.bytes().all(is_token_char) {
        return Err(ConfigError::new(
            field,
            format!("{name:?} is not a valid HTTP header name"),
        ));
    }
    Ok(name.to_ascii_lowercase())
}

#[cfg(test)]
mod tests;
