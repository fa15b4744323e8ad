"""mesh-authn in a real Envoy: Istio RequestAuthentication semantics, end to end.

Scenarios ending in "-ref" run Envoy's own jwt_authn filter with the same
settings: the reference the wasm filter's statuses and bodies must equal.
"""

from __future__ import annotations

import json
import time

import pytest

import harness
from jwt_mint import (ISSUER, RSA_ALGS, b64url_decode, claims, jwks, mint, swap_payload, tamper_signature,
                      unsigned)

ALL_ALGS = (*RSA_ALGS, "ES256", "ES384", "ES512", "EdDSA", "HS256")

MISSING = "Jwt is missing"
NOT_JWS = "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"
ISSUER_UNKNOWN = "Jwt issuer is not configured"
EXPIRED = "Jwt is expired"
NOT_YET_VALID = "Jwt not yet valid"
AUD_DENIED = "Audiences in Jwt are not allowed"
NO_KEY = "Jwks doesn't have key to match kid or alg from Jwt"
BAD_SIGNATURE = "Jwt verification fails"
ALG_UNSUPPORTED = "Jwt header [alg] is not supported"

OUTPUT_CLAIMS = [
    {"header": "x-jwt-sub", "claim": "sub"},
    {"header": "x-jwt-team", "claim": "org.team"},
    {"header": "x-jwt-admin", "claim": "admin"},
    {"header": "x-jwt-level", "claim": "level"},
    {"header": "x-jwt-evil", "claim": "evil"},
]
OUTPUT_HEADERS = ["x-jwt-payload", *(c["header"] for c in OUTPUT_CLAIMS)]


def envoy_scenarios(keys) -> dict:
    def rule(**fields) -> dict:
        return {"issuer": ISSUER, "jwks": keys.jwks(), **fields}

    def with_ref(name: str, cfg: dict) -> dict:
        return {name: cfg, f"{name}-ref": [harness.jwt_authn_filter(cfg)]}

    required = {"jwtRules": [rule()], "requireToken": True}
    return {
        "passthrough": None,
        **with_ref("istio", {"jwtRules": [rule()]}),
        **with_ref("required", required),
        **with_ref("audiences", {"jwtRules": [rule(audiences=["svc-a", "svc-b"])]}),
        **with_ref("skew5", {"jwtRules": [rule()], "clockSkewSeconds": 5}),
        **with_ref("require-exp", {"jwtRules": [rule()], "requireExpiration": True}),
        "two-issuers": {"jwtRules": [
            {"issuer": ISSUER, "jwks": jwks(keys.rsa.jwk())},
            {"issuer": "other@example.com", "jwks": jwks(keys.ec256.jwk())},
        ]},
        "trigger-exclude": {**required, "triggerRules": [{"excludedPaths": [{"exact": "/user-agent"}]}]},
        "trigger-include": {**required, "triggerRules": [{"includedPaths": [{"exact": "/ip"}]}]},
        "trigger-matchers": {**required, "triggerRules": [{
            "excludedPaths": [{"exact": "/api/public"}],
            "includedPaths": [{"prefix": "/api/"}, {"suffix": ".secure"}, {"regex": "/v[0-9]+/admin"}],
        }]},
        **with_ref("param", {"jwtRules": [rule(fromParams=["token"])], "requireToken": True}),
        "cookie": {"jwtRules": [rule(fromCookies=["session"])], "requireToken": True},
        "custom-header": {"jwtRules": [rule(fromHeaders=[{"name": "x-auth", "prefix": "Token "}])],
                          "requireToken": True},
        "outputs": {"jwtRules": [rule(outputPayloadToHeader="x-jwt-payload", outputClaimToHeaders=OUTPUT_CLAIMS)]},
        "outputs-required": {
            "jwtRules": [rule(outputPayloadToHeader="x-jwt-payload", outputClaimToHeaders=OUTPUT_CLAIMS)],
            "requireToken": True, "triggerRules": [{"excludedPaths": [{"prefix": "/public/"}]}]},
        "forward": {"jwtRules": [rule(forwardOriginalToken=True)]},
    }


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def good_token(keys, alg: str = "RS256", **claim_fields) -> str:
    key, kid = keys.for_alg(alg)
    return mint(key, alg, kid, claims(**claim_fields))


