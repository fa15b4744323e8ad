"""The WasmPlugins we ship (wasm-plugin.yaml), each pluginConfig loaded unchanged into a real Envoy
as istiod does (JSON text in a StringValue). The JWKS host of the ServiceEntry is served by a test
server under the cluster name Istio gives it, `outbound|<port>||<host>`, so the plugins' own
`jwksUri` and derived cluster are what is exercised. The shipped AuthorizationPolicy is rendered
into Envoy's RBAC filter as istiod renders it (`mesh.rbac_filters`), after the HTTP plugin."""

from __future__ import annotations

import pytest
import yaml

import harness
import mesh as M
from jwt_mint import ISSUER, claims, mint

SHIPPED = harness.REPO / "wasm-plugin.yaml"
DEMO_SUBJECT = ISSUER  # Istio's sample demo.jwt: sub = iss, and a claim "foo": "bar"
RBAC_DENIED = (403, "RBAC: access denied")


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


# --------------------------------------------------------------------------- authorization


def httpbin_rbac(mesh: M.Mesh) -> list[dict]:
    """What istiod gives httpbin.foo's sidecar for the shipped AuthorizationPolicies."""
    return M.rbac_filters(docs(), "foo", mesh.servers["foo"].labels)


def demo_token(keys, **overrides) -> str:
    """A token like Istio's demo.jwt; an override of None leaves that claim out."""
    return mint(keys.rsa, "RS256", "rsa", claims(**{"sub": DEMO_SUBJECT, "foo": "bar", **overrides}))


def refused_tokens(keys) -> dict[str, str]:
    """Valid tokens the policy refuses. Sent with forged headers, only the filter's stripping
    refuses them: Envoy's RBAC header match holds when any one copy of the header matches, and
    without `foo` the filter sets no x-jwt-foo at all."""
    return {"other subject": demo_token(keys, sub="alice"), "no foo claim": demo_token(keys, foo=None),
            "other foo": demo_token(keys, foo="baz")}


def exact_header(name: str, value: str) -> dict:
    return {"header": {"name": name, "string_match": {"exact": value}}}


def test_shipped_authorization_policy_renders_as_istiod_does():
    assert M.rbac_filters(docs(), "foo", {"app": "httpbin", "version": "v1"}) == [{
        "name": "envoy.filters.http.rbac",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
            "rules": {"policies": {"ns[foo]-policy[httpbin-require-jwt]-rule[0]": {
                "permissions": [{"and_rules": {"rules": [{"any": True}]}}],
                "principals": [{"and_ids": {"ids": [
                    {"or_ids": {"ids": [exact_header("x-request-principal",
                                                     f"{ISSUER}/{DEMO_SUBJECT}")]}},
                    {"or_ids": {"ids": [exact_header("x-jwt-foo", "bar")]}},
                ]}}],
            }}},
            "shadow_rules_stat_prefix": "istio_dry_run_allow_",
        },
    }]
    assert M.rbac_filters(docs(), "bar", {"app": "httpbin"}) == []
    assert M.rbac_filters(docs(), "foo", {"app": "curl"}) == []


def test_rbac_rendering_follows_istio_golden_output():
    """Istio's pilot/pkg/security/authz/builder/testdata/http/single-policy-{in,out}.yaml, for its
    `request.headers[X-header]` condition, plus notValues and the empty rules istiod renders."""
    policy = {"kind": "AuthorizationPolicy", "metadata": {"name": "p", "namespace": "istio-system"},
              "spec": {"rules": [{"when": [{"key": "request.headers[X-header]",
                                            "values": ["header", "header-prefix-*", "*-suffix-header", "*"],
                                            "notValues": ["x"]}]},
                                 {}]}}
    never = {"kind": "AuthorizationPolicy", "metadata": {"name": "none", "namespace": "foo"},
             "spec": {"selector": {"matchLabels": {"app": "httpbin"}}}}
    (rbac,) = M.rbac_filters([policy, never], "foo", {"app": "httpbin"})
    policies = rbac["typed_config"]["rules"]["policies"]
    assert policies["ns[istio-system]-policy[p]-rule[0]"]["principals"] == [{"and_ids": {"ids": [
        {"or_ids": {"ids": [
            exact_header("X-header", "header"),
            {"header": {"name": "X-header", "string_match": {"prefix": "header-prefix-"}}},
            {"header": {"name": "X-header", "string_match": {"suffix": "-suffix-header"}}},
            {"header": {"name": "X-header", "present_match": True}},
        ]}},
        {"not_id": {"or_ids": {"ids": [exact_header("X-header", "x")]}}},
    ]}}]
    assert policies["ns[istio-system]-policy[p]-rule[1]"]["principals"] == [{"and_ids": {"ids": [{"any": True}]}}]
    assert policies["ns[foo]-policy[none]-rule[0]"] == {
        "permissions": [{"not_rule": {"any": True}}], "principals": [{"not_id": {"any": True}}]}


