//! Where a rule's keys come from: inline `jwks`, `jwksUri`, or discovery from the issuer.

use super::rules::Gathered;
use super::{parse_duration_ms, JwtRule, KeySource, DEFAULT_CACHE_DURATION_S, DEFAULT_TIMEOUT_MS};
use crate::error::ConfigError;
use crate::jwt::jwks;
use crate::remote::{self, RemoteJwks};

/// The rule's keys: an inline set is parsed here; a remote one is added to `g.remotes` once.
pub(super) fn key_source(
    r: &JwtRule,
    at: &dyn Fn(&str) -> String,
    g: &mut Gathered,
) -> Result<KeySource, ConfigError> {
    Ok(match (&r.jwks, &r.jwks_uri) {
        (Some(inline), uri) => {
            if uri.is_some() {
                g.warnings.push(format!(
                    "{}: jwks is set, so jwksUri is not used",
                    at("jwksUri")
                ));
            }
            let (jwks, skipped) =
                jwks::parse(inline.as_bytes()).map_err(|e| e.within(&at("jwks")))?;
            g.warnings
                .extend(skipped.into_iter().map(|w| format!("{}: {w}", at("jwks"))));
            if let Some(n) = jwks.cut_from {
                g.warnings
                    .push(format!("{}: {}", at("jwks"), jwks::cut_warning(n)));
                g.keys_cut += 1;
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
            let index = match g.remotes.iter().position(|x| *x == source) {
                Some(i) => i,
                None => {
                    g.remotes.push(source);
                    g.remotes.len() - 1
                }
            };
            KeySource::Remote(index)
        }
    })
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