def realm(gateway, scenario: str, path: str) -> str:
    """mesh-authn drops the query from the realm; Envoy's jwt_authn ("-ref") keeps it (1.36 and
    1.40 alike)."""
    if not scenario.endswith("-ref"):
        path = path.split("?", 1)[0]
    return f'Bearer realm="http://{gateway.host(scenario)}{path}"'


def invalid_token_challenge(gateway, scenario: str, path: str) -> str:
    return realm(gateway, scenario, path) + ', error="invalid_token"'


def assert_passed(resp: harness.Response, path: str | None = None) -> dict:
    assert resp.status == 200, f"expected the request to reach upstream, got {resp.status}: {resp.text!r}"
    seen = resp.upstream
    if path is not None:
        assert seen["path"] == path
    return seen


def assert_accepted(resp: harness.Response, path: str | None = None) -> dict:
    """Passed AND the filter consumed the token: the Authorization header was stripped."""
    seen = assert_passed(resp, path)
    assert "authorization" not in seen["headers"], "token was not verified (Authorization still forwarded)"
    return seen


def assert_rejected(gateway, resp: harness.Response, scenario: str, path: str, status: int,
                    body: str | tuple[str, ...]) -> None:
    """path is the request path (query included). body: the exact body, or a tuple of acceptable ones."""
    if isinstance(body, tuple):
        assert resp.status == status and resp.text in body, (resp.status, resp.text)
    else:
        assert (resp.status, resp.text) == (status, body)
    assert resp.headers.get("www-authenticate") == [invalid_token_challenge(gateway, scenario, path)]


# --------------------------------------------------------------------------- Istio walkthrough


def test_istio_walkthrough(gateway, keys):
    assert_passed(gateway.get("istio", "/headers"))
    assert_rejected(gateway, gateway.get("istio", "/headers", bearer("deadbeef")), "istio", "/headers", 401, NOT_JWS)
    assert_accepted(gateway.get("istio", "/headers", bearer(good_token(keys))))


def test_router_only_listener_is_a_faithful_control(gateway, keys):
    """Without the filter, everything (token, spoofable headers) reaches the upstream."""
    token = good_token(keys)
    seen = assert_passed(gateway.get("passthrough", "/ip?x=1", {**bearer(token), "x-jwt-sub": "admin"}), "/ip?x=1")
    assert seen["headers"]["authorization"] == [f"Bearer {token}"]
    assert seen["headers"]["x-jwt-sub"] == ["admin"]
    assert gateway.get("passthrough", "/", bearer("deadbeef")).status == 200


# --------------------------------------------------------------------------- valid tokens


@pytest.mark.parametrize("scenario", ["istio", "istio-ref"])
@pytest.mark.parametrize("alg", ALL_ALGS)
def test_valid_token_each_algorithm(gateway, keys, scenario, alg):
    assert_accepted(gateway.get(scenario, "/headers", bearer(good_token(keys, alg))))


def test_valid_token_via_default_query_param(gateway, keys):
    assert_passed(gateway.get("istio", f"/headers?access_token={good_token(keys)}"))
    resp = gateway.get("istio", "/headers?access_token=deadbeef")
    assert_rejected(gateway, resp, "istio", "/headers?access_token=deadbeef", 401, NOT_JWS)


def test_token_without_kid_matches_by_alg(gateway, keys):
    token = mint(keys.ec256, "ES256", None, claims())
    assert_accepted(gateway.get("istio", "/", bearer(token)))


# --------------------------------------------------------------------------- missing token


@pytest.mark.parametrize("scenario", ["required", "required-ref"])
def test_required_token_missing(gateway, scenario):
    resp = gateway.get(scenario, "/headers?a=1&b=2")
    assert (resp.status, resp.text) == (401, MISSING)
    assert resp.headers.get("www-authenticate") == [realm(gateway, scenario, "/headers?a=1&b=2")]


@pytest.mark.parametrize("scenario", ["required", "required-ref"])
def test_required_token_present_passes(gateway, keys, scenario):
    assert_accepted(gateway.get(scenario, "/headers", bearer(good_token(keys))))


