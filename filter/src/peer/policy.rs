//! Istio PeerAuthentication: the policy objects, and a workload's effective mTLS mode resolved
//! with Istio's precedence (once, when the configuration is compiled).

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::error::ConfigError;

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

/// The workload this proxy serves, from its node metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Workload {
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    /// A gateway (istio-agent's node type `router`), not a sidecar.
    pub gateway: bool,
}

/// A workload's resolved policy: a mode for every port, with per-port exceptions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EffectivePolicy {
    pub mode: Mode,
    pub ports: BTreeMap<u32, Mode>,
}

impl EffectivePolicy {
    pub fn for_port(&self, port: Option<u32>) -> Mode {
        port.and_then(|p| self.ports.get(&p).copied())
            .unwrap_or(self.mode)
    }

    /// Whether any port may need the connection's mTLS state.
    pub fn checks_anything(&self) -> bool {
        self.mode == Mode::Strict || self.ports.values().any(|m| *m == Mode::Strict)
    }
}

/// Istio's precedence: workload (selector matches) over namespace over mesh (root namespace, no
/// selector); UNSET inherits; the mesh default is PERMISSIVE; the oldest policy wins within a level;
/// port-level modes only from the workload policy; selector policies in the root namespace are
/// ignored. PeerAuthentication governs sidecars' inbound traffic only: a gateway's listeners take
/// their TLS from its Gateway resources, so no policy applies there.
pub fn resolve(
    policies: &[PeerAuthentication],
    root_namespace: &str,
    workload: &Workload,
) -> EffectivePolicy {
    if workload.gateway {
        return EffectivePolicy {
            mode: Mode::Permissive,
            ports: BTreeMap::new(),
        };
    }
    let oldest = |f: &dyn Fn(&PeerAuthentication) -> bool| {
        policies
            .iter()
            .filter(|p| f(p))
            .min_by(|a, b| age_key(a).cmp(&age_key(b)))
    };
    let no_selector = |p: &PeerAuthentication| {
        p.spec
            .selector
            .as_ref()
            .is_none_or(|s| s.match_labels.is_empty())
    };
    let mesh = oldest(&|p| p.metadata.namespace == root_namespace && no_selector(p));
    let namespace = (workload.namespace != root_namespace)
        .then(|| oldest(&|p| p.metadata.namespace == workload.namespace && no_selector(p)))
        .flatten();
    let workload_policy = (workload.namespace != root_namespace)
        .then(|| {
            oldest(&|p| {
                p.metadata.namespace == workload.namespace
                    && p.spec.selector.as_ref().is_some_and(|s| {
                        !s.match_labels.is_empty()
                            && s.match_labels
                                .iter()
                                .all(|(k, v)| workload.labels.get(k) == Some(v))
                    })
            })
        })
        .flatten();

    let mode_of = |p: Option<&PeerAuthentication>| {
        p.and_then(|p| p.spec.mtls.as_ref())
            .map_or(Mode::Unset, |m| m.mode)
    };
    let mut mode = Mode::Permissive;
    for level in [mesh, namespace, workload_policy] {
        let m = mode_of(level);
        if m != Mode::Unset {
            mode = m;
        }
    }
    let ports = workload_policy
        .map(|p| {
            p.spec
                .port_level_mtls
                .iter()
                .filter_map(|(port, m)| Some((port.parse::<u32>().ok()?, m.mode)))
                .map(|(port, m)| (port, if m == Mode::Unset { mode } else { m }))
                .collect()
        })
        .unwrap_or_default();
    EffectivePolicy { mode, ports }
}

/// Sort key: creation time (missing = oldest), then name, as Istio orders policies.
fn age_key(p: &PeerAuthentication) -> (Option<(&str, u32)>, &str) {
    (
        p.metadata.creation_timestamp.as_deref().and_then(instant),
        p.metadata.name.as_str(),
    )
}

