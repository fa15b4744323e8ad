"""Keys found from the issuer (OpenID discovery), and rules without an issuer, in a real Envoy
with two workers, against a provider on loopback that the tests control.

A rule with an `issuer` and neither `jwks` nor `jwksUri` reads
`<issuer>/.well-known/openid-configuration` through the cluster derived from the issuer URL
(`outbound|<port>||<host>`, as for `jwksUri`), then the keys from the document's `jwks_uri`.
This module runs its own Envoy so that fetch counts start from zero.
"""

from __future__ import annotations

import pytest

import harness
from harness import eventually
from jwt_mint import claims, ec_key, jwks, mint

FETCH_FAILED = "Jwks remote fetch is failed"
DOC = "/.well-known/openid-configuration"
K1, K2 = ec_key("k1"), ec_key("k2")


class Provider(harness.JwksServer):
    """An OpenID provider: the harness's JSON server with the discovery document and the key sets
    at their own paths; it records every path asked."""

    @property
    def issuer(self) -> str:
        return f"http://{harness.HOST}:{self.port}"

    def document(self, jwks_path: str, **extra) -> None:
        self.set(DOC, {"issuer": self.issuer, "jwks_uri": f"{self.issuer}{jwks_path}", **extra})


PROVIDERS = ("discover", "rotate", "down", "broken", "via-cluster", "no-issuer")


@pytest.fixture(scope="module")
def gw(upstream, wasm_module, tmp_path_factory):
    providers = {name: Provider() for name in PROVIDERS}
    for name, p in providers.items():
        p.document("/keys/v1")
        p.set("/keys/v1", jwks(K1.jwk()))
        p.set("/keys/v2", jwks(K2.jwk()))
    providers["broken"].set(DOC, {"issuer": "x", "keys": "not here"})
    for name, p in providers.items():
        if name != "down":
            p.start()
    clusters = [harness.static_cluster(f"outbound|{p.port}||{harness.HOST}", p.port)
                for name, p in providers.items() if name != "via-cluster"]
    clusters.append(harness.static_cluster("idp", providers["via-cluster"].port))
    scenarios = {name: {"jwtRules": [{"issuer": p.issuer}]} for name, p in providers.items()}
    scenarios["via-cluster"]["jwtRules"][0]["jwksCluster"] = "idp"
    scenarios["no-issuer"] = {"jwtRules": [{"jwksUri": f"{providers['no-issuer'].issuer}/keys/v1"}],
                              "outputRequestPrincipalToHeader": "x-request-principal"}
    scenarios["rotate"]["jwtRules"][0]["jwksCacheDuration"] = "3s"
    gateway = harness.start_gateway(scenarios, tmp_path_factory.mktemp("envoy-discovery"), upstream.port,
                                    clusters=clusters)
    gateway.providers = providers
    yield gateway
    gateway.envoy.stop()
    for p in providers.values():
        p.stop()
    harness.assert_no_vm_crash(gateway.envoy.log_text(), gateway.envoy.log_path)


def token(provider: Provider, key=K1, **fields) -> dict:
    t = mint(key, "ES256", key.kid, claims(iss=fields.pop("iss", provider.issuer), **fields))
    return {"Authorization": f"Bearer {t}"}


def stat(gw, scenario: str, name: str) -> int:
    return harness.filter_counter(gw.envoy, scenario, name)


def test_down_from_start_then_recovers(gw):
    """First: retries back off (1 s, 2 s, 4 s …), so the provider must come up early."""
    p = gw.providers["down"]
    resp = gw.get("down", "/", token(p))
    assert (resp.status, resp.text) == (401, FETCH_FAILED)
    assert gw.get("down", "/").status == 200, "no token, no keys needed"
    assert stat(gw, "down", "jwks_fetch_failed") >= 1
    p.start()
    assert eventually(lambda: gw.get("down", "/", token(p)).status == 200, 40, 0.5), \
        "keys not found after the provider came up"
    assert p.asked(DOC) >= 1 and p.asked("/keys/v1") >= 1


def test_first_fetch_reads_the_document_then_its_keys(gw):
    p = gw.providers["discover"]
    assert eventually(lambda: p.asked("/keys/v1") >= 1, 5), f"keys never fetched: {p.paths}"
    assert p.paths[:2] == [DOC, "/keys/v1"]
    statuses = [gw.get("discover", "/headers", token(p)).status for _ in range(40)]
    assert statuses == [200] * 40
    assert gw.get("discover", "/", token(p, key=K2)).status == 401
    assert gw.get("discover", "/", token(p, iss="https://elsewhere.example.com")).text == \
        "Jwt issuer is not configured"
    # Two workers, one fetch: one document read, one key set read (plus at most one refetch for
    # the unknown kid above, which reads the document again).
    assert p.asked(DOC) <= 2 and p.asked("/keys/v1") <= 2, p.paths
    assert stat(gw, "discover", "jwks_fetch_success") >= 1


def test_rotation_through_the_document(gw):
    p = gw.providers["rotate"]
    assert eventually(lambda: gw.get("rotate", "/", token(p)).status == 200, 10)
    p.document("/keys/v2")
    # A token of the new key: its kid is unknown, so the document is read again at once.
    assert eventually(lambda: gw.get("rotate", "/", token(p, key=K2)).status == 200, 10), p.paths
    assert p.asked("/keys/v2") >= 1
    # And the periodic refresh (3 s) follows the document too: the old key goes away.
    assert eventually(lambda: gw.get("rotate", "/", token(p)).status == 401, 10), p.paths


def test_a_document_without_jwks_uri_fails_closed(gw):
    p = gw.providers["broken"]
    assert eventually(lambda: stat(gw, "broken", "jwks_fetch_failed") >= 1, 10)
    resp = gw.get("broken", "/", token(p))
    assert (resp.status, resp.text) == (401, FETCH_FAILED)
    assert "/keys/v1" not in p.paths
    assert "the discovery document has no jwks_uri" in gw.envoy.log_text()
    p.document("/keys/v1")
    assert eventually(lambda: gw.get("broken", "/", token(p)).status == 200, 40, 0.5)


def test_jwks_cluster_serves_both_calls(gw):
    p = gw.providers["via-cluster"]
    assert eventually(lambda: gw.get("via-cluster", "/", token(p)).status == 200, 10), p.paths
    assert p.paths[:2] == [DOC, "/keys/v1"]


def test_a_rule_without_issuer_accepts_any_iss(gw):
    p = gw.providers["no-issuer"]
    for iss in (p.issuer, "https://elsewhere.example.com", "urn:anything"):
        resp = gw.get("no-issuer", "/headers", token(p, iss=iss, sub="bob"))
        assert resp.status == 200, (iss, resp.text)
        assert resp.upstream_headers("x-request-principal") == [f"{iss}/bob"]
    assert gw.get("no-issuer", "/", token(p, key=K2)).status == 401
