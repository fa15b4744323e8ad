"""Issue 6 behaviour in a real Envoy: signatures checked by the host (Envoy's verify_signature,
BoringSSL) and in the module give identical verdicts on one corpus; the verified-token cache is hit,
rechecks expiry, and skips oversized tokens. Issue 16: it keeps popular tokens while new ones pass,
and holds no more than its memory budget (`jwtCacheBytes`) and entry cap (`jwtCacheSize`)."""

from __future__ import annotations

import http.client
import time

import pytest

import harness

from jwt_mint import ISSUER, RSA_ALGS, claims, mint, swap_payload, tamper_signature

ALGS = (*RSA_ALGS, "ES256", "ES384", "ES512", "EdDSA", "HS256")


def envoy_scenarios(keys) -> dict:
    rule = {"issuer": ISSUER, "jwks": keys.jwks()}
    return {
        "sig-host": {"jwtRules": [rule], "signatureVerifier": "host", "jwtCacheSize": 0},
        "sig-wasm": {"jwtRules": [rule], "signatureVerifier": "wasm", "jwtCacheSize": 0},
        "cache-on": {"jwtRules": [rule], "clockSkewSeconds": 0},
        "cache-off": {"jwtRules": [rule], "jwtCacheSize": 0},
        "cache-small": {"jwtRules": [rule], "jwtCacheSize": SMALL},
        "cache-budget": {"jwtRules": [rule], "jwtCacheBytes": BUDGET},
    }


SMALL = 8
BUDGET = 16_384


def corpus(keys) -> list[tuple[str, str]]:
    cases = []
    for alg in ALGS:
        key, kid = keys.for_alg(alg)
        good = mint(key, alg, kid, claims(sub=f"{alg}-user"))
        cases += [
            (f"{alg} valid", good),
            (f"{alg} signature bit flipped", tamper_signature(good)),
            (f"{alg} payload swapped", swap_payload(good, claims(sub="admin"))),
            (f"{alg} truncated signature", good[:-4]),
            (f"{alg} empty signature", good.rsplit(".", 1)[0] + "."),
        ]
    cases += [
        ("RS256 by an unpublished key under a published kid", mint(keys.stranger, "RS256", keys.rsa_kid("RS256"), claims())),
        ("ES256 signed by the P-384 key", mint(keys.ec384, "ES256", keys.ec256.kid, claims())),
        ("ES512 signed by the P-384 key", mint(keys.ec384, "ES512", keys.ec521.kid, claims())),
        ("ES384 under the P-521 key's kid", mint(keys.ec384, "ES384", keys.ec521.kid, claims())),
        ("RS256 under the RS512 kid", mint(keys.rsa, "RS256", keys.rsa_kid("RS512"), claims())),
    ]
    return cases


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def stat(gateway, scenario: str, name: str) -> int:
    return harness.filter_counter(gateway.envoy, scenario, name)


def test_host_and_module_verifiers_agree(gateway, keys):
    disagreements, accepted = [], 0
    for name, token in corpus(keys):
        host = gateway.get("sig-host", "/", bearer(token))
        wasm = gateway.get("sig-wasm", "/", bearer(token))
        verdict = lambda r: (r.status, r.text if r.status != 200 else "")  # noqa: E731
        if verdict(host) != verdict(wasm):
            disagreements.append((name, verdict(host), verdict(wasm)))
        expected = 200 if name.endswith(" valid") else 401
        assert host.status == expected, (name, host.status, host.text)
        accepted += host.status == 200
    assert disagreements == []
    assert accepted == len(ALGS)
    # Every RS*/ES* verdict on the host listener was the host's: no call failed and was refused.
    assert stat(gateway, "sig-host", "host_verify_failed") == 0
    assert stat(gateway, "sig-host", "denied") > 0


def test_cache_is_hit_for_a_repeated_token(gateway, keys):
    token = mint(keys.rsa, "RS256", keys.rsa_kid("RS256"), claims())
    hits, misses = stat(gateway, "cache-on", "jwt_cache_hit"), stat(gateway, "cache-on", "jwt_cache_miss")
    for _ in range(20):
        assert gateway.get("cache-on", "/", bearer(token)).status == 200
    new_hits = stat(gateway, "cache-on", "jwt_cache_hit") - hits
    new_misses = stat(gateway, "cache-on", "jwt_cache_miss") - misses
    assert new_hits + new_misses == 20
    assert new_misses <= 2, "at most one miss per worker"
    for _ in range(5):
        assert gateway.get("cache-off", "/", bearer(token)).status == 200
    assert stat(gateway, "cache-off", "jwt_cache_hit") == 0


