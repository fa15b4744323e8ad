"""`denialBody`: what a refusal's body says, beside Envoy's jwt_authn configured alike.

`text` (the default) is Envoy's reason text; `json` carries the same reason with the status and
RFC 6750's error code; `none` is empty, as Envoy's `strip_failure_response` (the reference for it).
`WWW-Authenticate` is in every 401 (and the 403) whatever the body.
"""

from __future__ import annotations

import json

import pytest

import harness
from jwt_mint import ISSUER, claims, mint, tamper_signature

def envoy_scenarios(keys) -> dict:
    cfg = {"jwtRules": [{"issuer": ISSUER, "jwks": keys.jwks(), "audiences": ["svc-a"]}],
           "requireToken": True}
    return {
        "denial-text": cfg,
        "denial-json": {**cfg, "denialBody": "json"},
        "denial-none": {**cfg, "denialBody": "none"},
        "denial-ref": [harness.jwt_authn_filter(cfg)],
        "denial-none-ref": [harness.jwt_authn_filter({**cfg, "denialBody": "none"})],
    }


def refusals(keys) -> dict[str, dict]:
    good = claims(aud="svc-a")
    return {
        "missing": {},
        "malformed": {"Authorization": "Bearer not-a-jwt"},
        "expired": {"Authorization": "Bearer " + mint(keys.rsa, "RS256", "rsa", claims(aud="svc-a", lifetime=-600))},
        "wrong audience": {"Authorization": "Bearer " + mint(keys.rsa, "RS256", "rsa", claims(aud="svc-b"))},
        "bad signature": {"Authorization": "Bearer " + tamper_signature(mint(keys.rsa, "RS256", "rsa", good))},
        "unknown issuer": {"Authorization": "Bearer " + mint(keys.rsa, "RS256", "rsa", claims(iss="x@y", aud="svc-a"))},
    }


RFC6750 = {"missing": "invalid_request", "wrong audience": "insufficient_scope"}


@pytest.mark.parametrize("case", ["missing", "malformed", "expired", "wrong audience", "bad signature",
                                  "unknown issuer"])
def test_each_refusal_in_three_bodies(gateway, keys, case):
    headers = refusals(keys)[case]
    ref = gateway.get("denial-ref", "/ip", headers)
    assert ref.status in (401, 403), ref
    text = gateway.get("denial-text", "/ip", headers)
    as_json = gateway.get("denial-json", "/ip", headers)
    none = gateway.get("denial-none", "/ip", headers)
    none_ref = gateway.get("denial-none-ref", "/ip", headers)
    def challenge(scenario, resp):  # the realm names the listener's own address
        value = resp.header("www-authenticate")
        return value and value.replace(gateway.host(scenario), "HOST")

    for scenario, got in (("denial-text", text), ("denial-json", as_json), ("denial-none", none)):
        assert got.status == ref.status, (case, got)
        assert challenge(scenario, got) == challenge("denial-ref", ref), (case, got.headers)
        assert challenge(scenario, got) is not None
    assert text.text == ref.text
    assert as_json.header("content-type") == "application/json"
    assert json.loads(as_json.text) == {"code": ref.status, "error": RFC6750.get(case, "invalid_token"),
                                        "reason": ref.text}
    assert none_ref.status == ref.status and none_ref.body == b""
    assert none.body == b"" and none.header("content-length") in (None, "0")


def test_a_good_token_passes_whatever_the_body(gateway, keys):
    token = mint(keys.rsa, "RS256", "rsa", claims(aud="svc-a"))
    for scenario in ("denial-text", "denial-json", "denial-none"):
        assert gateway.get(scenario, "/ip", {"Authorization": f"Bearer {token}"}).status == 200