def test_optional_token_missing_passes(gateway):
    assert_passed(gateway.get("istio", "/headers?a=1", {"x-other": "v"}), "/headers?a=1")


# --------------------------------------------------------------------------- invalid tokens


BAD_TOKENS = {
    "not-jws": (lambda k: "deadbeef", 401, NOT_JWS),
    "two-segments": (lambda k: good_token(k).rsplit(".", 1)[0], 401, NOT_JWS),
    "issuer-unknown": (lambda k: good_token(k, iss="someone@example.com"), 401, ISSUER_UNKNOWN),
    "expired-90s": (lambda k: good_token(k, lifetime=-90), 401, EXPIRED),
    "nbf-in-90s": (lambda k: good_token(k, nbf=int(time.time()) + 90), 401, NOT_YET_VALID),
    "unknown-kid": (lambda k: mint(k.rsa, "RS256", "no-such-kid", claims()), 401, NO_KEY),
    "unpublished-key-same-kid": (lambda k: mint(k.stranger, "RS256", "rsa", claims()), 401, BAD_SIGNATURE),
    "tampered-signature": (lambda k: tamper_signature(good_token(k)), 401, BAD_SIGNATURE),
    "tampered-payload": (lambda k: swap_payload(good_token(k), claims(sub="mallory")), 401, BAD_SIGNATURE),
    "ps256-tampered": (lambda k: tamper_signature(good_token(k, "PS256")), 401, BAD_SIGNATURE),
    "es256-tampered": (lambda k: tamper_signature(good_token(k, "ES256")), 401, BAD_SIGNATURE),
    "es384-tampered": (lambda k: tamper_signature(good_token(k, "ES384")), 401, BAD_SIGNATURE),
    "es512-tampered": (lambda k: tamper_signature(good_token(k, "ES512")), 401, BAD_SIGNATURE),
    "eddsa-tampered": (lambda k: tamper_signature(good_token(k, "EdDSA")), 401, BAD_SIGNATURE),
    "hs256-wrong-secret": (lambda k: mint(b"not-the-secret-not-the-secret!!!", "HS256", "hmac", claims()),
                           401, BAD_SIGNATURE),
    "alg-none": (lambda k: unsigned(claims()), 401, ALG_UNSUPPORTED),
    "alg-none-with-kid-and-sig": (lambda k: unsigned(claims(), kid="rsa", signature="c2ln"), 401, ALG_UNSUPPORTED),
    "alg-unsupported": (lambda k: unsigned(claims(), alg="XS256", kid="rsa", signature="c2ln"), 401, ALG_UNSUPPORTED),
    # HS256 keyed with the RSA public key's PEM bytes, naming the RSA kid: classic alg confusion
    "alg-confusion-hs256-rsa-pem": (lambda k: mint(k.rsa.public_pem(), "HS256", "rsa", claims()),
                                    401, (NO_KEY, BAD_SIGNATURE)),
}


# Envoy's jwt_authn already fails the shape check on the empty third segment
REF_BODY_DIFFERS = {"alg-none": NOT_JWS}


@pytest.mark.parametrize("scenario", ["istio", "istio-ref"])
@pytest.mark.parametrize("case", BAD_TOKENS)
def test_invalid_token_rejected(gateway, keys, scenario, case):
    build, status, body = BAD_TOKENS[case]
    if scenario.endswith("-ref"):
        body = REF_BODY_DIFFERS.get(case, body)
    token = build(keys)
    resp = gateway.get(scenario, "/headers?q=1", bearer(token))
    assert_rejected(gateway, resp, scenario, "/headers?q=1", status, body)


@pytest.mark.parametrize("scenario", ["required", "required-ref"])
def test_invalid_token_rejected_when_required(gateway, scenario):
    resp = gateway.get(scenario, "/headers", bearer("deadbeef"))
    assert_rejected(gateway, resp, scenario, "/headers", 401, NOT_JWS)


# --------------------------------------------------------------------------- time


