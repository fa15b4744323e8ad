//! The per-request decision: which tokens are present, whether each verifies, and what to forward.

use std::rc::Rc;

use crate::config::{Config, KeySource, PrincipalBinding, Rule};
use crate::crypto::{InModule, Verifier};
use crate::error::AuthError;
use crate::jwt::cache::{TokenCache, Verified};
use crate::jwt::claim_header;
use crate::jwt::jwks::Jwks;
use crate::jwt::jws::{self, Jws};
use crate::peer::{self, Mode};
use crate::request::token::{self, LocationKind};
use crate::request::{path, trigger, Connection, Request};

/// Header changes applied to a request that is let through.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Forward {
    /// Removed first: every output header (so none is forged) and token headers not forwarded.
    pub remove: Vec<String>,
    /// The verified tokens, whose output headers are set first, shared with the cache.
    pub verified: Vec<Rc<Verified>>,
    /// Then these: the principals.
    pub set: Vec<(String, String)>,
    /// The new `:path` when query parameters that carried verified tokens are removed from it.
    pub path: Option<String>,
}

impl Forward {
    /// Every header to set, in order.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.writes().map(|(k, v, _)| (k, v))
    }

    /// Every header to write, in order, and whether it is another copy of the one before (the
    /// elements of a space-delimited claim, which follow each other in their token's headers) rather
    /// than a value that replaces any other.
    pub fn writes(&self) -> impl Iterator<Item = (&str, &str, bool)> {
        self.verified
            .iter()
            .flat_map(|v| copies(&v.set))
            .chain(copies(&self.set))
    }
}

/// `(name, value, copy)`: `copy` when the header before had the same name.
fn copies(set: &[(String, String)]) -> impl Iterator<Item = (&str, &str, bool)> {
    set.iter()
        .scan(None, |previous: &mut Option<&str>, (k, v)| {
            let copy = *previous == Some(k.as_str());
            *previous = Some(k.as_str());
            Some((k.as_str(), v.as_str(), copy))
        })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow(Forward),
    Deny(AuthError),
    /// The request must wait for remote keys (`Config::remotes[remote]`); `refetch` when the keys
    /// are loaded but lack the token's `kid`.
    Wait {
        remote: usize,
        refetch: bool,
    },
}

/// The state of a remote key set, as the caller's key store knows it.
#[derive(Debug, Clone, Copy)]
pub enum RemoteKeys<'a> {
    Ready(&'a Jwks),
    /// Never fetched yet: the first fetch is pending.
    Loading,
    /// No keys were ever obtained and the last fetch failed.
    Failed,
}

pub trait KeyStore {
    fn remote(&self, index: usize) -> RemoteKeys<'_>;
    /// Whether a token with an unknown `kid` may trigger a refetch of this source now.
    fn may_refetch(&self, index: usize) -> bool;
    /// Changes whenever any key set changes (verified tokens are then forgotten).
    fn generation(&self) -> u64 {
        0
    }
}

/// What a decision depends on besides the configuration and the request.
pub struct Env<'a> {
    pub keys: &'a dyn KeyStore,
    pub verifier: &'a dyn Verifier,
    pub cache: Option<&'a mut TokenCache>,
}

impl<'a> Env<'a> {
    /// In-module signature checks, no cache.
    pub fn new(keys: &'a dyn KeyStore) -> Self {
        Self {
            keys,
            verifier: &InModule,
            cache: None,
        }
    }
}

/// A key store for configurations without remote key sets.
pub struct NoRemotes;

impl KeyStore for NoRemotes {
    fn remote(&self, _index: usize) -> RemoteKeys<'_> {
        RemoteKeys::Failed
    }
    fn may_refetch(&self, _index: usize) -> bool {
        false
    }
}

/// The time, in whole seconds (what `exp` and `nbf` are compared with) and in milliseconds (what
/// `maxLifetime` is).
#[derive(Debug, Clone, Copy)]
struct Now {
    s: u64,
    ms: u64,
}

enum Failure {
    Deny(AuthError),
    Wait { remote: usize, refetch: bool },
}

impl From<AuthError> for Failure {
    fn from(e: AuthError) -> Self {
        Self::Deny(e)
    }
}

