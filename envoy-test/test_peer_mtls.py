"""Istio's "Authentication Policy" task (mutual TLS migration) with real Envoy sidecars on 127.0.0.1.

One mesh per module (see mesh.py): server sidecars for httpbin.foo / httpbin.bar (two inbound
ports each, mTLS and plaintext on the same port, the mesh-authn filter deciding), client sidecars
curl.foo / curl.bar (auto-mTLS) and curl.evil (namespace foo, foreign trust domain), the legacy
namespace without sidecars. Only the server sidecars restart when the policy set changes.

`pytest -s envoy-test/test_peer_mtls.py` prints each reachability table like the task does.
A rejection is a 401 with body "Peer authentication failed." (the filter cannot close the
connection from an HTTP filter, so it never shows as a reset).
"""

from __future__ import annotations

import json
import subprocess

import pytest

import harness
import mesh as M
from mesh import PEER_AUTHN_FAILED, PRINCIPAL_HEADER, peer_authentication, peer_config, principal

XFCC = "x-forwarded-client-cert"
HTTPBIN = {"app": "httpbin"}


@pytest.fixture(scope="module")
def mesh(wasm_module, tmp_path_factory):
    m = M.Mesh(tmp_path_factory.mktemp("mesh"), wasm_module)
    try:
        m.start({})
    except harness.EnvoyStartError as err:
        pytest.fail(f"the mesh did not start with pluginConfig {{}}:\n{err}", pytrace=False)
    yield m
    m.stop()
    m.assert_no_vm_crash()


def server_logs(mesh, lines: int = 25) -> str:
    return "\n".join(f"--- httpbin.{ns} sidecar log ({s.envoy.log_path}):\n{s.envoy.log_tail(lines)}"
                     for ns, s in mesh.servers.items() if s.envoy)


def apply(mesh, cfg: dict) -> None:
    try:
        mesh.apply(cfg)
    except harness.EnvoyStartError as err:
        pytest.fail(f"a server sidecar refused pluginConfig {json.dumps(cfg)}:\n{err}", pytrace=False)


def is_rejected(cell: M.Cell) -> bool:
    return cell.rejected_by_peer_authn


def check_matrix(mesh, title: str, rejected=(), port: str = "http", principals=("foo", "bar")):
    """Print the table and assert it: cells in `rejected` are rejected, every other cell is 200.
    On every 200 from a plaintext caller the app must see no peer principal; every 200 from a
    sidecar'd caller to httpbin.<ns>, ns in `principals`, carries the caller's principal (leave out
    workloads whose port is DISABLE: nothing specifies the header there)."""
    cells = mesh.matrix(title, port)
    problems = []
    for (src, dst), cell in cells.items():
        where = f"GET /ip curl.{src} -> httpbin.{dst}{'' if dst == 'legacy' else ':' + port}"
        if (src, dst) in rejected:
            if not is_rejected(cell):
                problems.append(f"{where}: expected 401 {PEER_AUTHN_FAILED!r} (or 000), got {cell!r}")
            continue
        if cell.status != 200:
            problems.append(f"{where}: expected 200, got {cell!r}")
            continue
        if dst == "legacy":
            continue
        seen = cell.upstream_headers(PRINCIPAL_HEADER)
        if src == "legacy" and seen:
            problems.append(f"{where} (plaintext): app saw {PRINCIPAL_HEADER}: {seen}, expected none")
        if src != "legacy" and dst in principals and seen != [principal(src, "curl")]:
            problems.append(f"{where} (mTLS): app saw {PRINCIPAL_HEADER}: {seen}, "
                            f"expected [{principal(src, 'curl')!r}]")
    assert not problems, "\n".join(problems) + "\n" + M.format_matrix(cells, title, port) + \
        "\n" + server_logs(mesh)
    return cells


def hcm_requests(server, port: int) -> dict[str, int]:
    return {chain: sum(M.stats(server.envoy, f"http.inbound_{port}_{chain}.downstream_rq_total").values())
            for chain in ("tls", "plaintext")}


# --------------------------------------------------------------------------- the mesh itself


