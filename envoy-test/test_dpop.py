"""DPoP (RFC 9449) in a real Envoy with two workers: proofs made by panva's `dpop`, the reference
JavaScript client (envoy-test/dpop-client), and by hand for every check of RFC 9449 §4.3.

No Envoy or Istio filter enforces DPoP, so there is no native reference: the expected answers are
the RFC's. Tokens are signed by an identity provider key of the test and bound to the client's
key by `cnf.jkt`; each request is one fresh connection.
"""

from __future__ import annotations

import json
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

import harness
from jwt_mint import _public_members, ath, b64url, claims, ec_key, ed25519_key, jwks, mint, rsa_key, sign
from jwt_mint import dpop_proof as hand_proof
from jwt_mint import jwk_thumbprint as thumbprint

CLIENT = Path(__file__).resolve().parent / "dpop-client" / "proofs.mjs"
ISS = "https://idp.example.com"
ORIGIN = "https://api.example.com"
ALGS = "ES256 ES384 ES512 EdDSA Ed25519 PS256 PS384 PS512 RS256 RS384 RS512"


def node(command: str, arg: dict):
    out = subprocess.run(["node", str(CLIENT), command, json.dumps(arg)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


class PanvaClient:
    """A DPoP key held by panva's client: its thumbprint, and proofs it makes."""

    def __init__(self, alg: str) -> None:
        self.alg = alg
        self.keys = node("keygen", {"alg": alg})
        self.jkt = self.keys["jkt"]

    def proofs(self, requests: list[tuple[str, str, str]]) -> list[str]:
        """One proof per (htm, htu, access token)."""
        return node("prove", {"alg": self.alg, **{k: self.keys[k] for k in ("private", "public")},
                              "requests": [{"htm": m, "htu": u, "accessToken": t} for m, u, t in requests]})


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    idp = ec_key("idp")
    rule = {"issuer": ISS, "jwks": jwks(idp.jwk())}
    scenarios = {
        "required": {"jwtRules": [{**rule, "dpop": {"mode": "REQUIRED"}}]},
        "optional": {"jwtRules": [{**rule, "dpop": {"mode": "OPTIONAL", "maxAge": "30s"}}],
                     "requireToken": True},
        "origin": {"jwtRules": [{**rule, "dpop": {"mode": "REQUIRED", "origin": ORIGIN}}]},
        "dry": {"jwtRules": [{**rule, "dpop": {"mode": "REQUIRED"}}], "dryRun": True,
                "outputDecisionToHeader": "x-authn-decision"},
    }
    with harness.EchoServer() as upstream:
        gateway = harness.start_gateway(scenarios, tmp_path_factory.mktemp("dpop"), upstream.port,
                                        concurrency=2)
        try:
            def token(jkt: str | None, **extra) -> str:
                cnf = {"cnf": {"jkt": jkt}} if jkt else {}
                return mint(idp, "ES256", claims=claims(iss=ISS, **cnf, **extra))

            gateway.token = token
            yield gateway
        finally:
            harness.assert_no_vm_crash(gateway.envoy.log_text(), "dpop listeners")
            gateway.envoy.stop()


def url(gw, scenario: str, path: str) -> str:
    return f"http://{gw.host(scenario)}{path}"


def send(gw, scenario: str, token: str, proofs: list[str] = (), method: str = "GET", path: str = "/orders",
         scheme: str = "DPoP"):
    headers = [("authorization", f"{scheme} {token}")] + [("dpop", p) for p in proofs]
    return gw.request(scenario, method, path, headers)


def refused(r, reason: str, error: str = "invalid_dpop_proof") -> bool:
    challenge = r.header("www-authenticate") or ""
    return (r.status == 401 and r.text == reason and challenge.startswith("DPoP ")
            and f'error="{error}"' in challenge and 'algs="ES256' in challenge)


@pytest.mark.parametrize("alg", ["ES256", "RS256", "PS256", "Ed25519"])
def test_proofs_from_panvas_client_pass_once(gw, alg):
    client = PanvaClient(alg)
    token = gw.token(client.jkt, sub=f"client-{alg}")
    target = url(gw, "required", "/orders")
    get, post = client.proofs([("GET", target, token), ("POST", target + "?page=2", token)])
    ok = send(gw, "required", token, [get])
    assert ok.status == 200, (ok.status, ok.text)
    assert ok.upstream_headers("dpop") == [] and ok.upstream_headers("authorization") == []
    assert send(gw, "required", token, [post], "POST", "/orders?page=2").status == 200
    again = send(gw, "required", token, [get])
    assert refused(again, "DPoP proof [jti] was already used"), (again.status, again.text, again.headers)


def test_a_proof_is_accepted_once_across_workers(gw):
    client = PanvaClient("ES256")
    token = gw.token(client.jkt, sub="racer")
    [proof] = client.proofs([("GET", url(gw, "required", "/orders"), token)])
    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = list(pool.map(lambda _: send(gw, "required", token, [proof]).status, range(32)))
    assert sorted(statuses) == [200] + [401] * 31, statuses
    assert harness.filter_counter(gw.envoy, "required", "refused_dpop") >= 31


def test_every_check_of_rfc_9449(gw):
    key = ec_key("client")
    other = ec_key("other")
    jkt = thumbprint(_public_members(key.private))
    token = gw.token(jkt, sub="checked")
    target = url(gw, "required", "/orders")
    now = int(time.time())

    def proof(htm="GET", htu=target, **kw):
        return hand_proof(key, "ES256", htm, htu, token, **kw)

    def spelled(members: str) -> str:
        """A proof whose payload is the JSON text `{members, "iat": now}`, signed by the key."""
        head = b64url(json.dumps({"typ": "dpop+jwt", "alg": "ES256", "jwk": _public_members(key.private)}).encode())
        payload = "{" + members + ', "iat": ' + str(int(time.time())) + "}"
        signing_input = f"{head}.{b64url(payload.encode())}"
        return f"{signing_input}.{b64url(sign(key.private, 'ES256', signing_input.encode()))}"

    fields = f'"htm": "GET", "htu": "{target}", "ath": "{ath(token)}"'

    assert send(gw, "required", token, [proof()]).status == 200
    cases = {
        "DPoP proof is missing": [[]],
        "DPoP proof must be one DPoP header": [[proof(), proof()]],
        "DPoP proof is not a valid dpop+jwt": [
            proof(header={"typ": "JWT"}),
            proof(header={"typ": None}),
            proof(jti=None),
            proof(ath=None),
            proof(iat="now"),
            proof(jwk={**_public_members(key.private), "d": "AAAA"}),
            proof(jwk=_public_members(rsa_key("wrong-type").private)),
            hand_proof(b"a shared secret of 32 bytes....", "HS256", "GET", target, token,
                       jwk={"kty": "oct", "k": b64url(b"a shared secret of 32 bytes....")}),
            "e30." + b64url(json.dumps({"htm": "GET"}).encode()) + ".",
            # Signed, but a member named twice: readers disagree on which one counts.
            spelled(f'"jti": "a1", "jti": "a2", {fields}'),
            spelled(f'"jti": "a3", {fields}, "htm": "GET"'),
            spelled(f'"jti": "a4", "\\u0068tm": "POST", {fields}'),
            spelled(f'"jti": "a5", "x": 1, "x": 1, {fields}'),
            spelled(f'"jti": "a6", "x": {{"y": 1, "y": 2}}, {fields}'),
            proof(header={"x-pad": "x" * 9000}),
            b64url(b'{"typ":"dpop+jwt","x":' + b"[" * 3000 + b"]" * 3000 + b"}") + ".e30.AA",
            "not a jwt",
        ],
        "DPoP proof signature is invalid": [proof(jwk=_public_members(other.private))],
        "DPoP proof [htm] or [htu] does not match the request": [
            proof(htm="POST"),
            proof(htu=url(gw, "required", "/other")),
            proof(htu=url(gw, "optional", "/orders")),
            proof(htu="https://" + target.removeprefix("http://")),
        ],
        "DPoP proof [iat] is outside the accepted window": [proof(iat=now - 200), proof(iat=now + 200)],
        "DPoP proof [ath] does not match the access token": [proof(ath=ath("another token"))],
    }
    for reason, attempts in cases.items():
        for proofs in attempts:
            proofs = proofs if isinstance(proofs, list) else [proofs]
            r = send(gw, "required", token, proofs)
            assert refused(r, reason), (reason, [p[:60] for p in proofs], r.status, r.text)
    # Member names escaped are the same members.
    escaped = fields.replace('"htm"', '"\\u0068tm"').replace('"ath"', '"\\u0061th"')
    assert send(gw, "required", token, [spelled(f'"\\u006a\\u0074\\u0069": "b1", {escaped}')]).status == 200
    # Spelled otherwise, the same URI.
    spelled = target.replace("/orders", "/./x/../%6Frders").replace("http://", "HTTP://")
    assert send(gw, "required", token, [proof(htu=spelled + "?q=1#f")]).status == 200


def test_bearer_and_binding_rules(gw):
    key = ec_key("binding")
    jkt = thumbprint(_public_members(key.private))
    bound, unbound = gw.token(jkt, sub="bound"), gw.token(None, sub="unbound")
    for scenario in ("required", "optional"):
        r = send(gw, scenario, bound, scheme="Bearer")
        assert refused(r, "Jwt is DPoP-bound and cannot be a bearer token", "invalid_token"), scenario
        p = hand_proof(key, "ES256", "GET", url(gw, scenario, "/orders"), unbound)
        r = send(gw, scenario, unbound, [p])
        assert refused(r, "Jwt must be DPoP-bound and sent with a DPoP proof", "invalid_token"), scenario
        stranger = ec_key("stranger")
        p = hand_proof(stranger, "ES256", "GET", url(gw, scenario, "/orders"), bound)
        assert refused(send(gw, scenario, bound, [p]), "Jwt is bound to another DPoP key", "invalid_token")
    assert refused(send(gw, "required", unbound, scheme="Bearer"),
                   "Jwt must be DPoP-bound and sent with a DPoP proof", "invalid_token")
    ok = send(gw, "optional", unbound, scheme="Bearer")
    assert ok.status == 200 and ok.upstream_headers("authorization") == []
    # maxAge 30s on `optional`: a proof 45 s old is stale there.
    old = hand_proof(key, "ES256", "GET", url(gw, "optional", "/orders"), bound, iat=int(time.time()) - 45 - 60)
    assert refused(send(gw, "optional", bound, [old]), "DPoP proof [iat] is outside the accepted window")


def test_origin_names_what_the_client_addressed(gw):
    key = ed25519_key("behind-a-balancer")
    jkt = thumbprint(_public_members(key.private))
    token = gw.token(jkt, sub="edge")
    assert send(gw, "origin", token, [hand_proof(key, "EdDSA", "GET", ORIGIN + "/orders", token)]).status == 200
    local = hand_proof(key, "EdDSA", "GET", url(gw, "origin", "/orders"), token)
    assert refused(send(gw, "origin", token, [local]), "DPoP proof [htm] or [htu] does not match the request")


def test_challenges_name_dpop_where_it_is_taken(gw):
    key = ec_key("challenged")
    jkt = thumbprint(_public_members(key.private))
    missing = gw.request("optional", "GET", "/orders")
    assert missing.status == 401 and missing.headers["www-authenticate"] == [
        f'Bearer realm="http://{gw.host("optional")}/orders"',
        f'DPoP realm="http://{gw.host("optional")}/orders", algs="{ALGS}"'], missing.headers
    expired = gw.token(jkt, sub="late", exp=int(time.time()) - 3600)
    p = hand_proof(key, "ES256", "GET", url(gw, "required", "/orders"), expired)
    r = send(gw, "required", expired, [p])
    assert (r.status, r.text) == (401, "Jwt is expired")
    assert r.header("www-authenticate") == (
        f'DPoP realm="http://{gw.host("required")}/orders", error="invalid_token", algs="{ALGS}"')


def test_dry_run_lets_a_replay_through_and_says_so(gw):
    key = ec_key("dry")
    token = gw.token(thumbprint(_public_members(key.private)), sub="dry")
    p = hand_proof(key, "ES256", "GET", url(gw, "dry", "/orders"), token)
    first, replay = send(gw, "dry", token, [p]), send(gw, "dry", token, [p])
    assert first.status == 200 and first.upstream_headers("x-authn-decision") == ["allow"]
    assert replay.status == 200, replay.text
    assert replay.upstream_headers("x-authn-decision") == ['deny; reason="DPoP proof [jti] was already used"']
    # Refused in a dry run, the request goes on as it came, proof and token included.
    assert replay.upstream_headers("dpop") == [p]
    assert harness.filter_counter(gw.envoy, "dry", "dry_run_refused_dpop") == 1
