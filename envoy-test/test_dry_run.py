"""Rolling out without an outage: `dryRun`, per-reason counters, the decision header, and the
plaintext census, in real Envoys.

A dry run checks everything as enforcement does and refuses nothing: each request or connection
enforcement would refuse goes on, is counted under `dry_run_refused_<reason>` and logged, and the
upstream sees `deny; reason="…"` in the decision header. The same configs without `dryRun` refuse
as before, counted under `refused_<reason>`.
"""

from __future__ import annotations

import time

import pytest

import harness
import mesh as M
from jwt_mint import ISSUER, claims, jwks, mint, tamper_signature
from mesh import peer_authentication, peer_config
from test_network_plugin import TcpServices, talk

DECISION = "x-authn-decision"


def envoy_scenarios(keys) -> dict:
    cfg = {"jwtRules": [{"issuer": ISSUER, "jwks": jwks(keys.rsa.jwk()), "audiences": ["svc-a"],
                         "outputClaimToHeaders": [{"header": "x-jwt-sub", "claim": "sub"}]}],
           "requireToken": True, "outputDecisionToHeader": DECISION}
    return {"dry": {**cfg, "dryRun": True}, "enforce": cfg}


def refusals(keys) -> dict[str, tuple[dict, int, str, str]]:
    """case -> (headers, enforced status, reason, counter)"""
    def bearer(c: dict) -> dict:
        return {"Authorization": "Bearer " + mint(keys.rsa, "RS256", "rsa", c)}
    return {
        "missing": ({}, 401, "Jwt is missing", "missing"),
        "expired": (bearer(claims(aud="svc-a", lifetime=-600)), 401, "Jwt is expired", "expired"),
        "audience": (bearer(claims(aud="svc-b")), 403, "Audiences in Jwt are not allowed", "audience"),
        "signature": ({"Authorization": "Bearer " + tamper_signature(
            mint(keys.rsa, "RS256", "rsa", claims(aud="svc-a")))}, 401, "Jwt verification fails", "signature"),
        "issuer": (bearer(claims(aud="svc-a", iss="x@y")), 401, "Jwt issuer is not configured", "issuer"),
        "malformed": ({"Authorization": "Bearer not-a-jwt"}, 401,
                      "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections",
                      "malformed"),
    }


FORGED = {DECISION: "allow", "x-jwt-sub": "admin"}


@pytest.mark.parametrize("case", ["missing", "expired", "audience", "signature", "issuer", "malformed"])
def test_each_refusal_class_in_dry_run_and_enforced(gateway, keys, case):
    headers, status, reason, counter = refusals(keys)[case]
    before = {s: harness.filter_counter(gateway.envoy, s, f"{k}_{counter}")
              for s, k in (("dry", "dry_run_refused"), ("enforce", "refused"))}
    dry = gateway.get("dry", "/headers", {**headers, **FORGED})
    assert dry.status == 200, (case, dry.text)
    assert dry.upstream_headers(DECISION) == [f'deny; reason="{reason}"'], "forged decision not replaced"
    assert dry.upstream_headers("x-jwt-sub") == [], "an identity from a refused request"
    enforced = gateway.get("enforce", "/headers", {**headers, **FORGED})
    assert (enforced.status, enforced.text) == (status, reason)
    assert harness.filter_counter(gateway.envoy, "dry", f"dry_run_refused_{counter}") == before["dry"] + 1
    assert harness.filter_counter(gateway.envoy, "enforce", f"refused_{counter}") == before["enforce"] + 1
    assert harness.filter_counter(gateway.envoy, "dry", f"refused_{counter}") == 0


def test_a_good_token_is_allowed_in_both(gateway, keys):
    token = mint(keys.rsa, "RS256", "rsa", claims(aud="svc-a", sub="alice"))
    for scenario in ("dry", "enforce"):
        resp = gateway.get(scenario, "/headers", {"Authorization": f"Bearer {token}", **FORGED})
        assert resp.status == 200
        assert resp.upstream_headers(DECISION) == ["allow"]
        assert resp.upstream_headers("x-jwt-sub") == ["alice"]


def test_dry_run_refusals_are_logged_without_the_token(gateway, keys):
    token = mint(keys.rsa, "RS256", "rsa", claims(aud="svc-a", lifetime=-600))
    mark = gateway.envoy.log_size()
    gateway.get("dry", "/logged", {"Authorization": f"Bearer {token}"})
    deadline = time.monotonic() + 5
    while "dry run: would refuse 401 /logged: Jwt is expired" not in gateway.envoy.log_text(mark):
        assert time.monotonic() < deadline, gateway.envoy.log_tail(10, mark)
        time.sleep(0.1)
    assert token not in gateway.envoy.log_text() and token.split(".")[2] not in gateway.envoy.log_text()


# --------------------------------------------------------------------------- peers