def test_mesh_without_policies_uses_mtls_between_sidecars(mesh):
    """pluginConfig {}: everything 200; sidecar-to-sidecar traffic really is mTLS with the SPIFFE
    identities, legacy traffic really is plaintext (listener, HCM and cluster stats, XFCC)."""
    apply(mesh, {})
    before = {ns: hcm_requests(s, s.ports["http"]) for ns, s in mesh.servers.items()}
    check_matrix(mesh, "pluginConfig {}", principals=())
    check_matrix(mesh, "pluginConfig {}", port="alt", principals=())

    for ns, server in mesh.servers.items():
        after = hcm_requests(server, server.ports["http"])
        # main port: curl.foo and curl.bar over mTLS, curl.legacy in plaintext
        assert after["tls"] - before[ns]["tls"] == 2, (ns, before[ns], after)
        assert after["plaintext"] - before[ns]["plaintext"] == 1, (ns, before[ns], after)
        handshakes = M.stats(server.envoy, f"listener.127.0.0.1_{server.ports['http']}.ssl.handshake")
        assert sum(handshakes.values()) >= 1, handshakes

    for client in ("foo", "bar"):
        sidecar = mesh.clients[client]
        tls = M.stats(sidecar, "httpbin.foo.svc.cluster.local.ssl.handshake")
        assert sum(tls.values()) >= 1, tls
        legacy = M.stats(sidecar, "httpbin.legacy.svc.cluster.local.ssl.handshake")
        assert sum(legacy.values()) == 0, legacy  # plaintext cluster

    cell = mesh.call("foo", "bar")
    (xfcc,) = cell.upstream_headers(XFCC)
    assert "By=spiffe://cluster.local/ns/bar/sa/httpbin" in xfcc and \
        xfcc.endswith("URI=spiffe://cluster.local/ns/foo/sa/curl"), xfcc
    cell = mesh.call("evil", "foo", "alt")
    assert cell.status == 200 and cell.upstream_headers(XFCC)[0].endswith(
        "URI=spiffe://evil.local/ns/foo/sa/curl"), cell
    assert mesh.call("legacy", "bar").upstream_headers(XFCC) == []


# --------------------------------------------------------------------------- the task's steps


def test_no_policy(mesh):
    check_matrix_after(mesh, "no PeerAuthentication", peer_config())


def check_matrix_after(mesh, title, cfg, rejected=(), **kw):
    apply(mesh, cfg)
    return check_matrix(mesh, title, rejected, **kw)


def test_peer_principal_header(mesh):
    apply(mesh, peer_config())
    for src, dst, port in [("foo", "bar", "http"), ("foo", "bar", "alt"), ("bar", "foo", "http"),
                           ("bar", "bar", "alt")]:
        cell = mesh.call(src, dst, port)
        assert cell.status == 200, cell
        assert cell.upstream_headers(PRINCIPAL_HEADER) == [f"cluster.local/ns/{src}/sa/curl"], \
            (src, dst, port, cell.upstream["headers"])
    print(f"curl.foo to httpbin.bar: {PRINCIPAL_HEADER}: "
          f"{mesh.call('foo', 'bar').upstream_headers(PRINCIPAL_HEADER)}")


def test_spoofed_principal_header_is_not_forwarded(mesh):
    apply(mesh, peer_config())
    forged = "cluster.local/ns/istio-system/sa/admin"
    for headers in ([(PRINCIPAL_HEADER, forged)],
                    [(PRINCIPAL_HEADER.upper(), forged)],
                    [(PRINCIPAL_HEADER, forged), (PRINCIPAL_HEADER, "cluster.local/ns/bar/sa/x")]):
        for port in ("http", "alt"):
            plain = mesh.call("legacy", "bar", port, headers=headers)
            assert plain.status == 200, plain
            assert plain.upstream_headers(PRINCIPAL_HEADER) == [], \
                f"plaintext {headers} reached the app as {plain.upstream_headers(PRINCIPAL_HEADER)}"
            mtls = mesh.call("foo", "bar", port, headers=headers)
            assert mtls.status == 200, mtls
            assert mtls.upstream_headers(PRINCIPAL_HEADER) == ["cluster.local/ns/foo/sa/curl"], \
                f"mTLS with {headers}: app saw {mtls.upstream_headers(PRINCIPAL_HEADER)}"


