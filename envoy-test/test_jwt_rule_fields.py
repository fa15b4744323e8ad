"""The `jwtRules` fields that Istio 1.28–1.31 and Envoy's jwt_authn added, in a real Envoy:

- `subjects` and `maxLifetime` (Envoy's `JwtProvider.subjects` / `max_lifetime`), on a SPIFFE
  JWT-SVID rule whose keys are a trust bundle written as SPIRE serves it, each token sent to the
  filter and to Envoy's jwt_authn configured alike (the reference);
- `presence: REQUIRED` (istio/api #3737), beside jwt_authn configured as istiod renders it;
- `spaceDelimitedClaims` (Istio 1.28), behind Envoy's RBAC filter rendered from an
  AuthorizationPolicy as istiod renders it.
"""

from __future__ import annotations

import base64
import datetime
import json
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

import harness
import mesh
from jwt_mint import ISSUER, Key, _uint, b64url_decode, claims, ec_key, jwks, mint

VERIFY_FAILS = "Jwt verification fails"
MISSING = "Jwt is missing"
AUD_DENIED = "Audiences in Jwt are not allowed"
ISSUER_UNKNOWN = "Jwt issuer is not configured"

TRUST_DOMAIN = "example.org"
SVID_AUDIENCE = "spiffe://example.org/ns/foo/sa/api"
JWT_SVID_KEY = ec_key("jwt-authority-1")
X509_AUTHORITY = ec_key("unused")  # the bundle's x509-svid key: never a JWT signer
DEVICE_ISSUER = "https://devices.example.com"

SVID, REQUIRED, SCOPES, EXP_REQUIRED = "svid", "presence-required", "scopes", "exp-required"
PUBLISHED = "keys-as-published"


def short_coordinate_key(kid: str, curve: str) -> Key:
    """An EC key whose x has a leading zero byte, published without it (as some libraries write
    JWKs, and as jwt_verify_lib's own P-521 test key is): a 31-byte x for P-256 (one key in 256),
    a 65-byte x for P-521 (one in two)."""
    bits = {"P-256": 248, "P-521": 520}[curve]
    while True:
        key = ec_key(kid, curve)
        x = key.private.public_key().public_numbers().x
        if x < 1 << bits:
            key.extra_jwk = {"x": _uint(x)}
            return key


SHORT_256, SHORT_521 = short_coordinate_key("short-256", "P-256"), short_coordinate_key("short-521", "P-521")
LAST_OF_MANY = ec_key("key-300")


def spire_bundle() -> str:
    """A trust bundle as SPIRE's bundle endpoint serves it (SPIFFE Trust Domain and Bundle §4):
    the X.509 authority with `use: x509-svid` and its certificate, the JWT authority with
    `use: jwt-svid` and a kid, a sequence number and a refresh hint."""
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "SPIFFE")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(X509_AUTHORITY.private.public_key()).serial_number(1)
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(f"spiffe://{TRUST_DOMAIN}")]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(X509_AUTHORITY.private, hashes.SHA256()))
    x509_jwk = {k: v for k, v in X509_AUTHORITY.jwk(alg=None).items() if k not in ("kid", "use")}
    jwt_jwk = {k: v for k, v in JWT_SVID_KEY.jwk(alg=None).items() if k != "use"}
    return json.dumps({
        "keys": [
            {"use": "x509-svid", **x509_jwk,
             "x5c": [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()]},
            {"use": "jwt-svid", **jwt_jwk},
        ],
        "spiffe_sequence": 1,
        "spiffe_refresh_hint": 300,
    })


def svid_rule() -> dict:
    """The operator guide's JWT-SVID rule."""
    return {
        "jwks": spire_bundle(),
        "issuer": f"spiffe://{TRUST_DOMAIN}",
        "audiences": [SVID_AUDIENCE],
        "subjects": {"prefix": f"spiffe://{TRUST_DOMAIN}/"},
        "maxLifetime": "3600s",
        "fromHeaders": [{"name": "Authorization", "prefix": "Bearer "}],
    }