@pytest.mark.parametrize("scenario", ["istio", "istio-ref"])
@pytest.mark.parametrize("fields, body", [
    ({"lifetime": -30}, None),
    ({"lifetime": -90}, EXPIRED),
    ({"nbf_offset": 30}, None),
    ({"nbf_offset": 90}, NOT_YET_VALID),
    ({"lifetime": None}, None),
], ids=["expired-30s-within-skew", "expired-90s", "nbf-in-30s-within-skew", "nbf-in-90s", "no-exp"])
def test_time_claims_default_skew(gateway, keys, scenario, fields, body):
    _check_time(gateway, keys, scenario, dict(fields), body)


@pytest.mark.parametrize("scenario", ["skew5", "skew5-ref"])
@pytest.mark.parametrize("fields, body", [
    ({"lifetime": -30}, EXPIRED),
    ({"lifetime": 30}, None),
    ({"nbf_offset": 30}, NOT_YET_VALID),
], ids=["expired-30s", "valid-30s", "nbf-in-30s"])
def test_time_claims_configured_skew(gateway, keys, scenario, fields, body):
    _check_time(gateway, keys, scenario, dict(fields), body)


@pytest.mark.parametrize("scenario", ["require-exp", "require-exp-ref"])
def test_require_expiration(gateway, keys, scenario):
    assert_accepted(gateway.get(scenario, "/", bearer(good_token(keys))))
    resp = gateway.get(scenario, "/", bearer(good_token(keys, lifetime=None)))
    assert resp.status == 401
    assert resp.headers.get("www-authenticate") == [invalid_token_challenge(gateway, scenario, "/")]


def _check_time(gateway, keys, scenario, fields, body):
    nbf_offset = fields.pop("nbf_offset", None)
    if nbf_offset is not None:
        fields["nbf"] = int(time.time()) + nbf_offset
    resp = gateway.get(scenario, "/headers", bearer(good_token(keys, **fields)))
    if body is None:
        assert_accepted(resp)
    else:
        assert_rejected(gateway, resp, scenario, "/headers", 401, body)


# --------------------------------------------------------------------------- audiences and issuers


@pytest.mark.parametrize("scenario", ["audiences", "audiences-ref"])
@pytest.mark.parametrize("aud, allowed", [
    ("svc-a", True),
    (["other", "svc-b"], True),
    ("svc-c", False),
    (["other", "svc-c"], False),
    (None, False),
], ids=["string-match", "array-any-of", "string-mismatch", "array-mismatch", "no-aud"])
def test_audiences(gateway, keys, scenario, aud, allowed):
    resp = gateway.get(scenario, "/headers", bearer(good_token(keys, aud=aud)))
    if allowed:
        assert_accepted(resp)
    else:
        assert_rejected(gateway, resp, scenario, "/headers", 403, AUD_DENIED)


def test_empty_audiences_not_checked(gateway, keys):
    assert_accepted(gateway.get("istio", "/", bearer(good_token(keys, aud="whatever"))))


def test_rule_selected_by_issuer(gateway, keys):
    other = mint(keys.ec256, "ES256", "ec256", claims(iss="other@example.com"))
    assert_accepted(gateway.get("two-issuers", "/", bearer(other)))
    assert_accepted(gateway.get("two-issuers", "/", bearer(good_token(keys))))
    # each issuer only trusts its own JWKS
    crossed = mint(keys.rsa, "RS256", "rsa", claims(iss="other@example.com"))
    assert_rejected(gateway, gateway.get("two-issuers", "/", bearer(crossed)), "two-issuers", "/", 401, NO_KEY)


# --------------------------------------------------------------------------- triggerRules


def test_trigger_excluded_path_needs_no_token(gateway, keys):
    assert_passed(gateway.get("trigger-exclude", "/user-agent"))
    assert_passed(gateway.get("trigger-exclude", "/user-agent?x=1"))
    # excluded means not checked at all, so even a garbage token passes
    assert_passed(gateway.get("trigger-exclude", "/user-agent", bearer("deadbeef")))
    resp = gateway.get("trigger-exclude", "/headers")
    assert (resp.status, resp.text) == (401, MISSING)
    assert_accepted(gateway.get("trigger-exclude", "/headers", bearer(good_token(keys))))


