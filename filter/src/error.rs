//! The two errors of the filter: why a request was refused (`AuthError`, and `Denial`, the one
//! place that turns it into an HTTP answer), and why a configuration was (`ConfigError`).

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;

/// Reasons a request fails authentication. Texts follow Envoy's jwt_authn so operators and tests
/// that know Envoy's answers read the same here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    Missing,
    TooLarge,
    BadFormat,
    HeaderBadBase64,
    HeaderBadJson,
    HeaderBadAlg,
    AlgNotSupported,
    HeaderBadKid,
    CritNotSupported,
    PayloadBadBase64,
    PayloadBadJson,
    IssNotString,
    SubNotString,
    AudNotStringList,
    ExpNotInteger,
    NbfNotInteger,
    IatNotInteger,
    ExpOutOfRange,
    NbfOutOfRange,
    IatOutOfRange,
    SignatureBadBase64,
    UnknownIssuer,
    NotYetValid,
    Expired,
    ExpirationMissing,
    AudienceNotAllowed,
    NoMatchingKey,
    VerificationFailed,
    JwksFetchFailed,
    /// No mTLS where the peer policy requires it.
    PeerAuthenticationFailed,
    /// mTLS, but the peer's identity is not from an accepted trust domain.
    PeerUntrusted,
    /// `certificateBinding`: the token has no usable `cnf.x5t#S256` (RFC 8705).
    CertificateBindingMissing,
    /// `certificateBinding`: the token is bound to a certificate this connection did not present.
    CertificateBindingMismatch,
    /// `dpop` (RFC 9449): the request has no `DPoP` proof, or more than one.
    DpopProofMissing,
    DpopProofMultiple,
    /// Not a `dpop+jwt` with a public `jwk` of an asymmetric `alg`, and `jti`, `htm`, `htu`, `iat`.
    DpopProofMalformed,
    DpopProofSignature,
    /// `htm` or `htu` is not this request's.
    DpopProofWrongRequest,
    /// `iat` outside `maxAge` (plus the clock skew) either way.
    DpopProofStale,
    /// `ath` is not the hash of this access token.
    DpopProofWrongToken,
    /// The proof's `jti` was seen within its window.
    DpopProofReplayed,
    /// The replay store could not record the proof's `jti` (its entry is full): refused, counted.
    DpopReplayStoreFull,
    /// The token's `cnf.jkt` is not the proof key's thumbprint, or is malformed.
    DpopKeyMismatch,
    /// A DPoP-bound token (`cnf.jkt`) presented as a bearer token (RFC 9449 §7.2).
    DpopBoundAsBearer,
    /// `dpop.mode: REQUIRED`, and the token came as a bearer token, or without `cnf.jkt`.
    DpopRequired,
    /// The NETWORK plugin holds as many TLS connections awaiting their handshake as it may.
    HandshakesBacklogged,
    Internal,
}

/// The proof algorithms a `dpop` rule accepts, as its challenges list them (RFC 9449 §7.1).
pub const DPOP_ALGS: &str = "ES256 ES384 ES512 EdDSA Ed25519 PS256 PS384 PS512 RS256 RS384 RS512";

/// The refusal counters, one per kind of reason, in `AuthError::kind` order.
pub const REASON_KINDS: [&str; 15] = [
    "missing",
    "malformed",
    "issuer",
    "expired",
    "not_yet_valid",
    "audience",
    "key_not_found",
    "signature",
    "jwks_unavailable",
    "peer_plaintext",
    "peer_untrusted",
    "internal",
    "binding",
    "dpop",
    "overload",
];

