"""Per-issuer `triggerRules` (the older policy's per-origin `trigger_rules`): two issuers guarding
different paths, and an issuer without rules beside one with rules. Envoy's jwt_authn with
per-route `rules` requiring each provider on its paths is the reference for the first."""

from __future__ import annotations

import pytest

import harness
from jwt_mint import claims, jwks, mint

A, B = "a@example.com", "b@example.com"


def envoy_scenarios(keys) -> dict:
    keyset = jwks(keys.rsa.jwk())
    two = {"requireToken": True, "jwtRules": [
        {"issuer": A, "jwks": keyset, "triggerRules": [{"includedPaths": [{"prefix": "/a/"}]}]},
        {"issuer": B, "jwks": keyset,
         "triggerRules": [{"includedPaths": [{"prefix": "/b/"}], "excludedPaths": [{"exact": "/b/health"}]}]},
    ]}
    def provider(iss: str) -> dict:
        return {"issuer": iss, "local_jwks": {"inline_string": keyset}, "forward": False}

    ref = {"name": "envoy.filters.http.jwt_authn", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
        "providers": {"a": provider(A), "b": provider(B)},
        "rules": [
            {"match": {"path": "/b/health"}},
            {"match": {"prefix": "/a/"}, "requires": {"provider_name": "a"}},
            {"match": {"prefix": "/b/"}, "requires": {"provider_name": "b"}},
        ],
    }}
    mixed = {"requireToken": True, "jwtRules": [
        {"issuer": A, "jwks": keyset},
        {"issuer": B, "jwks": keyset, "triggerRules": [{"includedPaths": [{"prefix": "/b/"}]}]},
    ]}
    return {"per-issuer": two, "per-issuer-ref": [ref], "per-issuer-mixed": mixed}


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("path", ["/a/x", "/b/x", "/b/health", "/c/x", "/anything", "/a//x", "/b/x/../y"])
@pytest.mark.parametrize("who", ["none", "a", "b"])
def test_two_issuers_guarding_different_paths(gateway, keys, path, who):
    ta = mint(keys.rsa, "RS256", "rsa", claims(iss=A))
    tb = mint(keys.rsa, "RS256", "rsa", claims(iss=B))
    headers = {"none": {}, "a": bearer(ta), "b": bearer(tb)}[who]
    got = gateway.get("per-issuer", path, headers)
    ref = gateway.get("per-issuer-ref", path, headers)
    assert (got.status, got.status == 200 or got.text) == (ref.status, ref.status == 200 or ref.text), \
        (path, who, got.status, got.text, ref.status, ref.text)


def test_an_issuer_without_rules_beside_one_with_rules(gateway, keys):
    ta = mint(keys.rsa, "RS256", "rsa", claims(iss=A))
    tb = mint(keys.rsa, "RS256", "rsa", claims(iss=B))
    cases = [
        ("/c", {}, 401, "Jwt is missing"),
        ("/c", bearer(ta), 200, None),
        ("/c", bearer(tb), 401, "Jwt issuer is not configured"),
        ("/b/x", bearer(ta), 200, None),
        ("/b/x", bearer(tb), 200, None),
        ("/b/x", {}, 401, "Jwt is missing"),
    ]
    for path, headers, status, reason in cases:
        got = gateway.get("per-issuer-mixed", path, headers)
        assert got.status == status, (path, headers, got.status, got.text)
        if reason:
            assert got.text == reason