/// A validated `YYYY-MM-DDTHH:MM:SS[.fraction]Z` as its whole seconds (fixed-width text, which
/// sorts chronologically) and nanoseconds: compared as text, `…:00.5Z` would sort before `…:00Z`.
fn instant(ts: &str) -> Option<(&str, u32)> {
    let seconds = ts.get(..19)?;
    let fraction = ts.get(19..ts.len().checked_sub(1)?)?;
    let digits = fraction.strip_prefix('.').unwrap_or(fraction);
    let nanos = format!("{:0<9}", digits.get(..digits.len().min(9))?);
    Some((seconds, nanos.parse().ok()?))
}

/// Checks what resolution relies on; names the offending field.
pub fn validate(policies: &[PeerAuthentication]) -> Result<Vec<String>, ConfigError> {
    let mut warnings = Vec::new();
    for (i, p) in policies.iter().enumerate() {
        let at = |f: &str| format!("peerAuthentications[{i}].{f}");
        if let Some(kind) = &p.kind {
            if kind != "PeerAuthentication" {
                return Err(ConfigError::new(
                    at("kind"),
                    format!("{kind:?} is not PeerAuthentication"),
                ));
            }
        }
        if p.metadata.name.is_empty() {
            return Err(ConfigError::new(at("metadata.name"), "must not be empty"));
        }
        if p.metadata.namespace.is_empty() {
            return Err(ConfigError::new(
                at("metadata.namespace"),
                "must not be empty",
            ));
        }
        if let Some(ts) = &p.metadata.creation_timestamp {
            if !is_rfc3339_utc(ts) {
                return Err(ConfigError::new(
                    at("metadata.creationTimestamp"),
                    format!("{ts:?} is not an RFC 3339 UTC time like 2026-01-01T00:00:00Z"),
                ));
            }
        }
        for port in p.spec.port_level_mtls.keys() {
            if !port.parse::<u32>().is_ok_and(|n| (1..=65535).contains(&n)) {
                return Err(ConfigError::new(
                    at(&format!("spec.portLevelMtls.{port}")),
                    "is not a port number",
                ));
            }
        }
        if !p.spec.port_level_mtls.is_empty()
            && p.spec
                .selector
                .as_ref()
                .is_none_or(|s| s.match_labels.is_empty())
        {
            warnings.push(format!(
                "{}: portLevelMtls is only honoured on a policy with a selector",
                at("spec")
            ));
        }
    }
    Ok(warnings)
}

