"""The NETWORK plugin: PeerAuthentication enforced on connections, as Istio enforces it.

The module is loaded as Envoy's `envoy.filters.network.wasm` with root id "network" (what istiod
renders for a `type: NETWORK` WasmPlugin with `pluginName: network`), in front of the HTTP
connection manager or `tcp_proxy`. Under STRICT a plaintext caller gets no HTTP answer at all:
real curl prints 000 and fails, as in the seeds' tables.

- the seeds' mesh matrices on the loopback mesh (mesh.py) with only the NETWORK plugin attached;
- TCP services behind `tcp_proxy`: an echo server, and a server-first banner server;
- both plugins on one listener: the NETWORK one for peers, the HTTP one for tokens;
- configuration the NETWORK plugin cannot honour (JWT rules) refused, naming the field.
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import time

import pytest
import yaml

import harness
import mesh as M
from clients import StalledHandshakes, eventually
from jwt_mint import claims, mint
from mesh import PRINCIPAL_HEADER, peer_authentication, peer_config, principal

HTTPBIN = {"app": "httpbin"}


def network_config(*policies: dict, trust_domains: list[str] | None = None) -> dict:
    """The NETWORK plugin's pluginConfig: peer authentication only (no output headers)."""
    return peer_config(*policies, trust_domains=trust_domains, principal_header=None)


@pytest.fixture(scope="module")
def mesh(wasm_module, tmp_path_factory):
    m = M.Mesh(tmp_path_factory.mktemp("mesh-network"), wasm_module)
    try:
        m.start(None)
    except harness.EnvoyStartError as err:
        pytest.fail(f"the mesh did not start:\n{err}", pytrace=False)
    yield m
    m.stop()
    m.assert_no_vm_crash()


def apply(mesh, http: dict | None, network: dict | None) -> None:
    try:
        mesh.apply(http, network=network)
    except harness.EnvoyStartError as err:
        pytest.fail(f"a server sidecar refused http={json.dumps(http)} network={json.dumps(network)}"
                    f":\n{err}", pytrace=False)


def hcm_requests(mesh) -> int:
    return sum(sum(M.stats(s.envoy, f"http.inbound_{port}_", "downstream_rq_total").values())
               for s in mesh.servers.values() for port in s.ports.values())


COUNTERS = ("connections_allowed", "connections_refused")


def counts_once(plugins: list[tuple[harness.Envoy, str]]) -> dict[str, int]:
    return {name: sum(harness.read_stats(envoy, harness.filter_stat(plugin, name))[0]
                      for envoy, plugin in plugins) for name in COUNTERS}


def wait_counts(plugins: list[tuple[harness.Envoy, str]], at_least: dict[str, int]) -> dict[str, int]:
    """The NETWORK plugins' counters, summed, once they reach `at_least` (they are flushed on the
    root's tick, about once a second) or after 5 s."""
    deadline = time.monotonic() + 5
    while True:
        got = counts_once(plugins)
        if all(got[k] >= v for k, v in at_least.items()) or time.monotonic() > deadline:
            return got
        time.sleep(0.1)


def mesh_plugins(mesh) -> list[tuple[harness.Envoy, str]]:
    return [(s.envoy, f"inbound_{port}_network") for s in mesh.servers.values() for port in s.ports.values()]


def check_curl_matrix(mesh, title: str, refused=(), port: str = "http"):
    """The seeds' table with real curl: refused cells print 000 and curl fails (exit 52 or 56:
    the connection is closed or reset, no HTTP answer), every other cell prints 200."""
    cells = mesh.curl_matrix(title, port)
    problems = []
    for (src, dst), (code, printed) in cells.items():
        where = f"curl.{src} to httpbin.{dst}{'' if dst == 'legacy' else ':' + port}"
        if (src, dst) in refused:
            if printed != "000" or code not in (52, 56):
                problems.append(f"{where}: expected 000 with curl exit 52/56, got {printed} (exit {code})")
        elif (code, printed) != (0, "200"):
            problems.append(f"{where}: expected 200, got {printed} (exit {code})")
    assert not problems, "\n".join(problems)
    return cells


# --------------------------------------------------------------------------- the seeds' matrices