def test_cached_token_expires(gateway, keys):
    key, kid = keys.for_alg("ES256")
    token = mint(key, "ES256", kid, claims(lifetime=2))
    for _ in range(4):
        assert gateway.get("cache-on", "/", bearer(token)).status == 200
    time.sleep(3.1)
    resp = gateway.get("cache-on", "/", bearer(token))
    assert (resp.status, resp.text) == (401, "Jwt is expired")


def test_oversized_tokens_are_not_cached(gateway, keys):
    key, kid = keys.for_alg("ES256")
    token = mint(key, "ES256", kid, claims(padding="x" * 5000))
    assert len(token) > 4096
    misses = stat(gateway, "cache-on", "jwt_cache_miss")
    for _ in range(6):
        assert gateway.get("cache-on", "/", bearer(token)).status == 200
    assert stat(gateway, "cache-on", "jwt_cache_miss") - misses == 6


class KeptAlive:
    """Requests on one connection, so one worker (one VM, one cache) answers them all."""

    def __init__(self, gateway, scenario: str) -> None:
        self.conn = http.client.HTTPConnection(harness.HOST, gateway.ports[scenario], timeout=10)

    def status(self, token: str) -> int:
        self.conn.request("GET", "/", headers=bearer(token))
        resp = self.conn.getresponse()
        resp.read()
        assert resp.getheader("connection", "").lower() != "close"
        return resp.status

    def close(self) -> None:
        self.conn.close()


def users(keys, prefix: str, n: int) -> list[str]:
    return [mint(keys.rsa, "RS256", keys.rsa_kid("RS256"), claims(sub=f"{prefix}-{i}")) for i in range(n)]


def cache_gauges(gateway, scenario: str) -> tuple[int, int]:
    harness.wait_for_flush(gateway.envoy, scenario)
    return tuple(harness.read_stats(gateway.envoy, *(harness.filter_stat(scenario, g)
                                                     for g in ("jwt_cache_entries", "jwt_cache_bytes"))))


def test_popular_token_stays_while_many_new_users_pass(gateway, keys):
    """First-in first-out would evict the popular token every SMALL new users; SIEVE keeps it."""
    hot, cold = users(keys, "hot", 1)[0], users(keys, "passing", 6 * SMALL)
    hits, misses = stat(gateway, "cache-small", "jwt_cache_hit"), stat(gateway, "cache-small", "jwt_cache_miss")
    client = KeptAlive(gateway, "cache-small")
    try:
        assert client.status(hot) == 200
        for token in cold:
            assert (client.status(token), client.status(hot)) == (200, 200)
    finally:
        client.close()
    assert stat(gateway, "cache-small", "jwt_cache_hit") - hits == len(cold), "every later hot request hit"
    assert stat(gateway, "cache-small", "jwt_cache_miss") - misses == len(cold) + 1
    entries, held = cache_gauges(gateway, "cache-small")
    assert 0 < entries <= SMALL and held > 0


def test_cache_holds_no_more_than_its_budget(gateway, keys):
    tokens = users(keys, "budget", 60)
    client = KeptAlive(gateway, "cache-budget")
    try:
        for token in tokens:
            assert client.status(token) == 200
        hits = stat(gateway, "cache-budget", "jwt_cache_hit")
        assert client.status(tokens[-1]) == 200
        assert stat(gateway, "cache-budget", "jwt_cache_hit") == hits + 1, "the newest token is cached"
    finally:
        client.close()
    entries, held = cache_gauges(gateway, "cache-budget")
    per_entry = held / entries
    # A keyed digest stands for the token: an entry is its claims and its slot, not the token.
    assert 150 < per_entry < len(tokens[0]), "the accounting counts the claims, not the token"
    assert held <= BUDGET and entries < len(tokens)
    assert held + per_entry > BUDGET * 0.9, f"{entries} entries, {held} bytes: the budget is used"
