//! `pluginConfig` as operators write it: Istio's field names, checked field by field by serde
//! (unknown fields refused). `compile` turns it into what requests read.

use std::collections::BTreeMap;

use serde::Deserialize;

#[cfg(feature = "schema")]
use super::limits::{
    default_cache_duration, default_dpop_max_age, default_timeout, MAX_SPACE_DELIMITED_CLAIMS,
};
use super::limits::{
    default_clock_skew, default_dpop_replay_entries, default_jwt_cache_bytes,
    default_max_paused_requests, default_root_namespace,
};
use crate::error::DenialBody;
use crate::jwt::subject::SubjectMatch;
use crate::peer::{Mtls, PeerAuthentication};
use crate::request::trigger::StringMatch;

/// The WasmPlugin's `pluginConfig`.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PluginConfig {
    /// End-user JWT rules, as in Istio's `RequestAuthentication.spec.jwtRules`.
    #[serde(default)]
    pub jwt_rules: Vec<JwtRule>,
    /// Reject requests that carry no token (the older authentication policy's required `origins`).
    /// When false, as with RequestAuthentication, a request without a token passes.
    #[serde(default)]
    pub require_token: bool,
    /// Allowed clock skew for `exp` and `nbf`, in seconds.
    #[serde(default = "default_clock_skew")]
    #[cfg_attr(feature = "schema", schemars(default = "default_clock_skew"))]
    pub clock_skew_seconds: u64,
    /// Reject tokens without an `exp` claim.
    #[serde(default)]
    pub require_expiration: bool,
    /// The older authentication policy's `trigger_rules`: when present, JWT authentication applies
    /// only to requests whose path matches at least one rule.
    #[serde(default)]
    pub trigger_rules: Vec<TriggerRule>,

    /// Peer authentication for the workload this plugin is attached to, as a PeerAuthentication's
    /// `spec.mtls`. Not together with `peerAuthentications`.
    #[serde(default)]
    pub mtls: Option<Mtls>,
    /// Per-port modes keyed by the workload port (the connection's `destination.port`).
    #[serde(default)]
    pub port_level_mtls: BTreeMap<String, Mtls>,
    /// Every PeerAuthentication of the mesh, as `kubectl get -o json` shows them; each proxy
    /// resolves its own policy from its node metadata (`NAMESPACE`, `LABELS`).
    #[serde(default)]
    pub peer_authentications: Option<Vec<PeerAuthentication>>,
    /// Namespace of mesh-wide policies.
    #[serde(default = "default_root_namespace")]
    #[cfg_attr(feature = "schema", schemars(default = "default_root_namespace"))]
    pub root_namespace: String,
    /// Trust domains whose SPIFFE identities are accepted as peers. Empty: any.
    #[serde(default)]
    pub trust_domains: Vec<String>,
    /// Header that receives the peer principal (`<trust domain>/ns/<ns>/sa/<sa>`).
    #[serde(default)]
    pub output_peer_principal_to_header: Option<String>,
    /// Header that receives the request principal (`<iss>/<sub>` of the verified JWT).
    #[serde(default)]
    pub output_request_principal_to_header: Option<String>,
    /// Header that receives the principal chosen by `principalBinding`.
    #[serde(default)]
    pub output_principal_to_header: Option<String>,
    /// Which identity `outputPrincipalToHeader` carries.
    #[serde(default)]
    pub principal_binding: PrincipalBinding,

    /// Who checks RS256/384/512 and ES256/384/512 signatures: `auto` (the host's BoringSSL through
    /// Envoy's `verify_signature` when it passes a self-test at start, else this module), `host`
    /// (required: the plugin fails to start without it), or `wasm` (always this module, whose
    /// RustCrypto code is not a validated cryptographic module). Other algorithms are always
    /// checked in the module.
    #[serde(default)]
    pub signature_verifier: SignatureVerifier,
    /// Memory the verified-token cache of one VM may hold, in bytes (default 8 MiB; each worker
    /// has its own VM). `exp` and `nbf` are checked on every use; the cache empties when keys
    /// change; tokens over 4 KiB are not cached. 0 disables it.
    #[serde(default = "default_jwt_cache_bytes")]
    #[cfg_attr(feature = "schema", schemars(default = "default_jwt_cache_bytes"))]
    pub jwt_cache_bytes: usize,
    /// At most this many verified tokens per VM besides the memory bound (unset: the memory
    /// bound alone). 0 disables the cache.
    #[serde(default)]
    pub jwt_cache_size: Option<usize>,
    /// Requests one plugin keeps paused per VM while its remote keys are fetched; past it a
    /// request is answered at once as a failed fetch would be (401). A paused request costs the
    /// module a few dozen bytes: its headers are read again from Envoy when it resumes.
    #[serde(default = "default_max_paused_requests")]
    #[cfg_attr(feature = "schema", schemars(default = "default_max_paused_requests"))]
    pub max_paused_requests: usize,
    /// DPoP proofs the proxy remembers for rules with `dpop`, shared by its workers: 24 bytes each
    /// in Envoy's shared data. A proof is kept for `maxAge` plus `clockSkewSeconds`, so the default
    /// carries about 2 000 DPoP requests a second at the default 60 s; past it, proofs are refused
    /// (and counted), never let through. From 256 to 4 194 304.
    #[serde(default = "default_dpop_replay_entries")]
    #[cfg_attr(feature = "schema", schemars(default = "default_dpop_replay_entries"))]
    pub dpop_replay_entries: usize,
    /// The body of a refusal: `text` (the reason, as Envoy's jwt_authn words it), `json`
    /// (`{"code":401,"error":"invalid_token","reason":"Jwt is expired"}`, `error` as RFC 6750 names
    /// it) or `none` (empty, as Envoy's `strip_failure_response`). `WWW-Authenticate` is sent with
    /// every 401 and 403 whatever the body.
    #[serde(default)]
    pub denial_body: DenialBody,
    /// Run every check, refuse nothing: what enforcement would refuse is counted
    /// (`mesh_authn_refused_total{dry_run="true"}`) and logged with its reason, and goes on. Output headers are
    /// still set only from verified tokens. For rolling a policy out (docs/operating.md, "Rolling out").
    #[serde(default)]
    pub dry_run: bool,
    /// Header that gives the upstream the decision: `allow`, or in a dry run
    /// `deny; reason="Jwt is expired"`. Stripped from incoming requests like every output header.
    #[serde(default)]
    pub output_decision_to_header: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum SignatureVerifier {
    #[default]
    Auto,
    Host,
    Wasm,
}