def test_trigger_only_included_path_needs_token(gateway, keys):
    resp = gateway.get("trigger-include", "/ip")
    assert (resp.status, resp.text) == (401, MISSING)
    assert resp.headers.get("www-authenticate") == [realm(gateway, "trigger-include", "/ip")]
    assert_accepted(gateway.get("trigger-include", "/ip", bearer(good_token(keys))))
    assert_passed(gateway.get("trigger-include", "/headers"))
    assert_passed(gateway.get("trigger-include", "/ip/more"))


@pytest.mark.parametrize("path, triggered", [
    ("/api/orders", True),         # prefix /api/
    ("/api/orders?limit=1", True),
    ("/api/public", False),        # excluded exact
    ("/api/public/x", True),       # exact exclusion does not cover sub-paths
    ("/api", False),               # prefix is "/api/"
    ("/files/report.secure", True),  # suffix
    ("/files/report.secure?dl=1", True),
    ("/v2/admin", True),           # regex, full match
    ("/v12/admin", True),
    ("/v2/admin/users", False),    # regex must match the whole path
    ("/x/v2/admin", False),
    ("/other", False),
])
def test_trigger_string_matchers(gateway, path, triggered):
    resp = gateway.get("trigger-matchers", path)
    if triggered:
        assert (resp.status, resp.text) == (401, MISSING)
    else:
        assert_passed(resp, path)


# --------------------------------------------------------------------------- token locations


def test_token_from_configured_param(gateway, keys):
    assert_passed(gateway.get("param", f"/p?token={good_token(keys)}&x=1"))
    resp = gateway.get("param", "/p?token=deadbeef")
    assert_rejected(gateway, resp, "param", "/p?token=deadbeef", 401, NOT_JWS)
    # the default locations no longer apply
    for path, headers in [(f"/p?access_token={good_token(keys)}", None), ("/p", bearer(good_token(keys)))]:
        resp = gateway.get("param", path, headers)
        assert (resp.status, resp.text) == (401, MISSING), path


@pytest.mark.parametrize("scenario, query, forwarded", [
    ("istio", "a=1&access_token={t}&b=2", "a=1&b=2"),
    ("istio", "access_token={t}", None),
    ("istio", "access_token={t}&access_token={t}", None),
    ("istio", "acc%65ss_token={t}&z=1", "z=1"),
    ("param", "x=%41+c&token={t}&y", "x=%41+c&y"),  # jwt_authn re-encodes: x=A+c&y=
    ("param", "token={t}&q=%2f&r=%zz", "q=%2f&r=%zz"),  # jwt_authn: q=/&r=%zz
])
def test_verified_query_token_is_not_forwarded(gateway, keys, scenario, query, forwarded):
    """Envoy's jwt_authn drops the parameter too, but rebuilds the rest of the query from decoded
    values; mesh-authn keeps it byte for byte. Both agree where the query needs no decoding."""
    token = good_token(keys)
    path = "/p?" + query.replace("{t}", token)
    want = "/p" + (f"?{forwarded}" if forwarded else "")
    assert_accepted(gateway.get(scenario, path), want)
    native = assert_passed(gateway.get(f"{scenario}-ref", path))["path"]
    assert token not in native
    if forwarded is None or "%" not in forwarded:
        assert native == want


def test_query_token_kept_when_forwarded_and_cookies_stay(gateway, keys):
    token = good_token(keys)
    assert_passed(gateway.get("forward", f"/p?access_token={token}"), f"/p?access_token={token}")
    # Like Envoy's jwt_authn, a cookie token stays in the Cookie header (other cookies share it).
    seen = assert_passed(gateway.get("cookie", "/", {"Cookie": f"a=b; session={token}"}))
    assert seen["headers"]["cookie"] == [f"a=b; session={token}"]


def test_token_from_configured_cookie(gateway, keys):
    token = good_token(keys)
    assert_passed(gateway.get("cookie", "/", {"Cookie": f"a=b; session={token}; c=d"}))
    resp = gateway.get("cookie", "/", {"Cookie": "session=deadbeef"})
    assert_rejected(gateway, resp, "cookie", "/", 401, NOT_JWS)


