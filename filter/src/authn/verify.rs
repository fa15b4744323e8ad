//! One token's verification, from the cache or against the rules that read its location, in
//! Envoy's order of checks.

use std::rc::Rc;

use super::{Env, Failure, Now, RemoteKeys};
use crate::config::{Config, KeySource, Rule};
use crate::error::AuthError;
use crate::jwt::cache::Verified;
use crate::jwt::claim_header;
use crate::jwt::jws::{self, Jws};

/// A token's verification, from the cache when it holds it: there only time is checked again.
/// Audiences need not be: the cache lives and dies with this config, and the entry's rule accepted
/// them when it was verified.
pub(super) fn verified_token(
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
pub(super) fn verify<'c, 't>(
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