MATRICES = [
    ("mesh-wide STRICT", [peer_authentication("default", "istio-system", "STRICT")],
     {("legacy", "foo"), ("legacy", "bar")}, None),
    ("namespace foo STRICT", [peer_authentication("default", "foo", "STRICT")],
     {("legacy", "foo")}, None),
    ("workload httpbin.bar STRICT", [peer_authentication("httpbin", "bar", "STRICT", selector=HTTPBIN)],
     {("legacy", "bar")}, None),
    ("mesh STRICT + namespace foo PERMISSIVE",
     [peer_authentication("default", "istio-system", "STRICT"),
      peer_authentication("default", "foo", "PERMISSIVE")],
     {("legacy", "bar")}, None),
    ("namespace foo STRICT + workload httpbin.foo DISABLE",
     [peer_authentication("default", "foo", "STRICT"),
      peer_authentication("httpbin", "foo", "DISABLE", selector=HTTPBIN)],
     set(), None),
    ("mesh-wide PERMISSIVE", [peer_authentication("default", "istio-system", "PERMISSIVE")], set(), None),
]


@pytest.mark.parametrize("title,policies,refused,_", MATRICES, ids=[m[0] for m in MATRICES])
def test_seed_matrix_with_the_network_plugin(mesh, title, policies, refused, _):
    apply(mesh, None, network_config(*policies))
    before = hcm_requests(mesh)
    check_curl_matrix(mesh, f"{title} (NETWORK plugin)", refused)
    check_curl_matrix(mesh, f"{title} (NETWORK plugin)", refused, port="alt")
    # A refused caller never reached an HTTP connection manager: 2 sidecar'd callers x 2
    # destinations x 2 ports, plus each plaintext caller that was let in.
    allowed_plaintext = 2 * (2 - len(refused))
    assert hcm_requests(mesh) - before == 8 + allowed_plaintext
    # Every connection of the two tables: 8 from sidecars, 4 plaintext (curl opens one each).
    counts = wait_counts(mesh_plugins(mesh), {"connections_allowed": 8 + allowed_plaintext,
                                              "connections_refused": 2 * len(refused)})
    assert counts == {"connections_allowed": 8 + allowed_plaintext,
                      "connections_refused": 2 * len(refused)}, counts


def test_port_level_disable_with_the_network_plugin(mesh):
    main, alt = mesh.servers["bar"].ports["http"], mesh.servers["bar"].ports["alt"]
    apply(mesh, None, network_config(peer_authentication("httpbin", "bar", "STRICT", selector=HTTPBIN,
                                                         port_level={main: "DISABLE"})))
    title = f"workload httpbin.bar STRICT + portLevelMtls {{{main}: DISABLE}} (NETWORK plugin)"
    check_curl_matrix(mesh, title)
    check_curl_matrix(mesh, title, {("legacy", "bar")}, port="alt")


def test_a_refused_caller_gets_no_answer_whatever_it_sends(mesh):
    apply(mesh, None, network_config(peer_authentication("default", "istio-system", "STRICT")))
    forged = {M.PRINCIPAL_HEADER: "cluster.local/ns/foo/sa/curl", "x-forwarded-proto": "https",
              "x-forwarded-client-cert": "By=spiffe://cluster.local/ns/foo/sa/httpbin;"
                                         "URI=spiffe://cluster.local/ns/foo/sa/curl"}
    for port in ("http", "alt"):
        code, printed = mesh.curl("legacy", "foo", port, headers=forged)
        assert printed == "000" and code in (52, 56), (port, code, printed)
    # Bytes that are not HTTP: closed, nothing answered. (A caller that sends nothing waits for
    # the TLS inspector, as in Istio; the plaintext-only TCP listener below shows it refused.)
    port = mesh.servers["foo"].ports["http"]
    with socket.create_connection((harness.HOST, port), timeout=5) as s:
        s.sendall(b"\x00\x01garbage\r\n\r\n")
        try:
            got = s.recv(1024)
        except ConnectionResetError:
            got = b""
        assert got == b"", got


def test_trust_domains_with_the_network_plugin(mesh):
    strict = peer_authentication("default", "istio-system", "STRICT")
    apply(mesh, None, network_config(strict, trust_domains=["cluster.local"]))
    for port in ("http", "alt"):
        foreign = mesh.call("evil", "bar", port)
        # The client sidecar's upstream connection is closed before any answer: it answers 503.
        assert foreign.status == 503, foreign
        assert mesh.call("foo", "bar", port).status == 200
    assert mesh.curl("legacy", "bar")[1] == "000"