/// Decides a request: peer first, then end-user tokens, as Istio does. `now_ms`: milliseconds
/// since the Unix epoch.
pub fn authenticate(cfg: &Config, req: &Request, now_ms: u64, env: &mut Env<'_>) -> Verdict {
    let now = Now {
        s: now_ms / 1000,
        ms: now_ms,
    };
    // Only headers that are there cost a host call to remove.
    let mut fwd = Forward {
        remove: cfg
            .output_headers
            .iter()
            .filter(|h| req.header(h).is_some())
            .cloned()
            .collect(),
        ..Forward::default()
    };
    let peer_principal = match authenticate_peer(cfg, req.connection()) {
        Ok(p) => p,
        Err(e) => return Verdict::Deny(e),
    };
    let request_principal = match authenticate_jwt(cfg, req, now, env, &mut fwd) {
        Ok(p) => p,
        Err(v) => return v,
    };
    let request_principal = request_principal
        .as_deref()
        .and_then(|v| v.principal.as_deref());
    let p = &cfg.peer;
    let chosen = match p.binding {
        PrincipalBinding::UsePeer => peer_principal.as_deref(),
        PrincipalBinding::UseOrigin => request_principal,
    };
    for (header, value) in [
        (&p.output_peer_principal, peer_principal.as_deref()),
        (&p.output_request_principal, request_principal),
        (&p.output_principal, chosen),
    ] {
        if let (Some(h), Some(v)) = (header, value) {
            fwd.set.push((h.clone(), v.to_string()));
        }
    }
    Verdict::Allow(fwd)
}

/// The peer's principal when the connection carries an accepted SPIFFE identity; an error when the
/// port's mode is STRICT and it does not.
fn authenticate_peer(cfg: &Config, conn: &Connection) -> Result<Option<String>, AuthError> {
    let mode = cfg.peer.policy.for_port(conn.port);
    let principal = conn
        .uri_san
        .as_deref()
        .filter(|_| conn.mtls && mode != Mode::Disable)
        .and_then(peer::spiffe_principal)
        .filter(|(_, td)| {
            cfg.peer.trust_domains.is_empty() || cfg.peer.trust_domains.iter().any(|t| t == td)
        })
        .map(|(p, _)| p.to_string());
    if mode == Mode::Strict && !conn.mtls {
        return Err(AuthError::PeerAuthenticationFailed);
    }
    if mode == Mode::Strict && !cfg.peer.trust_domains.is_empty() && principal.is_none() {
        return Err(AuthError::PeerUntrusted);
    }
    Ok(principal)
}

/// What a connection-level (NETWORK) plugin does with a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Allow,
    /// Closed with nothing relayed either way; the detail is for the log.
    Refuse(AuthError, &'static str),
    /// TLS whose handshake may not have finished: asked again once it has.
    AwaitHandshake,
}

/// The peer check of `authenticate` for a whole connection. `handshake_done` when the host has
/// shown the TLS handshake is over (decrypted data arrived); before, a TLS connection without a
/// certificate yet may still present one.
pub fn admit_connection(cfg: &Config, conn: &Connection, handshake_done: bool) -> Admission {
    if authenticate_peer(cfg, conn).is_ok() {
        return Admission::Allow;
    }
    match (conn.mtls, conn.tls, handshake_done) {
        (true, ..) => Admission::Refuse(
            AuthError::PeerUntrusted,
            "the peer's trust domain is not in trustDomains",
        ),
        (false, false, _) => Admission::Refuse(
            AuthError::PeerAuthenticationFailed,
            "plaintext under STRICT",
        ),
        (false, true, false) => Admission::AwaitHandshake,
        (false, true, true) => Admission::Refuse(
            AuthError::PeerAuthenticationFailed,
            "TLS without a client certificate under STRICT",
        ),
    }
}