def test_authorization_policy_allows_only_the_identity_it_names(httpbin_mesh, keys):
    httpbin_mesh.apply(plugin_config("mesh-authn-httpbin"), network=plugin_config("mesh-authn-httpbin-peers"),
                       authz_filters=httpbin_rbac(httpbin_mesh))
    ok = httpbin_mesh.call("foo", "foo", headers=bearer(demo_token(keys)))
    assert ok.status == 200, ok
    assert ok.upstream_headers("x-request-principal") == [f"{ISSUER}/{DEMO_SUBJECT}"]
    assert ok.upstream_headers("x-jwt-foo") == ["bar"]
    for case, token in refused_tokens(keys).items():
        denied = httpbin_mesh.call("foo", "foo", headers=bearer(token))
        assert (denied.status, denied.text) == RBAC_DENIED, (case, denied)
    no_token = httpbin_mesh.call("foo", "foo")
    assert (no_token.status, no_token.text) == (401, "Jwt is missing")


# What the policy wants, sent by the client itself.
FORGERIES = {
    "once": [("x-request-principal", f"{ISSUER}/{DEMO_SUBJECT}"), ("x-jwt-foo", "bar")],
    "twice": [("x-request-principal", f"{ISSUER}/{DEMO_SUBJECT}"), ("x-jwt-foo", "bar")] * 2,
    "mixed-case": [("X-Request-Principal", f"{ISSUER}/{DEMO_SUBJECT}"), ("X-JWT-Foo", "bar")],
}


@pytest.mark.parametrize("forgery", FORGERIES.values(), ids=FORGERIES.keys())
def test_forged_identity_headers_never_pass(httpbin_mesh, keys, forgery):
    httpbin_mesh.apply(plugin_config("mesh-authn-httpbin"), network=plugin_config("mesh-authn-httpbin-peers"),
                       authz_filters=httpbin_rbac(httpbin_mesh))
    no_token = httpbin_mesh.call("foo", "foo", headers=forgery)
    assert (no_token.status, no_token.text) == (401, "Jwt is missing")
    for case, token in refused_tokens(keys).items():
        denied = httpbin_mesh.call("foo", "foo", headers=[*bearer(token).items(), *forgery])
        assert (denied.status, denied.text) == RBAC_DENIED, (case, denied)
    ok = httpbin_mesh.call("foo", "foo", headers=[*bearer(demo_token(keys)).items(), *forgery])
    assert ok.status == 200, ok
    assert ok.upstream_headers("x-request-principal") == [f"{ISSUER}/{DEMO_SUBJECT}"]
    assert ok.upstream_headers("x-jwt-foo") == ["bar"]


def test_with_optional_tokens_rbac_refuses_the_requests_the_filter_lets_through(httpbin_mesh, keys):
    """requireToken false: a request without a token passes the filter with no identity headers,
    so the policy alone refuses it, forged headers or not."""
    optional = {**plugin_config("mesh-authn-httpbin"), "requireToken": False}
    httpbin_mesh.apply(optional, network=plugin_config("mesh-authn-httpbin-peers"),
                       authz_filters=httpbin_rbac(httpbin_mesh))
    for forgery in [[], *FORGERIES.values()]:
        denied = httpbin_mesh.call("foo", "foo", headers=forgery)
        assert (denied.status, denied.text) == RBAC_DENIED, (forgery, denied)
    assert httpbin_mesh.call("foo", "foo", headers=bearer(demo_token(keys))).status == 200


def test_refusals_are_rbacs_and_need_it_after_the_plugin(httpbin_mesh, keys):
    """The controls: without the RBAC filter the refused requests pass; with it in front of the
    plugin it reads the client's own headers (what it would read if the filter did not strip
    them), so a forged identity passes."""
    peers = plugin_config("mesh-authn-httpbin-peers")
    httpbin_mesh.apply(plugin_config("mesh-authn-httpbin"), network=peers)
    alice = bearer(demo_token(keys, sub="alice"))
    assert httpbin_mesh.call("foo", "foo", headers=alice).status == 200
    assert httpbin_mesh.call("foo", "foo", headers=[*alice.items(), *FORGERIES["once"]]).status == 200

    plugin_after_rbac = harness.wasm_filter("httpbin_after_rbac", plugin_config("mesh-authn-httpbin"),
                                            httpbin_mesh.wasm)
    httpbin_mesh.apply(None, network=peers, authz_filters=[*httpbin_rbac(httpbin_mesh), plugin_after_rbac])
    assert httpbin_mesh.call("foo", "foo", headers=alice).status == 403
    passed = httpbin_mesh.call("foo", "foo", headers=[*alice.items(), *FORGERIES["once"]])
    assert passed.status == 200, passed
    assert passed.upstream_headers("x-request-principal") == [f"{ISSUER}/alice"]
