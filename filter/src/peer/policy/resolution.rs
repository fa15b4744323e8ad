//! A workload's effective mTLS mode: Istio's precedence over the policies, by level and age.

use std::collections::BTreeMap;

use super::{Mode, PeerAuthentication};

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

    /// Whether a connection's port can change its mode: without that it need not be read.
    pub fn depends_on_port(&self) -> bool {
        self.ports.values().any(|m| *m != self.mode)
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