/// Verifies end-user tokens; on success the first token's verification, which carries the request
/// principal.
fn authenticate_jwt(
    cfg: &Config,
    req: &Request,
    now: Now,
    env: &mut Env<'_>,
    fwd: &mut Forward,
) -> Result<Option<Rc<Verified>>, Verdict> {
    if cfg.rules.is_empty()
        || req.is_cors_preflight()
        || !trigger::triggered(&cfg.trigger_rules, req.path())
    {
        return Ok(None);
    }

    // Rules with their own triggerRules apply where those match; where none applies, no token is
    // needed, and a token is checked only against the rules that apply.
    let active: Option<Vec<bool>> = cfg.per_rule_triggers.then(|| {
        let canonical = path::canonical(req.path());
        cfg.rules
            .iter()
            .map(|r| trigger::triggered_at(&r.trigger_rules, &canonical))
            .collect()
    });
    let applies = |rule: usize| {
        active
            .as_ref()
            .is_none_or(|a| a.get(rule).copied().unwrap_or(false))
    };
    if active.as_ref().is_some_and(|a| !a.contains(&true)) {
        return Ok(None);
    }
    let mut found = token::extract(&cfg.locations, req);
    if active.is_some() {
        found.retain(|f| {
            cfg.locations
                .get(f.location)
                .is_some_and(|l| l.rules.iter().any(|&r| applies(r)))
        });
    }
    let required = |i: usize, r: &Rule| r.required && applies(i);
    let any_required = cfg.rules.iter().enumerate().any(|(i, r)| required(i, r));
    if found.is_empty() {
        return if cfg.require_token || any_required {
            Err(Verdict::Deny(AuthError::Missing))
        } else {
            Ok(None)
        };
    }
    if let Some(cache) = env.cache.as_deref_mut() {
        cache.keys_generation(env.keys.generation());
    }
    let mut first = None;
    let mut params_to_remove: Vec<&str> = Vec::new();
    let mut verified_rules: Vec<usize> = Vec::new();
    // Every token present must verify: one bad token fails the request, whatever else it carries.
    for f in &found {
        let Some(location) = cfg.locations.get(f.location) else {
            return Err(Verdict::Deny(AuthError::Internal));
        };
        let verified = match verified_token(cfg, f.location, &f.token, now, env, &applies) {
            Ok(v) => v,
            Err(Failure::Deny(e)) => return Err(Verdict::Deny(e)),
            Err(Failure::Wait { remote, refetch }) => {
                return Err(Verdict::Wait { remote, refetch })
            }
        };
        let Some(rule) = cfg.rules.get(verified.rule) else {
            return Err(Verdict::Deny(AuthError::Internal));
        };
        if !rule.forward_original_token {
            match &location.kind {
                LocationKind::Header { name, .. } if !fwd.remove.contains(name) => {
                    fwd.remove.push(name.clone());
                }
                LocationKind::Param(name) if !params_to_remove.contains(&name.as_str()) => {
                    params_to_remove.push(name);
                }
                _ => {}
            }
        }
        verified_rules.push(verified.rule);
        if !verified.set.is_empty() {
            fwd.verified.push(Rc::clone(&verified));
        }
        if first.is_none() {
            first = Some(verified);
        }
    }
    if any_required {
        for (i, _) in cfg
            .rules
            .iter()
            .enumerate()
            .filter(|(i, r)| required(*i, r))
        {
            if !verified_rules.contains(&i) {
                required_rule_satisfied(cfg, i, &found, now, env, &applies)?;
            }
        }
    }
    if !params_to_remove.is_empty() {
        fwd.path = token::without_params(req.path(), &params_to_remove);
    }
    Ok(first)
}

/// A `presence: REQUIRED` rule whose tokens all verified under other rules (that read the same
/// location): one of the tokens in its locations must verify under it too, or the request fails
/// with that token's reason, and without any as a missing token, as Envoy's requirement on the
/// provider alone answers.
fn required_rule_satisfied(
    cfg: &Config,
    rule: usize,
    found: &[token::Found],
    now: Now,
    env: &Env<'_>,
    applies: &dyn Fn(usize) -> bool,
) -> Result<(), Verdict> {
    let mut first_error = None;
    for f in found {
        let reads = cfg
            .locations
            .get(f.location)
            .is_some_and(|l| l.rules.contains(&rule));
        if !reads {
            continue;
        }
        match verify(cfg, &[rule], &f.token, now, env, applies) {
            Ok(_) => return Ok(()),
            Err(Failure::Deny(e)) => {
                first_error.get_or_insert(e);
            }
            Err(Failure::Wait { remote, refetch }) => {
                return Err(Verdict::Wait { remote, refetch })
            }
        }
    }
    Err(Verdict::Deny(first_error.unwrap_or(AuthError::Missing)))
}

/// A token's verification, from the cache when it holds it: there only time is checked again.
/// Audiences need not be: the cache lives and dies with this config, and the entry's rule accepted
/// them when it was verified.
fn verified_token(
    cfg: &Config,
    location: usize,
    token: &str,
    now: Now,
    env: &mut Env<'_>,
    applies: &dyn Fn(usize) -> bool,
) -> Result<Rc<Verified>, Failure> {
    if let Some(cache) = env.cache.as_deref_mut().filter(|c| c.enabled()) {
        if let Some(hit) = cache.get(location, token) {
            // Its issuer's rule does not apply to this path: as if that issuer were not configured.
            if !applies(hit.rule) {
                return Err(AuthError::UnknownIssuer.into());
            }
            return match hit.claims.check_time(
                now.s,
                cfg.clock_skew_seconds,
                cfg.require_expiration,
            ) {
                Ok(()) => Ok(Rc::clone(hit)),
                Err(e) => {
                    cache.remove(token);
                    Err(e.into())
                }
            };
        }
    }
    let rule_ids = cfg
        .locations
        .get(location)
        .map_or(&[][..], |l| l.rules.as_slice());
    let (rule_index, rule, jws) = verify(cfg, rule_ids, token, now, env, applies)?;
    let mut set = Vec::with_capacity(rule.output_claim_to_headers.len() + 1);
    if let Some(h) = &rule.output_payload_to_header {
        set.push((h.clone(), jws.payload_b64.to_string()));
    }
    for c in &rule.output_claim_to_headers {
        if c.space_delimited {
            if let Some(items) = claim_header::space_delimited(&jws.payload, &c.path) {
                set.extend(items.map(|item| (c.header.clone(), item.to_string())));
                continue;
            }
        }
        if let Some(v) = claim_header::header_value(&jws.payload, &c.path) {
            set.push((c.header.clone(), v));
        }
    }
    let verified = Rc::new(Verified {
        rule: rule_index,
        // The token's own `iss`: equal to the rule's, or any with a rule that names none.
        principal: jws
            .claims
            .iss
            .as_ref()
            .zip(jws.claims.sub.as_ref())
            .map(|(iss, sub)| format!("{iss}/{sub}"))
            .filter(|p| !p.chars().any(char::is_control)),
        claims: jws.claims,
        set,
    });
    if let Some(cache) = env.cache.as_deref_mut() {
        cache.insert(location, token, Rc::clone(&verified));
    }
    Ok(verified)
}