def test_default_locations_ignored_when_rule_names_a_cookie(gateway, keys):
    token = good_token(keys)
    for path, headers in [("/", bearer(token)), (f"/?access_token={token}", None)]:
        resp = gateway.get("cookie", path, headers)
        assert (resp.status, resp.text) == (401, MISSING), path
    # a junk Authorization header is not a token location here: not checked, not stripped
    seen = assert_passed(gateway.get("cookie", "/", {"Cookie": f"session={token}", **bearer("deadbeef")}))
    assert seen["headers"]["authorization"] == ["Bearer deadbeef"]


def test_token_from_custom_header_with_prefix(gateway, keys):
    token = good_token(keys)
    seen = assert_passed(gateway.get("custom-header", "/", {"x-auth": f"Token {token}", "x-keep": "1"}))
    assert "x-auth" not in seen["headers"]
    assert seen["headers"]["x-keep"] == ["1"]
    resp = gateway.get("custom-header", "/", bearer(token))
    assert (resp.status, resp.text) == (401, MISSING)


# --------------------------------------------------------------------------- forwarded and output headers


def test_authorization_removed_by_default(gateway, keys):
    seen = assert_passed(gateway.get("istio", "/", {**bearer(good_token(keys)), "x-keep": "1"}))
    assert "authorization" not in seen["headers"]
    assert seen["headers"]["x-keep"] == ["1"]


def test_forward_original_token(gateway, keys):
    token = good_token(keys)
    seen = assert_passed(gateway.get("forward", "/", bearer(token)))
    assert seen["headers"]["authorization"] == [f"Bearer {token}"]
    resp = gateway.get("forward", "/", bearer(tamper_signature(token)))
    assert_rejected(gateway, resp, "forward", "/", 401, BAD_SIGNATURE)


def test_output_headers_carry_verified_claims(gateway, keys):
    minted = claims(sub="alice", org={"team": "platform"}, admin=True, level=3)
    token = mint(keys.ec256, "ES256", "ec256", minted)
    seen = assert_passed(gateway.get("outputs", "/", bearer(token)))
    headers = seen["headers"]
    assert headers["x-jwt-payload"] == [token.split(".")[1]]
    assert json.loads(b64url_decode(headers["x-jwt-payload"][0])) == minted
    assert headers["x-jwt-sub"] == ["alice"]
    assert headers["x-jwt-team"] == ["platform"]
    assert headers["x-jwt-admin"] == ["true"]
    assert headers["x-jwt-level"] == ["3"]
    assert "x-jwt-evil" not in headers


def test_output_claim_with_control_characters_not_emitted(gateway, keys):
    token = good_token(keys, evil="ok\r\nx-injected: yes", sub="bob")
    seen = assert_passed(gateway.get("outputs", "/", bearer(token)))
    assert "x-jwt-evil" not in seen["headers"]
    assert "x-injected" not in seen["headers"]
    assert seen["headers"]["x-jwt-sub"] == ["bob"]


SPOOFED = [("x-jwt-sub", "admin"), ("X-Jwt-Sub", "root"), ("x-jwt-team", "hackers"),
           ("x-jwt-payload", "eyJzdWIiOiJhZG1pbiJ9"), ("x-jwt-admin", "true"), ("x-jwt-evil", "1")]


def test_spoofed_output_headers_stripped_without_token(gateway):
    seen = assert_passed(gateway.get("outputs", "/", SPOOFED))
    for name in OUTPUT_HEADERS:
        assert name not in seen["headers"], name


def test_spoofed_output_headers_stripped_with_token(gateway, keys):
    token = good_token(keys, sub="carol")  # no org, admin, level or evil claims
    seen = assert_passed(gateway.get("outputs", "/", [*SPOOFED, ("Authorization", f"Bearer {token}")]))
    headers = seen["headers"]
    assert headers["x-jwt-sub"] == ["carol"]
    assert headers["x-jwt-payload"] == [token.split(".")[1]]
    for name in ("x-jwt-team", "x-jwt-admin", "x-jwt-level", "x-jwt-evil"):
        assert name not in headers, name