def test_converted_peer_authentications_load_as_the_network_plugin(mesh):
    """`mesh-authn-convert` output for Istio's migration task, applied as istiod would render it."""
    example = harness.REPO / "config-schema" / "examples" / "istio" / "peer-authentication.yaml"
    out = subprocess.run(["cargo", "run", "-q", "-p", "config-schema", "--bin", "mesh-authn-convert", "--",
                          str(example)], cwd=harness.REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    (plugin,) = [d for d in yaml.safe_load_all(out.stdout) if d]
    assert (plugin["spec"]["type"], plugin["spec"]["pluginName"]) == ("NETWORK", harness.NETWORK_ROOT_ID)
    apply(mesh, None, plugin["spec"]["pluginConfig"])
    # mesh STRICT, foo PERMISSIVE, httpbin.bar STRICT (its DISABLE port is not one of ours)
    check_curl_matrix(mesh, "converted PeerAuthentications (NETWORK plugin)", {("legacy", "bar")})


# --------------------------------------------------------------------------- both plugins


def test_both_plugins_on_one_listener(mesh, keys):
    """NETWORK: mesh-wide STRICT; HTTP: a required token, identities forwarded."""
    jwt = {"jwtRules": [{"issuer": "https://issuer.example.com", "jwks": keys.jwks()}],
           "requireToken": True, "trustDomains": ["cluster.local"],
           "outputPeerPrincipalToHeader": PRINCIPAL_HEADER,
           "outputRequestPrincipalToHeader": "x-request-principal"}
    apply(mesh, jwt, network_config(peer_authentication("default", "istio-system", "STRICT")))
    token = mint(keys.rsa, "RS256", "rsa", claims(sub="alice", iss="https://issuer.example.com"))
    auth = {"Authorization": f"Bearer {token}"}
    before = hcm_requests(mesh)
    code, printed = mesh.curl("legacy", "foo", headers=auth)
    assert printed == "000" and code in (52, 56), (code, printed)
    assert hcm_requests(mesh) == before, "a refused plaintext caller reached the HTTP filters"

    ok = mesh.call("foo", "bar", headers={**auth, PRINCIPAL_HEADER: "forged"})
    assert ok.status == 200, ok
    assert ok.upstream_headers(PRINCIPAL_HEADER) == [principal("foo", "curl")]
    assert ok.upstream_headers("x-request-principal") == ["https://issuer.example.com/alice"]
    no_token = mesh.call("bar", "foo")
    assert (no_token.status, no_token.text) == (401, "Jwt is missing")
    assert mesh.curl("foo", "foo", headers=auth) == (0, "200")


# --------------------------------------------------------------------------- configuration


def test_jwt_rules_in_the_network_plugin_are_refused_naming_the_field(keys, tmp_path):
    cfg = {"mtls": {"mode": "STRICT"}, "jwtRules": [{"issuer": "x", "jwks": keys.jwks()}]}
    port, admin = harness.free_port(), harness.free_port()
    listener = {"name": "net", "address": {"socket_address": {"address": harness.HOST, "port_value": port}},
                "filter_chains": [{"filters": [harness.network_wasm_filter("net", cfg),
                                               harness.tcp_proxy("net", "echo")]}]}
    with harness.TcpServer() as echo:
        envoy = harness.Envoy(harness.bootstrap(admin, [listener], [harness.static_cluster("echo", echo.port)]),
                              tmp_path, admin, concurrency=1).start()
        try:
            code = envoy.wait_exit_or_ready()
            # A plugin that fails to configure fails closed: with a static config, Envoy exits.
            assert code not in (None, 0), f"Envoy started ({code})\n{envoy.log_tail(20)}"
            assert "invalid pluginConfig at jwtRules: needs the HTTP plugin" in envoy.log_text()
        finally:
            envoy.stop()


def test_without_the_network_root_id_http_only_fields_refuse_every_connection(tmp_path, keys):
    """Loaded as a network filter under another root id, the plugin cannot refuse JWT rules when
    it starts: it refuses every connection instead of letting them through unauthenticated."""
    cfg = {"mtls": {"mode": "PERMISSIVE"}, "jwtRules": [{"issuer": "x", "jwks": keys.jwks()}]}
    net = harness.network_wasm_filter("net", cfg)
    net["typed_config"]["config"]["root_id"] = harness.ROOT_ID
    port, admin = harness.free_port(), harness.free_port()
    listener = {"name": "net", "address": {"socket_address": {"address": harness.HOST, "port_value": port}},
                "filter_chains": [{"filters": [net, harness.tcp_proxy("net", "echo")]}]}
    with harness.TcpServer() as echo:
        envoy = harness.Envoy(harness.bootstrap(admin, [listener], [harness.static_cluster("echo", echo.port)]),
                              tmp_path, admin, concurrency=1).start()
        try:
            envoy.wait_ready()
            got = talk(port, b"hello")
            assert got.received == b"" and echo.accepted == 0 and echo.received == b"", got
            assert "jwtRules: needs the HTTP plugin" in envoy.log_text()
        finally:
            envoy.stop()


# --------------------------------------------------------------------------- TCP services


class Talk:
    def __init__(self, received: bytes, error: str = "") -> None:
        self.received = received
        self.error = error

    def __repr__(self) -> str:
        return f"Talk(received={self.received!r}, error={self.error!r})"


def talk(port: int, send: bytes = b"", ident: M.Identity | None = None, ca=None,
         expect: int = 0, timeout: float = 3.0) -> Talk:
    """Connects (with `ident`, over mTLS), sends `send`, and reads until the peer closes, `expect`
    bytes arrived, or `timeout`."""
    raw = socket.create_connection((harness.HOST, port), timeout=timeout)
    sock = raw
    try:
        if ident is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.load_verify_locations(ca)
            ctx.load_cert_chain(ident.cert_path, ident.key_path)
            sock = ctx.wrap_socket(raw)
        if send:
            sock.sendall(send)
    except (OSError, ssl.SSLError) as err:
        sock.close()
        return Talk(b"", f"{type(err).__name__}: {err}")
    got = b""
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and (not expect or len(got) < expect):
            chunk = sock.recv(4096)
            if not chunk:
                break
            got += chunk
        return Talk(got)
    except (OSError, ssl.SSLError) as err:
        return Talk(got, f"{type(err).__name__}: {err}")
    finally:
        sock.close()


BANNER = b"220 mesh-authn test SMTP-like service ready\r\n"


class TcpServices:
    """One Envoy in front of TCP services, the NETWORK plugin before `tcp_proxy` on each listener:
    `mixed` (Istio's inbound shape: TLS inspector, an mTLS chain and a plaintext chain) to an echo
    server; `plain` (plaintext only) and `tls` (mTLS only) to a server-first banner server."""

    def __init__(self, workdir, pki: M.Pki, cfg: dict) -> None:
        self.echo = harness.TcpServer()
        self.banner = harness.TcpServer(banner=BANNER)
        server = pki.issue("tcp-server", M.spiffe_id("foo", "tcp"), ips=[harness.HOST])
        self.ports = {name: harness.free_port() for name in ("mixed", "plain", "tls")}
        mixed = M.inbound_listener(self.ports["mixed"], server, pki.ca_path, None,
                                   network_config=cfg, tcp_cluster="echo")
        tls_only = M.inbound_listener(self.ports["tls"], server, pki.ca_path, None,
                                      network_config=cfg, tcp_cluster="banner")
        tls_only["name"] = "tls_only"
        tls_only["filter_chains"] = tls_only["filter_chains"][:1]
        del tls_only["filter_chains"][0]["filter_chain_match"]
        del tls_only["listener_filters"]
        plain = {"name": "plain_only",
                 "address": {"socket_address": {"address": harness.HOST, "port_value": self.ports["plain"]}},
                 "filter_chains": [{"filters": [harness.network_wasm_filter("plain_network", cfg),
                                                harness.tcp_proxy("plain", "banner")]}]}
        admin = harness.free_port()
        config = harness.bootstrap(admin, [mixed, tls_only, plain],
                                   [harness.static_cluster("echo", self.echo.port),
                                    harness.static_cluster("banner", self.banner.port)])
        self.envoy = harness.Envoy(config, workdir, admin, concurrency=1).start()
        self.envoy.wait_ready()
        for port in self.ports.values():
            harness.wait_for_port(port)
        self.plugins = [f"inbound_{self.ports['mixed']}_network", f"inbound_{self.ports['tls']}_network",
                        "plain_network"]

    def counts(self, **at_least: int) -> dict[str, int]:
        return wait_counts([(self.envoy, p) for p in self.plugins], at_least)

    def stop(self) -> None:
        self.envoy.stop()
        self.echo.stop()
        self.banner.stop()


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return M.Pki(tmp_path_factory.mktemp("tcp-pki"))


@pytest.fixture(scope="module")
def clients(pki):
    return {"foo": pki.issue("tcp-client-foo", M.spiffe_id("foo", "curl")),
            "evil": pki.issue("tcp-client-evil", M.spiffe_id("foo", "curl", "evil.local"))}


@pytest.fixture(scope="module", params=["STRICT", "PERMISSIVE"])
def tcp(request, wasm_module, pki, tmp_path_factory):
    cfg = {"mtls": {"mode": request.param}, "trustDomains": ["cluster.local"]}
    services = TcpServices(tmp_path_factory.mktemp(f"tcp-{request.param}"), pki, cfg)
    services.mode = request.param
    yield services
    services.stop()
    harness.assert_no_vm_crash(services.envoy.log_text(), services.envoy.log_path)


def test_tcp_echo(tcp, clients, pki):
    accepted, received = tcp.echo.accepted, tcp.echo.received
    plain = talk(tcp.ports["mixed"], b"plaintext hello\n", expect=16)
    mtls = talk(tcp.ports["mixed"], b"mtls hello\n", clients["foo"], pki.ca_path, expect=11)
    foreign = talk(tcp.ports["mixed"], b"foreign hello\n", clients["evil"], pki.ca_path, expect=14)
    print(f"{tcp.mode}: plaintext {plain}, mTLS {mtls}, foreign trust domain {foreign}")
    assert mtls.received == b"mtls hello\n", mtls
    if tcp.mode == "STRICT":
        assert plain.received == b"", plain
        assert foreign.received == b"", foreign
        assert tcp.echo.received[len(received):] == b"mtls hello\n", "refused bytes reached the service"
        # The plaintext caller never got an upstream connection; TLS callers do, when they connect
        # (tcp_proxy reads nothing before its upstream is up, and the handshake needs reads).
        assert tcp.echo.accepted - accepted <= 2
        assert tcp.counts(connections_refused=2)["connections_refused"] >= 2
    else:
        assert plain.received == b"plaintext hello\n", plain
        assert foreign.received == b"foreign hello\n", foreign


def test_tcp_server_first(tcp, clients, pki):
    accepted = tcp.banner.accepted
    plain = talk(tcp.ports["plain"], timeout=2, expect=len(BANNER))
    mtls = talk(tcp.ports["tls"], ident=clients["foo"], ca=pki.ca_path, expect=len(BANNER))
    print(f"{tcp.mode}: plaintext {plain}, mTLS {mtls}")
    assert mtls.received == BANNER, mtls
    if tcp.mode == "STRICT":
        assert plain.received == b"", plain
        assert tcp.banner.accepted - accepted == 1, "the refused plaintext caller got an upstream"
    else:
        assert plain.received == BANNER, plain
    # mTLS and silent: allowed by the tick, then a conversation.
    echoed = talk(tcp.ports["tls"], b"EHLO\r\n", clients["foo"], pki.ca_path, expect=len(BANNER) + 6)
    assert echoed.received == BANNER + b"EHLO\r\n", echoed
    # A validated peer from a trust domain not listed, sending nothing: the tick closes it (it may
    # have seen the banner, which the upstream sent before the handshake ended; see docs/behaviour.md).
    received = tcp.banner.received
    silent = talk(tcp.ports["tls"], ident=clients["evil"], ca=pki.ca_path, expect=10_000, timeout=5)
    print(f"{tcp.mode}: silent peer of a foreign trust domain {silent}")
    if tcp.mode == "STRICT":
        assert silent.received in (b"", BANNER) and not silent.error, f"not closed by the plugin: {silent}"
    else:
        assert silent.received == BANNER and "timed out" in silent.error, silent
    assert tcp.banner.received == received


def test_tcp_caller_without_a_certificate(tcp, pki):
    """The listener requires a client certificate: the handshake fails, nothing is relayed."""
    received = tcp.echo.received
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(pki.ca_path)
    with socket.create_connection((harness.HOST, tcp.ports["mixed"]), timeout=3) as raw:
        try:
            with ctx.wrap_socket(raw) as s:
                s.sendall(b"no cert\n")
                assert s.recv(100) == b""
        except (OSError, ssl.SSLError):
            pass
    assert tcp.echo.received == received


@pytest.mark.parametrize("node_type,refused", [("sidecar", True), ("router", False)])
def test_mesh_policies_apply_to_sidecars_not_gateways(tmp_path, node_type, refused):
    """A mesh-wide NETWORK plugin also lands on gateways; as in Istio, PeerAuthentications govern
    sidecars only (a gateway's TLS comes from its Gateway resources)."""
    cfg = network_config(peer_authentication("default", "istio-system", "STRICT"))
    port, admin = harness.free_port(), harness.free_port()
    listener = {"name": "net", "address": {"socket_address": {"address": harness.HOST, "port_value": port}},
                "filter_chains": [{"filters": [harness.network_wasm_filter("net", cfg),
                                               harness.tcp_proxy("net", "echo")]}]}
    with harness.TcpServer() as echo:
        config = harness.bootstrap(admin, [listener], [harness.static_cluster("echo", echo.port)])
        config["node"] = M.node("istio-ingressgateway", "istio-ingressgateway", "istio-system",
                                {"istio": "ingressgateway"}, "istio-ingressgateway-5d8f-x")
        config["node"]["id"] = config["node"]["id"].replace("sidecar~", f"{node_type}~")
        envoy = harness.Envoy(config, tmp_path, admin, concurrency=1).start()
        try:
            envoy.wait_ready()
            harness.wait_for_port(port)
            got = talk(port, b"hello\n", expect=6)
            assert got.received == (b"" if refused else b"hello\n"), got
        finally:
            envoy.stop()


# --------------------------------------------------------------------------- slow handshakes


HELD_CAP = 10_000  # runtime/held.rs MAX_PAUSED_CONNECTIONS, per worker and plugin


def test_a_slow_handshake_flood_stays_within_the_cap_and_clients_still_connect(wasm_module, tmp_path, pki, clients):
    """More stalled TLS handshakes than a worker holds, each sending its ClientHello and nothing more,
    and opened again whenever it is closed: the plugin holds at most the cap (its gauge), refuses
    the connections held longest with reason `overload` to make room, and a client's new mTLS
    connection, arriving in the middle of it, is still answered. Once the flood goes, none is held."""
    server = pki.issue("flood-server", M.spiffe_id("foo", "flood"), ips=[harness.HOST])
    port = harness.free_port()
    lst = M.inbound_listener(port, server, pki.ca_path, None,
                             network_config={"mtls": {"mode": "STRICT"}, "trustDomains": ["cluster.local"]})
    for chain in lst["filter_chains"]:  # answered by Envoy itself: no upstream per connection
        chain["filters"][-1]["typed_config"]["route_config"]["virtual_hosts"][0]["routes"] = [
            {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "ok"}}}]
    admin = harness.free_port()
    envoy = harness.Envoy(harness.bootstrap(admin, [lst], []), tmp_path, admin, concurrency=1).start()
    plugin = f"inbound_{port}_network"
    held, overload = harness.filter_stat(plugin, "held_connections"), harness.filter_stat(plugin, "refused_overload")
    request = b"GET / HTTP/1.1\r\nHost: flood\r\nConnection: close\r\n\r\n"
    try:
        envoy.wait_ready()
        harness.wait_for_port(port)
        seen: list[tuple[int, int]] = []

        def at_cap() -> bool:
            seen.append(tuple(harness.read_stats(envoy, held, overload)))
            return seen[-1][0] == HELD_CAP and seen[-1][1] > 0

        with StalledHandshakes(port, HELD_CAP + 500, refill=True) as flood:
            assert eventually(at_cap, timeout=60), f"held, overload: {seen[-5:]}; {flood.opened} opened"
            answers = [talk(port, request, clients["foo"], pki.ca_path, timeout=10) for _ in range(3)]
            for _ in range(20):
                at_cap()
                time.sleep(0.1)
            print(f"flood: {flood.opened} opened, {flood.closed_by_server} closed by the proxy; "
                  f"held, overload: {seen[-1]}")
        assert max(h for h, _ in seen) <= HELD_CAP, seen
        for answer in answers:
            assert answer.received.startswith(b"HTTP/1.1 200"), answer
        assert eventually(lambda: harness.read_stats(envoy, held)[0] == 0, timeout=15), \
            harness.read_stats(envoy, held)
    finally:
        envoy.stop()
    harness.assert_no_vm_crash(envoy.log_text(), envoy.log_path)
