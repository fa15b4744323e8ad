"""Differential check: mesh-authn against Envoy's own jwt_authn on a generated corpus of tokens.

Both run in the same Envoy, configured from the same pluginConfig (`harness.jwt_authn_filter`).
Every token goes to both; their verdicts (status 200/401/403) must agree, except where docs/behaviour.md
lists an intentional difference: each disagreement is classified under that difference's name, and
one that no listed difference explains fails the test with the token's description. A summary
table is printed (run pytest with -s to see it; it is also in the test's captured output).
See DIFFERENTIAL.md.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache

import pytest

import harness
from jwt_mint import (ISSUER, KeyRing, b64url, b64url_decode, ec_key, ed25519_key, hmac_key, jwks, mint,
                      rsa_key, swap_payload, tamper_signature)

SEED = 20260407
CORPUS_SIZE = 600
SKEW = 60
AUDIENCES = ["svc-a", "svc-b"]
ALGS = ("RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "ES512", "EdDSA", "HS256")

MESH, MESH_WASM, REF = "differential", "differential-wasm", "differential-ref"

# Intentional differences (docs/behaviour.md, "Where it differs from Envoy's jwt_authn, on purpose").
KID_ONLY = "kid selects only keys with that kid"
USE_NOT_SIG = "keys with use != sig not used"
RSA_SHORT = "RSA keys under 2048 bits not used"


@dataclass
class Extra:
    """Keys published beside the session KeyRing's, each there to exercise one kind of key."""

    rotated: object  # a second RSA key under a new kid (key rotation: old and new both published)
    kidless: object  # an RSA key published WITHOUT a kid
    enc: object  # an ES384 key published with "use": "enc"
    short: object  # a 1024-bit RSA key
    strangers: dict  # alg family -> a never-published key of that type


@lru_cache(maxsize=1)
def extra() -> Extra:
    return Extra(
        rotated=rsa_key("rsa-2026", "RS256"),
        kidless=rsa_key("", "RS256"),
        enc=ec_key("ec384-enc", "P-384"),
        short=rsa_key("rsa-1024", "RS256", bits=1024),
        strangers={"EC256": ec_key("ec256", "P-256"), "EC384": ec_key("ec384", "P-384"),
                   "EC521": ec_key("ec521", "P-521"), "ED": ed25519_key("ed25519"), "HS": hmac_key("hmac")},
    )


def published_jwks(keys: KeyRing) -> str:
    x = extra()
    kidless = x.kidless.jwk()
    kidless.pop("kid")
    return jwks(*keys.jwk_list(), x.rotated.jwk(), kidless, {**x.enc.jwk(), "use": "enc"}, x.short.jwk())


def plugin_config(keys: KeyRing) -> dict:
    return {"jwtRules": [{"issuer": ISSUER, "audiences": AUDIENCES, "jwks": published_jwks(keys)}],
            "clockSkewSeconds": SKEW}


def envoy_scenarios(keys) -> dict:
    cfg = plugin_config(keys)
    # auto: RS*/ES* checked by the host's BoringSSL; wasm: every signature checked in the module.
    return {MESH: cfg, MESH_WASM: {**cfg, "signatureVerifier": "wasm"}, REF: [harness.jwt_authn_filter(cfg)]}


# --------------------------------------------------------------------------- the corpus


@dataclass
class Token:
    token: str
    desc: dict = field(default_factory=dict)

    def __str__(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.desc.items())


def _pick(rng: random.Random, weighted: dict):
    return rng.choices(list(weighted), weights=list(weighted.values()))[0]