@pytest.mark.parametrize("method, path, extra", [
    ("GET", "/public/x", []),
    ("OPTIONS", "/headers", [("Origin", "http://example.com"), ("Access-Control-Request-Method", "POST")]),
], ids=["excluded-path", "cors-preflight"])
def test_spoofed_output_headers_stripped_where_no_token_is_checked(gateway, method, path, extra):
    seen = assert_passed(gateway.request("outputs-required", method, path, [*SPOOFED, *extra]))
    for name in OUTPUT_HEADERS:
        assert name not in seen["headers"], name


# --------------------------------------------------------------------------- CORS


@pytest.mark.parametrize("scenario", ["required", "required-ref"])
def test_cors_preflight_passes_without_token(gateway, scenario):
    preflight = {"Origin": "http://example.com", "Access-Control-Request-Method": "POST"}
    seen = assert_passed(gateway.request(scenario, "OPTIONS", "/headers", preflight))
    assert seen["method"] == "OPTIONS"
    # a plain OPTIONS (no preflight request method) is not a preflight
    resp = gateway.request(scenario, "OPTIONS", "/headers", {"Origin": "http://example.com"})
    assert (resp.status, resp.text) == (401, MISSING)


# --------------------------------------------------------------------------- bad configuration


@pytest.mark.parametrize("mutate, fragments", [
    (lambda cfg: cfg["jwtRules"][0].update(audience=["svc-a"]), ["jwtRules[0]", "audience"]),
    (lambda cfg: cfg.update(requireToken="yes"), ["requireToken"]),
    (lambda cfg: cfg.update(jwtCacheBytes=1 << 30), ["jwtCacheBytes", "at most"]),
    (lambda cfg: json.dumps(cfg).replace('"issuer":', '"issuer": "https://evil.example", "issuer":', 1),
     ["jwtRules[0].issuer", "named twice"]),
    (lambda cfg: cfg["jwtRules"][0].update(maxLifetime="1h"), ["jwtRules[0].maxLifetime"]),
    (lambda cfg: cfg["jwtRules"][0].update(subjects={"prefix": ""}), ["jwtRules[0].subjects.prefix"]),
    (lambda cfg: cfg["jwtRules"][0].update(presence="ALWAYS"), ["jwtRules[0].presence"]),
], ids=["unknown-field-audience", "requireToken-wrong-type", "jwtCacheBytes-over-the-cap", "issuer-twice",
        "maxLifetime-not-a-duration", "subjects-empty-prefix", "presence-unknown"])
def test_bad_plugin_config_refused_by_envoy(scratch_envoy, wasm_module, keys, upstream, mutate, fragments):
    cfg = {"jwtRules": [{"issuer": ISSUER, "jwks": keys.jwks()}]}
    cfg = mutate(cfg) or cfg
    name = "bad-config"
    config = harness.bootstrap(harness.free_port(),
                               [harness.listener(name, harness.free_port(), [harness.wasm_filter(name, cfg, wasm_module)])],
                               [harness.static_cluster("echo", upstream.port)])
    envoy = scratch_envoy(config)
    code = envoy.wait_exit_or_ready(timeout=30)
    log = envoy.log_text()
    assert code == 1, "envoy should refuse the config and exit 1, but it started"
    assert f"Unable to create Wasm plugin {name}" in log
    filter_lines = [line for line in log.splitlines()
                    if "wasm log" in line and all(f in line for f in fragments)]
    assert len(filter_lines) >= 1, f"no filter log line naming {fragments}"


def test_tokens_never_logged_reasons_are(gateway, keys):
    tokens = {
        "valid": good_token(keys),
        "expired": good_token(keys, lifetime=-900),
        "tampered": tamper_signature(good_token(keys)),
    }
    mark = gateway.envoy.log_size()
    assert gateway.get("istio", "/headers", bearer(tokens["valid"])).status == 200
    assert gateway.get("istio", "/headers", bearer(tokens["expired"])).status == 401
    assert gateway.get("istio", f"/headers?access_token={tokens['tampered']}").status == 401
    time.sleep(0.2)
    log = gateway.envoy.log_text(mark)
    for name, token in tokens.items():
        for part in token.split("."):
            assert part not in log, f"a segment of the {name} token was logged"
    assert "401 /headers: Jwt is expired" in log
    assert "401 /headers: Jwt verification fails" in log