def presence_rules(keys) -> list[dict]:
    return [
        {"issuer": ISSUER, "jwks": keys.jwks(), "presence": "REQUIRED",
         "fromHeaders": [{"name": "x-user-token", "prefix": "Bearer "}]},
        {"issuer": DEVICE_ISSUER, "jwks": keys.jwks(), "presence": "REQUIRED",
         "fromHeaders": [{"name": "x-device-token", "prefix": "Bearer "}]},
    ]


AUTHZ = [{
    "apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
    "metadata": {"name": "read-only", "namespace": "foo"},
    "spec": {"action": "ALLOW", "rules": [{"when": [
        {"key": "request.headers[x-jwt-scope]", "values": ["read"]}]}]},
}]


def envoy_scenarios(keys) -> dict:
    svid = {"jwtRules": [svid_rule()]}
    required = {"jwtRules": presence_rules(keys)}
    scopes = {"jwtRules": [{"issuer": ISSUER, "jwks": keys.jwks(), "spaceDelimitedClaims": ["scope"],
                            "outputClaimToHeaders": [{"header": "x-jwt-scope", "claim": "scope"}]}]}
    rbac = mesh.rbac_filters(AUTHZ, "foo", {})
    exp_required = {"jwtRules": [{"issuer": ISSUER, "jwks": keys.jwks(), "audiences": ["svc-a"]}],
                    "requireExpiration": True}
    decoy = ec_key("decoy").jwk()
    many = [{**decoy, "kid": f"decoy-{i}"} for i in range(297)]
    published = {"jwtRules": [{"issuer": ISSUER, "jwks": jwks(
        *many, SHORT_256.jwk(), SHORT_521.jwk(), LAST_OF_MANY.jwk())}]}
    return {
        PUBLISHED: published, f"{PUBLISHED}-ref": [harness.jwt_authn_filter(published)],
        EXP_REQUIRED: exp_required, f"{EXP_REQUIRED}-ref": [harness.jwt_authn_filter(exp_required)],
        SVID: svid, f"{SVID}-ref": [harness.jwt_authn_filter(svid)],
        REQUIRED: required, f"{REQUIRED}-ref": [harness.jwt_authn_filter(required)],
        SCOPES: [harness.wasm_filter(SCOPES, scopes), *rbac],
        f"{SCOPES}-no-rbac": scopes,
    }


def svid(sub: str = "spiffe://example.org/ns/foo/sa/client", key=JWT_SVID_KEY, kid="default", **fields) -> str:
    body = {"iss": f"spiffe://{TRUST_DOMAIN}", "sub": sub, "aud": [SVID_AUDIENCE],
            "iat": int(time.time()), "exp": int(time.time()) + 300, **fields}
    return mint(key, "ES256", kid, {k: v for k, v in body.items() if v is not None})


def bearer(token: str) -> list[tuple[str, str]]:
    return [("Authorization", f"Bearer {token}")]


# (id, token builder, status, body) — the same answer from the filter and from jwt_authn.
SVID_CASES = [
    ("valid", lambda: svid(), 200, None),
    ("workload-of-another-trust-domain", lambda: svid(sub="spiffe://other.org/ns/foo/sa/client"), 401, VERIFY_FAILS),
    ("look-alike-trust-domain", lambda: svid(sub="spiffe://example.org.evil/ns/x"), 401, VERIFY_FAILS),
    ("trust-domain-without-path", lambda: svid(sub="spiffe://example.org"), 401, VERIFY_FAILS),
    ("no-sub", lambda: svid(sub=None), 401, VERIFY_FAILS),
    ("other-audience", lambda: svid(aud=["spiffe://example.org/ns/bar/sa/db"]), 403, AUD_DENIED),
    ("no-audience", lambda: svid(aud=None), 403, AUD_DENIED),
    ("no-exp", lambda: svid(exp=None), 401, VERIFY_FAILS),
    ("lifetime-over-max", lambda: svid(exp=int(time.time()) + 7200), 401, VERIFY_FAILS),
    ("lifetime-just-under-max", lambda: svid(exp=int(time.time()) + 3590), 200, None),
    ("expired", lambda: svid(exp=int(time.time()) - 600), 401, "Jwt is expired"),
    ("audience-before-subject", lambda: svid(sub="spiffe://other.org/x", aud=["x"]), 403, AUD_DENIED),
]


