"""Remote JWKS (`jwksUri`) in a real Envoy with two workers, against JWKS servers the tests control:
fetched on start, shared by the workers, refreshed, refetched on an unknown kid, fail-closed.

This module runs its own Envoy so that fetch counts start from zero.
"""

from __future__ import annotations

import socket
import threading
import time

import pytest

import harness
from harness import eventually
from jwt_mint import claims, ec_key, jwks, mint, tamper_signature

FETCH_FAILED = "Jwks remote fetch is failed"
NO_KEY = "Jwks doesn't have key to match kid or alg from Jwt"
MISSING = "Jwt is missing"

K1, K2, K3 = ec_key("k1"), ec_key("k2"), ec_key("k3")

# scenario -> (rule fields besides issuer/jwksUri, top-level fields, derive the Istio cluster name)
SCENARIOS = {
    "on-start": ({}, {}, True),
    "refresh": ({"jwksCacheDuration": "2s"}, {}, False),
    "rotate": ({}, {}, False),
    "flaky": ({"jwksCacheDuration": "2s", "timeout": "1s"}, {}, False),
    "slow-start": ({"timeout": "10s"}, {}, False),
    "hang-start": ({"timeout": "1s"}, {}, False),
    "down": ({}, {}, False),
    "down-required": ({}, {"requireToken": True}, False),
}


def token(key=K1, **claim_fields) -> str:
    return mint(key, "ES256", key.kid, claims(**claim_fields))


def bearer(t: str) -> dict:
    return {"Authorization": f"Bearer {t}"}


@pytest.fixture(scope="module")
def remote(upstream, wasm_module, tmp_path_factory):
    servers = {name: harness.JwksServer() for name in SCENARIOS}
    servers["down-required"] = servers["down"]
    for name, server in servers.items():
        server.serve(jwks(K1.jwk()))
    servers["slow-start"].delay = 5.0
    servers["hang-start"].fail("hang")
    for name, server in servers.items():
        if name not in ("down", "down-required") and server._server is None:
            server.start()

    scenarios, clusters = {}, []
    for name, (rule, top, istio_name) in SCENARIOS.items():
        server = servers[name]
        cluster = f"outbound|{server.port}||{harness.HOST}" if istio_name else f"jwks-{name}"
        if not any(c["name"] == cluster for c in clusters):
            clusters.append(harness.static_cluster(cluster, server.port))
        fields = {"issuer": "testing@secure.istio.io", "jwksUri": server.uri, **rule}
        if not istio_name:
            fields["jwksCluster"] = cluster
        scenarios[name] = {"jwtRules": [fields], **top}

    gw = harness.start_gateway(scenarios, tmp_path_factory.mktemp("envoy-remote"), upstream.port,
                               clusters=clusters)
    gw.started = time.monotonic()
    gw.servers = servers
    yield gw
    gw.envoy.stop()
    for server in set(servers.values()):
        server.stop()
    log = gw.envoy.log_text()
    assert "panicked" not in log and "Uncaught" not in log, "the wasm VM crashed"


def stat(gw, scenario: str, name: str) -> int:
    return harness.filter_counter(gw.envoy, scenario, name)


