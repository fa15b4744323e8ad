//! One `jwtRules` entry compiled: its issuer, its keys (`keys`), where its tokens are read, its
//! output headers and its own checks (`subjects`, `maxLifetime`, `presence`,
//! `certificateBinding`).

use super::keys::key_source;
use super::{
    compile_trigger_rules, header_name, is_token_char, parse_duration_ms, ClaimHeader, JwtRule,
    Presence, Rule, MAX_SPACE_DELIMITED_CLAIMS,
};
use super::{Dpop, DpopRule, DEFAULT_DPOP_MAX_AGE_S, MAX_DPOP_MAX_AGE_S};
use crate::error::ConfigError;
use crate::jwt::claims::sanitize_audience;
use crate::jwt::dpop;
use crate::jwt::subject::SubjectMatcher;
use crate::remote::RemoteJwks;
use crate::request::token::{Location, LocationKind};

/// What compiling the rules gathers across them.
#[derive(Debug, Default)]
pub(super) struct Gathered {
    /// Remote key sets, one per distinct URI and cluster.
    pub remotes: Vec<RemoteJwks>,
    /// Unique token locations; each knows which rules read it.
    pub locations: Vec<Location>,
    pub output_headers: Vec<String>,
    pub warnings: Vec<String>,
    /// Inline key sets longer than `jwks::MAX_KEYS`.
    pub keys_cut: u64,
}

/// The rule at `jwtRules[i]`.
pub(super) fn compile_rule(i: usize, r: &JwtRule, g: &mut Gathered) -> Result<Rule, ConfigError> {
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
    let keys = key_source(r, &at, g)?;
    for kind in token_locations(r, &at)? {
        match g.locations.iter_mut().find(|l| l.kind == kind) {
            Some(l) if !l.rules.contains(&i) => l.rules.push(i),
            Some(_) => {}
            None => g.locations.push(Location {
                kind,
                rules: vec![i],
            }),
        }
    }
    let output_payload_to_header = match &r.output_payload_to_header {
        Some(h) => Some(header_name(h, &at("outputPayloadToHeader"))?),
        None => None,
    };
    let claims = claim_headers(r, &at, output_payload_to_header.as_ref(), &mut g.warnings)?;
    for h in output_payload_to_header
        .iter()
        .chain(claims.iter().map(|c| &c.header))
    {
        if !g.output_headers.contains(h) {
            g.output_headers.push(h.clone());
        }
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
    Ok(Rule {
        required: r.presence == Presence::Required,
        subjects,
        max_lifetime_ms,
        certificate_binding: r.certificate_binding,
        dpop: match &r.dpop {
            Some(d) => Some(dpop_rule(d, &at("dpop"))?),
            None => None,
        },
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
    })
}

/// Where the rule's tokens are read; a rule naming none reads `Authorization: Bearer` and
/// `?access_token=`, as Istio's.
fn token_locations(
    r: &JwtRule,
    at: &dyn Fn(&str) -> String,
) -> Result<Vec<LocationKind>, ConfigError> {
    let mut locations = Vec::new();
    for (j, h) in r.from_headers.iter().enumerate() {
        let name = header_name(&h.name, &at(&format!("fromHeaders[{j}].name")))?;
        locations.push(LocationKind::Header {
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
        locations.push(LocationKind::Param(p.clone()));
    }
    for (j, c) in r.from_cookies.iter().enumerate() {
        if c.is_empty() || !c.bytes().all(is_token_char) {
            return Err(ConfigError::new(
                at(&format!("fromCookies[{j}]")),
                "must be a cookie name (RFC 6265 token)",
            ));
        }
        locations.push(LocationKind::Cookie(c.clone()));
    }
    if locations.is_empty() {
        locations.push(LocationKind::Header {
            name: "authorization".into(),
            prefix: "Bearer ".into(),
        });
        locations.push(LocationKind::Param("access_token".into()));
    }
    // A rule with `dpop` also reads `Authorization: DPoP <token>`.
    if r.dpop.is_some() && !locations.iter().any(LocationKind::is_dpop) {
        locations.push(LocationKind::dpop());
    }
    Ok(locations)
}

fn dpop_rule(d: &Dpop, at: &str) -> Result<DpopRule, ConfigError> {
    let max_age_s = match &d.max_age {
        None => DEFAULT_DPOP_MAX_AGE_S,
        Some(text) => {
            let ms = parse_duration_ms(text).map_err(|e| e.within(&format!("{at}.maxAge")))?;
            match ms / 1000 {
                0 => {
                    return Err(ConfigError::new(
                        format!("{at}.maxAge"),
                        "must be at least 1s",
                    ))
                }
                s if s > MAX_DPOP_MAX_AGE_S => {
                    return Err(ConfigError::new(
                        format!("{at}.maxAge"),
                        format!("must be at most {MAX_DPOP_MAX_AGE_S}s"),
                    ))
                }
                s => s,
            }
        }
    };
    let origin = match &d.origin {
        None => None,
        Some(o) => {
            // Scheme and authority only: the normalized URI's path is "/".
            let normalized = dpop::normalize_uri(o)
                .filter(|_| !o.contains(['?', '#']))
                .and_then(|u| u.strip_suffix('/').map(String::from))
                .filter(|u| u.matches('/').count() == 2);
            Some(normalized.ok_or_else(|| {
                ConfigError::new(
                    format!("{at}.origin"),
                    "must be an http(s) scheme and authority, e.g. \"https://api.example.com\"",
                )
            })?)
        }
    };
    Ok(DpopRule {
        mode: d.mode,
        max_age_s,
        origin,
    })
}

/// `outputClaimToHeaders`, each header named once in the rule, with `spaceDelimitedClaims`.
fn claim_headers(
    r: &JwtRule,
    at: &dyn Fn(&str) -> String,
    payload_header: Option<&String>,
    warnings: &mut Vec<String>,
) -> Result<Vec<ClaimHeader>, ConfigError> {
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
    let mut claims = Vec::with_capacity(r.output_claim_to_headers.len());
    for (j, c) in r.output_claim_to_headers.iter().enumerate() {
        let here = |f: &str| at(&format!("outputClaimToHeaders[{j}].{f}"));
        let header = header_name(&c.header, &here("header"))?;
        // One header, one claim: which value it carried would depend on the order of writes.
        if payload_header == Some(&header)
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
    Ok(claims)
}
