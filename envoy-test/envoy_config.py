"""Envoy configuration as the tests build it: the wasm filters (HTTP and NETWORK), Envoy's native
jwt_authn configured like a pluginConfig (the reference), listeners, clusters and the bootstrap."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from servers import HOST


REPO = Path(__file__).resolve().parent.parent
ROOT_ID = "mesh-authn"
NETWORK_ROOT_ID = "network"  # Istio's WasmPlugin pluginName for the connection-level plugin
VM_ID = "mesh-authn"
STATS_TAGS = REPO / "docs" / "monitoring" / "envoy-stats-tags.yaml"


def wasm_path() -> Path:
    default = REPO / "target" / "wasm32-wasip1" / "release" / "mesh_authn.wasm"
    return Path(os.environ.get("MESH_AUTHN_WASM", default))


def wasm_filter(name: str, plugin_config: dict | str, wasm: Path | None = None) -> dict:
    """The Envoy wasm HTTP filter, pluginConfig passed as a JSON string like istiod does."""
    value = plugin_config if isinstance(plugin_config, str) else json.dumps(plugin_config)
    return {
        "name": "envoy.filters.http.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": name,
                "root_id": ROOT_ID,
                "vm_config": {
                    "vm_id": VM_ID,
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": str(wasm or wasm_path())}},
                },
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": value,
                },
            },
        },
    }


def network_wasm_filter(name: str, plugin_config: dict | str, wasm: Path | None = None) -> dict:
    """The module as Envoy's wasm NETWORK filter, as istiod renders a `type: NETWORK` WasmPlugin
    whose pluginName is "network" (the root id)."""
    http = wasm_filter(name, plugin_config, wasm)["typed_config"]
    http["@type"] = "type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm"
    http["config"]["root_id"] = NETWORK_ROOT_ID
    return {"name": "envoy.filters.network.wasm", "typed_config": http}


def tcp_proxy(name: str, cluster: str) -> dict:
    return {"name": "envoy.filters.network.tcp_proxy", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
        "stat_prefix": name, "cluster": cluster}}


def jwt_authn_filter(plugin_config: dict) -> dict:
    """Envoy's own jwt_authn filter configured like the given pluginConfig (the reference
    implementation). Covers jwtRules and requireToken/clockSkewSeconds/requireExpiration;
    triggerRules are not translated."""
    providers = {}
    for index, rule in enumerate(plugin_config["jwtRules"]):
        provider = {
            "issuer": rule.get("issuer", ""),
            "audiences": rule.get("audiences", []),
            "local_jwks": {"inline_string": rule["jwks"]},
            "forward": rule.get("forwardOriginalToken", False),
            "clock_skew_seconds": plugin_config.get("clockSkewSeconds", 60),
            "require_expiration": plugin_config.get("requireExpiration", False),
            "from_headers": [{"name": h["name"], "value_prefix": h.get("prefix", "")}
                             for h in rule.get("fromHeaders", [])],
            "from_params": rule.get("fromParams", []),
            "from_cookies": rule.get("fromCookies", []),
            "claim_to_headers": [
                {"header_name": c["header"], "claim_name": c["claim"]} if "claim" in c else
                {"header_name": c["header"], "claim_path": [{"key": k} for k in c["claimPath"]]}
                for c in rule.get("outputClaimToHeaders", [])],
        }
        if rule.get("outputPayloadToHeader"):
            provider["forward_payload_header"] = rule["outputPayloadToHeader"]
        if "subjects" in rule:
            provider["subjects"] = _string_matcher(rule["subjects"])
        if "maxLifetime" in rule:
            provider["max_lifetime"] = rule["maxLifetime"]
        providers[f"rule{index}"] = provider
    required = [f"rule{i}" for i, r in enumerate(plugin_config["jwtRules"]) if r.get("presence") == "REQUIRED"]
    if required:
        # As istiod renders `presence: REQUIRED` (istio/istio #60830): each required provider on its
        # own, the optional ones each with allow_missing, all of them together.
        requires = {"requires_all": {"requirements": [
            {"provider_name": name} if name in required else
            {"requires_any": {"requirements": [{"provider_name": name}, {"allow_missing": {}}]}}
            for name in providers]}}
        if len(providers) == 1:
            requires = {"provider_name": required[0]}
    else:
        requirements = [{"provider_name": name} for name in providers]
        if not plugin_config.get("requireToken", False):
            requirements.append({"allow_missing": {}})
        requires = requirements[0] if len(requirements) == 1 else {"requires_any": {"requirements": requirements}}
    typed_config = {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
        "providers": providers,
        "rules": [{"match": {"prefix": "/"}, "requires": requires}],
        "bypass_cors_preflight": True,
    }
    if plugin_config.get("denialBody") == "none":
        typed_config["strip_failure_response"] = True
    return {"name": "envoy.filters.http.jwt_authn", "typed_config": typed_config}


def _string_matcher(m: dict) -> dict:
    """A `subjects` match as Envoy's StringMatcher."""
    out = {("safe_regex" if k == "regex" else k): ({"regex": v} if k == "regex" else v)
           for k, v in m.items() if k != "ignoreCase"}
    if m.get("ignoreCase"):
        out["ignore_case"] = True
    return out


ROUTER = {
    "name": "envoy.filters.http.router",
    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
}


ISTIO_BASE_NORMALIZATION = {
    "normalize_path": True,
    "merge_slashes": False,
    "path_with_escaped_slashes_action": "KEEP_UNCHANGED",
}


@dataclass
class WithHcm:
    """A scenario (pluginConfig, None or filters) whose HTTP connection manager has extra fields."""
    scenario: dict | str | list | None
    hcm: dict


def listener(name: str, port: int, http_filters: list[dict], cluster: str = "echo",
             hcm_extra: dict | None = None) -> dict:
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": name,
        "route_config": {
            "name": name,
            "virtual_hosts": [{
                "name": "all",
                "domains": ["*"],
                "routes": [{"match": {"prefix": "/"}, "route": {"cluster": cluster}}],
            }],
        },
        "http_filters": [*http_filters, ROUTER],
        **(hcm_extra or {}),
    }
    return {
        "name": name,
        "address": {"socket_address": {"address": HOST, "port_value": port}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": hcm,
        }]}],
    }


def static_cluster(name: str, port: int) -> dict:
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {
                "address": {"socket_address": {"address": HOST, "port_value": port}},
            }}]}],
        },
    }


def stats_config() -> dict:
    """The stats tags an operator adds so that the plugin's series are labelled (docs/monitoring)."""
    return yaml.safe_load(STATS_TAGS.read_text())["stats_config"]


def bootstrap(admin_port: int, listeners: list[dict], clusters: list[dict]) -> dict:
    return {
        "admin": {"address": {"socket_address": {"address": HOST, "port_value": admin_port}}},
        "stats_config": stats_config(),
        "static_resources": {"listeners": listeners, "clusters": clusters},
    }