def test_mesh_wide_strict(mesh):
    cfg = peer_config(peer_authentication("default", "istio-system", "STRICT"))
    check_matrix_after(mesh, "mesh-wide STRICT (istio-system/default)", cfg,
                       {("legacy", "foo"), ("legacy", "bar")})
    check_matrix(mesh, "mesh-wide STRICT (istio-system/default)", {("legacy", "foo"), ("legacy", "bar")},
                 port="alt")


def test_strict_rejection_is_401_or_reset_and_forged_identity_headers_do_not_help(mesh):
    apply(mesh, peer_config(peer_authentication("default", "istio-system", "STRICT")))
    cell = mesh.call("legacy", "foo")
    assert is_rejected(cell), cell
    if cell.status == 401:
        assert cell.text == PEER_AUTHN_FAILED, cell
    print(f"curl.legacy to httpbin.foo under STRICT: {cell.code} {cell.text or cell.error!r}")
    forged = [
        (XFCC, "By=spiffe://cluster.local/ns/foo/sa/httpbin;URI=spiffe://cluster.local/ns/foo/sa/curl"),
        (PRINCIPAL_HEADER, "cluster.local/ns/foo/sa/curl"),
        ("x-forwarded-proto", "https"),
    ]
    for port in ("http", "alt"):
        cell = mesh.call("legacy", "foo", port, headers=forged)
        assert is_rejected(cell), f"plaintext with forged identity headers on {port}: {cell!r}"


def test_namespace_foo_strict(mesh):
    cfg = peer_config(peer_authentication("default", "foo", "STRICT"))
    check_matrix_after(mesh, "namespace foo STRICT", cfg, {("legacy", "foo")})
    check_matrix(mesh, "namespace foo STRICT", {("legacy", "foo")}, port="alt")


def test_workload_httpbin_bar_strict(mesh):
    cfg = peer_config(peer_authentication("httpbin", "bar", "STRICT", selector=HTTPBIN))
    check_matrix_after(mesh, "workload httpbin.bar STRICT", cfg, {("legacy", "bar")})
    check_matrix(mesh, "workload httpbin.bar STRICT", {("legacy", "bar")}, port="alt")


def test_workload_httpbin_bar_strict_with_port_level_disable(mesh):
    main, alt = mesh.servers["bar"].ports["http"], mesh.servers["bar"].ports["alt"]
    cfg = peer_config(peer_authentication("httpbin", "bar", "STRICT", selector=HTTPBIN,
                                          port_level={main: "DISABLE"}))
    title = f"workload httpbin.bar STRICT + portLevelMtls {{\"{main}\": DISABLE}} [main={main}, alt={alt}]"
    # DISABLE: nothing says whether a peer principal is still forwarded, so it is not asserted there
    check_matrix_after(mesh, title, cfg, principals=("foo",))
    check_matrix(mesh, title, {("legacy", "bar")}, port="alt")
    assert mesh.call("foo", "bar", "alt").upstream_headers(PRINCIPAL_HEADER) == ["cluster.local/ns/foo/sa/curl"]


def test_port_level_mtls_of_a_namespace_policy_is_ignored(mesh):
    """portLevelMtls only counts in a workload (selector) policy, as in Istio."""
    main = mesh.servers["foo"].ports["http"]
    cfg = peer_config(peer_authentication("default", "foo", "STRICT", port_level={main: "DISABLE"}))
    check_matrix_after(mesh, f"namespace foo STRICT with (ignored) portLevelMtls {{{main}: DISABLE}}", cfg,
                       {("legacy", "foo")})