impl AuthError {
    pub fn reason(self) -> &'static str {
        match self {
            Self::Missing => "Jwt is missing",
            Self::TooLarge => "Jwt is too large",
            Self::BadFormat => {
                "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"
            }
            Self::HeaderBadBase64 => "Jwt header is an invalid Base64url encoded",
            Self::HeaderBadJson => "Jwt header is an invalid JSON",
            Self::HeaderBadAlg => "Jwt header [alg] field is required and must be a string",
            Self::AlgNotSupported => "Jwt header [alg] is not supported",
            Self::HeaderBadKid => "Jwt header [kid] field is not a string",
            Self::CritNotSupported => "Jwt header [crit] is not supported",
            Self::PayloadBadBase64 => "Jwt payload is an invalid Base64url encoded",
            Self::PayloadBadJson => "Jwt payload is an invalid JSON",
            Self::IssNotString => "Jwt payload [iss] field is not a string",
            Self::SubNotString => "Jwt payload [sub] field is not a string",
            Self::AudNotStringList => "Jwt payload [aud] field is not a string or string list",
            Self::ExpNotInteger => "Jwt payload [exp] field is not an integer",
            Self::NbfNotInteger => "Jwt payload [nbf] field is not an integer",
            Self::IatNotInteger => "Jwt payload [iat] field is not an integer",
            Self::ExpOutOfRange => "Jwt payload [exp] field is not a positive 64 bit integer",
            Self::NbfOutOfRange => "Jwt payload [nbf] field is not a positive 64 bit integer",
            Self::IatOutOfRange => "Jwt payload [iat] field is not a positive 64 bit integer",
            Self::SignatureBadBase64 => "Jwt signature is an invalid Base64url encoded",
            Self::UnknownIssuer => "Jwt issuer is not configured",
            Self::NotYetValid => "Jwt not yet valid",
            Self::Expired => "Jwt is expired",
            Self::ExpirationMissing => "Jwt has no [exp] claim and expiration is required",
            Self::AudienceNotAllowed => "Audiences in Jwt are not allowed",
            Self::NoMatchingKey => "Jwks doesn't have key to match kid or alg from Jwt",
            Self::VerificationFailed => "Jwt verification fails",
            Self::JwksFetchFailed => "Jwks remote fetch is failed",
            Self::PeerAuthenticationFailed | Self::PeerUntrusted => "Peer authentication failed.",
            Self::CertificateBindingMissing => {
                "Jwt payload [cnf] has no valid [x5t#S256] certificate thumbprint"
            }
            Self::CertificateBindingMismatch => {
                "Jwt is bound to a client certificate this connection did not present"
            }
            Self::DpopProofMissing => "DPoP proof is missing",
            Self::DpopProofMultiple => "DPoP proof must be one DPoP header",
            Self::DpopProofMalformed => "DPoP proof is not a valid dpop+jwt",
            Self::DpopProofSignature => "DPoP proof signature is invalid",
            Self::DpopProofWrongRequest => "DPoP proof [htm] or [htu] does not match the request",
            Self::DpopProofStale => "DPoP proof [iat] is outside the accepted window",
            Self::DpopProofWrongToken => "DPoP proof [ath] does not match the access token",
            Self::DpopProofReplayed => "DPoP proof [jti] was already used",
            Self::DpopReplayStoreFull => {
                "DPoP proof could not be recorded: the replay store is full"
            }
            Self::DpopKeyMismatch => "Jwt is bound to another DPoP key",
            Self::DpopBoundAsBearer => "Jwt is DPoP-bound and cannot be a bearer token",
            Self::DpopRequired => "Jwt must be DPoP-bound and sent with a DPoP proof",
            Self::HandshakesBacklogged => "Too many connections awaiting their TLS handshake",
            Self::Internal => "Authentication failed: internal error",
        }
    }

    pub fn http_status(self) -> u32 {
        match self {
            Self::AudienceNotAllowed => 403,
            Self::Internal => 500,
            Self::HandshakesBacklogged => 503,
            _ => 401,
        }
    }

    /// Which `REASON_KINDS` counter counts this failure.
    pub fn kind(self) -> usize {
        match self {
            Self::Missing => 0,
            Self::UnknownIssuer => 2,
            Self::Expired => 3,
            Self::NotYetValid => 4,
            Self::AudienceNotAllowed => 5,
            Self::NoMatchingKey => 6,
            Self::VerificationFailed => 7,
            Self::JwksFetchFailed => 8,
            Self::PeerAuthenticationFailed => 9,
            Self::PeerUntrusted => 10,
            Self::Internal => 11,
            Self::CertificateBindingMissing | Self::CertificateBindingMismatch => 12,
            e if e.is_dpop() => 13,
            Self::HandshakesBacklogged => 14,
            _ => 1,
        }
    }

    /// A failure of the DPoP proof itself (RFC 9449 §7.1 `invalid_dpop_proof`).
    fn is_dpop_proof(self) -> bool {
        matches!(
            self,
            Self::DpopProofMissing
                | Self::DpopProofMultiple
                | Self::DpopProofMalformed
                | Self::DpopProofSignature
                | Self::DpopProofWrongRequest
                | Self::DpopProofStale
                | Self::DpopProofWrongToken
                | Self::DpopProofReplayed
                | Self::DpopReplayStoreFull
        )
    }

    /// A failure answered with the `DPoP` authentication scheme (RFC 9449 §7.1).
    fn is_dpop(self) -> bool {
        self.is_dpop_proof()
            || matches!(
                self,
                Self::DpopKeyMismatch | Self::DpopBoundAsBearer | Self::DpopRequired
            )
    }

    /// The error code RFC 6750 (§3.1) or RFC 9449 (§7.1) gives this failure, for JSON bodies.
    pub fn rfc6750_error(self) -> &'static str {
        match self {
            e if e.is_dpop_proof() => "invalid_dpop_proof",
            Self::Missing | Self::PeerAuthenticationFailed | Self::PeerUntrusted => {
                "invalid_request"
            }
            Self::AudienceNotAllowed => "insufficient_scope",
            Self::Internal => "server_error",
            Self::HandshakesBacklogged => "temporarily_unavailable",
            _ => "invalid_token",
        }
    }

    /// The `WWW-Authenticate` challenges for this failure; `realm` is the request's original URI.
    /// Where DPoP is configured a missing token is offered both schemes, and a request that came
    /// with the DPoP scheme is answered in it (RFC 9449 §7.1).
    pub fn challenges(self, realm: &str, dpop: DpopChallenge) -> Vec<String> {
        let dpop_challenge = |error: Option<&str>| match error {
            Some(e) => format!("DPoP realm=\"{realm}\", error=\"{e}\", algs=\"{DPOP_ALGS}\""),
            None => format!("DPoP realm=\"{realm}\", algs=\"{DPOP_ALGS}\""),
        };
        match (self, dpop) {
            (
                Self::Internal
                | Self::HandshakesBacklogged
                | Self::PeerAuthenticationFailed
                | Self::PeerUntrusted,
                _,
            ) => vec![],
            (Self::Missing, DpopChallenge::None) => vec![format!("Bearer realm=\"{realm}\"")],
            (Self::Missing, _) => {
                vec![format!("Bearer realm=\"{realm}\""), dpop_challenge(None)]
            }
            (e, _) if e.is_dpop() => vec![dpop_challenge(Some(e.rfc6750_error()))],
            (e, DpopChallenge::Used) => vec![dpop_challenge(Some(e.rfc6750_error()))],
            _ => vec![format!("Bearer realm=\"{realm}\", error=\"invalid_token\"")],
        }
    }
}

