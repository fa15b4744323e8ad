"""Hostile input through a real Envoy: every malformed, forged or oddly typed token is answered
401/403 with Envoy's reason text, never 200 or 5xx, and the module never panics.

Each case is sent to the mesh-authn listener (the assertion) and to a `-ref` listener running
Envoy's native jwt_authn configured alike; where the two answer differently the case lists the
reference's answer in REF_DIFFERS with the reason (see DIFFERENTIAL.md).

Cases that Envoy itself refuses before any HTTP filter runs (a header block over its 60 KiB
`max_request_headers_kb` default: 431) are marked `envoy_rejects`: there the filter is never asked.
For that reason the filter's own 64 KiB "Jwt is too large" limit cannot be reached through a
default Envoy listener (a token that large never gets past Envoy's header limit); the host unit
tests cover it.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from typing import Callable

import pytest
from cryptography.hazmat.primitives import serialization

import harness
from jwt_mint import ISSUER, b64url, b64url_decode, claims, mint, sign, tamper_signature, unsigned

MISSING = "Jwt is missing"
NOT_JWS = "Jwt is not in the form of Header.Payload.Signature with two dots and 3 sections"
HEADER_B64 = "Jwt header is an invalid Base64url encoded"
HEADER_JSON = "Jwt header is an invalid JSON"
HEADER_ALG = "Jwt header [alg] field is required and must be a string"
ALG_UNSUPPORTED = "Jwt header [alg] is not supported"
HEADER_KID = "Jwt header [kid] field is not a string"
CRIT = "Jwt header [crit] is not supported"
PAYLOAD_B64 = "Jwt payload is an invalid Base64url encoded"
PAYLOAD_JSON = "Jwt payload is an invalid JSON"
ISS_TYPE = "Jwt payload [iss] field is not a string"
SUB_TYPE = "Jwt payload [sub] field is not a string"
AUD_TYPE = "Jwt payload [aud] field is not a string or string list"
EXP_TYPE = "Jwt payload [exp] field is not an integer"
NBF_TYPE = "Jwt payload [nbf] field is not an integer"
IAT_TYPE = "Jwt payload [iat] field is not an integer"
EXP_RANGE = "Jwt payload [exp] field is not a positive 64 bit integer"
NBF_RANGE = "Jwt payload [nbf] field is not a positive 64 bit integer"
IAT_RANGE = "Jwt payload [iat] field is not a positive 64 bit integer"
SIG_B64 = "Jwt signature is an invalid Base64url encoded"
ISSUER_UNKNOWN = "Jwt issuer is not configured"
NO_KEY = "Jwks doesn't have key to match kid or alg from Jwt"
BAD_SIGNATURE = "Jwt verification fails"
AUD_DENIED = "Audiences in Jwt are not allowed"

OPTIONAL, REQUIRED, AUD = "bad-optional", "bad-required", "bad-aud"

# What a wasm module failing looks like in Envoy's log (Rust panics print "panicked at"; V8 traps
# and uncaught errors are logged by Envoy's wasm component).
PANIC_PATTERNS = re.compile(r"panicked at|Uncaught|wasm trap|RuntimeError|unreachable|"
                            r"Function: proxy_on_\w+ failed|Plugin configured to fail closed failed",
                            re.IGNORECASE)


def envoy_scenarios(keys) -> dict:
    rule = {"issuer": ISSUER, "jwks": keys.jwks()}
    configs = {
        OPTIONAL: {"jwtRules": [rule]},
        REQUIRED: {"jwtRules": [rule], "requireToken": True},
        AUD: {"jwtRules": [{**rule, "audiences": ["svc-a"]}]},
    }
    out: dict = {}
    for name, cfg in configs.items():
        out[name] = cfg
        out[f"{name}-ref"] = [harness.jwt_authn_filter(cfg)]
    return out


# --------------------------------------------------------------------------- token builders


def enc(obj) -> str:
    """base64url of raw bytes, a str (as UTF-8) or a JSON value (compact)."""
    if isinstance(obj, bytes):
        raw = obj
    elif isinstance(obj, str):
        raw = obj.encode()
    else:
        raw = json.dumps(obj, separators=(",", ":")).encode()
    return b64url(raw)


def rs256(keys, header, payload) -> str:
    """Signed with the published RSA key (RS256) whatever the header and payload say."""
    signing_input = f"{enc(header)}.{enc(payload)}"
    return f"{signing_input}.{b64url(sign(keys.rsa.private, 'RS256', signing_input.encode()))}"


def valid(keys, **claim_fields) -> str:
    return mint(keys.rsa, "RS256", "rsa", claims(**claim_fields))


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def hs256(secret: bytes, kid: str | None) -> str:
    header = {"alg": "HS256", "typ": "JWT", **({"kid": kid} if kid else {})}
    signing_input = f"{enc(header)}.{enc(claims())}"
    return f"{signing_input}.{b64url(sign(secret, 'HS256', signing_input.encode()))}"


def with_member(obj: dict, raw_member: str, first: bool = False) -> str:
    """`obj` as compact JSON with one more raw member (which may repeat a name) before or after."""
    body = json.dumps(obj, separators=(",", ":"))[1:-1]
    return "{" + (f"{raw_member},{body}" if first else f"{body},{raw_member}") + "}"


def rsa_pem(keys) -> bytes:
    return keys.rsa.public_pem()


def rsa_der(keys) -> bytes:
    return keys.rsa.private.public_key().public_bytes(serialization.Encoding.DER,
                                                      serialization.PublicFormat.SubjectPublicKeyInfo)


def rsa_n(keys) -> bytes:
    return b64url_decode(keys.rsa.jwk()["n"])


def noncanonical_signature(token: str) -> str:
    """The same signature bytes, but the last base64url character carries non-zero padding bits."""
    head, payload, sig = token.split(".")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    unused_bits = {2: 4, 3: 2}[len(sig) % 4]  # 256-byte RSA signature: 342 chars, 4 spare bits
    last = alphabet.index(sig[-1])
    return f"{head}.{payload}.{sig[:-1]}{alphabet[last | ((1 << unused_bits) - 1)]}"


# --------------------------------------------------------------------------- the corpus


@dataclass
class Case:
    id: str
    why: str
    build: Callable  # keys -> (path, [(header, value)])
    status: int
    body: str | None  # exact body; None: not checked (Envoy's own error page)
    scenario: str = OPTIONAL
    envoy_rejects: bool = False  # answered by Envoy before the filter runs


def in_header(make) -> Callable:
    return lambda k: ("/bad", [("Authorization", f"Bearer {make(k)}")])


def in_query(make) -> Callable:
    return lambda k: (f"/bad?access_token={make(k)}", [])


CASES = [
    # shape
    Case("two-segments", "a JWS has exactly three segments",
         in_header(lambda k: valid(k).rsplit(".", 1)[0]), 401, NOT_JWS),
    Case("four-segments", "a fourth segment (JWE-like) is not a JWS",
         in_header(lambda k: valid(k) + ".c2ln"), 401, NOT_JWS),
    Case("only-dots", "three empty segments",
         in_header(lambda k: ".."), 401, HEADER_JSON),
    # base64
    Case("header-bad-base64", "'@' is not base64url",
         in_header(lambda k: "@@@@." + valid(k).split(".", 1)[1]), 401, HEADER_B64),
    Case("payload-bad-base64", "'@' is not base64url",
         in_header(lambda k: "{0}.@@@@.{2}".format(*valid(k).split("."))), 401, PAYLOAD_B64),
    Case("signature-bad-base64", "'@' is not base64url",
         in_header(lambda k: "{0}.{1}.@@@@".format(*valid(k).split("."))), 401, SIG_B64),
    Case("signature-standard-base64", "'+' and '/' belong to base64, not base64url",
         in_header(lambda k: "{0}.{1}.ab+/".format(*valid(k).split("."))), 401, SIG_B64),
    Case("signature-noncanonical-base64", "trailing bits of the last base64url character must be zero "
         "(RFC 4648 §3.5); the filter refuses such an encoding",
         in_header(lambda k: noncanonical_signature(valid(k))), 401, SIG_B64),
    # header JSON
    Case("header-not-json", "the header must be a JSON object",
         in_header(lambda k: f"{enc(b'not json')}.{enc(claims())}.c2ln"), 401, HEADER_JSON),
    Case("header-json-array", "a JSON array is not a JOSE header",
         in_header(lambda k: f"{enc(['RS256'])}.{enc(claims())}.c2ln"), 401, HEADER_JSON),
    Case("header-json-string", "a JSON string is not a JOSE header",
         in_header(lambda k: f"{enc('RS256')}.{enc(claims())}.c2ln"), 401, HEADER_JSON),
    Case("header-deep-nesting", "10 000 nested arrays: refused by the JSON depth limit, no stack overflow",
         in_header(lambda k: enc('{"alg":"RS256","x":' + nested(10000) + '}') + f".{enc(claims())}.c2ln"),
         401, HEADER_JSON),
    Case("header-no-alg", "alg is required",
         in_header(lambda k: rs256(k, {"kid": "rsa"}, claims())), 401, HEADER_ALG),
    Case("header-alg-number", "alg must be a string",
         in_header(lambda k: rs256(k, {"alg": 256, "kid": "rsa"}, claims())), 401, HEADER_ALG),
    Case("header-kid-number", "kid must be a string",
         in_header(lambda k: rs256(k, {"alg": "RS256", "kid": 1}, claims())), 401, HEADER_KID),
    # payload JSON
    Case("payload-not-json", "the payload must be a JSON object",
         in_header(lambda k: f"{enc({'alg': 'RS256'})}.{enc(b'{not json')}.c2ln"), 401, PAYLOAD_JSON),
    Case("payload-json-array", "a JSON array is not a claims set",
         in_header(lambda k: rs256(k, {"alg": "RS256", "kid": "rsa"}, [ISSUER])), 401, PAYLOAD_JSON),
    Case("payload-deep-nesting", "10 000 nested arrays in a claim: refused by the JSON depth limit",
         in_header(lambda k: rs256(k, {"alg": "RS256", "kid": "rsa"},
                                   '{"iss":"' + ISSUER + '","x":' + nested(10000) + '}')), 401, PAYLOAD_JSON),
    # size
    Case("large-token-in-header-50k", "a 50 KB token (fits Envoy's 60 KiB header limit) with a forged signature",
         in_header(lambda k: tamper_signature(valid(k, pad="x" * 37000))), 401, BAD_SIGNATURE),
    Case("large-garbage-in-header-58k", "58 KB of base64url without dots",
         in_header(lambda k: "A" * 58000), 401, NOT_JWS),
    Case("large-token-in-query-50k", "the same 50 KB forged token as a query parameter",
         in_query(lambda k: tamper_signature(valid(k, pad="x" * 37000))), 401, BAD_SIGNATURE),
    Case("huge-token-in-header-70k", "70 KB header: Envoy answers 431 before any filter runs",
         in_header(lambda k: tamper_signature(valid(k, pad="x" * 52000))), 431, None, envoy_rejects=True),
    Case("huge-token-in-query-1m", "1 MB query parameter: Envoy answers 431 (request line counts toward "
         "the 60 KiB header limit) before any filter runs",
         in_query(lambda k: tamper_signature(valid(k, pad="x" * 780000))), 431, None, envoy_rejects=True),
    # algorithms
    Case("alg-none-no-signature", "unsigned tokens are never accepted",
         in_header(lambda k: unsigned(claims())), 401, ALG_UNSUPPORTED),
    Case("alg-none-with-signature", "alg none with a signature segment",
         in_header(lambda k: unsigned(claims(), kid="rsa", signature="c2ln")), 401, ALG_UNSUPPORTED),
    Case("alg-NONE-uppercase", "case variants of none are not algorithms either",
         in_header(lambda k: unsigned(claims(), alg="NONE", signature="")), 401, ALG_UNSUPPORTED),
    Case("alg-confusion-hs256-pem-kid", "HS256 keyed with the RSA public key (PEM) naming the RSA kid: the "
         "RSA JWK pins RS256, so no key matches", in_header(lambda k: hs256(rsa_pem(k), "rsa")), 401, NO_KEY),
    Case("alg-confusion-hs256-der-kid", "HS256 keyed with the RSA public key (DER)",
         in_header(lambda k: hs256(rsa_der(k), "rsa")), 401, NO_KEY),
    Case("alg-confusion-hs256-n-kid", "HS256 keyed with the RSA modulus (JWK n)",
         in_header(lambda k: hs256(rsa_n(k), "rsa")), 401, NO_KEY),
    Case("alg-confusion-hs256-pem-nokid", "HS256/PEM without kid: only the real oct key is tried, and fails",
         in_header(lambda k: hs256(rsa_pem(k), None)), 401, BAD_SIGNATURE),
    Case("alg-confusion-hs256-der-nokid", "HS256/DER without kid",
         in_header(lambda k: hs256(rsa_der(k), None)), 401, BAD_SIGNATURE),
    Case("alg-confusion-hs256-n-nokid", "HS256/n without kid",
         in_header(lambda k: hs256(rsa_n(k), None)), 401, BAD_SIGNATURE),
    Case("crit-exp", "a crit extension the verifier does not understand (RFC 7515 §4.1.11)",
         in_header(lambda k: rs256(k, {"alg": "RS256", "kid": "rsa", "crit": ["exp"], "exp": 1}, claims())),
         401, CRIT),
    Case("crit-empty", "crit present at all (even empty, which RFC 7515 forbids)",
         in_header(lambda k: rs256(k, {"alg": "RS256", "kid": "rsa", "crit": []}, claims())), 401, CRIT),
    # kid
    Case("kid-path-traversal", "a kid is an opaque name, never a path",
         in_header(lambda k: mint(k.rsa, "RS256", "../../etc/passwd", claims())), 401, NO_KEY),
    Case("kid-sql", "a kid is an opaque name, never a query",
         in_header(lambda k: mint(k.rsa, "RS256", "' OR 1=1 --", claims())), 401, NO_KEY),
    Case("kid-nul", "NUL bytes inside a kid do not truncate it to 'rsa'",
         in_header(lambda k: mint(k.rsa, "RS256", "rsa\u0000evil", claims())), 401, NO_KEY),
    Case("kid-very-long", "a 20 000 character kid",
         in_header(lambda k: mint(k.rsa, "RS256", "k" * 20000, claims())), 401, NO_KEY),
    # several tokens
    Case("duplicate-authorization-valid-and-bad", "Envoy joins repeated Authorization headers with ',' into "
         "one value, 'Bearer <h.p.s>,Bearer deadbeef': its third segment 's,Bearer deadbeef' is not base64url",
         lambda k: ("/bad", [("Authorization", f"Bearer {valid(k)}"), ("Authorization", "Bearer deadbeef")]),
         401, SIG_B64),
    Case("duplicate-authorization-bad-and-valid", "the same, bad one first: the first segment is "
         "'deadbeef,Bearer <h>'",
         lambda k: ("/bad", [("Authorization", "Bearer deadbeef"), ("Authorization", f"Bearer {valid(k)}")]),
         401, HEADER_B64),
    Case("duplicate-authorization-two-valid", "two valid tokens joined with ',' are not one JWS either",
         lambda k: ("/bad", [("Authorization", f"Bearer {valid(k)}"),
                             ("Authorization", f"Bearer {valid(k, sub='bob')}")]), 401, NOT_JWS),
    Case("valid-header-bad-query", "every token present must verify: a bad ?access_token= fails the "
         "request even with a valid Authorization token",
         lambda k: ("/bad?access_token=deadbeef", [("Authorization", f"Bearer {valid(k)}")]), 401, NOT_JWS),
    # a member named twice (validly signed): Envoy's parser refuses it, serde_json would keep the last
    Case("header-alg-none-then-rs256", "alg twice: a reader taking the first sees 'none'",
         in_header(lambda k: rs256(k, with_member({"alg": "RS256", "kid": "rsa"}, '"alg":"none"', first=True),
                                   claims())), 401, HEADER_JSON),
    Case("header-alg-rs256-then-none", "alg twice, the other order",
         in_header(lambda k: rs256(k, with_member({"alg": "RS256", "kid": "rsa"}, '"alg":"none"'), claims())),
         401, HEADER_JSON),
    Case("header-kid-twice", "kid twice: which key is meant depends on the reader",
         in_header(lambda k: rs256(k, with_member({"alg": "RS256", "kid": "rsa"}, '"kid":"other"'), claims())),
         401, HEADER_JSON),
    Case("payload-exp-twice", "an expired exp, then a future one",
         in_header(lambda k: rs256(k, {"alg": "RS256", "kid": "rsa"},
                                   with_member(claims(), f'"exp":{int(time.time()) - 86400}', first=True))),
         401, PAYLOAD_JSON),
    Case("payload-iss-twice", "another issuer first, the configured one last",
         in_header(lambda k: rs256(k, {"alg": "RS256", "kid": "rsa"},
                                   with_member(claims(), '"iss":"https://evil.example"', first=True))),
         401, PAYLOAD_JSON),
    Case("payload-aud-twice", "an allowed audience and another",
         in_header(lambda k: rs256(k, {"alg": "RS256", "kid": "rsa"},
                                   with_member(claims(aud="svc-a"), '"aud":"svc-b"'))), 401, PAYLOAD_JSON, AUD),
    Case("payload-sub-twice", "the request principal would depend on the reader",
         in_header(lambda k: rs256(k, {"alg": "RS256", "kid": "rsa"},
                                   with_member(claims(), '"sub":"admin"'))), 401, PAYLOAD_JSON),
    Case("payload-nested-member-twice", "a member twice inside a claim's object",
         in_header(lambda k: rs256(k, {"alg": "RS256", "kid": "rsa"},
                                   with_member(claims(), '"groups":{"role":"user","role":"admin"}'))),
         401, PAYLOAD_JSON),
    # NumericDates as Envoy reads them: a double in [0, 2^64), truncated
    Case("exp-u64-max", "18446744073709551615 is 2^64 as a double: out of range, not 'never expires'",
         in_header(lambda k: valid(k, lifetime=None, exp=2**64 - 1)), 401, EXP_RANGE),
    Case("exp-2-to-64", "2^64 itself",
         in_header(lambda k: valid(k, lifetime=None, exp=2**64)), 401, EXP_RANGE),
    Case("iat-negative", "iat is parsed like exp",
         in_header(lambda k: valid(k, iat=-1)), 401, IAT_RANGE),
    Case("nbf-huge", "nbf beyond 2^64",
         in_header(lambda k: valid(k, nbf=1e20)), 401, NBF_RANGE),
    Case("iat-string", "iat must be a NumericDate",
         in_header(lambda k: valid(k, iat="now")), 401, IAT_TYPE),
    Case("exp-fraction", "a fractional exp in the future is truncated, and the token passes",
         in_header(lambda k: valid(k, lifetime=None, exp=time.time() + 3600.75)), 200, None),
    Case("exp-zero", "exp 0 is 1970: expired (jwt_verify_lib reads 0 as no exp, so Envoy lets it pass)",
         in_header(lambda k: valid(k, lifetime=None, exp=0)), 401, "Jwt is expired"),
    Case("exp-half-second", "exp 0.5 truncates to 0: expired here, no exp to Envoy",
         in_header(lambda k: valid(k, lifetime=None, exp=0.5)), 401, "Jwt is expired"),
    Case("exp-fraction-past", "a fractional exp in the past",
         in_header(lambda k: valid(k, lifetime=None, exp=time.time() - 7200.5)), 401, "Jwt is expired"),
    # claims of the wrong type (all validly signed)
    Case("exp-string", "exp must be a NumericDate",
         in_header(lambda k: valid(k, lifetime=None, exp=str(int(time.time()) + 3600))), 401, EXP_TYPE),
    Case("exp-negative", "a negative NumericDate",
         in_header(lambda k: valid(k, lifetime=None, exp=-1)), 401, EXP_RANGE),
    Case("exp-float-huge", "1e300 is beyond any integer time",
         in_header(lambda k: valid(k, lifetime=None, exp=1e300)), 401, EXP_RANGE),
    Case("exp-1e30", "a validly signed token whose exp is 1e30 (a float beyond uint64)",
         in_header(lambda k: valid(k, lifetime=None, exp=1e30)), 401, EXP_RANGE),
    Case("nbf-bool", "nbf must be a NumericDate",
         in_header(lambda k: valid(k, nbf=True)), 401, NBF_TYPE),
    Case("aud-object", "aud is a string or a string list",
         in_header(lambda k: valid(k, aud={"svc-a": True})), 401, AUD_TYPE, AUD),
    Case("aud-array-with-number", "every aud entry must be a string",
         in_header(lambda k: valid(k, aud=["svc-a", 7])), 401, AUD_TYPE, AUD),
    Case("iss-number", "iss must be a string",
         in_header(lambda k: valid(k, iss=12345)), 401, ISS_TYPE),
    Case("sub-object", "sub must be a string",
         in_header(lambda k: valid(k, sub={"name": "alice"})), 401, SUB_TYPE),
    # issuers
    Case("issuer-trailing-slash", "issuers compare exactly: 'testing@secure.istio.io/' is another issuer",
         in_header(lambda k: valid(k, iss=ISSUER + "/")), 401, ISSUER_UNKNOWN),
    Case("issuer-cyrillic-e", "a Cyrillic 'е' (U+0435) look-alike is another issuer",
         in_header(lambda k: valid(k, iss=ISSUER.replace("e", "\u0435", 1))), 401, ISSUER_UNKNOWN),
    Case("aud-lookalike", "audiences compare exactly (after scheme/slash sanitizing)",
         in_header(lambda k: valid(k, aud="svc-\u0430")), 403, AUD_DENIED, AUD),
    # whitespace and prefixes
    Case("tab-inside-signature", "whitespace inside a segment is not base64url",
         in_header(lambda k: (lambda t: t[:-10] + "\t" + t[-10:])(valid(k))), 401, SIG_B64),
    Case("space-inside-payload", "whitespace inside a segment is not base64url",
         in_header(lambda k: (lambda h, p, s: f"{h}.{p[:8]} {p[8:]}.{s}")(*valid(k).split("."))), 401, PAYLOAD_B64),
    Case("newline-in-query-token", "an encoded newline (%0A) is not decoded into the token, and is not base64url",
         in_query(lambda k: (lambda h, p, s: f"{h}.{p[:8]}%0A{p[8:]}.{s}")(*valid(k).split("."))), 401, PAYLOAD_B64),
    Case("lowercase-bearer-required", "the prefix is case-sensitive: 'bearer <token>' is no token at all",
         lambda k: ("/bad", [("Authorization", f"bearer {valid(k)}")]), 401, MISSING, REQUIRED),
    Case("empty-after-prefix-required", "'Bearer ' with nothing after it is no token",
         lambda k: ("/bad", [("Authorization", "Bearer ")]), 401, MISSING, REQUIRED),
    Case("empty-after-prefix-optional", "no token and none required: passes (the only 200 here)",
         lambda k: ("/bad", [("Authorization", "Bearer ")]), 200, None, OPTIONAL),
    Case("typ-jwe-forged", "typ is not checked (as in Envoy); the forged signature is what fails",
         in_header(lambda k: tamper_signature(mint(k.rsa, "RS256", "rsa", claims(),
                                                   header_overrides={"typ": "JWE"}))), 401, BAD_SIGNATURE),
    Case("typ-number-forged", "typ: 5 is not checked (as in Envoy); the forged signature fails",
         in_header(lambda k: tamper_signature(mint(k.rsa, "RS256", "rsa", claims(),
                                                   header_overrides={"typ": 5}))), 401, BAD_SIGNATURE),
    Case("typ-missing-expired", "no typ, expired beyond the skew",
         in_header(lambda k: mint(k.rsa, "RS256", "rsa", claims(lifetime=-3600),
                                  header_overrides={"typ": None})), 401, "Jwt is expired"),
]

# Validly signed tokens whose only oddity is `typ`: accepted by mesh-authn AND by Envoy's
# jwt_authn (RFC 7519 §5.1: typ is for applications; neither verifier checks it).
TYP_ACCEPTED = {
    "typ-jwe": {"typ": "JWE"},
    "typ-number": {"typ": 5},
    "typ-missing": {"typ": None},
}

# Where Envoy's jwt_authn answers differently: (status, body, why). See DIFFERENTIAL.md.
REF_DIFFERS: dict[str, tuple[int, str | None, str]] = {
    "only-dots": (401, NOT_JWS, "Envoy checks for empty segments first; same status"),
    "header-bad-base64": (401, NOT_JWS, "Envoy reports any undecodable header as a shape error; same status"),
    "alg-none-no-signature": (401, NOT_JWS, "docs/behaviour.md: alg none says 'alg not supported' even with an empty "
                              "signature segment; Envoy fails the shape check on the empty segment"),
    "alg-NONE-uppercase": (401, NOT_JWS, "as alg-none-no-signature (empty signature segment)"),
    "space-inside-payload": (401, BAD_SIGNATURE, "Envoy's base64 decoder skips whitespace, so it gets as far "
                             "as the signature, which covers the segment with the space; same status"),
    "newline-in-query-token": (401, BAD_SIGNATURE, "as space-inside-payload ('%0A' is not decoded by either)"),
    "exp-zero": (200, None, "jwt_verify_lib keeps a missing exp as 0 and checks exp only when non-zero, "
                 "so exp: 0 never expires there; mesh-authn reads it as 1970-01-01 (docs/behaviour.md: differences)"),
    "exp-half-second": (200, None, "as exp-zero: 0.5 truncates to 0"),
    # mesh-authn is stricter (docs/behaviour.md's list of intentional differences):
    "crit-exp": (200, None, "Envoy ignores `crit`; mesh-authn refuses tokens naming critical extensions "
                 "it does not understand, as RFC 7515 §4.1.11 requires"),
    "crit-empty": (200, None, "as crit-exp"),
    "signature-noncanonical-base64": (200, None, "Envoy's base64url decoder ignores non-zero trailing bits; "
                                      "mesh-authn refuses non-canonical encodings (RFC 4648 §3.5): a segment's "
                                      "only other accepted spelling is with `=` padding, as in Envoy"),
    "tab-inside-signature": (200, None, "Envoy's base64url decoder skips whitespace inside a segment; "
                             "mesh-authn does not"),
}

def _params(cases):
    return [pytest.param(c, id=c.id) for c in cases]


def _send(gateway, scenario: str, case: Case, keys) -> harness.Response:
    path, headers = case.build(keys)
    return harness.request(gateway.ports[scenario], "GET", path, headers, timeout=20)


def _assert_no_panic(gateway, since: int) -> None:
    time.sleep(0.05)
    hits = [line for line in gateway.envoy.log_text(since).splitlines() if PANIC_PATTERNS.search(line)]
    assert not hits, "wasm failure in the Envoy log:\n" + "\n".join(hits[:10])


@pytest.fixture(scope="module")
def log_mark(gateway):
    return gateway.envoy.log_size()


@pytest.mark.parametrize("case", _params(CASES))
def test_bad_input_refused(gateway, keys, case, log_mark):
    mark = gateway.envoy.log_size()
    resp = _send(gateway, case.scenario, case, keys)
    assert resp.status < 500, f"{case.id}: {resp.status} {resp.text!r} ({case.why})"
    bodies = case.body if isinstance(case.body, tuple) else (case.body,)
    if case.body is None:
        assert resp.status == case.status, f"{case.id}: {resp.status} {resp.text!r} ({case.why})"
    else:
        assert (resp.status, resp.text) in [(case.status, b) for b in bodies], \
            f"{case.id}: got {resp.status} {resp.text!r}, want {case.status} {case.body!r} ({case.why})"
    if case.status in (401, 403) and not case.envoy_rejects:
        challenge = resp.headers.get("www-authenticate", [""])[0]
        assert challenge.startswith('Bearer realm="http://'), challenge
        if case.body != MISSING:
            assert challenge.endswith('error="invalid_token"'), challenge
            assert "access_token" not in challenge, "the realm must never echo the token"
    if case.status == 200:
        assert resp.upstream["path"] == "/bad"
    _assert_no_panic(gateway, mark)


@pytest.mark.parametrize("case", _params(CASES))
def test_bad_input_reference(gateway, keys, case):
    """Envoy's jwt_authn on the same input: equal answers, or a documented difference."""
    mine = _send(gateway, case.scenario, case, keys)
    ref = _send(gateway, f"{case.scenario}-ref", case, keys)
    if case.id in REF_DIFFERS:
        want_status, want_body, _why = REF_DIFFERS[case.id]
        assert ref.status == want_status, (case.id, ref.status, ref.text)
        if want_body is not None:
            assert ref.text == want_body, (case.id, ref.text)
        return
    assert (ref.status, ref.text if case.body is not None else None) == \
        (mine.status, mine.text if case.body is not None else None), \
        f"{case.id}: mesh-authn {mine.status} {mine.text!r} vs jwt_authn {ref.status} {ref.text!r}"


