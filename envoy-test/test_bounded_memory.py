"""What a client sends does not decide what the module holds: paused requests are capped per plugin
and cost no copy of the request, and a hostile load (many kids, many paused requests, large
tokens; DPoP proofs valid and hostile) leaves the VM's memory (`vm_memory_bytes`) where a second
identical round finds it.

Its own Envoy with one worker, so that the cap and the gauge are one VM's.
"""

from __future__ import annotations

import socket
import time
import uuid

import pytest

import harness
from jwt_mint import _public_members, claims, dpop_proof, ec_key, jwk_thumbprint, jwks, mint

FETCH_FAILED = "Jwks remote fetch is failed"
NO_KEY = "Jwks doesn't have key to match kid or alg from Jwt"
K1 = ec_key("k1")
CAP = 4
SLOW_FIRST_FETCH_S = 4.0


def token(kid: str = "k1", **claim_fields) -> str:
    return mint(K1, "ES256", kid, claims(**claim_fields))


@pytest.fixture(scope="module")
def gw(upstream, wasm_module, tmp_path_factory):
    servers = {"capped": harness.JwksServer(), "hostile": harness.JwksServer()}
    for server in servers.values():
        server.serve(jwks(K1.jwk()))
        server.start()
    servers["capped"].delay = SLOW_FIRST_FETCH_S
    scenarios = {name: {"jwtRules": [{"issuer": "testing@secure.istio.io", "jwksUri": server.uri,
                                      "jwksCluster": f"jwks-{name}", "timeout": "10s"}]}
                 for name, server in servers.items()}
    scenarios["capped"]["maxPausedRequests"] = CAP
    scenarios["dpop"] = {"jwtRules": [{"issuer": "testing@secure.istio.io", "jwks": jwks(K1.jwk()),
                                       "dpop": {"mode": "REQUIRED"}}]}
    clusters = [harness.static_cluster(f"jwks-{name}", s.port) for name, s in servers.items()]
    gateway = harness.start_gateway(scenarios, tmp_path_factory.mktemp("envoy-memory"), upstream.port,
                                    concurrency=1, clusters=clusters)
    gateway.started = time.monotonic()
    gateway.servers = servers
    yield gateway
    gateway.envoy.stop()
    for server in servers.values():
        server.stop()
    log = gateway.envoy.log_text()
    assert "panicked" not in log and "Uncaught" not in log, "the wasm VM crashed"


def send(port: int, bearer: str, path: str = "/") -> socket.socket:
    sock = socket.create_connection((harness.HOST, port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {bearer}\r\n"
                 f"Connection: close\r\n\r\n".encode())
    return sock


def status_of(sock: socket.socket, timeout: float) -> tuple[int, str]:
    """(status, body) of the answer on `sock`, (0, "") if none comes within `timeout`."""
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except socket.timeout:
        if not data:
            return 0, ""
    finally:
        sock.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode(errors="replace")


def memory(gw, plugin: str) -> int:
    """The VM's linear memory as the plugin last recorded it (on its tick, about once a second)."""
    time.sleep(1.5)
    return harness.read_stats(gw.envoy, harness.filter_stat(plugin, "vm_memory_bytes"))[0]


def test_paused_requests_past_the_cap_are_answered_at_once(gw):
    assert time.monotonic() - gw.started < SLOW_FIRST_FETCH_S - 2, "set-up too slow for this test"
    socks = [send(gw.ports["capped"], token()) for _ in range(CAP + 6)]
    early = [status_of(s, 1.0) for s in socks[CAP:]]
    assert early == [(401, FETCH_FAILED)] * 6, early
    late = [status_of(s, SLOW_FIRST_FETCH_S + 5) for s in socks[:CAP]]
    assert [s for s, _ in late] == [200] * CAP, late
    assert gw.get("capped", "/", {"Authorization": f"Bearer {token()}"}).status == 200


def hostile_round(gw) -> None:
    port = gw.ports["hostile"]
    big = token(sub="x" * 40_000)  # a valid-looking 54 KiB token, never cached (over 4 KiB)
    # Many paused requests: the key server is slow, and each unknown kid may ask for a refetch.
    gw.servers["hostile"].delay = 2.0
    socks = [send(port, token(kid=uuid.uuid4().hex, pad="p" * 2_000)) for _ in range(300)]
    answers = [status_of(s, 15) for s in socks]
    assert all(status == 401 for status, _ in answers), {a for a in answers}
    gw.servers["hostile"].delay = 0.0
    # Many kids, each new.
    for _ in range(1_000):
        resp = gw.get("hostile", "/", {"Authorization": f"Bearer {token(kid=uuid.uuid4().hex)}"})
        assert resp.status == 401 and resp.text in (NO_KEY, FETCH_FAILED), (resp.status, resp.text)
    # Large tokens, valid and tampered.
    for i in range(100):
        resp = gw.get("hostile", "/", {"Authorization": f"Bearer {big if i % 2 else big[:-4] + 'AAAA'}"})
        assert resp.status == (200 if i % 2 else 401), resp.status


def test_memory_is_bounded_under_hostile_load(gw):
    for _ in range(50):
        assert gw.get("hostile", "/", {"Authorization": f"Bearer {token()}"}).status == 200
    before = memory(gw, "hostile")
    hostile_round(gw)
    after_one = memory(gw, "hostile")
    hostile_round(gw)
    after_two = memory(gw, "hostile")
    print(f"vm_memory_bytes: {before} warm, {after_one} after a hostile round, {after_two} after another")
    assert after_two == after_one, "a second identical hostile round grew the VM"
    assert after_one - before <= 4 << 20, f"a hostile round grew the VM by {after_one - before} bytes"


def test_dpop_proofs_leave_the_vm_where_a_second_round_finds_it(gw):
    """Every valid proof is new (a new `jti` in the replay store, which lives in Envoy's shared
    data, not in the VM); hostile ones are at or past the size cap, deeply nested, or by another
    key."""
    client, stranger = ec_key("dpop-client"), ec_key("dpop-stranger")
    bound = token(cnf={"jkt": jwk_thumbprint(_public_members(client.private))})
    htu = f"http://{gw.host('dpop')}/"

    def status(proof: str) -> int:
        return gw.get("dpop", "/", {"Authorization": f"DPoP {bound}", "DPoP": proof}).status

    def dpop_round() -> None:
        for _ in range(300):
            assert status(dpop_proof(client, "ES256", "GET", htu, bound)) == 200
        nested = "e30." + "eyJ4Ijo" + "W" * 6000 + ".AA"
        for _ in range(100):
            for proof in (dpop_proof(client, "ES256", "GET", htu, bound, header={"x-pad": "p" * 5_900}),
                          dpop_proof(client, "ES256", "GET", htu, bound, header={"x-pad": "p" * 7_000}),
                          dpop_proof(stranger, "ES256", "GET", htu, bound), nested, "x." * 2_000):
                assert status(proof) == 401

    for _ in range(30):
        assert status(dpop_proof(client, "ES256", "GET", htu, bound)) == 200
    before = memory(gw, "dpop")
    dpop_round()
    after_one = memory(gw, "dpop")
    dpop_round()
    after_two = memory(gw, "dpop")
    print(f"vm_memory_bytes (DPoP): {before} warm, {after_one} after a round, {after_two} after another")
    assert after_two == after_one, "a second identical DPoP round grew the VM"
    assert after_one - before <= 4 << 20, f"a DPoP round grew the VM by {after_one - before} bytes"