/// The older authentication policy's `principalBinding`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PrincipalBinding {
    #[default]
    UsePeer,
    UseOrigin,
}

/// One JWT issuer, as in Istio's `JWTRule`.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtRule {
    /// Value the token's `iss` claim must equal. Without `jwks` and `jwksUri`, the keys are found
    /// from it (OpenID discovery: `<issuer>/.well-known/openid-configuration`, its `jwks_uri`).
    /// May be left out when `jwksUri` is set: any `iss` is then accepted (Istio 1.27).
    #[serde(default)]
    pub issuer: Option<String>,
    /// Accepted `aud` values (any of). Empty: audience is not checked.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// The JSON Web Key Set, as a JSON string. When both this and `jwksUri` are set, this wins, as
    /// in Istio.
    #[serde(default)]
    pub jwks: Option<String>,
    /// URL of the provider's public key set, fetched by the filter through Envoy.
    #[serde(default)]
    pub jwks_uri: Option<String>,
    /// Timeout of a JWKS fetch, e.g. `"5s"`.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(default = "default_timeout"))]
    pub timeout: Option<String>,
    /// Envoy cluster that serves `jwksUri` (and, with discovery, the discovery document too).
    /// Default: Istio's `outbound|<port>||<host>` for the URI's host and port (443 for https, 80
    /// for http), as a ServiceEntry for that host creates.
    #[serde(default)]
    pub jwks_cluster: Option<String>,
    /// How long fetched keys are used before they are refreshed, e.g. `"600s"`.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(default = "default_cache_duration"))]
    pub jwks_cache_duration: Option<String>,
    /// Headers the token is taken from. Without any location, `Authorization: Bearer <token>` and
    /// the `access_token` query parameter are used.
    #[serde(default)]
    pub from_headers: Vec<JwtHeader>,
    /// Query parameters the token is taken from.
    #[serde(default)]
    pub from_params: Vec<String>,
    /// Cookies the token is taken from.
    #[serde(default)]
    pub from_cookies: Vec<String>,
    /// Keep the header that carried the token when forwarding the request.
    #[serde(default)]
    pub forward_original_token: bool,
    /// Header that receives the token's payload (base64url) after successful verification.
    #[serde(default)]
    pub output_payload_to_header: Option<String>,
    /// Headers that receive claim values, as Envoy's jwt_authn writes them: strings, numbers and
    /// booleans as text, arrays and objects as base64 of their JSON; nested claims as `a.b`.
    #[serde(default)]
    pub output_claim_to_headers: Vec<ClaimToHeader>,
    /// Claims whose string value is a space-separated list (`scope: "read write"`), as Istio 1.28's
    /// `spaceDelimitedClaims`: their `outputClaimToHeaders` header gets one copy per element, so an
    /// AuthorizationPolicy on the header (`values: ["read"]`) matches an element, never a part of
    /// one. Istio always treats `scope` and `permission` so in jwt_authn's metadata; here they are
    /// split when listed. At most 64.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(length(max = MAX_SPACE_DELIMITED_CLAIMS)))]
    pub space_delimited_claims: Vec<String>,
    /// `REQUIRED`: every request this rule applies to must carry a valid token of this rule,
    /// whatever `requireToken` says and whatever other tokens it carries (Istio's `presence`,
    /// istio/api #3737). `OPTIONAL` (default): a token of this rule is checked when present.
    #[serde(default)]
    pub presence: Presence,
    /// Which `sub` this rule's tokens may assert, as Envoy's `JwtProvider.subjects` (an extension of
    /// this filter: no Istio field). A token whose `sub` does not match fails ("Jwt verification
    /// fails"); a token without `sub` is matched as "".
    #[serde(default)]
    pub subjects: Option<SubjectMatch>,
    /// The longest a token of this rule may still be valid (`exp` - now), e.g. `"86400s"`, as
    /// Envoy's `JwtProvider.max_lifetime` (an extension: no Istio field). A token over it, or without
    /// `exp`, fails ("Jwt verification fails").
    #[serde(default)]
    pub max_lifetime: Option<String>,
    /// Tokens bound to the client's TLS certificate (RFC 8705; an extension of this filter, no
    /// Istio field). `REQUIRED`: a token must carry `cnf` with `x5t#S256`, the base64url SHA-256
    /// of the DER certificate the client presented on this connection. `OPTIONAL`: a token that
    /// carries one must match it; tokens without are bearer tokens. Unset: `cnf` is ignored, as
    /// Envoy and Istio ignore it. A malformed `cnf` is refused under both. Refusals are 401 with
    /// `error="invalid_token"`, counted as `binding`. The listener must require and validate client
    /// certificates.
    #[serde(default)]
    pub certificate_binding: Option<Binding>,
    /// Tokens bound to a key the client proves on every request (DPoP, RFC 9449; an extension of
    /// this filter, no Istio field). The rule also reads `Authorization: DPoP <token>`, whose
    /// request must carry one `DPoP` proof: signed by the key the token's `cnf.jkt` names, for this
    /// method and URI, fresh, for this token, and never used before (its `jti` is remembered by
    /// every worker). A DPoP-bound token is never accepted as a bearer token.
    #[serde(default)]
    pub dpop: Option<Dpop>,
    /// The older policy's per-origin `trigger_rules`: this issuer applies only to requests whose
    /// path matches one of them (none: every path). Where no issuer applies, no token is needed;
    /// where some do, a token must verify against one of them.
    #[serde(default)]
    pub trigger_rules: Vec<TriggerRule>,
}

