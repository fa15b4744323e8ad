//! Istio PeerAuthentication: the policy objects as `kubectl get -o json` prints them. A
//! workload's effective mTLS mode is resolved from them once, when the configuration is compiled.

mod resolution;
mod validation;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use serde::Deserialize;

pub use resolution::{resolve, EffectivePolicy, Workload};
pub use validation::validate;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Mode {
    /// Inherit from the parent level; the mesh default is PERMISSIVE.
    #[default]
    Unset,
    /// Connections are not checked.
    Disable,
    /// Plaintext and mTLS are both accepted.
    Permissive,
    /// Only mTLS connections (a client certificate was presented) are accepted.
    Strict,
}

impl Mode {
    /// As Istio spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Unset => "UNSET",
            Self::Disable => "DISABLE",
            Self::Permissive => "PERMISSIVE",
            Self::Strict => "STRICT",
        }
    }
}

/// `{"mode": "STRICT"}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Mtls {
    #[serde(default)]
    pub mode: Mode,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Selector {
    #[serde(default)]
    pub match_labels: BTreeMap<String, String>,
}

/// A PeerAuthentication's `spec`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PeerAuthenticationSpec {
    #[serde(default)]
    pub selector: Option<Selector>,
    #[serde(default)]
    pub mtls: Option<Mtls>,
    /// Keyed by workload port number, as a string.
    #[serde(default)]
    pub port_level_mtls: BTreeMap<String, Mtls>,
}

/// The Kubernetes metadata this filter reads; any other field (uid, labels, …) is accepted and
/// ignored so objects can be pasted as `kubectl get -o json` prints them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    pub name: String,
    pub namespace: String,
    /// RFC 3339, e.g. `2026-01-01T00:00:00Z`. Older policies win within a level; a missing
    /// timestamp counts as oldest, as in Istio.
    #[serde(default)]
    pub creation_timestamp: Option<String>,
}

/// A PeerAuthentication object as `kubectl get -o json` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PeerAuthentication {
    #[serde(default)]
    pub api_version: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: PeerAuthenticationSpec,
    /// Ignored.
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(skip))]
    pub status: Option<serde_json::Value>,
}
