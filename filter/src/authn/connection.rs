//! The peer check: a connection's SPIFFE identity against the port's mTLS mode, for one request
//! or (in a NETWORK plugin) for a whole connection.

use crate::config::Config;
use crate::error::AuthError;
use crate::peer::{self, Mode};
use crate::request::Connection;

/// The peer's principal when the connection carries an accepted SPIFFE identity; an error when the
/// port's mode is STRICT and it does not.
pub(super) fn authenticate_peer(
    cfg: &Config,
    conn: &Connection,
) -> Result<Option<String>, AuthError> {
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
