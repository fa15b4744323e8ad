"""The WasmPlugin we ship, loaded as istiod would: its pluginConfig as JSON text in a StringValue."""

from __future__ import annotations

import copy

import yaml

import harness
from jwt_mint import ISSUER, claims, mint

SHIPPED = harness.REPO / "wasm-plugin.yaml"


def wasm_plugins() -> list[dict]:
    docs = [d for d in yaml.safe_load_all(SHIPPED.read_text()) if d]
    return [d for d in docs if d.get("kind") == "WasmPlugin"]


def ingress_config() -> dict:
    (plugin,) = [p for p in wasm_plugins() if p["metadata"]["name"] == "mesh-authn-ingress"]
    return plugin["spec"]["pluginConfig"]


def envoy_scenarios(keys) -> dict:
    with_test_keys = copy.deepcopy(ingress_config())
    for rule in with_test_keys["jwtRules"]:
        rule["jwks"] = keys.jwks()
    return {"shipped": ingress_config(), "shipped-test-keys": with_test_keys}


def test_shipped_resource_is_a_gateway_authn_plugin():
    (plugin,) = wasm_plugins()
    spec = plugin["spec"]
    assert spec["selector"]["matchLabels"] == {"istio": "ingressgateway"}
    assert spec["phase"] == "AUTHN"
    assert spec["failStrategy"] == "FAIL_CLOSE"


def test_shipped_config_as_is(gateway, keys):
    assert gateway.get("shipped", "/headers").status == 200
    resp = gateway.get("shipped", "/headers", {"Authorization": "Bearer deadbeef"})
    assert resp.status == 401
    # A well-formed token from a key the shipped (example) JWKS does not hold is refused.
    token = mint(keys.rsa, "RS256", "rsa", claims())
    resp = gateway.get("shipped", "/headers", {"Authorization": f"Bearer {token}"})
    assert resp.status == 401
    assert resp.text == "Jwks doesn't have key to match kid or alg from Jwt"


def test_shipped_config_with_operator_keys(gateway, keys):
    token = mint(keys.rsa, "RS256", "rsa", claims(sub="alice"))
    seen = gateway.get("shipped-test-keys", "/headers",
                       {"Authorization": f"Bearer {token}", "x-jwt-sub": "mallory"}).upstream
    assert seen["headers"]["x-jwt-sub"] == ["alice"]
    assert "authorization" not in seen["headers"]
    expired = mint(keys.rsa, "RS256", "rsa", claims(iss=ISSUER, lifetime=-90))
    assert gateway.get("shipped-test-keys", "/headers", {"Authorization": f"Bearer {expired}"}).status == 401
    assert gateway.get("shipped-test-keys", "/healthz/ready",
                       {"Authorization": f"Bearer {expired}"}).status == 200