@pytest.mark.parametrize("case", SVID_CASES, ids=[c[0] for c in SVID_CASES])
def test_jwt_svid_rule_beside_jwt_authn(gateway, case):
    _id, build, status, body = case
    token = build()
    for scenario in (SVID, f"{SVID}-ref"):
        resp = gateway.get(scenario, "/svid", bearer(token))
        assert resp.status == status, (scenario, resp.status, resp.text)
        if body is not None:
            assert resp.text == body, (scenario, resp.text)


def test_only_jwt_svid_keys_of_a_bundle_sign_tokens(gateway):
    """A token signed by the bundle's X.509 authority: JWT-SVID §6.2 says validators must use only
    the `jwt-svid` keys. Envoy's jwt_authn reads no `use` and accepts it; the filter refuses it."""
    forged = svid(key=X509_AUTHORITY, kid=None)
    # Only the jwt-svid key is tried, and it did not sign this.
    assert gateway.get(SVID, "/svid", bearer(forged)).text == VERIFY_FAILS
    assert gateway.get(f"{SVID}-ref", "/svid", bearer(forged)).status == 200, "the documented difference"


def _both(keys, user=None, device=None) -> list[tuple[str, str]]:
    out = []
    if user:
        out.append(("x-user-token", f"Bearer {user}"))
    if device:
        out.append(("x-device-token", f"Bearer {device}"))
    return out


def _user(keys, **fields):
    return mint(keys.rsa, "RS256", "rsa", claims(**fields))


def _device(keys, **fields):
    return mint(keys.ec256, "ES256", keys.ec256.kid, claims(iss=DEVICE_ISSUER, sub="device-7", **fields))


PRESENCE_CASES = [
    ("both", lambda k: _both(k, _user(k), _device(k)), 200, None),
    ("user-only", lambda k: _both(k, user=_user(k)), 401, MISSING),
    ("device-only", lambda k: _both(k, device=_device(k)), 401, MISSING),
    ("none", lambda k: [], 401, MISSING),
    ("device-expired", lambda k: _both(k, _user(k), _device(k, lifetime=-3600)), 401, "Jwt is expired"),
    ("swapped", lambda k: _both(k, _device(k), _user(k)), 401, ISSUER_UNKNOWN),
    ("device-token-in-both", lambda k: _both(k, _device(k), _device(k)), 401, ISSUER_UNKNOWN),
]


@pytest.mark.parametrize("case", PRESENCE_CASES, ids=[c[0] for c in PRESENCE_CASES])
def test_required_rules_each_need_their_token_beside_jwt_authn(gateway, keys, case):
    _id, build, status, body = case
    headers = build(keys)
    for scenario in (REQUIRED, f"{REQUIRED}-ref"):
        resp = gateway.get(scenario, "/both", headers)
        assert resp.status == status, (scenario, resp.status, resp.text)
        if body is not None:
            assert resp.text == body, (scenario, resp.text)


# Envoy's RBAC matched a header's copies joined with ',' (since CVE-2020-25017) up to 1.37, and
# matches when any one copy matches from 1.39 (1.38's PyPI build has no V8 runtime: not run here).
RBAC_MATCHES_EACH_COPY = (1, 39, 0)


