//! The peer half of the configuration: the PeerAuthentication policy in force for this workload,
//! and the identity headers.

use std::collections::BTreeMap;

use super::{header_name, Peer, PluginConfig};
use crate::error::ConfigError;
use crate::peer::{self, EffectivePolicy, Workload};

pub(super) fn compile_peer(
    raw: &PluginConfig,
    node: &Workload,
    output_headers: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> Result<Peer, ConfigError> {
    let policy = match (
        &raw.peer_authentications,
        &raw.mtls,
        raw.port_level_mtls.is_empty(),
    ) {
        (Some(_), Some(_), _) | (Some(_), _, false) => {
            return Err(ConfigError::new(
                "peerAuthentications",
                "use either peerAuthentications or mtls/portLevelMtls, not both",
            ))
        }
        (Some(policies), None, true) => {
            warnings.extend(peer::validate(policies)?);
            if raw.root_namespace.is_empty() {
                return Err(ConfigError::new("rootNamespace", "must not be empty"));
            }
            peer::resolve(policies, &raw.root_namespace, node)
        }
        (None, None, true) => EffectivePolicy {
            mode: peer::Mode::Permissive,
            ..EffectivePolicy::default()
        },
        (None, mtls, _) => {
            let mode = match mtls.as_ref().map_or(peer::Mode::Unset, |m| m.mode) {
                peer::Mode::Unset => peer::Mode::Permissive,
                m => m,
            };
            let mut ports = BTreeMap::new();
            for (port, m) in &raw.port_level_mtls {
                let n = port
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=65535).contains(n))
                    .ok_or_else(|| {
                        ConfigError::new(format!("portLevelMtls.{port}"), "is not a port number")
                    })?;
                ports.insert(
                    n,
                    if m.mode == peer::Mode::Unset {
                        mode
                    } else {
                        m.mode
                    },
                );
            }
            EffectivePolicy { mode, ports }
        }
    };
    for (i, td) in raw.trust_domains.iter().enumerate() {
        if td.is_empty() || td.contains('/') {
            return Err(ConfigError::new(
                format!("trustDomains[{i}]"),
                "must be a trust domain name",
            ));
        }
    }
    let mut output = |value: &Option<String>, field: &str| -> Result<Option<String>, ConfigError> {
        let Some(h) = value else { return Ok(None) };
        let h = header_name(h, field)?;
        if output_headers.contains(&h) {
            return Err(ConfigError::new(
                field,
                format!("header {h:?} is already an output header"),
            ));
        }
        output_headers.push(h.clone());
        Ok(Some(h))
    };
    Ok(Peer {
        policy,
        trust_domains: raw.trust_domains.clone(),
        output_peer_principal: output(
            &raw.output_peer_principal_to_header,
            "outputPeerPrincipalToHeader",
        )?,
        output_request_principal: output(
            &raw.output_request_principal_to_header,
            "outputRequestPrincipalToHeader",
        )?,
        output_principal: output(&raw.output_principal_to_header, "outputPrincipalToHeader")?,
        binding: raw.principal_binding,
        // No PeerAuthentication applies on a gateway: nothing to migrate there.
        census: !node.gateway
            && (raw.mtls.is_some()
                || !raw.port_level_mtls.is_empty()
                || raw.peer_authentications.is_some()),
        needs_connection: false,
    }
    .with_needs_connection())
}