@pytest.fixture(scope="module")
def mesh(wasm_module, tmp_path_factory):
    m = M.Mesh(tmp_path_factory.mktemp("mesh-dry-run"), wasm_module)
    m.start("{}")
    yield m
    m.stop()
    m.assert_no_vm_crash()


def stat_now(envoy: harness.Envoy, name: str) -> int:
    """A stat by exact name; 0 while the module has not defined it."""
    status, text = envoy.admin_get("/stats")
    assert status == 200
    for line in text.splitlines():
        key, _, value = line.partition(": ")
        if key == name:
            return int(value)
    return 0


def server_counter(mesh, ns: str, port_name: str, name: str, want: int, network: bool = False) -> int:
    """A server sidecar plugin's counter once it reaches `want` (counts are flushed on the
    plugin's tick, about once a second), or its value after 5 s."""
    server = mesh.servers[ns]
    port = server.ports[port_name]
    plugin = f"inbound_{port}_network" if network else f"inbound_{port}"
    deadline = time.monotonic() + 5
    while True:
        value = stat_now(server.envoy, harness.filter_stat(plugin, name))
        if value == want or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def test_plaintext_under_strict_in_dry_run_http_and_network(mesh):
    strict = peer_authentication("default", "istio-system", "STRICT")
    http = {**peer_config(strict), "dryRun": True, "outputDecisionToHeader": DECISION}
    mesh.apply(http)
    cell = mesh.call("legacy", "foo", headers=FORGED)
    assert cell.status == 200, cell
    assert cell.upstream_headers(DECISION) == ['deny; reason="Peer authentication failed."']
    assert cell.upstream_headers(M.PRINCIPAL_HEADER) == []
    assert mesh.call("foo", "foo").upstream_headers(DECISION) == ["allow"]
    assert server_counter(mesh, "foo", "http", "dry_run_refused_peer_plaintext", 1) == 1

    # The same without dryRun: refused as before.
    mesh.apply({**peer_config(strict), "outputDecisionToHeader": DECISION})
    assert mesh.call("legacy", "foo").rejected_by_peer_authn
    assert server_counter(mesh, "foo", "http", "refused_peer_plaintext", 1) == 1

    # NETWORK plugin: the plaintext connection goes on.
    mesh.apply(None, network={**peer_config(strict, principal_header=None), "dryRun": True})
    assert mesh.curl("legacy", "foo") == (0, "200")
    assert server_counter(mesh, "foo", "http", "dry_run_refused_peer_plaintext", 1, network=True) == 1
    assert server_counter(mesh, "foo", "http", "connections_allowed", 1, network=True) == 1
    assert server_counter(mesh, "foo", "http", "connections_refused", 0, network=True) == 0


def test_the_plaintext_census_counts_plaintext_callers_under_permissive(mesh):
    permissive = peer_config(peer_authentication("default", "istio-system", "PERMISSIVE"))
    mesh.apply(permissive)
    for _ in range(3):
        assert mesh.call("legacy", "bar").status == 200
    assert mesh.call("foo", "bar").status == 200
    port = mesh.servers["bar"].ports["http"]
    assert server_counter(mesh, "bar", "http", f"plaintext_port_{port}", 3) == 3
    log = mesh.servers["bar"].envoy.log_text()
    assert "plaintext census: 127.0.0.1:" in log and f"called port Some({port}) without mTLS" in log
    # NETWORK plugin.
    mesh.apply(None, network=peer_config(peer_authentication("default", "istio-system", "PERMISSIVE"),
                                         principal_header=None))
    assert mesh.curl("legacy", "bar") == (0, "200")
    assert mesh.curl("foo", "bar") == (0, "200")
    assert server_counter(mesh, "bar", "http", f"plaintext_port_{port}", 1, network=True) == 1


@pytest.fixture(scope="module")
def tcp_dry(wasm_module, tmp_path_factory):
    pki = M.Pki(tmp_path_factory.mktemp("tcp-dry-pki"))
    cfg = {"mtls": {"mode": "STRICT"}, "dryRun": True}
    services = TcpServices(tmp_path_factory.mktemp("tcp-dry"), pki, cfg)
    yield services
    services.stop()
    harness.assert_no_vm_crash(services.envoy.log_text(), services.envoy.log_path)


def test_a_tcp_service_under_strict_in_dry_run(tcp_dry):
    def dry_run_refusals() -> int:
        return sum(stat_now(tcp_dry.envoy, harness.filter_stat(p, "dry_run_refused_peer_plaintext"))
                   for p in tcp_dry.plugins)

    time.sleep(1.2)  # the start-up port probes, flushed
    before = dry_run_refusals()
    got = talk(tcp_dry.ports["plain"], expect=10)
    assert got.received.startswith(b"220"), got
    echoed = talk(tcp_dry.ports["mixed"], b"hello\n", expect=6)
    assert echoed.received == b"hello\n", echoed
    deadline = time.monotonic() + 5
    while dry_run_refusals() < before + 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert dry_run_refusals() == before + 2
    assert tcp_dry.counts()["connections_refused"] == 0