def test_requests_wait_for_first_keys_then_resume(remote):
    """The slow server answers 5 s after the start-up fetch: requests in the meantime wait, on
    both workers, and each resumes exactly once when the keys arrive."""
    server = remote.servers["slow-start"]
    assert time.monotonic() - remote.started < 4.0, "module set-up too slow for this test"
    # One client leaves while waiting; its request must be dropped without harm.
    quitter = socket.create_connection((harness.HOST, remote.ports["slow-start"]))
    quitter.sendall(f"GET /gone HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token()}\r\n\r\n".encode())
    quitter.close()
    results: list[int] = []
    threads = [threading.Thread(target=lambda: results.append(
        remote.get("slow-start", "/headers", bearer(token())).status)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    assert results == [200] * 8
    assert server.count == 1
    assert stat(remote, "slow-start", "allowed") == 8


def test_server_down_from_start_then_recovers(remote):
    """Runs early in the module: retries back off (1 s, 2 s, 4 s …), so the server must come up
    while the backoff is still short for recovery to be quick."""
    server = remote.servers["down"]
    resp = remote.get("down", "/", bearer(token()))
    assert (resp.status, resp.text) == (401, FETCH_FAILED)
    assert 'error="invalid_token"' in resp.headers["www-authenticate"][0]
    assert remote.get("down", "/").status == 200
    resp = remote.get("down-required", "/")
    assert (resp.status, resp.text) == (401, MISSING)
    assert stat(remote, "down", "jwks_fetch_failed") >= 1
    server.start()
    assert eventually(lambda: remote.get("down", "/", bearer(token())).status == 200, 40, 0.5), \
        "keys not fetched after the server came up"
    # Its own fetch state (another cluster name) backs off on its own schedule.
    assert eventually(lambda: remote.get("down-required", "/", bearer(token())).status == 200, 40, 0.5)
    assert remote.get("down", "/", bearer(tamper_signature(token()))).status == 401


def test_keys_fetched_on_start_once_across_workers(remote):
    server = remote.servers["on-start"]
    assert eventually(lambda: server.count >= 1, 5), "no fetch after Envoy started"
    assert server.paths[0] == "/.well-known/jwks.json"
    # Each request on a new connection: the kernel spreads them over both workers.
    statuses = [remote.get("on-start", "/headers", bearer(token())).status for _ in range(60)]
    assert statuses == [200] * 60
    assert remote.get("on-start", "/headers", bearer(tamper_signature(token()))).status == 401
    assert server.count == 1, f"{server.count} fetches for one key set"
    assert stat(remote, "on-start", "jwks_fetch_success") == 1
    assert stat(remote, "on-start", "jwks_fetch_failed") == 0
    assert stat(remote, "on-start", "allowed") >= 60
    assert stat(remote, "on-start", "denied") >= 1


def test_unknown_kid_refetches_once_then_rate_limits(remote):
    server = remote.servers["rotate"]
    assert eventually(lambda: server.count == 1, 5)
    assert remote.get("rotate", "/", bearer(token(K1))).status == 200
    server.serve(jwks(K1.jwk(), K2.jwk()))  # the provider rotates in a new key
    assert remote.get("rotate", "/", bearer(token(K2))).status == 200
    assert server.count == 2
    # Within 30 s a second unknown kid does not refetch.
    resp = remote.get("rotate", "/", bearer(token(K3)))
    assert (resp.status, resp.text) == (401, NO_KEY)
    assert server.count == 2
    assert remote.get("rotate", "/", bearer(token(K2))).status == 200


def test_keys_refreshed_before_expiry_one_fetch_per_refresh(remote):
    server = remote.servers["refresh"]
    assert eventually(lambda: server.count >= 1, 5)
    start, t0 = server.count, time.monotonic()
    while time.monotonic() - t0 < 7:
        assert remote.get("refresh", "/", bearer(token())).status == 200
        time.sleep(0.05)
    fetched = server.count - start
    # cache 2 s, refreshed 0.2 s ahead: at most one fetch per 1.8 s, whatever the workers do
    assert 2 <= fetched <= 7 / 1.8 + 1, fetched


@pytest.mark.parametrize("failure", ["500", "hang", "garbage", "partial"])
def test_failed_refresh_keeps_last_good_keys(remote, failure):
    server = remote.servers["flaky"]
    assert eventually(lambda: server.count >= 1, 5)
    failed_before = stat(remote, "flaky", "jwks_fetch_failed")
    server.hang_seconds = 3.0
    server.fail(failure)
    try:
        assert eventually(lambda: stat(remote, "flaky", "jwks_fetch_failed") > failed_before, 10), \
            "the refresh did not fail"
        for _ in range(10):
            assert remote.get("flaky", "/", bearer(token())).status == 200
        resp = remote.get("flaky", "/", bearer(tamper_signature(token())))
        assert resp.status == 401
        assert remote.get("flaky", "/", bearer(token(K2))).status == 401
    finally:
        server.serve(jwks(K1.jwk()))
    succeeded = stat(remote, "flaky", "jwks_fetch_success")
    assert eventually(lambda: stat(remote, "flaky", "jwks_fetch_success") > succeeded, 40)


def test_hanging_server_at_start_fails_closed_not_stranded(remote):
    t0 = time.monotonic()
    resp = remote.get("hang-start", "/", bearer(token()))
    assert (resp.status, resp.text) == (401, FETCH_FAILED)
    assert time.monotonic() - t0 < 5
    assert remote.get("hang-start", "/").status == 200


def test_envoy_restart_fetches_again_and_serves(remote):
    """Last in the module: after a restart (shared data gone) keys are fetched on start again."""
    server = remote.servers["on-start"]
    before = server.count
    remote.envoy.stop()
    remote.envoy.start()
    remote.envoy.wait_ready()
    harness.wait_for_port(remote.ports["on-start"])
    assert eventually(lambda: server.count == before + 1, 5)
    assert remote.get("on-start", "/", bearer(token())).status == 200
    assert remote.get("on-start", "/", bearer(tamper_signature(token()))).status == 401
    assert server.count == before + 1