def test_workload_disable_overrides_namespace_strict(mesh):
    cfg = peer_config(peer_authentication("default", "foo", "STRICT"),
                      peer_authentication("httpbin", "foo", "DISABLE", selector=HTTPBIN))
    check_matrix_after(mesh, "namespace foo STRICT + workload httpbin.foo DISABLE", cfg,
                       principals=("bar",))
    # the workload policy selects app=httpbin only: a policy for another app leaves foo STRICT
    cfg = peer_config(peer_authentication("default", "foo", "STRICT"),
                      peer_authentication("other", "foo", "DISABLE", selector={"app": "productpage"}))
    check_matrix_after(mesh, "namespace foo STRICT + DISABLE for app=productpage", cfg, {("legacy", "foo")})


def test_namespace_overrides_mesh(mesh):
    cfg = peer_config(peer_authentication("default", "istio-system", "STRICT"),
                      peer_authentication("default", "foo", "PERMISSIVE"))
    check_matrix_after(mesh, "mesh STRICT + namespace foo PERMISSIVE", cfg, {("legacy", "bar")})


def test_oldest_namespace_policy_wins(mesh):
    older, newer = "2026-01-01T00:00:00Z", "2026-03-01T12:00:00Z"
    cfg = peer_config(peer_authentication("b-new", "foo", "DISABLE", created=newer),
                      peer_authentication("a-old", "foo", "STRICT", created=older))
    check_matrix_after(mesh, "foo: older STRICT, newer DISABLE", cfg, {("legacy", "foo")})
    cfg = peer_config(peer_authentication("b-new", "foo", "DISABLE", created=older),
                      peer_authentication("a-old", "foo", "STRICT", created=newer))
    check_matrix_after(mesh, "foo: older DISABLE, newer STRICT", cfg, principals=("bar",))
    # instants, not text: "…:00.5Z" is half a second after "…:00Z" though it sorts before it
    cfg = peer_config(peer_authentication("a-new", "foo", "DISABLE", created="2026-01-01T00:00:00.5Z"),
                      peer_authentication("b-old", "foo", "STRICT", created="2026-01-01T00:00:00Z"))
    check_matrix_after(mesh, "foo: STRICT at :00Z, DISABLE at :00.5Z", cfg, {("legacy", "foo")})
    # within the workload level too: two policies select httpbin.bar, the older one applies
    cfg = peer_config(peer_authentication("by-version", "bar", "DISABLE", selector={"version": "v1"},
                                          created=newer),
                      peer_authentication("by-app", "bar", "STRICT", selector=HTTPBIN, created=older))
    check_matrix_after(mesh, "bar: older workload STRICT (app), newer workload DISABLE (version)", cfg,
                       {("legacy", "bar")})


@pytest.mark.parametrize("mode", ["UNSET", None], ids=["mode-UNSET", "no-mtls-field"])
def test_unset_workload_policy_inherits_namespace(mesh, mode):
    cfg = peer_config(peer_authentication("default", "foo", "STRICT"),
                      peer_authentication("httpbin", "foo", mode, selector=HTTPBIN))
    check_matrix_after(mesh, f"foo STRICT + workload httpbin.foo {mode or 'without mtls'}", cfg,
                       {("legacy", "foo")})


def test_selector_policy_in_root_namespace_is_ignored(mesh):
    cfg = peer_config(peer_authentication("httpbin", "istio-system", "STRICT", selector=HTTPBIN))
    check_matrix_after(mesh, "istio-system STRICT with selector app=httpbin (ignored)", cfg)


def test_simple_single_workload_form(mesh):
    """Top-level `mtls` / `portLevelMtls`: one workload's policy without PeerAuthentication objects."""
    # both sidecars get the same pluginConfig, so give each port number the same meaning for both
    cfg = {"mtls": {"mode": "STRICT"},
           "portLevelMtls": {str(s.ports["alt"]): {"mode": "DISABLE"} for s in mesh.servers.values()},
           "outputPeerPrincipalToHeader": PRINCIPAL_HEADER}
    check_matrix_after(mesh, "simple form: mtls STRICT, alt ports DISABLE", cfg,
                       {("legacy", "foo"), ("legacy", "bar")})
    check_matrix(mesh, "simple form: mtls STRICT, alt ports DISABLE", port="alt", principals=())


