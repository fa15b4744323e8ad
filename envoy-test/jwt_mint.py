"""Real keys, JWKS documents and compact JWS tokens for the Envoy tests (no PyJWT)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

ISSUER = "testing@secure.istio.io"

_HASHES = {"256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512}
_HMAC_HASHES = {"256": hashlib.sha256, "384": hashlib.sha384, "512": hashlib.sha512}
_CURVES = {
    "P-256": (ec.SECP256R1, "ES256", 32),
    "P-384": (ec.SECP384R1, "ES384", 48),
    "P-521": (ec.SECP521R1, "ES512", 66),
}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _uint(value: int, size: int | None = None) -> str:
    size = size or max(1, (value.bit_length() + 7) // 8)
    return b64url(value.to_bytes(size, "big"))


@dataclass
class Key:
    """A signing key plus the kid/alg under which its public half is published."""

    kid: str
    alg: str
    private: object  # a cryptography private key, or bytes for an HMAC secret
    extra_jwk: dict = field(default_factory=dict)

    def jwk(self, kid: str | None = None, alg: str | None = "default") -> dict:
        """Public JWK. alg=None publishes the key without an "alg" member."""
        jwk = dict(_public_members(self.private))
        jwk["kid"] = kid or self.kid
        if alg is not None:
            jwk["alg"] = self.alg if alg == "default" else alg
        jwk["use"] = "sig"
        jwk.update(self.extra_jwk)
        return jwk

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def _public_members(private) -> dict:
    if isinstance(private, bytes):
        return {"kty": "oct", "k": b64url(private)}
    if isinstance(private, rsa.RSAPrivateKey):
        numbers = private.public_key().public_numbers()
        return {"kty": "RSA", "n": _uint(numbers.n), "e": _uint(numbers.e)}
    if isinstance(private, ec.EllipticCurvePrivateKey):
        crv = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}[private.curve.name]
        size = _CURVES[crv][2]
        numbers = private.public_key().public_numbers()
        return {"kty": "EC", "crv": crv, "x": _uint(numbers.x, size), "y": _uint(numbers.y, size)}
    if isinstance(private, ed25519.Ed25519PrivateKey):
        raw = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return {"kty": "OKP", "crv": "Ed25519", "x": b64url(raw)}
    raise TypeError(f"unsupported key type {type(private).__name__}")


def rsa_key(kid: str = "rsa", alg: str = "RS256", bits: int = 2048) -> Key:
    return Key(kid, alg, rsa.generate_private_key(public_exponent=65537, key_size=bits))


def ec_key(kid: str = "ec256", curve: str = "P-256") -> Key:
    curve_cls, alg, _ = _CURVES[curve]
    return Key(kid, alg, ec.generate_private_key(curve_cls()))


def ed25519_key(kid: str = "ed25519") -> Key:
    return Key(kid, "EdDSA", ed25519.Ed25519PrivateKey.generate())


def hmac_key(kid: str = "hmac", alg: str = "HS256", size: int = 32) -> Key:
    return Key(kid, alg, os.urandom(size))


def jwks(*jwks_members: dict) -> str:
    """A JWKS document as a JSON string, the form the filter's `jwks` field takes."""
    return json.dumps({"keys": list(jwks_members)})


def sign(private, alg: str, signing_input: bytes) -> bytes:
    family, bits = alg[:2], alg[2:]
    if alg == "EdDSA":
        return private.sign(signing_input)
    if family == "HS":
        secret = private if isinstance(private, bytes) else bytes(private)
        return hmac.new(secret, signing_input, _HMAC_HASHES[bits]).digest()
    if family == "RS":
        return private.sign(signing_input, padding.PKCS1v15(), _HASHES[bits]())
    if family == "PS":
        pss = padding.PSS(mgf=padding.MGF1(_HASHES[bits]()), salt_length=padding.PSS.DIGEST_LENGTH)
        return private.sign(signing_input, pss, _HASHES[bits]())
    if family == "ES":
        der = private.sign(signing_input, ec.ECDSA(_HASHES[bits]()))
        r, s = decode_dss_signature(der)
        size = (private.curve.key_size + 7) // 8
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")
    raise ValueError(f"cannot sign with alg {alg!r}")


def _segment(obj) -> str:
    raw = obj if isinstance(obj, bytes) else json.dumps(obj, separators=(",", ":")).encode()
    return b64url(raw)


def mint(key, alg: str | None = None, kid: str | None = "default", claims: dict | None = None,
         header_overrides: dict | None = None) -> str:
    """Compact JWS. `key` is a Key, a raw private key, or bytes (HMAC secret).

    kid="default" uses the Key's kid; kid=None omits it. A header override whose
    value is None removes that header member.
    """
    private = key.private if isinstance(key, Key) else key
    alg = alg or (key.alg if isinstance(key, Key) else None)
    if kid == "default":
        kid = key.kid if isinstance(key, Key) else None
    header = {"alg": alg, "typ": "JWT"}
    if kid is not None:
        header["kid"] = kid
    for name, value in (header_overrides or {}).items():
        if value is None:
            header.pop(name, None)
        else:
            header[name] = value
    signing_input = f"{_segment(header)}.{_segment(claims or {})}"
    signature = sign(private, alg, signing_input.encode("ascii"))
    return f"{signing_input}.{b64url(signature)}"


