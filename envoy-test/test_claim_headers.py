"""`outputClaimToHeaders` for claims of every JSON type, beside Envoy's jwt_authn configured alike
(`claim_to_headers`, `claim_path` for names with dots) in the same Envoy: the reference.

Envoy writes strings as they are, numbers as integers or C's `%f`, booleans as text, arrays and
objects as base64 of their JSON in protobuf's form. The JSON of an object has its keys in the
order of Envoy's hash map, which changes between runs: those are compared as decoded JSON.
"""

from __future__ import annotations

import base64
import json

import pytest

import harness
from jwt_mint import ISSUER, claims, jwks, mint

CLAIMS = {
    "str": "alice", "int": 42, "float": 1.5, "neg": -3, "whole": 1000.0, "big": 12345678901234567890,
    "bool": False, "null": None, "empty": "",
    "arr": ["a", "b", 3, True], "empty-arr": [], "num-arr": [1.0, 0.1, 1e21, -0.0, 1.5e-7, 123456789012345678],
    "str-arr": ["<a>&'/\u00e9\u2028\"\\", "\n\t\u007f\u0080\u00a0\ufeff"],
    "obj": {"a": "x", "b": 2, "list": [1, "two"], "n": {"d": 1.5}},
    "mixed": [{"k": "v"}, None, 1.0],
    "dotted.name": "dv", "https://example.com/roles": ["admin", "dev"],
}
PATHS = [
    ("x-c-str", "str"), ("x-c-int", "int"), ("x-c-float", "float"), ("x-c-neg", "neg"),
    ("x-c-whole", "whole"), ("x-c-big", "big"), ("x-c-bool", "bool"), ("x-c-null", "null"),
    ("x-c-empty", "empty"), ("x-c-arr", "arr"), ("x-c-empty-arr", "empty-arr"),
    ("x-c-num-arr", "num-arr"), ("x-c-str-arr", "str-arr"), ("x-c-obj", "obj"),
    ("x-c-nested", "obj.a"), ("x-c-nested-list", "obj.list"), ("x-c-nested-obj", "obj.n"),
    ("x-c-mixed", "mixed"), ("x-c-dotted", "dotted.name"), ("x-c-missing", "obj.zz"),
]
CLAIM_PATHS = [("x-p-dotted", ["dotted.name"]), ("x-p-roles", ["https://example.com/roles"]),
               ("x-p-nested", ["obj", "n"])]
HEADERS = [h for h, _ in PATHS] + [h for h, _ in CLAIM_PATHS]
WITH_OBJECTS = {"x-c-obj", "x-c-nested-obj", "x-c-mixed", "x-p-nested"}


def envoy_scenarios(keys) -> dict:
    cfg = {"jwtRules": [{
        "issuer": ISSUER, "jwks": jwks(keys.rsa.jwk()),
        "outputClaimToHeaders": [{"header": h, "claim": c} for h, c in PATHS]
        + [{"header": h, "claimPath": p} for h, p in CLAIM_PATHS],
    }]}
    return {"claims": cfg, "claims-ref": [harness.jwt_authn_filter(cfg)]}


@pytest.fixture(scope="module")
def seen(gateway, keys):
    token = mint(keys.rsa, "RS256", "rsa", claims(**CLAIMS))
    out = {}
    for scenario in ("claims", "claims-ref"):
        resp = gateway.get(scenario, "/headers", {"Authorization": f"Bearer {token}"})
        assert resp.status == 200, resp
        out[scenario] = {h: resp.upstream_headers(h) for h in HEADERS}
    return out


@pytest.mark.parametrize("header", HEADERS)
def test_each_claim_header_as_envoy_writes_it(seen, header):
    ours, ref = seen["claims"][header], seen["claims-ref"][header]
    if header in WITH_OBJECTS:
        assert len(ours) == len(ref) == 1, (ours, ref)
        assert json.loads(base64.b64decode(ours[0])) == json.loads(base64.b64decode(ref[0]))
    else:
        assert ours == ref


def test_spot_values(seen):
    s = seen["claims"]
    assert s["x-c-float"] == ["1.500000"] and s["x-c-big"] == ["12345678901234567168"]
    assert base64.b64decode(s["x-c-arr"][0]) == b'["a","b",3,true]'
    assert s["x-p-dotted"] == ["dv"] and s["x-c-dotted"] == []
    assert json.loads(base64.b64decode(s["x-p-roles"][0])) == ["admin", "dev"]
    assert s["x-c-null"] == [] and s["x-c-missing"] == []