/// Whether a rule's token must be present (`presence`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Presence {
    #[default]
    Optional,
    Required,
}

/// How a rule treats a token's binding (`certificateBinding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Binding {
    /// Tokens without a binding are bearer tokens; a token with one must match it.
    Optional,
    /// Every token must be bound, and match.
    Required,
}

/// A rule's `dpop`.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Dpop {
    /// `REQUIRED`: every token must be DPoP-bound and come with its proof. `OPTIONAL`: tokens
    /// without `cnf.jkt` may still come as bearer tokens.
    pub mode: Binding,
    /// How far a proof's `iat` may be from now, plus `clockSkewSeconds`, either way, e.g. `"60s"`.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(default = "default_dpop_max_age"))]
    pub max_age: Option<String>,
    /// The scheme and authority clients address, e.g. `"https://api.example.com"`, when the proxy
    /// sits behind a load balancer; unset, the request's own `:scheme` and `:authority`.
    #[serde(default)]
    pub origin: Option<String>,
}

/// A header the token is read from.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtHeader {
    /// Header name (case-insensitive).
    pub name: String,
    /// Exact, case-sensitive prefix before the token, e.g. `"Bearer "`.
    #[serde(default)]
    pub prefix: String,
}

/// A claim copied into a request header.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClaimToHeader {
    /// Header name.
    pub header: String,
    /// Claim name; `a.b` reads a nested claim.
    #[serde(default)]
    pub claim: Option<String>,
    /// The claim as explicit keys of nested objects, for names that contain dots
    /// (`["https://example.com/roles"]`), as Envoy's `claim_path`. Instead of `claim`.
    #[serde(default)]
    pub claim_path: Vec<String>,
}

