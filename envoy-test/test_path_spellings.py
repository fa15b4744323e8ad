"""triggerRules cannot be sidestepped by spelling a path differently (CVE-2019-9901, CVE-2021-31920).

Every rule kind (included and excluded, exact and prefix) behind two listeners: stock Envoy, which
forwards the path as received, and Istio's default path normalisation (BASE: dot segments
resolved, `//` and escapes kept). The client is curl with --path-as-is, as an attacker's would be.
Each spelling of a protected path must be refused without a token and pass with one; the plain
exempt paths must still pass without one.
"""

from __future__ import annotations

import subprocess

import pytest

import harness
from jwt_mint import ISSUER, claims, mint

MISSING = "Jwt is missing"

RULES = {
    "include-exact": {"includedPaths": [{"exact": "/ip"}]},
    "include-prefix": {"includedPaths": [{"prefix": "/api/"}]},
    "exclude-exact": {"excludedPaths": [{"exact": "/healthz"}]},
    "exclude-prefix": {"excludedPaths": [{"prefix": "/public/"}]},
}
NORMALISATION = {"raw": None, "base": harness.ISTIO_BASE_NORMALIZATION}

# Spellings that reach the protected path (or whose meaning depends on the upstream).
PROTECTED = {
    "include-exact": ["/ip", "/x/../ip", "/./ip", "//ip", "/%69p", "/%2e/ip", "/x/%2E%2e/ip", "/x/.%2e/ip",
                      "/ip?x=1", "/x%2F..%2Fip", "/x/..;/ip", "/ip;x=1", "/%2569p"],
    "include-prefix": ["/api/x", "//api/x", "/public/../api/x", "/%61pi/x", "/api/./x", "/a/b/../../api/x",
                       "/%2e%2e/api/x", "/api%2Fx"],
    "exclude-exact": ["/admin", "/healthz/../admin", "/healthz/%2e%2e/admin", "/healthz%2F..%2Fadmin",
                      "/healthz;/../admin", "/healthz/..;/admin", "/healthz%00", "/healthz/", "/healthz%zz"],
    "exclude-prefix": ["/admin", "/public/../admin", "/public/%2e%2e/admin", "/public/.%2E/admin",
                       "/public//../admin", "/public/..%2Fadmin", "/public/..%5Cadmin", "/public/..;/admin",
                       "/public/x%00", "/public/%C0%AF", "/publicx"],
}
# Spellings that need no token.
EXEMPT = {
    "include-exact": ["/headers", "/ip/more", "/IP", "/x/ip", "/%49P"],
    "include-prefix": ["/api", "/apix/y", "/other/api/x", "/x/../apix"],
    "exclude-exact": ["/healthz", "/healthz?full=1", "/x/../healthz", "/%68ealthz", "//healthz"],
    "exclude-prefix": ["/public/", "/public/a.css", "/public/a/../b", "//public/a", "/%70ublic/a",
                       "/public/caf%C3%A9"],
}


def envoy_scenarios(keys) -> dict:
    scenarios = {}
    for norm, hcm in NORMALISATION.items():
        for name, trigger in RULES.items():
            cfg = {"jwtRules": [{"issuer": ISSUER, "jwks": keys.jwks()}], "requireToken": True,
                   "triggerRules": [trigger]}
            scenarios[f"spell-{norm}-{name}"] = harness.WithHcm(cfg, hcm) if hcm else cfg
    return scenarios


def curl(gateway, scenario: str, path: str, token: str | None = None) -> tuple[int, str]:
    url = f"http://{gateway.host(scenario)}{path}"
    args = ["curl", "-sS", "-g", "--path-as-is", "-o", "-", "-w", "\n%{http_code}", url]
    if token:
        args += ["-H", f"Authorization: Bearer {token}"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=20, check=True).stdout
    body, _, status = out.rpartition("\n")
    return int(status), body


# Envoy's BASE normalisation resolves dot segments before any filter runs and forwards the result,
# which is then what the upstream reads: `/public//../admin` becomes `/public/admin`.
RESOLVED_BY_ENVOY = {("base", "/public//../admin")}


def cases(table: dict) -> list:
    return [(norm, rule, path) for norm in NORMALISATION for rule, paths in table.items() for path in paths
            if (norm, path) not in RESOLVED_BY_ENVOY]


@pytest.mark.parametrize("norm, rule, path", cases(PROTECTED))
def test_every_spelling_of_a_protected_path_needs_a_token(gateway, keys, norm, rule, path):
    scenario = f"spell-{norm}-{rule}"
    status, body = curl(gateway, scenario, path)
    # Envoy's own normalisation may refuse a path before any filter runs (400); never 200.
    assert status in (400, 401), (status, body)
    if status == 401:
        assert body == MISSING
    token = mint(keys.rsa, "RS256", "rsa", claims())
    status, body = curl(gateway, scenario, path, token)
    assert status in (200, 400), (status, body)


@pytest.mark.parametrize("norm, rule, path", cases(EXEMPT))
def test_plain_exempt_paths_need_no_token(gateway, norm, rule, path):
    status, body = curl(gateway, f"spell-{norm}-{rule}", path)
    assert status == 200, (status, body)


def test_what_is_forwarded_is_unchanged(gateway, keys):
    """Matching uses the canonical form; the upstream still gets the path as Envoy forwards it."""
    token = mint(keys.rsa, "RS256", "rsa", claims())
    for path in ["/x/../ip?x=%41", "/%69p"]:
        status, body = curl(gateway, "spell-raw-include-exact", path, token)
        assert status == 200 and f'"path": "{path}"' in body, (path, status, body)
    status, body = curl(gateway, "spell-base-include-exact", "/x/../ip?x=%41", token)
    assert status == 200 and '"path": "/ip?x=%41"' in body, (status, body)