/// How DPoP figures in a refusal's challenges.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DpopChallenge {
    /// No rule takes DPoP.
    #[default]
    None,
    /// Some rule takes DPoP; the request did not use it.
    Offered,
    /// The request came with `Authorization: DPoP`.
    Used,
}

/// What the body of a refusal says (`denialBody`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum DenialBody {
    /// The reason as text, as Envoy's jwt_authn words it (`Jwt is expired`).
    #[default]
    Text,
    /// `{"code":401,"error":"invalid_token","reason":"Jwt is expired"}`, `error` as RFC 6750
    /// names it, for API clients.
    Json,
    /// No body at all, as Envoy's `strip_failure_response`.
    None,
}

/// The answer sent to the client instead of forwarding the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub status: u32,
    pub headers: Vec<(&'static str, String)>,
    pub body: Cow<'static, str>,
}

impl Denial {
    pub fn new(error: AuthError, realm: &str, style: DenialBody) -> Self {
        Self::with_dpop(error, realm, style, DpopChallenge::None)
    }

    pub fn with_dpop(
        error: AuthError,
        realm: &str,
        style: DenialBody,
        dpop: DpopChallenge,
    ) -> Self {
        let status = error.http_status();
        let (content_type, body) = match style {
            DenialBody::Text => (Some("text/plain"), Cow::Borrowed(error.reason())),
            DenialBody::Json => (
                Some("application/json"),
                Cow::Owned(
                    serde_json::json!({
                        "code": status,
                        "error": error.rfc6750_error(),
                        "reason": error.reason(),
                    })
                    .to_string(),
                ),
            ),
            DenialBody::None => (None, Cow::Borrowed("")),
        };
        let mut headers = Vec::with_capacity(3);
        if let Some(t) = content_type {
            headers.push(("content-type", t.to_string()));
        }
        for v in error.challenges(realm, dpop) {
            headers.push(("www-authenticate", v));
        }
        Self {
            status,
            headers,
            body,
        }
    }
}