/// `YYYY-MM-DDTHH:MM:SSZ`, optionally with fractional seconds; these sort chronologically as text.
fn is_rfc3339_utc(s: &str) -> bool {
    let b = s.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    b.len() >= 20
        && digits(0..4)
        && b.get(4) == Some(&b'-')
        && digits(5..7)
        && b.get(7) == Some(&b'-')
        && digits(8..10)
        && b.get(10) == Some(&b'T')
        && digits(11..13)
        && b.get(13) == Some(&b':')
        && digits(14..16)
        && b.get(16) == Some(&b':')
        && digits(17..19)
        && b.last() == Some(&b'Z')
        && (b.len() == 20 || (b.get(19) == Some(&b'.') && digits(20..b.len().saturating_sub(1))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pa(ns: &str, name: &str, ts: &str, spec: serde_json::Value) -> PeerAuthentication {
        serde_json::from_value(json!({
            "apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
            "metadata": {"name": name, "namespace": ns, "creationTimestamp": ts,
                         "uid": "0e1f", "resourceVersion": "7", "generation": 1},
            "spec": spec,
        }))
        .unwrap()
    }

    fn workload(ns: &str, app: &str) -> Workload {
        Workload {
            namespace: ns.into(),
            labels: [
                ("app".to_string(), app.to_string()),
                ("version".to_string(), "v1".to_string()),
            ]
            .into(),
            gateway: false,
        }
    }

    const T1: &str = "2026-01-01T00:00:00Z";
    const T2: &str = "2026-02-01T00:00:00Z";

    fn mode(m: &str) -> serde_json::Value {
        json!({"mtls": {"mode": m}})
    }

    fn sel(app: &str, extra: serde_json::Value) -> serde_json::Value {
        let mut v = json!({"selector": {"matchLabels": {"app": app}}});
        if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        v
    }

    #[test]
    fn precedence_table() {
        use Mode::*;
        let foo_httpbin = workload("foo", "httpbin");
        type Case = (
            &'static str,
            Vec<PeerAuthentication>,
            Mode,
            Vec<(u32, Mode)>,
        );
        let cases: Vec<Case> = vec![
            ("nothing: mesh default", vec![], Permissive, vec![]),
            (
                "mesh strict",
                vec![pa("istio-system", "default", T1, mode("STRICT"))],
                Strict,
                vec![],
            ),
            (
                "mesh unset",
                vec![pa("istio-system", "default", T1, mode("UNSET"))],
                Permissive,
                vec![],
            ),
            (
                "mesh spec empty",
                vec![pa("istio-system", "default", T1, json!({}))],
                Permissive,
                vec![],
            ),
            (
                "other namespace",
                vec![pa("bar", "default", T1, mode("STRICT"))],
                Permissive,
                vec![],
            ),
            (
                "namespace over mesh",
                vec![
                    pa("istio-system", "default", T1, mode("STRICT")),
                    pa("foo", "ns", T1, mode("DISABLE")),
                ],
                Disable,
                vec![],
            ),
            (
                "namespace unset inherits mesh",
                vec![
                    pa("istio-system", "default", T1, mode("STRICT")),
                    pa("foo", "ns", T1, mode("UNSET")),
                ],
                Strict,
                vec![],
            ),
            (
                "workload over namespace",
                vec![
                    pa("foo", "ns", T1, mode("STRICT")),
                    pa("foo", "wl", T1, sel("httpbin", mode("DISABLE"))),
                ],
                Disable,
                vec![],
            ),
            (
                "workload unset inherits namespace",
                vec![
                    pa("foo", "ns", T1, mode("STRICT")),
                    pa("foo", "wl", T1, sel("httpbin", mode("UNSET"))),
                ],
                Strict,
                vec![],
            ),
            (
                "selector not matching",
                vec![pa("foo", "wl", T1, sel("other", mode("STRICT")))],
                Permissive,
                vec![],
            ),
            (
                "selector in root namespace ignored",
                vec![pa("istio-system", "wl", T1, sel("httpbin", mode("STRICT")))],
                Permissive,
                vec![],
            ),
            (
                "oldest namespace policy wins",
                vec![
                    pa("foo", "b-new", T2, mode("DISABLE")),
                    pa("foo", "a-old", T1, mode("STRICT")),
                ],
                Strict,
                vec![],
            ),
            (
                "fractional seconds are later, not earlier",
                vec![
                    pa("foo", "a-new", "2026-01-01T00:00:00.5Z", mode("DISABLE")),
                    pa("foo", "b-old", T1, mode("STRICT")),
                ],
                Strict,
                vec![],
            ),
            (
                "fractions compare as numbers",
                vec![
                    pa("foo", "a-new", "2026-01-01T00:00:00.25Z", mode("DISABLE")),
                    pa("foo", "b-old", "2026-01-01T00:00:00.1Z", mode("STRICT")),
                ],
                Strict,
                vec![],
            ),
            (
                "a missing timestamp is oldest",
                vec![pa("foo", "a-dated", T1, mode("DISABLE")), {
                    let mut p = pa("foo", "b-undated", T1, mode("STRICT"));
                    p.metadata.creation_timestamp = None;
                    p
                }],
                Strict,
                vec![],
            ),
            (
                "same age: name order",
                vec![
                    pa("foo", "b", T1, mode("DISABLE")),
                    pa("foo", "a", T1, mode("STRICT")),
                ],
                Strict,
                vec![],
            ),
            (
                "port level from workload policy",
                vec![pa(
                    "foo",
                    "wl",
                    T1,
                    sel(
                        "httpbin",
                        json!({"mtls": {"mode": "STRICT"}, "portLevelMtls": {"8080": {"mode": "DISABLE"}}}),
                    ),
                )],
                Strict,
                vec![(8080, Disable)],
            ),
            (
                "port level unset inherits the workload's mode",
                vec![
                    pa("foo", "ns", T1, mode("STRICT")),
                    pa(
                        "foo",
                        "wl",
                        T1,
                        sel(
                            "httpbin",
                            json!({"portLevelMtls": {"8080": {"mode": "UNSET"}, "9090": {"mode": "PERMISSIVE"}}}),
                        ),
                    ),
                ],
                Strict,
                vec![(8080, Strict), (9090, Permissive)],
            ),
            (
                "port level on a namespace policy ignored",
                vec![pa(
                    "foo",
                    "ns",
                    T1,
                    json!({"mtls": {"mode": "STRICT"}, "portLevelMtls": {"8080": {"mode": "DISABLE"}}}),
                )],
                Strict,
                vec![],
            ),
            (
                "empty selector is namespace wide",
                vec![pa(
                    "foo",
                    "ns",
                    T1,
                    json!({"selector": {"matchLabels": {}}, "mtls": {"mode": "STRICT"}}),
                )],
                Strict,
                vec![],
            ),
            (
                "selector needs every label",
                vec![pa(
                    "foo",
                    "wl",
                    T1,
                    json!({"selector": {"matchLabels": {"app": "httpbin", "version": "v2"}}, "mtls": {"mode": "STRICT"}}),
                )],
                Permissive,
                vec![],
            ),
        ];
        for (name, policies, want_mode, want_ports) in cases {
            let got = resolve(&policies, "istio-system", &foo_httpbin);
            assert_eq!(got.mode, want_mode, "{name}");
            assert_eq!(
                got.ports.into_iter().collect::<Vec<_>>(),
                want_ports,
                "{name}"
            );
        }
    }

    #[test]
    fn workload_in_root_namespace_uses_mesh_policy_only() {
        let policies = vec![
            pa("istio-system", "default", T1, mode("PERMISSIVE")),
            pa("istio-system", "wl", T1, sel("httpbin", mode("STRICT"))),
        ];
        assert_eq!(
            resolve(
                &policies,
                "istio-system",
                &workload("istio-system", "httpbin")
            )
            .mode,
            Mode::Permissive
        );
    }

    #[test]
    fn ports_resolve() {
        let p = EffectivePolicy {
            mode: Mode::Strict,
            ports: [(8080, Mode::Disable)].into(),
        };
        assert_eq!(p.for_port(Some(8080)), Mode::Disable);
        assert_eq!(p.for_port(Some(9090)), Mode::Strict);
        assert_eq!(p.for_port(None), Mode::Strict);
        assert!(p.checks_anything());
        assert!(!EffectivePolicy {
            mode: Mode::Permissive,
            ports: [(1, Mode::Disable)].into()
        }
        .checks_anything());
    }

    #[test]
    fn validation_names_fields() {
        let bad = [
            (pa("foo", "x", "yesterday", json!({})), "creationTimestamp"),
            (
                pa(
                    "foo",
                    "x",
                    T1,
                    json!({"portLevelMtls": {"http": {"mode": "STRICT"}}}),
                ),
                "portLevelMtls.http",
            ),
            (
                pa(
                    "foo",
                    "x",
                    T1,
                    json!({"portLevelMtls": {"0": {"mode": "STRICT"}}}),
                ),
                "portLevelMtls.0",
            ),
            (pa("foo", "", T1, json!({})), "metadata.name"),
            (pa("", "x", T1, json!({})), "metadata.namespace"),
        ];
        for (p, field) in bad {
            let err = validate(&[p]).unwrap_err();
            assert!(err.field.contains(field), "{err:?}");
        }
        let mut wrong_kind = pa("foo", "x", T1, json!({}));
        wrong_kind.kind = Some("RequestAuthentication".into());
        assert!(validate(&[wrong_kind]).unwrap_err().field.ends_with("kind"));
        assert!(serde_json::from_value::<PeerAuthenticationSpec>(
            json!({"mtls": {"mode": "strict"}})
        )
        .is_err());
        assert!(serde_json::from_value::<PeerAuthenticationSpec>(json!({"mtl": {}})).is_err());
        assert!(is_rfc3339_utc("2026-01-01T00:00:00.123Z"));
        assert!(!is_rfc3339_utc("2026-01-01T00:00:00+02:00"));
    }
}