/// Verifies one token against the rules that read its location, in Envoy's order: format, issuer,
/// time, audience, key, signature.
fn verify<'c, 't>(
    cfg: &'c Config,
    rule_ids: &[usize],
    token: &'t str,
    now: Now,
    env: &Env<'_>,
    applies: &dyn Fn(usize) -> bool,
) -> Result<(usize, &'c Rule, Jws<'t>), Failure> {
    let jws = jws::parse(token)?;
    let iss = jws.claims.iss.as_deref();
    let mut candidates = rule_ids
        .iter()
        .filter(|&&i| applies(i))
        .filter_map(|&i| Some((i, cfg.rules.get(i)?)))
        .filter(|(_, r)| r.issuer.is_none() || r.issuer.as_deref() == iss)
        .peekable();
    if candidates.peek().is_none() {
        return Err(AuthError::UnknownIssuer.into());
    }
    // A missing `exp` under requireExpiration is a rule check, after the audience, as in Envoy.
    jws.claims
        .check_time(now.s, cfg.clock_skew_seconds, false)?;

    let mut first_error = None;
    for (index, rule) in candidates {
        match verify_for_rule(rule, &jws, cfg.require_expiration, now, env) {
            Ok(()) => return Ok((index, rule, jws)),
            Err(Failure::Deny(e)) => {
                first_error.get_or_insert(e);
            }
            Err(wait) => return Err(wait),
        }
    }
    Err(first_error.unwrap_or(AuthError::UnknownIssuer).into())
}

/// One rule's checks, in Envoy's order: audience, subject, lifetime (and `requireExpiration`),
/// key, signature.
fn verify_for_rule(
    rule: &Rule,
    jws: &Jws<'_>,
    require_expiration: bool,
    now: Now,
    env: &Env<'_>,
) -> Result<(), Failure> {
    jws.claims.check_audience(&rule.audiences)?;
    if let Some(subjects) = &rule.subjects {
        if !subjects.matches(jws.claims.sub.as_deref()) {
            return Err(AuthError::VerificationFailed.into());
        }
    }
    match rule.max_lifetime_ms {
        Some(max_ms) => jws.claims.check_lifetime(now.ms, max_ms)?,
        None if require_expiration && jws.claims.exp.is_none() => {
            return Err(AuthError::ExpirationMissing.into())
        }
        None => {}
    }
    let keys = env.keys;
    let jwks = match &rule.keys {
        KeySource::Inline(j) => j,
        KeySource::Remote(i) => match keys.remote(*i) {
            RemoteKeys::Ready(j) => {
                let kid_unknown = jws
                    .kid
                    .as_deref()
                    .is_some_and(|kid| !j.keys.iter().any(|k| k.kid.as_deref() == Some(kid)));
                if kid_unknown && keys.may_refetch(*i) {
                    return Err(Failure::Wait {
                        remote: *i,
                        refetch: true,
                    });
                }
                j
            }
            RemoteKeys::Loading => {
                return Err(Failure::Wait {
                    remote: *i,
                    refetch: false,
                })
            }
            RemoteKeys::Failed => return Err(AuthError::JwksFetchFailed.into()),
        },
    };
    let mut any_key = false;
    for key in jwks.candidates(jws.alg, jws.kid.as_deref()) {
        any_key = true;
        if jws.verify_with(&key.key, env.verifier) {
            return Ok(());
        }
    }
    Err(Failure::Deny(if any_key {
        AuthError::VerificationFailed
    } else {
        AuthError::NoMatchingKey
    }))
}