@pytest.mark.parametrize("scope, status", [
    ("read", 200), ("read write", 200), ("write  read", 200), ("admin read write", 200),
    ("reading", 403), ("write", 403), ("readwrite", 403), ("read-only write", 403), ("", 403),
])
def test_space_delimited_scope_behind_rbac(gateway, keys, scope, status):
    """`values: ["read"]` on the scope header admits a token whose scope has the element `read`,
    never one with only `reading` or `readwrite`: one header copy per element, and Envoy's RBAC
    header match holds when one copy matches. Before Envoy 1.39 RBAC sees the copies joined
    (`read,write`), so only a scope of the one element `read` is admitted: fail closed."""
    if harness.envoy_version() < RBAC_MATCHES_EACH_COPY and " " in scope.strip():
        status = 403
    token = mint(keys.rsa, "RS256", "rsa", claims(scope=scope))
    resp = gateway.get(SCOPES, "/scoped", bearer(token))
    assert resp.status == status, (scope, resp.status, resp.text)
    if status == 200:
        assert resp.upstream_headers("x-jwt-scope") == [s for s in scope.split(" ") if s]


def test_forged_scope_copies_never_pass(gateway, keys):
    token = mint(keys.rsa, "RS256", "rsa", claims(scope="write"))
    for forged in ([("x-jwt-scope", "read")], [("X-JWT-Scope", "read"), ("x-jwt-scope", "read")]):
        assert gateway.get(SCOPES, "/scoped", [*forged, *bearer(token)]).status == 403
        assert gateway.get(SCOPES, "/scoped", forged).status == 403


@pytest.mark.parametrize("aud, status, ours, envoys", [
    ("svc-a", 401, "Jwt has no [exp] claim and expiration is required", VERIFY_FAILS),
    ("svc-b", 403, AUD_DENIED, AUD_DENIED),
])
def test_required_expiration_after_the_audience_as_in_envoy(gateway, keys, aud, status, ours, envoys):
    """requireExpiration is checked where Envoy checks it, after the audience: a token without
    `exp` for another audience is a 403 in both. The 401's wording differs (docs/behaviour.md)."""
    token = mint(keys.rsa, "RS256", "rsa", claims(lifetime=None, aud=aud))
    mine, ref = (gateway.get(s, "/exp", bearer(token)) for s in (EXP_REQUIRED, f"{EXP_REQUIRED}-ref"))
    assert (mine.status, mine.text) == (status, ours)
    assert (ref.status, ref.text) == (status, envoys)


@pytest.mark.parametrize("key", [SHORT_256, SHORT_521, LAST_OF_MANY], ids=lambda k: k.kid)
def test_keys_as_issuers_publish_them_beside_jwt_authn(gateway, key):
    """Short EC coordinates (left-padded, the point still checked) and a set of 300 keys (once cut
    at 256) verify tokens here as in jwt_authn."""
    if key is not LAST_OF_MANY:
        assert len(b64url_decode(key.jwk()["x"])) < {"ES256": 32, "ES512": 66}[key.alg]
    token = mint(key, key.alg, key.kid, claims())
    for scenario in (PUBLISHED, f"{PUBLISHED}-ref"):
        resp = gateway.get(scenario, "/keys", bearer(token))
        assert resp.status == 200, (scenario, resp.status, resp.text)
    forged = mint(ec_key("x", "P-521"), "ES512", SHORT_521.kid, claims())
    assert gateway.get(PUBLISHED, "/keys", bearer(forged)).text == VERIFY_FAILS


def test_space_delimited_claim_reaches_the_upstream_as_copies(gateway, keys):
    token = mint(keys.rsa, "RS256", "rsa", claims(scope="read  write admin"))
    resp = gateway.get(f"{SCOPES}-no-rbac", "/scoped", [("x-jwt-scope", "forged"), *bearer(token)])
    assert resp.status == 200
    assert resp.upstream_headers("x-jwt-scope") == ["read", "write", "admin"]
