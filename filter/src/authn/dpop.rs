//! A `dpop` rule's checks on one request (RFC 9449 §7): which scheme the token came with, its proof,
//! the proof key against the token's `cnf.jkt`, and the replay store, last.

use super::Env;
use crate::config::{Binding, DpopRule};
use crate::error::AuthError;
use crate::jwt::confirmation::Thumbprint;
use crate::jwt::dpop::{self, DpopMemo, Expected};
use crate::replay::Refusal;
use crate::request::{strip_query, Request};

/// What one request's checks share: the proof it carries is recorded once, however many of its
/// tokens or rules check it.
#[derive(Debug, Default)]
pub(super) struct ProofUse {
    recorded: Option<[u8; 32]>,
}

/// One verified token of a `dpop` rule, `as_dpop` when it came as `Authorization: DPoP`.
#[allow(clippy::too_many_arguments)] // the request's facts, each needed once
pub(super) fn check(
    rule: &DpopRule,
    jkt: &Thumbprint,
    as_dpop: bool,
    token: &str,
    req: &Request,
    skew_s: u64,
    now_s: u64,
    env: &mut Env<'_>,
    used: &mut ProofUse,
) -> Result<(), AuthError> {
    if !as_dpop {
        // RFC 9449 §7.2: a DPoP-bound token is never a bearer token.
        return match (jkt, rule.mode) {
            (Thumbprint::Absent, Binding::Optional) => Ok(()),
            (Thumbprint::Absent, Binding::Required) => Err(AuthError::DpopRequired),
            _ => Err(AuthError::DpopBoundAsBearer),
        };
    }
    if !matches!(jkt, Thumbprint::Sha256(_)) {
        return Err(AuthError::DpopRequired);
    }
    let mut proofs = req.header_values("dpop");
    let proof = match (proofs.next(), proofs.next()) {
        (None, _) => return Err(AuthError::DpopProofMissing),
        (Some(p), None) => p,
        (Some(_), Some(_)) => return Err(AuthError::DpopProofMultiple),
    };
    let uri = request_uri(rule, req).ok_or(AuthError::DpopProofWrongRequest)?;
    let expected = Expected {
        method: req.header(":method").unwrap_or(""),
        uri: &uri,
        access_token: token,
        now_s,
        max_age_s: rule.max_age_s,
        skew_s,
    };
    let mut fresh = None;
    let memo = match env.dpop_memo.as_deref_mut() {
        Some(kept) => kept,
        None => fresh.insert(DpopMemo::new()),
    };
    let checked = dpop::check(proof, &expected, env.verifier, memo)?;
    if !jkt.matches(&checked.jkt) {
        return Err(AuthError::DpopKeyMismatch);
    }
    if used.recorded == Some(checked.jti_hash) {
        return Ok(());
    }
    let replay = env.replay.as_deref_mut().ok_or(AuthError::Internal)?;
    replay
        .first_use(&checked.jti_hash, checked.remember_until_s, now_s)
        .map_err(|r| match r {
            Refusal::Seen => AuthError::DpopProofReplayed,
            Refusal::Full => AuthError::DpopReplayStoreFull,
        })?;
    used.recorded = Some(checked.jti_hash);
    Ok(())
}

/// The URI the client addressed: `origin` when set (a proxy behind a load balancer), otherwise
/// the request's own scheme and authority; the path without its query.
fn request_uri(rule: &DpopRule, req: &Request) -> Option<String> {
    let path = strip_query(req.path());
    Some(match &rule.origin {
        Some(origin) => format!("{origin}{path}"),
        None => format!(
            "{}://{}{path}",
            req.header(":scheme")?,
            req.header(":authority")?
        ),
    })
}
