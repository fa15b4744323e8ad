//! The per-request decision: which tokens are present, whether each verifies, and what to forward.

mod binding;
mod connection;
mod dpop;
mod forward;
mod keys;
mod tokens;
mod verify;

use crate::config::{Config, PrincipalBinding};
use crate::error::AuthError;
use crate::request::Request;
use connection::authenticate_peer;
use tokens::authenticate_jwt;

pub use connection::{admit_connection, Admission};
pub use forward::Forward;
pub use keys::{Env, KeyStore, NoRemotes, RemoteKeys};

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
