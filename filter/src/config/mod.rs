//! The configuration: `pluginConfig` parsed (`plugin_config`), then compiled once into the
//! immutable structure every request reads.

mod duration;
pub mod plugin_config;

pub use duration::parse_duration_ms;
pub use plugin_config::{
    ClaimToHeader, JwtHeader, JwtRule, PluginConfig, Presence, PrincipalBinding, SignatureVerifier,
    TriggerRule, DEFAULT_CLOCK_SKEW_SECONDS, MAX_CONFIG_BYTES, MAX_SPACE_DELIMITED_CLAIMS,
};

use std::collections::{BTreeMap, HashSet};

use crate::error::{ConfigError, DenialBody};
use crate::jwt::claims::sanitize_audience;
use crate::jwt::jwks::{self, Jwks};
use crate::jwt::subject::SubjectMatcher;
use crate::peer::{self, EffectivePolicy, Workload};
use crate::remote::{self, RemoteJwks};
use crate::request::token::{Location, LocationKind};
use crate::request::trigger::{PathMatcher, StringMatch, Trigger};

pub const DEFAULT_TIMEOUT_MS: u64 = 5_000;
pub const DEFAULT_CACHE_DURATION_S: u64 = 600;
/// The verified-token cache's budget per VM is at most this (`jwtCacheBytes`).
pub const MAX_JWT_CACHE_BYTES: usize = 256 << 20;

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
    let mut rules = Vec::with_capacity(raw.jwt_rules.len());
    let mut remotes: Vec<RemoteJwks> = Vec::new();
    let mut locations: Vec<Location> = Vec::new();
    let mut output_headers: Vec<String> = Vec::new();
    let mut warnings = Vec::new();
    let mut keys_cut = 0;

    for (i, r) in raw.jwt_rules.iter().enumerate() {
        let at = |f: &str| format!("jwtRules[{i}].{f}");
        match (&r.issuer, &r.jwks_uri) {
            (Some(iss), _) if iss.is_empty() => {
                return Err(ConfigError::new(at("issuer"), "must not be empty"))
            }
            (None, None) => {
                return Err(ConfigError::new(
                    at("issuer"),
                    "is required unless jwksUri is set (only one of them may be left out)",
                ))
            }
            _ => {}
        }
        let keys = match (&r.jwks, &r.jwks_uri) {
            (Some(inline), uri) => {
                if uri.is_some() {
                    warnings.push(format!(
                        "{}: jwks is set, so jwksUri is not used",
                        at("jwksUri")
                    ));
                }
                let (jwks, skipped) =
                    jwks::parse(inline.as_bytes()).map_err(|e| e.within(&at("jwks")))?;
                warnings.extend(skipped.into_iter().map(|w| format!("{}: {w}", at("jwks"))));
                if let Some(n) = jwks.cut_from {
                    warnings.push(format!("{}: {}", at("jwks"), jwks::cut_warning(n)));
                    keys_cut += 1;
                }
                KeySource::Inline(jwks)
            }
            (None, uri) => {
                let source = match (uri, &r.issuer) {
                    (Some(uri), _) => remote_source(r, uri, false, &at("jwksUri"), &at)?,
                    (None, Some(issuer)) => {
                        let discovery = format!(
                            "{}/.well-known/openid-configuration",
                            issuer.trim_end_matches('/')
                        );
                        remote_source(r, &discovery, true, &at("issuer"), &at).map_err(|e| {
                            ConfigError::new(
                                at("issuer"),
                                format!(
                                    "without jwks or jwksUri, keys are discovered from the \
                                     issuer, which must then be an http(s) URL: {}",
                                    e.message
                                ),
                            )
                        })?
                    }
                    (None, None) => return Err(ConfigError::new(at("issuer"), "is required")),
                };
                let index = match remotes.iter().position(|x| *x == source) {
                    Some(i) => i,
                    None => {
                        remotes.push(source);
                        remotes.len() - 1
                    }
                };
                KeySource::Remote(index)
            }
        };

        let mut rule_locations = Vec::new();
        for (j, h) in r.from_headers.iter().enumerate() {
            let name = header_name(&h.name, &at(&format!("fromHeaders[{j}].name")))?;
            rule_locations.push(LocationKind::Header {
                name,
                prefix: h.prefix.clone(),
            });
        }
        for (j, p) in r.from_params.iter().enumerate() {
            if p.is_empty() {
                return Err(ConfigError::new(
                    at(&format!("fromParams[{j}]")),
                    "must not be empty",
                ));
            }
            rule_locations.push(LocationKind::Param(p.clone()));
        }
        for (j, c) in r.from_cookies.iter().enumerate() {
            if c.is_empty() || !c.bytes().all(is_token_char) {
                return Err(ConfigError::new(
                    at(&format!("fromCookies[{j}]")),
                    "must be a cookie name (RFC 6265 token)",
                ));
            }
            rule_locations.push(LocationKind::Cookie(c.clone()));
        }
        if rule_locations.is_empty() {
            rule_locations.push(LocationKind::Header {
                name: "authorization".into(),
                prefix: "Bearer ".into(),
            });
            rule_locations.push(LocationKind::Param("access_token".into()));
        }
        for kind in rule_locations {
            match locations.iter_mut().find(|l| l.kind == kind) {
                Some(l) if !l.rules.contains(&i) => l.rules.push(i),
                Some(_) => {}
                None => locations.push(Location {
                    kind,
                    rules: vec![i],
                }),
            }
        }

        let output_payload_to_header = match &r.output_payload_to_header {
            Some(h) => Some(header_name(h, &at("outputPayloadToHeader"))?),
            None => None,
        };
        let mut claims = Vec::with_capacity(r.output_claim_to_headers.len());
        for (j, c) in r.output_claim_to_headers.iter().enumerate() {
            let here = |f: &str| at(&format!("outputClaimToHeaders[{j}].{f}"));
            let header = header_name(&c.header, &here("header"))?;
            // One header, one claim: which value it carried would depend on the order of writes.
            if output_payload_to_header.as_ref() == Some(&header)
                || claims.iter().any(|c: &ClaimHeader| c.header == header)
            {
                return Err(ConfigError::new(
                    here("header"),
                    format!("{header:?} is already an output header of this rule"),
                ));
            }
            let path: Vec<String> = match (&c.claim, c.claim_path.as_slice()) {
                (Some(claim), []) => {
                    if claim.is_empty() || claim.split('.').any(str::is_empty) {
                        return Err(ConfigError::new(
                            here("claim"),
                            "must be a claim name, nested names separated by '.'",
                        ));
                    }
                    claim.split('.').map(String::from).collect()
                }
                (None, keys) if !keys.is_empty() => {
                    if keys.iter().any(String::is_empty) {
                        return Err(ConfigError::new(
                            here("claimPath"),
                            "keys must not be empty",
                        ));
                    }
                    keys.to_vec()
                }
                (Some(_), _) => {
                    return Err(ConfigError::new(
                        here("claimPath"),
                        "not together with claim",
                    ))
                }
                (None, _) => {
                    return Err(ConfigError::new(
                        here("claim"),
                        "one of claim or claimPath is required",
                    ))
                }
            };
            let dotted = path.join(".");
            let space_delimited = r
                .space_delimited_claims
                .iter()
                .any(|n| *n == dotted || c.claim.as_ref() == Some(n));
            claims.push(ClaimHeader {
                header,
                path,
                space_delimited,
            });
        }
        for (j, name) in r.space_delimited_claims.iter().enumerate() {
            let outputs_it = claims
                .iter()
                .zip(&r.output_claim_to_headers)
                .any(|(c, raw)| c.path.join(".") == *name || raw.claim.as_ref() == Some(name));
            if !outputs_it {
                warnings.push(format!(
                    "{}: no outputClaimToHeaders entry outputs claim {name:?}, so listing it \
                     changes nothing here",
                    at(&format!("spaceDelimitedClaims[{j}]"))
                ));
            }
        }
        for h in output_payload_to_header
            .iter()
            .chain(claims.iter().map(|c| &c.header))
        {
            if !output_headers.contains(h) {
                output_headers.push(h.clone());
            }
        }

        if r.space_delimited_claims.len() > MAX_SPACE_DELIMITED_CLAIMS {
            return Err(ConfigError::new(
                at("spaceDelimitedClaims"),
                format!("at most {MAX_SPACE_DELIMITED_CLAIMS} claims"),
            ));
        }
        if let Some(j) = r.space_delimited_claims.iter().position(String::is_empty) {
            return Err(ConfigError::new(
                at(&format!("spaceDelimitedClaims[{j}]")),
                "must not be empty",
            ));
        }
        let subjects = match &r.subjects {
            Some(m) => Some(SubjectMatcher::new(m).map_err(|e| e.within(&at("subjects")))?),
            None => None,
        };
        let max_lifetime_ms = match &r.max_lifetime {
            Some(d) => match parse_duration_ms(d).map_err(|e| e.within(&at("maxLifetime")))? {
                0 => return Err(ConfigError::new(at("maxLifetime"), "must be more than 0s")),
                ms => Some(ms),
            },
            None => None,
        };

        rules.push(Rule {
            required: r.presence == Presence::Required,
            subjects,
            max_lifetime_ms,
            trigger_rules: compile_trigger_rules(&r.trigger_rules, &at("triggerRules"))?,
            issuer: r.issuer.clone().filter(|i| !i.is_empty()),
            audiences: r
                .audiences
                .iter()
                .map(|a| sanitize_audience(a).to_string())
                .collect(),
            keys,
            forward_original_token: r.forward_original_token,
            output_payload_to_header,
            output_claim_to_headers: claims,
        });
    }

    let trigger_rules = compile_trigger_rules(&raw.trigger_rules, "triggerRules")?;

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

    if raw.jwt_cache_size.is_some_and(|n| n > 1_000_000) {
        return Err(ConfigError::new("jwtCacheSize", "must be at most 1000000"));
    }
    if raw.jwt_cache_bytes > MAX_JWT_CACHE_BYTES {
        return Err(ConfigError::new(
            "jwtCacheBytes",
            format!("must be at most {MAX_JWT_CACHE_BYTES} (256 MiB)"),
        ));
    }
    if raw.max_paused_requests > plugin_config::MAX_MAX_PAUSED_REQUESTS {
        return Err(ConfigError::new(
            "maxPausedRequests",
            format!("must be at most {}", plugin_config::MAX_MAX_PAUSED_REQUESTS),
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

fn compile_peer(
    raw: &PluginConfig,
    node: &Workload,
    output_headers: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> Result<Peer, ConfigError> {
    let policy = match (
        &raw.peer_authentications,
        &raw.mtls,
        raw.port_level_mtls.is_empty(),
    ) {
        (Some(_), Some(_), _) | (Some(_), _, false) => {
            return Err(ConfigError::new(
                "peerAuthentications",
                "use either peerAuthentications or mtls/portLevelMtls, not both",
            ))
        }
        (Some(policies), None, true) => {
            warnings.extend(peer::validate(policies)?);
            if raw.root_namespace.is_empty() {
                return Err(ConfigError::new("rootNamespace", "must not be empty"));
            }
            peer::resolve(policies, &raw.root_namespace, node)
        }
        (None, None, true) => EffectivePolicy {
            mode: peer::Mode::Permissive,
            ..EffectivePolicy::default()
        },
        (None, mtls, _) => {
            let mode = match mtls.as_ref().map_or(peer::Mode::Unset, |m| m.mode) {
                peer::Mode::Unset => peer::Mode::Permissive,
                m => m,
            };
            let mut ports = BTreeMap::new();
            for (port, m) in &raw.port_level_mtls {
                let n = port
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=65535).contains(n))
                    .ok_or_else(|| {
                        ConfigError::new(format!("portLevelMtls.{port}"), "is not a port number")
                    })?;
                ports.insert(
                    n,
                    if m.mode == peer::Mode::Unset {
                        mode
                    } else {
                        m.mode
                    },
                );
            }
            EffectivePolicy { mode, ports }
        }
    };
    for (i, td) in raw.trust_domains.iter().enumerate() {
        if td.is_empty() || td.contains('/') {
            return Err(ConfigError::new(
                format!("trustDomains[{i}]"),
                "must be a trust domain name",
            ));
        }
    }
    let mut output = |value: &Option<String>, field: &str| -> Result<Option<String>, ConfigError> {
        let Some(h) = value else { return Ok(None) };
        let h = header_name(h, field)?;
        if output_headers.contains(&h) {
            return Err(ConfigError::new(
                field,
                format!("header {h:?} is already an output header"),
            ));
        }
        output_headers.push(h.clone());
        Ok(Some(h))
    };
    Ok(Peer {
        policy,
        trust_domains: raw.trust_domains.clone(),
        output_peer_principal: output(
            &raw.output_peer_principal_to_header,
            "outputPeerPrincipalToHeader",
        )?,
        output_request_principal: output(
            &raw.output_request_principal_to_header,
            "outputRequestPrincipalToHeader",
        )?,
        output_principal: output(&raw.output_principal_to_header, "outputPrincipalToHeader")?,
        binding: raw.principal_binding,
        // No PeerAuthentication applies on a gateway: nothing to migrate there.
        census: !node.gateway
            && (raw.mtls.is_some()
                || !raw.port_level_mtls.is_empty()
                || raw.peer_authentications.is_some()),
        needs_connection: false,
    }
    .with_needs_connection())
}

/// `uri` is `jwksUri`, or with `discovery` the issuer's discovery document; `uri_field` names the
/// field it comes from.
fn remote_source(
    r: &JwtRule,
    uri: &str,
    discovery: bool,
    uri_field: &str,
    at: &dyn Fn(&str) -> String,
) -> Result<RemoteJwks, ConfigError> {
    let parsed = remote::parse_uri(uri).map_err(|e| e.within(uri_field))?;
    let timeout_ms = match &r.timeout {
        Some(t) => parse_duration_ms(t).map_err(|e| e.within(&at("timeout")))?,
        None => DEFAULT_TIMEOUT_MS,
    };
    if timeout_ms == 0 {
        return Err(ConfigError::new(at("timeout"), "must be more than 0s"));
    }
    let cache_duration_s = match &r.jwks_cache_duration {
        Some(d) => parse_duration_ms(d).map_err(|e| e.within(&at("jwksCacheDuration")))? / 1000,
        None => DEFAULT_CACHE_DURATION_S,
    };
    if cache_duration_s == 0 {
        return Err(ConfigError::new(
            at("jwksCacheDuration"),
            "must be at least 1s",
        ));
    }
    let cluster = match &r.jwks_cluster {
        Some(c) if c.is_empty() => {
            return Err(ConfigError::new(at("jwksCluster"), "must not be empty"))
        }
        Some(c) => c.clone(),
        None => remote::istio_cluster(&parsed),
    };
    Ok(RemoteJwks {
        uri: uri.to_string(),
        cluster,
        authority: parsed.authority,
        path: parsed.path,
        timeout_ms,
        cache_duration_s,
        discovery,
        jwks_cluster: r.jwks_cluster.clone(),
    })
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
mod tests {
    use super::*;

    const JWKS: &str = r#"{"keys":[{"kty":"oct","kid":"k","k":"c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA"}]}"#;

    fn cfg(json: &str) -> Result<Config, ConfigError> {
        load(json.as_bytes(), &Workload::default())
    }

    fn rule(extra: &str) -> String {
        let jwks = serde_json::to_string(JWKS).unwrap_or_default();
        format!(r#"{{"jwtRules":[{{"issuer":"iss","jwks":{jwks}{extra}}}]}}"#)
    }

    #[test]
    fn empty_config_is_no_rules() {
        let c = cfg("").unwrap();
        assert!(c.rules.is_empty());
        assert_eq!(c.clock_skew_seconds, 60);
        assert!(!c.require_token);
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (rule(r#","audience":["a"]"#), "jwtRules[0].audience"),
            (r#"{"requireToken":"yes"}"#.to_string(), "requireToken"),
            (
                r#"{"jwtCacheBytes":268435457}"#.to_string(),
                "jwtCacheBytes",
            ),
            (
                r#"{"jwtCacheBytes":1099511627776}"#.to_string(),
                "jwtCacheBytes",
            ),
            (r#"{"jwtCacheBytes":-1}"#.to_string(), "jwtCacheBytes"),
            (r#"{"jwtCacheSize":1000001}"#.to_string(), "jwtCacheSize"),
            (
                rule(r#","fromHeaders":[{"name":"a b"}]"#),
                "jwtRules[0].fromHeaders[0].name",
            ),
            (
                rule(r#","fromHeaders":[{"name":"x","prefix":1}]"#),
                "jwtRules[0].fromHeaders[0].prefix",
            ),
            (
                r#"{"jwtRules":[{"issuer":"i","jwks":"nope"}]}"#.to_string(),
                "jwtRules[0].jwks",
            ),
            (
                r#"{"jwtRules":[{"issuer":"i"}]}"#.to_string(),
                "jwtRules[0]",
            ),
            (
                r#"{"triggerRules":[{"includedPaths":[{"regex":"("}]}]}"#.to_string(),
                "triggerRules[0].includedPaths[0]",
            ),
            (
                r#"{"triggerRules":[{"includedPaths":[{"glob":"/x"}]}]}"#.to_string(),
                "triggerRules[0].includedPaths[0]",
            ),
            (
                rule(r#","outputClaimToHeaders":[{"header":"x","claim":"a..b"}]"#),
                "jwtRules[0].outputClaimToHeaders[0].claim",
            ),
            (rule(r#","issuer":"""#), "jwtRules[0]"),
            (r#"{"clockSkewSeconds":-1}"#.to_string(), "clockSkewSeconds"),
            (r#"{"jwtRules":{}}"#.to_string(), "jwtRules"),
            (
                r#"{"maxPausedRequests":100001}"#.to_string(),
                "maxPausedRequests",
            ),
            (
                r#"{"maxPausedRequests":-1}"#.to_string(),
                "maxPausedRequests",
            ),
            (
                rule(
                    r#","outputClaimToHeaders":[{"header":"x-a","claim":"a"},{"header":"X-A","claim":"b"}]"#,
                ),
                "jwtRules[0].outputClaimToHeaders[1].header",
            ),
            (
                rule(
                    r#","outputPayloadToHeader":"x-p","outputClaimToHeaders":[{"header":"x-p","claim":"a"}]"#,
                ),
                "jwtRules[0].outputClaimToHeaders[0].header",
            ),
            (rule(r#","subjects":{}"#), "jwtRules[0].subjects"),
            (
                rule(r#","subjects":{"prefix":""}"#),
                "jwtRules[0].subjects.prefix",
            ),
            (
                rule(r#","subjects":{"exact":"a","suffix":"b"}"#),
                "jwtRules[0].subjects",
            ),
            (
                rule(r#","subjects":{"regex":"(","ignoreCase":false}"#),
                "jwtRules[0].subjects.regex",
            ),
            (rule(r#","subjects":"spiffe://""#), "jwtRules[0].subjects"),
            (rule(r#","maxLifetime":"0s""#), "jwtRules[0].maxLifetime"),
            (rule(r#","maxLifetime":"1h""#), "jwtRules[0].maxLifetime"),
            (rule(r#","presence":"MUST""#), "jwtRules[0].presence"),
            (
                rule(r#","spaceDelimitedClaims":["scope",""]"#),
                "jwtRules[0].spaceDelimitedClaims[1]",
            ),
            (
                rule(&format!(
                    r#","spaceDelimitedClaims":{}"#,
                    serde_json::to_string(&vec!["c"; 65]).unwrap()
                )),
                "jwtRules[0].spaceDelimitedClaims",
            ),
        ];
        for (json, field) in cases {
            let err = cfg(&json)
                .err()
                .unwrap_or_else(|| panic!("accepted: {json}"));
            assert!(
                err.to_string().contains(field),
                "{json}: {err} does not name {field}"
            );
        }
    }

    #[test]
    fn repeated_members_are_refused_naming_them() {
        let cases = [
            (rule(r#","issuer":"other""#), "jwtRules[0].issuer"),
            (
                r#"{"portLevelMtls":{"8080":{"mode":"STRICT"},"8080":{"mode":"DISABLE"}}}"#
                    .to_string(),
                "portLevelMtls.8080",
            ),
            (
                r#"{"requireToken":true,"requireToken":false}"#.to_string(),
                "requireToken",
            ),
            (
                r#"{"peerAuthentications":[{"metadata":{"name":"a","name":"b"},"spec":{}}]}"#
                    .to_string(),
                "peerAuthentications[0].metadata.name",
            ),
        ];
        for (json, field) in cases {
            let err = cfg(&json).unwrap_err();
            assert_eq!(err.field, field, "{json}: {err}");
            assert!(err.message.contains("twice"), "{err}");
        }
        let dup_key = JWKS.replace(r#""kid":"k""#, r#""kid":"k","kid":"j""#);
        let inline = format!(
            r#"{{"jwtRules":[{{"issuer":"i","jwks":{}}}]}}"#,
            serde_json::to_string(&dup_key).unwrap()
        );
        let err = cfg(&inline).unwrap_err();
        assert!(err.field.starts_with("jwtRules[0].jwks"), "{err}");
        assert!(err.message.contains("named twice"), "{err}");
    }

    #[test]
    fn trailing_garbage_rejected() {
        assert!(cfg("{} x").is_err());
    }

    #[test]
    fn default_locations_only_without_explicit_ones() {
        let c = cfg(&rule("")).unwrap();
        assert_eq!(c.locations.len(), 2);
        let c = cfg(&rule(r#","fromCookies":["session"]"#)).unwrap();
        assert_eq!(c.locations.len(), 1);
        assert_eq!(c.locations[0].kind, LocationKind::Cookie("session".into()));
    }

    #[test]
    fn shared_locations_list_every_rule() {
        let jwks = serde_json::to_string(JWKS).unwrap_or_default();
        let json = format!(
            r#"{{"jwtRules":[{{"issuer":"a","jwks":{jwks}}},{{"issuer":"b","jwks":{jwks}}}]}}"#
        );
        let c = cfg(&json).unwrap();
        assert_eq!(c.locations.len(), 2);
        assert!(c.locations.iter().all(|l| l.rules == vec![0, 1]));
    }

    #[test]
    fn output_headers_are_lowercased_and_collected() {
        let c = cfg(&rule(
            r#","outputPayloadToHeader":"X-Jwt-Payload","outputClaimToHeaders":[{"header":"X-Sub","claim":"sub"}]"#,
        ))
        .unwrap();
        assert_eq!(c.output_headers, vec!["x-jwt-payload", "x-sub"]);
    }

    #[test]
    fn output_header_cannot_be_token_header() {
        let err = cfg(&rule(r#","outputPayloadToHeader":"Authorization""#))
            .err()
            .unwrap();
        assert!(err.to_string().contains("authorization"));
    }

    #[test]
    fn remote_sources_are_shared_and_derive_istio_clusters() {
        let json = r#"{"jwtRules":[
            {"issuer":"a","jwksUri":"https://idp.example.com/keys"},
            {"issuer":"b","jwksUri":"https://idp.example.com/keys"},
            {"issuer":"c","jwksUri":"http://127.0.0.1:9000/k","jwksCluster":"jwks","timeout":"1.5s","jwksCacheDuration":"30s"}
        ]}"#;
        let c = cfg(json).unwrap();
        assert_eq!(c.remotes.len(), 2);
        let r0 = &c.remotes[0];
        assert_eq!(r0.cluster, "outbound|443||idp.example.com");
        assert_eq!(
            (r0.authority.as_str(), r0.path.as_str()),
            ("idp.example.com", "/keys")
        );
        assert_eq!((r0.timeout_ms, r0.cache_duration_s), (5000, 600));
        let r1 = &c.remotes[1];
        assert_eq!(
            (r1.cluster.as_str(), r1.timeout_ms, r1.cache_duration_s),
            ("jwks", 1500, 30)
        );
        assert!(matches!(c.rules[0].keys, KeySource::Remote(0)));
        assert!(matches!(c.rules[1].keys, KeySource::Remote(0)));
        assert!(matches!(c.rules[2].keys, KeySource::Remote(1)));
    }

    #[test]
    fn keys_are_discovered_from_an_issuer_url() {
        let c = cfg(r#"{"jwtRules":[{"issuer":"https://idp.example.com/tenant/"}]}"#).unwrap();
        let r = &c.remotes[0];
        assert!(r.discovery);
        assert_eq!(
            (r.uri.as_str(), r.cluster.as_str(), r.path.as_str()),
            (
                "https://idp.example.com/tenant/.well-known/openid-configuration",
                "outbound|443||idp.example.com",
                "/tenant/.well-known/openid-configuration"
            )
        );
        assert_eq!(r.fetch_timeout_ms(), 10_000, "two calls");
        let err = cfg(r#"{"jwtRules":[{"issuer":"testing@secure.istio.io"}]}"#).unwrap_err();
        assert_eq!(err.field, "jwtRules[0].issuer");
        assert!(err.message.contains("http(s) URL"), "{err}");
        let err = cfg(r#"{"jwtRules":[{"jwks":"{}"}]}"#).unwrap_err();
        assert_eq!(err.field, "jwtRules[0].issuer");
        let c = cfg(r#"{"jwtRules":[{"jwksUri":"https://idp.example.com/k"}]}"#).unwrap();
        assert_eq!(c.rules[0].issuer, None);
        assert!(!c.remotes[0].discovery);
    }

    #[test]
    fn inline_jwks_wins_over_uri() {
        let c = cfg(&rule(r#","jwksUri":"https://idp/k""#)).unwrap();
        assert!(matches!(c.rules[0].keys, KeySource::Inline(_)));
        assert!(c.remotes.is_empty());
        assert_eq!(c.warnings.len(), 1);
    }
}