/// A configuration error, naming the field it is about as a path from the root of
/// `pluginConfig` (`jwtRules[0].timeout`); empty for the document as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub field: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }

    /// An error about the value being read itself; the caller places it with `within`.
    pub fn here(message: impl Into<String>) -> Self {
        Self::new("", message)
    }

    /// The same error, seen from the object that holds the value at `parent`.
    pub fn within(mut self, parent: &str) -> Self {
        self.field = match (parent.is_empty(), self.field.is_empty()) {
            (_, true) => parent.to_string(),
            (true, false) => self.field,
            (false, false) if self.field.starts_with('[') => format!("{parent}{}", self.field),
            (false, false) => format!("{parent}.{}", self.field),
        };
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "invalid pluginConfig: {}", self.message)
        } else {
            write!(
                f,
                "invalid pluginConfig at {}: {}",
                self.field, self.message
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dpop_challenges() {
        let realm = "https://h/p";
        let algs = format!("algs=\"{DPOP_ALGS}\"");
        let c = |e: AuthError, d| e.challenges(realm, d);
        assert_eq!(
            c(AuthError::Missing, DpopChallenge::Offered),
            vec![
                format!("Bearer realm=\"{realm}\""),
                format!("DPoP realm=\"{realm}\", {algs}")
            ]
        );
        assert_eq!(
            c(AuthError::Expired, DpopChallenge::Used),
            vec![format!(
                "DPoP realm=\"{realm}\", error=\"invalid_token\", {algs}"
            )]
        );
        assert_eq!(
            c(AuthError::Expired, DpopChallenge::Offered),
            vec![format!("Bearer realm=\"{realm}\", error=\"invalid_token\"")]
        );
        for d in [
            DpopChallenge::None,
            DpopChallenge::Offered,
            DpopChallenge::Used,
        ] {
            assert_eq!(
                c(AuthError::DpopProofStale, d),
                vec![format!(
                    "DPoP realm=\"{realm}\", error=\"invalid_dpop_proof\", {algs}"
                )]
            );
            assert_eq!(
                c(AuthError::DpopBoundAsBearer, d),
                vec![format!(
                    "DPoP realm=\"{realm}\", error=\"invalid_token\", {algs}"
                )]
            );
            assert!(c(AuthError::Internal, d).is_empty());
        }
        let json = Denial::with_dpop(
            AuthError::DpopProofReplayed,
            realm,
            DenialBody::Json,
            DpopChallenge::Used,
        );
        assert!(
            json.body.contains("\"error\":\"invalid_dpop_proof\""),
            "{}",
            json.body
        );
    }

    #[test]
    fn missing_has_no_error_attribute() {
        let d = Denial::new(AuthError::Missing, "http://h/p", DenialBody::Text);
        assert_eq!(d.status, 401);
        assert!(d
            .headers
            .contains(&("www-authenticate", "Bearer realm=\"http://h/p\"".into())));
        assert_eq!(d.body, "Jwt is missing");
    }

    #[test]
    fn invalid_token_and_audience() {
        let d = Denial::new(AuthError::Expired, "http://h/p", DenialBody::Text);
        assert_eq!(d.status, 401);
        assert!(d.headers.contains(&(
            "www-authenticate",
            "Bearer realm=\"http://h/p\", error=\"invalid_token\"".into()
        )));
        let d = Denial::new(
            AuthError::AudienceNotAllowed,
            "http://h/p",
            DenialBody::Text,
        );
        assert_eq!(d.status, 403);
        assert_eq!(d.body, "Audiences in Jwt are not allowed");
    }

    #[test]
    fn denial_bodies() {
        let realm = "http://h/p";
        let json = Denial::new(AuthError::Expired, realm, DenialBody::Json);
        assert_eq!(json.status, 401);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&json.body).unwrap(),
            serde_json::json!({"code": 401, "error": "invalid_token", "reason": "Jwt is expired"})
        );
        assert!(json
            .headers
            .contains(&("content-type", "application/json".into())));
        let scope = Denial::new(AuthError::AudienceNotAllowed, realm, DenialBody::Json);
        assert!(scope.body.contains(r#""code":403"#) && scope.body.contains("insufficient_scope"));
        let missing = Denial::new(AuthError::Missing, realm, DenialBody::Json);
        assert!(missing.body.contains("invalid_request"));
        for style in [DenialBody::Text, DenialBody::Json, DenialBody::None] {
            for e in [
                AuthError::Missing,
                AuthError::Expired,
                AuthError::AudienceNotAllowed,
            ] {
                let d = Denial::new(e, realm, style);
                let challenges = d.headers.iter().filter(|(k, _)| *k == "www-authenticate");
                assert_eq!(challenges.count(), 1, "{style:?} {e:?}");
            }
        }
        let none = Denial::new(AuthError::Expired, realm, DenialBody::None);
        assert_eq!(none.body, "");
        assert!(none.headers.iter().all(|(k, _)| *k != "content-type"));
    }

    #[test]
    fn config_error_paths() {
        let e = ConfigError::here("bad")
            .within("timeout")
            .within("jwtRules[0]");
        assert_eq!(e.field, "jwtRules[0].timeout");
        assert_eq!(
            e.to_string(),
            "invalid pluginConfig at jwtRules[0].timeout: bad"
        );
        let e = ConfigError::new("[2]", "bad").within("keys").within("");
        assert_eq!(e.field, "keys[2]");
        assert_eq!(
            ConfigError::here("too large").to_string(),
            "invalid pluginConfig: too large"
        );
    }
}