def signing_key(keys: KeyRing, alg: str, source: str):
    """(private key or Key, the kid it is published under or None, special kind or None)."""
    x = extra()
    if source == "published":
        key, kid = keys.for_alg(alg)
        return key, kid, None
    if source == "stranger":  # same kid as the published key, different key material
        _, kid = keys.for_alg(alg)
        family = {"ES256": "EC256", "ES384": "EC384", "ES512": "EC521", "EdDSA": "ED", "HS256": "HS"}.get(alg)
        return (keys.stranger if family is None else x.strangers[family]), kid, None
    if source == "rotated":
        return x.rotated, "rsa-2026", None
    if source == "kidless":
        return x.kidless, None, KID_ONLY
    if source == "enc-use":
        return x.enc, "ec384-enc", USE_NOT_SIG
    if source == "rsa-1024":
        return x.short, "rsa-1024", RSA_SHORT
    raise ValueError(source)


def generate(keys: KeyRing, n: int = CORPUS_SIZE, seed: int = SEED) -> list[Token]:
    rng = random.Random(seed)
    now = int(time.time())
    corpus = []
    for i in range(n):
        source = _pick(rng, {"published": 55, "stranger": 10, "rotated": 8, "kidless": 9, "enc-use": 9,
                             "rsa-1024": 9})
        # a published JWK's "alg" pins its algorithm: the extra keys sign with theirs
        alg = {"rotated": "RS256", "kidless": "RS256", "rsa-1024": "RS256", "enc-use": "ES384"}.get(
            source) or rng.choice(ALGS)
        key, kid, special = signing_key(keys, alg, source)
        kid_mode = _pick(rng, {"present": 60, "absent": 25, "unknown": 15})
        token_kid = {"present": kid or "kidless-rsa", "absent": None, "unknown": f"unknown-{i}"}[kid_mode]
        iss = _pick(rng, {"right": 80, "wrong": 10, "missing": 10})
        aud = _pick(rng, {"right": 40, "right-in-array": 15, "wrong": 10, "wrong-array": 10, "missing": 15,
                          "right-url-form": 10})
        exp = _pick(rng, {"future": 50, "future-fractional": 5, "past-beyond-skew": 15, "past-within-skew": 15,
                          "missing": 15})
        nbf = _pick(rng, {"none": 70, "future-beyond-skew": 15, "future-within-skew": 15})
        tamper = _pick(rng, {"none": 60, "payload-swap": 14, "signature-bit-flip": 13, "signature-truncated": 13})

        body = {"sub": f"user-{i}", "iat": now - 5}
        if iss != "missing":
            body["iss"] = ISSUER if iss == "right" else "someone-else@example.com"
        body["aud"] = {"right": "svc-a", "right-in-array": ["other", "svc-b"], "wrong": "svc-z",
                       "wrong-array": ["x", "y"], "missing": None, "right-url-form": "https://svc-a/"}[aud]
        if body["aud"] is None:
            del body["aud"]
        if exp != "missing":
            body["exp"] = now + {"future": 3600, "future-fractional": 3600.5, "past-beyond-skew": -(SKEW + 240),
                                 "past-within-skew": -(SKEW // 2)}[exp]
        if nbf != "none":
            body["nbf"] = now + {"future-beyond-skew": SKEW + 240, "future-within-skew": SKEW // 2}[nbf]

        token = mint(key, alg, token_kid, body)
        if tamper == "payload-swap":
            token = swap_payload(token, {**body, "sub": "mallory"})
        elif tamper == "signature-bit-flip":
            token = tamper_signature(token)
        elif tamper == "signature-truncated":
            head, payload, sig = token.split(".")
            token = f"{head}.{payload}.{b64url(b64url_decode(sig)[:-4])}"
        corpus.append(Token(token, {"n": i, "alg": alg, "key": source, "kid": kid_mode, "iss": iss, "aud": aud,
                                    "exp": exp, "nbf": nbf, "tamper": tamper, "special": special}))
    return corpus


# --------------------------------------------------------------------------- classification


def expected_without_differences(t: Token) -> int:
    """What either verifier should answer for this token with the listed differences set aside."""
    d = t.desc
    if d["iss"] != "right":
        return 401
    if d["exp"] == "past-beyond-skew" or d["nbf"] == "future-beyond-skew":
        return 401
    if d["aud"] in ("wrong", "wrong-array", "missing"):
        return 403
    if d["tamper"] != "none" or d["key"] == "stranger":
        return 401
    return 200


def classify(t: Token, mesh: int, ref: int) -> str | None:
    """The intentional difference that explains mesh != ref, or None."""
    d = t.desc
    # Each listed difference makes mesh-authn refuse (401) a token Envoy accepts (200).
    if not (mesh == 401 and ref == 200 and expected_without_differences(t) == 200):
        return None
    if d["special"] == KID_ONLY and d["kid"] in ("present", "unknown"):
        return KID_ONLY  # Envoy also tries keys without a kid; mesh-authn only keys with the token's kid
    if d["special"] in (USE_NOT_SIG, RSA_SHORT):
        return d["special"]
    return None


def send(port: int, token: str) -> harness.Response:
    return harness.request(port, "GET", "/diff", [("Authorization", f"Bearer {token}")], timeout=10)


@pytest.mark.parametrize("mesh_scenario", [MESH, MESH_WASM])
def test_differential_against_envoy_jwt_authn(gateway, keys, capsys, mesh_scenario):
    started = time.monotonic()
    corpus = generate(keys)
    assert len(corpus) >= 500
    buckets: Counter = Counter()
    body_diffs: Counter = Counter()
    verdicts: Counter = Counter()
    unexplained: list[str] = []
    for t in corpus:
        mesh, ref = send(gateway.ports[mesh_scenario], t.token), send(gateway.ports[REF], t.token)
        assert mesh.status in (200, 401, 403) and ref.status in (200, 401, 403), (str(t), mesh.status, ref.status)
        verdicts[(mesh.status, ref.status)] += 1
        if mesh.status == ref.status:
            buckets["agreed"] += 1
            if mesh.status != 200 and mesh.text != ref.text:
                body_diffs[(mesh.text, ref.text)] += 1
            continue
        reason = classify(t, mesh.status, ref.status)
        if reason is None:
            unexplained.append(f"mesh-authn {mesh.status} {mesh.text!r} vs jwt_authn {ref.status} {ref.text!r}: "
                               f"{t}\n    {t.token[:120]}…")
            buckets["UNEXPLAINED"] += 1
        else:
            buckets[reason] += 1
    elapsed = time.monotonic() - started

    lines = [f"differential ({mesh_scenario}): {len(corpus)} tokens (seed {SEED}) in {elapsed:.1f}s",
             f"  {'total':<40} {len(corpus):>5}"]
    for name in ("agreed", KID_ONLY, USE_NOT_SIG, RSA_SHORT, "UNEXPLAINED"):
        lines.append(f"  {name:<40} {buckets.get(name, 0):>5}")
    lines.append("  verdicts (mesh-authn, jwt_authn): " +
                 ", ".join(f"{m}/{r}: {c}" for (m, r), c in sorted(verdicts.items())))
    if body_diffs:
        lines.append("  same status, different body (not a verdict difference):")
        lines += [f"    {c:>4} × mesh-authn {m!r} / jwt_authn {r!r}" for (m, r), c in body_diffs.most_common()]
    summary = "\n".join(lines)
    with capsys.disabled():
        print("\n" + summary)
    assert not unexplained, f"{len(unexplained)} unexplained disagreements:\n" + "\n".join(unexplained[:40])
    # every intentional-difference bucket was exercised, so the corpus keeps testing them
    for name in (KID_ONLY, USE_NOT_SIG, RSA_SHORT):
        assert buckets[name] > 0, f"the corpus no longer exercises {name!r}"
    assert buckets["agreed"] + sum(buckets[n] for n in (KID_ONLY, USE_NOT_SIG, RSA_SHORT)) == len(corpus)
    assert verdicts[(200, 200)] >= 50, "too few accepted tokens for a meaningful comparison"
