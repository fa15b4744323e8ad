//! End-user tokens of one request: which rules apply to its path, which tokens it carries, that
//! every one verifies, and what to remove before forwarding.

use std::rc::Rc;

use super::verify::{verified_token, verify};
use super::{binding, dpop};
use super::{Env, Failure, Forward, Now, Verdict};
use crate::config::{Config, Rule};
use crate::error::AuthError;
use crate::jwt::cache::Verified;
use crate::request::token::{self, LocationKind};
use crate::request::{path, trigger, Request};

/// Verifies end-user tokens; on success the first token's verification, which carries the request
/// principal.
pub(super) fn authenticate_jwt(
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
    let mut proof_use = dpop::ProofUse::default();
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
        if let Some(mode) = rule.certificate_binding {
            let presented = req.connection().certificate_sha256.as_ref();
            binding::check_certificate(mode, &verified.claims.cnf.x5t_s256, presented)
                .map_err(Verdict::Deny)?;
        }
        if let Some(d) = &rule.dpop {
            let as_dpop = location.kind.is_dpop();
            let jkt = &verified.claims.cnf.jkt;
            let skew = cfg.clock_skew_seconds;
            dpop::check(
                d,
                jkt,
                as_dpop,
                &f.token,
                req,
                skew,
                now.s,
                env,
                &mut proof_use,
            )
            .map_err(Verdict::Deny)?;
            if !rule.forward_original_token && req.header("dpop").is_some() {
                let dpop_header = "dpop".to_string();
                if !fwd.remove.contains(&dpop_header) {
                    fwd.remove.push(dpop_header);
                }
            }
        }
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
        if any_required {
            verified_rules.push(verified.rule);
        }
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
                required_rule_satisfied(cfg, req, i, &found, now, env, &applies, &mut proof_use)?;
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
#[allow(clippy::too_many_arguments)] // the request's state, each needed once
fn required_rule_satisfied(
    cfg: &Config,
    req: &Request,
    rule: usize,
    found: &[token::Found],
    now: Now,
    env: &mut Env<'_>,
    applies: &dyn Fn(usize) -> bool,
    proof_use: &mut dpop::ProofUse,
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
        let checked = verify(cfg, &[rule], &f.token, now, env, applies).and_then(|(_, r, jws)| {
            if let Some(mode) = r.certificate_binding {
                let presented = req.connection().certificate_sha256.as_ref();
                binding::check_certificate(mode, &jws.claims.cnf.x5t_s256, presented)?;
            }
            if let Some(d) = &r.dpop {
                let as_dpop = cfg
                    .locations
                    .get(f.location)
                    .is_some_and(|l| l.kind.is_dpop());
                let (jkt, skew) = (&jws.claims.cnf.jkt, cfg.clock_skew_seconds);
                dpop::check(d, jkt, as_dpop, &f.token, req, skew, now.s, env, proof_use)?;
            }
            Ok(())
        });
        match checked {
            Ok(()) => return Ok(()),
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
