"""The WasmPlugins we ship (wasm-plugin.yaml), each pluginConfig loaded unchanged into a real Envoy
as istiod does (JSON text in a StringValue). The JWKS host of the ServiceEntry is served by a test
server under the cluster name Istio gives it, `outbound|<port>||<host>`, so the plugins' own
`jwksUri` and derived cluster are what is exercised."""

from __future__ import annotations

import pytest
import yaml

import harness
import mesh as M
from jwt_mint import claims, mint

SHIPPED = harness.REPO / "wasm-plugin.yaml"


def docs() -> list[dict]:
    return [d for d in yaml.safe_load_all(SHIPPED.read_text()) if d]


def plugin(name: str) -> dict:
    (found,) = [d for d in docs() if d["kind"] == "WasmPlugin" and d["metadata"]["name"] == name]
    return found


def plugin_config(name: str) -> dict:
    return plugin(name)["spec"]["pluginConfig"]


def service_entry_clusters(port: int) -> list[dict]:
    """Istio's clusters for the shipped ServiceEntries, all pointing at a local JWKS server."""
    return [harness.static_cluster(f"outbound|{p['number']}||{host}", port)
            for d in docs() if d["kind"] == "ServiceEntry"
            for host in d["spec"]["hosts"] for p in d["spec"]["ports"]]


@pytest.fixture(scope="module")
def jwks_server(keys):
    server = harness.JwksServer().start()
    server.serve(keys.jwks())
    yield server
    server.stop()


@pytest.fixture(scope="module")
def ingress(upstream, wasm_module, jwks_server, tmp_path_factory):
    gw = harness.start_gateway({"ingress": plugin_config("mesh-authn-ingress")},
                               tmp_path_factory.mktemp("envoy-shipped"), upstream.port,
                               clusters=service_entry_clusters(jwks_server.port))
    yield gw
    gw.envoy.stop()


@pytest.fixture(scope="module")
def httpbin_mesh(wasm_module, jwks_server, tmp_path_factory):
    m = M.Mesh(tmp_path_factory.mktemp("mesh-shipped"), wasm_module,
               server_clusters=service_entry_clusters(jwks_server.port))
    peers = plugin("mesh-authn-httpbin-peers")["spec"]
    # istiod renders `type: NETWORK` as the network wasm filter, `pluginName` as its root id.
    assert (peers["type"], peers["pluginName"]) == ("NETWORK", harness.NETWORK_ROOT_ID)
    assert plugin("mesh-authn-httpbin")["spec"].get("type", "HTTP") == "HTTP"
    m.start("{}")
    m.apply(plugin_config("mesh-authn-httpbin"), network=peers["pluginConfig"])
    yield m
    m.stop()


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def test_ingress_plugin_reproduces_istio_task(ingress, jwks_server, keys):
    token = mint(keys.rsa, "RS256", "rsa", claims(sub="alice"))
    assert ingress.get("ingress", "/headers").status == 200
    resp = ingress.get("ingress", "/headers", bearer("deadbeef"))
    assert resp.status == 401
    seen = ingress.get("ingress", "/headers", {**bearer(token), "x-jwt-sub": "mallory"})
    assert seen.status == 200
    assert seen.upstream["headers"]["x-jwt-sub"] == ["alice"]
    assert "authorization" not in seen.upstream["headers"]
    expired = mint(keys.rsa, "RS256", "rsa", claims(lifetime=-90))
    assert ingress.get("ingress", "/headers", bearer(expired)).status == 401
    assert ingress.get("ingress", "/healthz/ready", bearer(expired)).status == 200
    # The keys came through the ServiceEntry's cluster, from the URI's path.
    assert jwks_server.paths[0] == "/istio/istio/release-1.24/security/tools/jwt/samples/jwks.json"


def test_httpbin_plugin_needs_mtls_and_a_token(httpbin_mesh, keys):
    token = mint(keys.rsa, "RS256", "rsa", claims(sub="alice"))
    # The NETWORK plugin refuses the plaintext connection: no HTTP answer at all.
    code, printed = httpbin_mesh.curl("legacy", "foo", headers=bearer(token))
    assert printed == "000" and code in (52, 56), (code, printed)
    no_token = httpbin_mesh.call("foo", "foo")
    assert (no_token.status, no_token.text) == (401, "Jwt is missing")
    ok = httpbin_mesh.call("foo", "foo", headers={**bearer(token), "x-peer-principal": "forged"})
    assert ok.status == 200, ok
    assert ok.upstream_headers("x-peer-principal") == ["cluster.local/ns/foo/sa/curl"]
    assert ok.upstream_headers("x-request-principal") == ["testing@secure.istio.io/alice"]
    foreign = httpbin_mesh.call("evil", "foo", headers=bearer(token))
    assert foreign.status == 503, foreign  # its connection was closed: its sidecar answers 503


def test_httpbin_http_plugin_alone_still_refuses_plaintext(httpbin_mesh, keys):
    """Without the NETWORK plugin the HTTP one's own `mtls: STRICT` still refuses, with a 401."""
    token = mint(keys.rsa, "RS256", "rsa", claims(sub="alice"))
    httpbin_mesh.apply(plugin_config("mesh-authn-httpbin"))
    plaintext = httpbin_mesh.call("legacy", "foo", headers=bearer(token))
    assert (plaintext.status, plaintext.text) == (401, M.PEER_AUTHN_FAILED)
    assert httpbin_mesh.call("foo", "foo", headers=bearer(token)).status == 200