def test_trust_domains(mesh):
    strict = peer_authentication("default", "istio-system", "STRICT")
    apply(mesh, peer_config(strict))
    untrusted = mesh.call("evil", "bar")
    print(f"curl.evil (spiffe://evil.local/ns/foo/sa/curl) to httpbin.bar, STRICT, no trustDomains: "
          f"{untrusted.code} {untrusted.upstream_headers(PRINCIPAL_HEADER) if untrusted.status == 200 else ''}")

    apply(mesh, peer_config(strict, trust_domains=["cluster.local"]))
    for port in ("http", "alt"):
        cell = mesh.call("evil", "bar", port)
        print(f"curl.evil to httpbin.bar:{port}, STRICT, trustDomains [cluster.local]: {cell.code}")
        assert is_rejected(cell), f"foreign trust domain peer under STRICT on {port}: {cell!r}"
        if cell.status != 503:
            assert cell.status == 401 and cell.text == PEER_AUTHN_FAILED, cell
        ok = mesh.call("foo", "bar", port)
        assert ok.status == 200 and ok.upstream_headers(PRINCIPAL_HEADER) == ["cluster.local/ns/foo/sa/curl"], ok
    assert is_rejected(mesh.call("legacy", "bar"))

    apply(mesh, peer_config(trust_domains=["cluster.local"]))  # PERMISSIVE
    cell = mesh.call("evil", "bar")
    assert cell.status == 200, cell
    assert cell.upstream_headers(PRINCIPAL_HEADER) == [], \
        f"a foreign trust domain peer is unauthenticated, yet the app saw {cell.upstream_headers(PRINCIPAL_HEADER)}"
    assert mesh.call("bar", "bar").upstream_headers(PRINCIPAL_HEADER) == ["cluster.local/ns/bar/sa/curl"]


def curl_mtls(port: int, cert, key) -> tuple[int, int, str]:
    """curl over TLS with a client certificate: (exit code, HTTP status or 0, body)."""
    out = subprocess.run(["curl", "-sS", "-k", "--cert", str(cert), "--key", str(key), "-o", "-",
                          "-w", "\n%{http_code}", f"https://{harness.HOST}:{port}/ip"],
                         capture_output=True, text=True, timeout=20)
    body, _, status = out.stdout.rpartition("\n")
    return out.returncode, int(status or 0), body


def test_only_certificates_the_listener_validated_count(mesh, tmp_path):
    """The filter reads `connection.mtls`, which means presented, not validated (the next test),
    so STRICT relies on the listener docs/operating.md documents: client certificates required and
    verified against the mesh's roots. A self-signed certificate naming a mesh identity never
    reaches the filter there, under any mode."""
    rogue = M.Pki(tmp_path / "rogue")  # another root with the same names
    forged = rogue.issue("forged", M.spiffe_id("foo", "curl"))
    genuine = mesh.pki.issue("direct.foo", M.spiffe_id("foo", "curl"))
    port = mesh.servers["bar"].ports["http"]
    for mode in ("STRICT", "PERMISSIVE"):
        apply(mesh, peer_config(peer_authentication("default", "istio-system", mode)))
        code, status, body = curl_mtls(port, forged.cert_path, forged.key_path)
        print(f"{mode}: curl with a self-signed SPIFFE certificate: exit {code}, HTTP {status:03d}")
        assert code != 0 and status == 0, (code, status, body)
        code, status, body = curl_mtls(port, genuine.cert_path, genuine.key_path)
        assert (code, status) == (0, 200), (code, status, body)
        assert json.loads(body)["headers"].get(PRINCIPAL_HEADER) == [principal("foo", "curl")]


# envoyproxy/envoy#45828 (for issue #45660) added `connection.peer_certificate_valid`, BoringSSL's
# verdict on the client certificate, in Envoy 1.39.0; 1.38.3 has no such attribute, nor has 1.36.
PEER_CERTIFICATE_VALID_SINCE = (1, 39, 0)


