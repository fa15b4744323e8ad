"""Sender-constrained tokens in a real Envoy: `certificateBinding` (RFC 8705).

Envoy's `jwt_authn` and Istio have no such check, so there is no native reference here: the
expected answers are the RFCs'. A TLS listener requires and validates client certificates (as
docs/operating.md asks of any listener whose filter reads them); curl is the client, with
`--cert`; tokens carry `cnf.x5t#S256`, the base64url SHA-256 of a client certificate's DER.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
from dataclasses import dataclass

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

import harness
import mesh as M
from jwt_mint import b64url, claims, ec_key, jwks, mint

BOUND_ELSEWHERE = "Jwt is bound to a client certificate this connection did not present"
NOT_BOUND = "Jwt payload [cnf] has no valid [x5t#S256] certificate thumbprint"


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: str

    def upstream(self) -> dict:
        return json.loads(self.body)["headers"]


def thumbprint(ident: M.Identity) -> str:
    """RFC 8705's `x5t#S256` of a client certificate."""
    cert = x509.load_pem_x509_certificate(ident.cert_path.read_bytes())
    return b64url(hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).digest())


def curl(port: int, ident: M.Identity | None, token: str | None, path: str = "/ip") -> Answer:
    """One request over its own TLS connection, with `ident`'s certificate."""
    args = ["curl", "-sS", "-k", "-D", "-", "-o", "-", f"https://{harness.HOST}:{port}{path}"]
    if ident:
        args += ["--cert", str(ident.cert_path), "--key", str(ident.key_path)]
    if token:
        args += ["-H", f"Authorization: Bearer {token}"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    head, _, body = out.stdout.partition("\n\n")  # text mode reads CRLF as \n
    status_line, *lines = head.split("\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return Answer(int(status_line.split()[1]), headers, body)


def tls_listener(name: str, port: int, server: M.Identity, ca_path, plugin_config: dict) -> dict:
    """A listener that requires client certificates and validates them against `ca_path`."""
    lst = harness.listener(name, port, [harness.wasm_filter(name, plugin_config)])
    lst["filter_chains"][0]["transport_socket"] = {"name": M.TLS_SOCKET, "typed_config": {
        "@type": M.DOWNSTREAM_TLS,
        "require_client_certificate": True,
        "common_tls_context": {
            "tls_certificates": [M._tls_certificate(server)],
            "validation_context": {"trusted_ca": {"filename": str(ca_path)}}}}}
    return lst


@pytest.fixture(scope="module")
def bound(tmp_path_factory):
    """Listeners `required` and `optional` (certificateBinding), and `plain` (none), over one CA
    whose two clients are alice and bob."""
    workdir = tmp_path_factory.mktemp("sender-constrained")
    pki = M.Pki(workdir / "pki")
    server = pki.issue("server", M.spiffe_id("gateway", "ingress"), ips=[harness.HOST])
    alice = pki.issue("alice", M.spiffe_id("apps", "alice"))
    bob = pki.issue("bob", M.spiffe_id("apps", "bob"))
    key = ec_key("bound")
    rule = {"issuer": "https://idp.example.com", "jwks": jwks(key.jwk())}
    configs = {
        "required": {"jwtRules": [{**rule, "certificateBinding": "REQUIRED"}]},
        "optional": {"jwtRules": [{**rule, "certificateBinding": "OPTIONAL"}]},
        "plain": {"jwtRules": [rule]},
    }
    with harness.EchoServer() as upstream:
        ports = {name: harness.free_port() for name in configs}
        admin = harness.free_port()
        config = harness.bootstrap(
            admin,
            [tls_listener(n, ports[n], server, pki.ca_path, c) for n, c in configs.items()],
            [harness.static_cluster("echo", upstream.port)])
        envoy = harness.Envoy(config, workdir, admin, concurrency=2).start()
        try:
            envoy.wait_ready()
            for port in ports.values():
                harness.wait_for_port(port)

            def token(**extra) -> str:
                return mint(key, "ES256", claims=claims(iss="https://idp.example.com", **extra))

            yield {"envoy": envoy, "ports": ports, "alice": alice, "bob": bob, "token": token}
        finally:
            harness.assert_no_vm_crash(envoy.log_text(), "sender-constrained listeners")
            envoy.stop()


def test_a_bound_token_passes_only_over_its_own_certificate(bound):
    alice, bob, ports = bound["alice"], bound["bob"], bound["ports"]
    token = bound["token"](sub="alice", cnf={"x5t#S256": thumbprint(alice)})
    for listener in ("required", "optional"):
        port = ports[listener]
        # Twice each way: the second requests are answered from the token cache, which must not
        # carry a binding over from one connection to another.
        for _ in range(2):
            ok = curl(port, alice, token)
            assert ok.status == 200, (listener, ok)

            assert "authorization" not in ok.upstream()
            stolen = curl(port, bob, token)
            assert (stolen.status, stolen.body) == (401, BOUND_ELSEWHERE), (listener, stolen)
            assert stolen.headers["www-authenticate"] == (
                f'Bearer realm="https://{harness.HOST}:{port}/ip", error="invalid_token"')
        envoy = bound["envoy"]
        assert harness.filter_counter(envoy, listener, "jwt_cache_hit") >= 2, listener
        assert harness.filter_counter(envoy, listener, "refused_binding") >= 2, listener
    # Without certificateBinding the token is a bearer token, as in Envoy and Istio.
    assert curl(ports["plain"], bob, token).status == 200


def test_unbound_tokens_are_bearer_tokens_only_where_binding_is_optional(bound):
    token = bound["token"](sub="carol")
    required = curl(bound["ports"]["required"], bound["alice"], token)
    assert (required.status, required.body) == (401, NOT_BOUND)
    assert curl(bound["ports"]["optional"], bound["alice"], token).status == 200
    assert curl(bound["ports"]["plain"], bound["alice"], token).status == 200


@pytest.mark.parametrize("cnf", [
    "not an object",
    {"x5t#S256": 42},
    {"x5t#S256": None},
    {"x5t#S256": "too-short"},
    {"x5t#S256": "padded"},
    {"x5t#S256": "standard-alphabet"},
    {"x5t#S256": "hex"},
    {"x5t#S256": ["in a list"]},
])
def test_a_malformed_binding_is_refused_never_ignored(bound, cnf):
    good = thumbprint(bound["alice"])
    raw = hashlib.sha256(b"").digest()
    spelled = {"padded": good + "=", "too-short": good[:42], "hex": raw.hex(),
               # 43 characters, but "+/v7…": base64, not base64url
               "standard-alphabet": base64.b64encode(b"\xfb" * 32).decode().rstrip("=")}
    if isinstance(cnf, dict) and isinstance(cnf.get("x5t#S256"), str):
        cnf = {"x5t#S256": spelled[cnf["x5t#S256"]]}
    token = bound["token"](sub="mallory", cnf=cnf)
    for listener in ("required", "optional"):
        answer = curl(bound["ports"][listener], bound["alice"], token)
        assert (answer.status, answer.body) == (401, NOT_BOUND), (listener, cnf, answer)
    assert curl(bound["ports"]["plain"], bound["alice"], token).status == 200
