"""Writes the fuzz fixtures (a fixed JWKS) and the seed corpora under corpus/<target>/.

Run once with the project's venv (`.venv/bin/python fuzz/make_seeds.py`); the outputs are
committed, so the fuzz targets and the seeds always agree on the keys. Re-running makes new keys.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "envoy-test"))

from jwt_mint import (ISSUER, KeyRing, b64url, jwks, mint, swap_payload,  # noqa: E402
                      tamper_signature, unsigned)

EXP = 4102444800  # 2100-01-01; the targets evaluate at a fixed "now" of 1 700 000 000
NOW = 1_700_000_000


def write(target: str, name: str, data: bytes | str) -> None:
    d = HERE / "corpus" / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data.encode() if isinstance(data, str) else data)


def encode_map(pairs: list[tuple[str, str]]) -> bytes:
    out = len(pairs).to_bytes(4, "little")
    for k, v in pairs:
        out += len(k.encode()).to_bytes(4, "little") + len(v.encode()).to_bytes(4, "little")
    for k, v in pairs:
        out += k.encode() + b"\0" + v.encode() + b"\0"
    return out


def main() -> None:
    keys = KeyRing.generate()
    doc = keys.jwks()
    (HERE / "fixtures").mkdir(exist_ok=True)
    (HERE / "fixtures" / "jwks.json").write_text(doc)

    base = {"iss": ISSUER, "sub": "alice", "iat": NOW, "exp": EXP, "aud": "svc-a"}
    tokens = {}
    for alg in ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA", "HS256"):
        key, kid = keys.for_alg(alg)
        tokens[alg] = mint(key, alg, kid, base)
    tokens["nokid-es256"] = mint(keys.ec256, "ES256", None, base)
    tokens["tampered"] = tamper_signature(tokens["RS256"])
    tokens["swapped"] = swap_payload(tokens["ES256"], {**base, "sub": "mallory"})
    tokens["none"] = unsigned(base)
    tokens["nested-claims"] = mint(keys.ed25519, "EdDSA", "ed25519",
                                   {**base, "org": {"team": "platform"}, "admin": True, "aud": ["x", "svc-b"]})
    tokens["expired"] = mint(keys.hmac, "HS256", "hmac", {**base, "exp": NOW - 3600})

    for name, tok in tokens.items():
        write("token", f"{name}.txt", tok)
    # header-map form of the token target: "name: value" lines
    write("token", "headers-bearer.hdr", f":path: /api/x?access_token={tokens['ES256']}\n"
                                         f"authorization: Bearer {tokens['RS256']}\n")
    write("token", "headers-cookie.hdr", f":path: /\ncookie: a=1; session={tokens['EdDSA']}\n")
    write("token", "headers-custom.hdr", f":path: /v1/admin\nx-auth: Token {tokens['HS256']}\n:method: GET\n")

    write("jwks", "published.json", doc)
    write("jwks", "single-rsa.json", jwks(keys.rsa.jwk()))
    write("jwks", "ec-okp-oct.json", jwks(keys.ec256.jwk(), keys.ed25519.jwk(), keys.hmac.jwk(alg=None)))
    write("jwks", "enc-use.json", jwks({**keys.ec384.jwk(), "use": "enc"}))
    write("jwks", "empty.json", '{"keys":[]}')

    rule = {"issuer": ISSUER, "audiences": ["svc-a"], "jwks": doc}
    configs = {
        "istio.json": {"jwtRules": [rule]},
        "full.json": {
            "jwtRules": [{**rule, "fromHeaders": [{"name": "x-auth", "prefix": "Token "}], "fromParams": ["t"],
                          "fromCookies": ["session"], "forwardOriginalToken": True,
                          "outputPayloadToHeader": "x-jwt-payload",
                          "outputClaimToHeaders": [{"header": "x-jwt-team", "claim": "org.team"}]}],
            "requireToken": True, "clockSkewSeconds": 5, "requireExpiration": True,
            "triggerRules": [{"excludedPaths": [{"exact": "/healthz"}],
                              "includedPaths": [{"prefix": "/api/"}, {"regex": "/v[0-9]+/admin"}]}],
        },
        "remote.json": {"jwtRules": [{"issuer": "https://issuer.example.com",
                                      "jwksUri": "https://issuer.example.com/.well-known/jwks.json",
                                      "timeout": "2s", "jwksCacheDuration": "300s"}]},
        "peer.json": {"mtls": {"mode": "STRICT"}, "portLevelMtls": {"8080": {"mode": "DISABLE"}}},
        "mesh.json": {
            "peerAuthentications": [{"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
                                     "metadata": {"name": "default", "namespace": "istio-system"},
                                     "spec": {"mtls": {"mode": "STRICT"}}}],
            "rootNamespace": "istio-system", "trustDomains": ["cluster.local"],
            "outputPeerPrincipalToHeader": "x-peer-principal", "principalBinding": "USE_ORIGIN"},
        "empty.json": {},
    }
    for name, cfg in configs.items():
        write("config", name, json.dumps(cfg))

    write("paths", "api.hdr", f":path: /api/orders?limit=1&access_token={tokens['RS256']}\n"
                              f"authorization: Bearer {tokens['ES256']}\n")
    write("paths", "cookie.hdr", ":path: /v2/admin#frag\ncookie: a=1; session=\"x.y.z\"; b\n")
    write("paths", "custom.hdr", ":path: /healthz\nx-auth: Token a.b.c\nx-auth: Token d.e.f\n")
    write("paths", "plain.txt", "/files/report.secure?dl=1")

    write("wire", "headers.bin", encode_map([(":path", "/a?b"), ("authorization", "Bearer " + tokens["RS256"]),
                                             ("empty", "")]))
    write("wire", "empty.bin", b"")
    write("wire", "one.bin", encode_map([("k", "v")]))
    write("wire", "bool.bin", b"\x01")
    write("wire", "int.bin", (8080).to_bytes(8, "little"))


if __name__ == "__main__":
    main()