def test_what_envoy_tells_a_filter_about_the_peer_certificate(tmp_path):
    """Where Envoy 1.36 and 1.40 differ for peer authentication. `connection.mtls`, which the filter
    reads, is true for any certificate the handshake let through, validated or not: on a listener
    that accepts untrusted certificates (`ACCEPT_UNTRUSTED`) a forged one looks like a genuine one.
    Envoy 1.39 added `connection.peer_certificate_valid`; on 1.36, the oldest Envoy `make test`
    runs (Istio 1.28's), it is absent, so the filter does not read it and the listener must
    validate (previous test). Read here through CEL, in the access log: a wasm filter's
    get_property("connection", …) reads the same attributes (Envoy's ConnectionWrapper)."""
    pki, rogue = M.Pki(tmp_path / "pki"), M.Pki(tmp_path / "rogue")
    callers = {"validated": pki.issue("validated", M.spiffe_id("foo", "curl")),
               "untrusted": rogue.issue("untrusted", M.spiffe_id("foo", "curl")),
               "none": None}
    seen = _certificate_attributes(tmp_path, pki, callers)
    version = harness.envoy_version()
    verdict = version >= PEER_CERTIFICATE_VALID_SINCE
    absent = "-"  # how the CEL formatter prints an attribute this Envoy does not have
    assert seen == {
        "validated": ("true", "true" if verdict else absent),
        "untrusted": ("true", "false" if verdict else absent),
        "none": ("false", "false" if verdict else absent),
    }, f"Envoy {version}: (connection.mtls, connection.peer_certificate_valid) per caller: {seen}"


def _certificate_attributes(workdir, pki: M.Pki, callers: dict) -> dict[str, tuple[str, str]]:
    """Per caller (path /<name>, over TLS with its certificate or none): connection.mtls and
    connection.peer_certificate_valid, as a listener accepting untrusted certificates saw them."""
    port, admin = harness.free_port(), harness.free_port()
    log = workdir / "access.log"
    hcm = {"@type": M.HCM_TYPE, "stat_prefix": "attributes",
           "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [{
               "match": {"prefix": "/"}, "direct_response": {"status": 200}}]}]},
           "http_filters": [harness.ROUTER],
           "access_log": [{"name": "file", "typed_config": {
               "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
               "path": str(log), "log_format": {"text_format_source": {"inline_string":
                   "%REQ(:PATH)% %CEL(connection.mtls)% %CEL(connection.peer_certificate_valid)%\n"}}}}]}
    server = pki.issue("server", M.spiffe_id("foo", "httpbin"), ips=[harness.HOST])
    listener = {"name": "attributes",
                "address": {"socket_address": {"address": harness.HOST, "port_value": port}},
                "filter_chains": [{"transport_socket": {"name": M.TLS_SOCKET, "typed_config": {
                    "@type": M.DOWNSTREAM_TLS,
                    "common_tls_context": {
                        "tls_certificates": [M._tls_certificate(server)],
                        "validation_context": {"trusted_ca": {"filename": str(pki.ca_path)},
                                               "trust_chain_verification": "ACCEPT_UNTRUSTED"}}}},
                    "filters": [{"name": "envoy.filters.network.http_connection_manager",
                                 "typed_config": hcm}]}]}
    envoy = harness.Envoy(harness.bootstrap(admin, [listener], []), workdir, admin, concurrency=1).start()
    try:
        envoy.wait_ready()
        harness.wait_for_port(port)
        for name, ident in callers.items():
            cert = ["--cert", str(ident.cert_path), "--key", str(ident.key_path)] if ident else []
            out = subprocess.run(["curl", "-sk", *cert, "-o", "/dev/null", "-w", "%{http_code}",
                                  f"https://{harness.HOST}:{port}/{name}"],
                                 capture_output=True, text=True, timeout=20)
            assert out.stdout == "200", (name, out.returncode, out.stdout, out.stderr)
    finally:
        envoy.stop()  # which writes out the access log (flushed every 10 s while running)
    lines = log.read_text().splitlines() if log.exists() else []
    assert len(lines) == len(callers), f"access log {lines}\n{envoy.log_tail(20)}"
    return {path.lstrip("/"): (mtls, valid) for path, mtls, valid in (line.split() for line in lines)}