@pytest.mark.parametrize("scenario", [OPTIONAL, f"{OPTIONAL}-ref"])
@pytest.mark.parametrize("case", TYP_ACCEPTED)
def test_typ_oddities_with_valid_signature_accepted_like_envoy(gateway, keys, scenario, case):
    token = mint(keys.rsa, "RS256", "rsa", claims(), header_overrides=TYP_ACCEPTED[case])
    mark = gateway.envoy.log_size()
    resp = gateway.get(scenario, "/typ", [("Authorization", f"Bearer {token}")])
    assert resp.status == 200, (resp.status, resp.text)
    assert "authorization" not in resp.upstream["headers"]
    _assert_no_panic(gateway, mark)


@pytest.mark.parametrize("scenario", [OPTIONAL, f"{OPTIONAL}-ref"])
def test_lowercase_bearer_is_no_token(gateway, keys, scenario):
    """Not required: passes, and the header is not consumed (it was never a token)."""
    value = f"bearer {valid(keys)}"
    resp = gateway.get(scenario, "/lc", [("Authorization", value)])
    assert resp.status == 200
    assert resp.upstream["headers"]["authorization"] == [value]


@pytest.mark.parametrize("scenario", [OPTIONAL, f"{OPTIONAL}-ref"])
def test_whitespace_around_token_is_trimmed(gateway, keys, scenario):
    resp = gateway.get(scenario, "/ws", [("Authorization", f"Bearer   {valid(keys)}  ")])
    assert resp.status == 200
    assert "authorization" not in resp.upstream["headers"]


def test_no_wasm_failure_logged_during_module(gateway, log_mark):
    """Runs last in this module: nothing anywhere in the log since the module started."""
    _assert_no_panic(gateway, log_mark)
    # the module is still alive and answering
    assert gateway.get(OPTIONAL, "/alive", [("Authorization", "Bearer deadbeef")]).status == 401