def unsigned(claims: dict, alg: str = "none", signature: str = "", kid: str | None = None) -> str:
    """A token that was never signed: `alg: none` or any made-up alg."""
    header = {"alg": alg, "typ": "JWT"}
    if kid is not None:
        header["kid"] = kid
    return f"{_segment(header)}.{_segment(claims)}.{signature}"


def tamper_signature(token: str) -> str:
    """Same header and payload, one signature bit flipped."""
    head, payload, sig = token.split(".")
    raw = bytearray(b64url_decode(sig))
    raw[len(raw) // 2] ^= 0x01
    return f"{head}.{payload}.{b64url(bytes(raw))}"


def swap_payload(token: str, claims: dict) -> str:
    """Replace the payload, keep the original signature."""
    head, _, sig = token.split(".")
    return f"{head}.{_segment(claims)}.{sig}"


def decode_segment(segment: str) -> dict:
    return json.loads(b64url_decode(segment))


def claims(sub: str = "alice", iss: str = ISSUER, lifetime: int | None = 3600, **extra) -> dict:
    """Typical claims: iss, sub, iat and exp = now + lifetime (lifetime=None: no exp)."""
    now = int(time.time())
    body = {"iss": iss, "sub": sub, "iat": now}
    if lifetime is not None:
        body["exp"] = now + lifetime
    body.update(extra)
    return {k: v for k, v in body.items() if v is not None}


RSA_ALGS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")


@dataclass
class KeyRing:
    """The keys a test session signs with. `stranger` is never published."""

    rsa: Key
    ec256: Key
    ec384: Key
    ec521: Key
    ed25519: Key
    hmac: Key
    stranger: Key

    @classmethod
    def generate(cls) -> "KeyRing":
        return cls(rsa=rsa_key("rsa"), ec256=ec_key("ec256", "P-256"), ec384=ec_key("ec384", "P-384"),
                   ec521=ec_key("ec521", "P-521"), ed25519=ed25519_key("ed25519"), hmac=hmac_key("hmac"), stranger=rsa_key("rsa"))

    def rsa_kid(self, alg: str) -> str:
        """The RSA key is published once per RSA alg, since a JWK's "alg" pins one algorithm."""
        return "rsa" if alg == "RS256" else f"rsa-{alg.lower()}"

    def jwk_list(self) -> list[dict]:
        rsa_jwks = [self.rsa.jwk(self.rsa_kid(alg), alg) for alg in RSA_ALGS]
        return [*rsa_jwks, self.ec256.jwk(), self.ec384.jwk(), self.ec521.jwk(), self.ed25519.jwk(), self.hmac.jwk()]

    def jwks(self) -> str:
        return jwks(*self.jwk_list())

    def for_alg(self, alg: str) -> tuple[Key, str]:
        """(key, kid) that a valid token with this alg is signed with."""
        if alg in RSA_ALGS:
            return self.rsa, self.rsa_kid(alg)
        key = {"ES256": self.ec256, "ES384": self.ec384, "ES512": self.ec521, "EdDSA": self.ed25519, "HS256": self.hmac}[alg]
        return key, key.kid


# --------------------------------------------------------------------------- DPoP (RFC 9449)


def jwk_thumbprint(public: dict) -> str:
    """RFC 7638: the SHA-256 of the key's required members, sorted, without spaces."""
    required = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n"), "OKP": ("crv", "kty", "x")}
    members = {k: public[k] for k in required[public["kty"]]}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    return b64url(hashlib.sha256(canonical).digest())


def ath(token: str) -> str:
    """A proof's `ath`: the access token's base64url SHA-256."""
    return b64url(hashlib.sha256(token.encode()).digest())


def dpop_proof(key, alg: str, htm: str, htu: str, token: str | None, *, jwk: dict | None = None,
               header: dict | None = None, **payload) -> str:
    """A DPoP proof by `key` (its public JWK in the header unless `jwk` is given), a fresh `jti` and
    `iat` now; every member overridable, None removing it."""
    body = {"jti": b64url(os.urandom(16)), "htm": htm, "htu": htu, "iat": int(time.time())}
    if token is not None:
        body["ath"] = ath(token)
    body.update(payload)
    body = {k: v for k, v in body.items() if v is not None}
    head = {"typ": "dpop+jwt", "jwk": jwk if jwk is not None else _public_members(key.private), "kid": None,
            **(header or {})}
    return mint(key, alg, kid=None, claims=body, header_overrides=head)