/// A rule matches when the path is in no `excludedPaths` and, if `includedPaths` is not empty, in one
/// of them. Paths are compared without query or fragment.
#[derive(Debug, Clone, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TriggerRule {
    #[serde(default)]
    pub excluded_paths: Vec<StringMatch>,
    #[serde(default)]
    pub included_paths: Vec<StringMatch>,
}

impl PluginConfig {
    /// The node-metadata label keys that compiling this configuration needs, when it needs the
    /// workload at all: the keys that some PeerAuthentication selects on.
    pub fn node_label_keys(&self) -> Option<Vec<&str>> {
        let policies = self.peer_authentications.as_ref()?;
        let mut keys: Vec<&str> = policies
            .iter()
            .filter_map(|p| p.spec.selector.as_ref())
            .flat_map(|s| s.match_labels.keys().map(String::as_str))
            .collect();
        keys.sort_unstable();
        keys.dedup();
        Some(keys)
    }

    /// The first field set here that only an HTTP filter can honour: a connection-level (NETWORK)
    /// plugin sees no requests, so it would silently enforce nothing of it.
    pub fn http_only_field(&self) -> Option<&'static str> {
        [
            ("jwtRules", !self.jwt_rules.is_empty()),
            ("requireToken", self.require_token),
            ("requireExpiration", self.require_expiration),
            ("triggerRules", !self.trigger_rules.is_empty()),
            (
                "outputPeerPrincipalToHeader",
                self.output_peer_principal_to_header.is_some(),
            ),
            (
                "outputRequestPrincipalToHeader",
                self.output_request_principal_to_header.is_some(),
            ),
            (
                "outputPrincipalToHeader",
                self.output_principal_to_header.is_some(),
            ),
            (
                "principalBinding",
                self.principal_binding != PrincipalBinding::UsePeer,
            ),
            ("denialBody", self.denial_body != DenialBody::Text),
            (
                "outputDecisionToHeader",
                self.output_decision_to_header.is_some(),
            ),
        ]
        .into_iter()
        .find_map(|(field, set)| set.then_some(field))
    }
}
