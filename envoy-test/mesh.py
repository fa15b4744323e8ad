"""A small Istio-like mesh on 127.0.0.1 made of real Envoy processes, for peer authentication.

Istio's "Authentication Policy" task (mutual TLS migration) has three namespaces:

- `foo` and `bar`: `httpbin` (server) and `curl` (client) workloads, each with a sidecar;
- `legacy`: `httpbin` and `curl` without sidecars.

Here:

- a test PKI (`Pki`) issues Istio-style workload certificates: EC P-256, empty subject, a critical
  URI SAN `spiffe://cluster.local/ns/<ns>/sa/<sa>`, server+client auth, signed by one root CA;
- `httpbin.foo` / `httpbin.bar`: an echo app (`harness.EchoServer`) behind a server sidecar Envoy
  whose node metadata is what istio-agent sets (NAMESPACE, LABELS, WORKLOAD_NAME). The sidecar has
  two inbound ports ("http" and "alt"); each accepts mTLS AND plaintext like an Istio PERMISSIVE
  listener (tls_inspector, a `tls` filter chain requiring a client certificate, a `raw_buffer`
  chain). Both chains run the mesh-authn wasm filter then the router: the filter decides;
- `curl.foo` / `curl.bar`: a client sidecar Envoy with one plaintext outbound listener per
  destination port; clusters to sidecar'd destinations originate mTLS with the client's SPIFFE
  certificate and verify the server's chain and SPIFFE URI (Istio auto-mTLS); the cluster to
  `httpbin.legacy` is plaintext. "The curl pod" is this Python process calling those listeners;
- `curl.evil`: like `curl.foo` (namespace foo) but its certificate is from the foreign trust domain
  `evil.local` (signed by the same root, as with a shared root across trust domains);
- `curl.legacy` is this Python process calling the server sidecars' inbound ports directly in
  plaintext; `httpbin.legacy` is a bare echo server.

`Mesh.apply(plugin_config)` restarts only the two server sidecars (same ports) when the
pluginConfig changes; `Mesh.matrix()` returns and prints the task's 9-cell reachability table.
PeerAuthentication objects are built with `peer_authentication()` as `kubectl get -o json` shows them.
AuthorizationPolicies become the RBAC filter istiod puts after the plugin with `rbac_filters()`
(`Mesh.apply(..., authz_filters=...)`).
"""

from __future__ import annotations

import datetime
import http.client
import ipaddress
import json
import re
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

import harness
from harness import HOST

TRUST_DOMAIN = "cluster.local"
ROOT_NAMESPACE = "istio-system"
PRINCIPAL_HEADER = "x-peer-principal"
PEER_AUTHN_FAILED = "Peer authentication failed."

NAMESPACES = ("foo", "bar", "legacy")
SIDECAR_NAMESPACES = ("foo", "bar")
PORT_NAMES = ("http", "alt")

TLS_SOCKET = "envoy.transport_sockets.tls"
DOWNSTREAM_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
UPSTREAM_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"


def spiffe_id(ns: str, sa: str, trust_domain: str = TRUST_DOMAIN) -> str:
    return f"spiffe://{trust_domain}/ns/{ns}/sa/{sa}"


def principal(ns: str, sa: str, trust_domain: str = TRUST_DOMAIN) -> str:
    """Istio's principal form (the SPIFFE id without the scheme), e.g. cluster.local/ns/foo/sa/curl."""
    return f"{trust_domain}/ns/{ns}/sa/{sa}"


# --------------------------------------------------------------------------- PKI


@dataclass
class Identity:
    name: str
    spiffe: str
    cert_path: Path
    key_path: Path


class Pki:
    """A root CA and Istio-like workload certificates, written as PEM files under `directory`."""

    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._now = datetime.datetime.now(datetime.timezone.utc)
        self.ca_key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, TRUST_DOMAIN),
            x509.NameAttribute(NameOID.COMMON_NAME, "mesh-authn test root CA"),
        ])
        pub = self.ca_key.public_key()
        self.ca_cert = (
            x509.CertificateBuilder()
            .subject_name(name).issuer_name(name).public_key(pub)
            .serial_number(x509.random_serial_number())
            .not_valid_before(self._now - datetime.timedelta(hours=1))
            .not_valid_after(self._now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(pub), critical=False)
            .sign(self.ca_key, hashes.SHA256())
        )
        self.ca_path = self.dir / "root-cert.pem"
        self.ca_path.write_bytes(self.ca_cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, name: str, spiffe: str, dns: list[str] | None = None,
              ips: list[str] | None = None) -> Identity:
        """A workload certificate: empty subject, critical SAN (URI + optional DNS/IP), like istiod's."""
        key = ec.generate_private_key(ec.SECP256R1())
        sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(spiffe)]
        sans += [x509.DNSName(d) for d in dns or []]
        sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips or []]
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([])).issuer_name(self.ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(self._now - datetime.timedelta(hours=1))
            .not_valid_after(self._now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.ca_key.public_key()),
                           critical=False)
            .add_extension(x509.SubjectAlternativeName(sans), critical=True)
            .sign(self.ca_key, hashes.SHA256())
        )
        cert_path = self.dir / f"{name}-cert.pem"
        key_path = self.dir / f"{name}-key.pem"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        return Identity(name, spiffe, cert_path, key_path)


# --------------------------------------------------------------------------- policies


def peer_authentication(name: str, namespace: str, mode: str | None = None, *,
                        selector: dict[str, str] | None = None,
                        port_level: dict[int | str, str] | None = None,
                        created: str = "2026-01-01T00:00:00Z") -> dict:
    """A PeerAuthentication as `kubectl get peerauthentication -o json` shows it."""
    spec: dict = {}
    if selector is not None:
        spec["selector"] = {"matchLabels": dict(selector)}
    if mode is not None:
        spec["mtls"] = {"mode": mode}
    if port_level:
        spec["portLevelMtls"] = {str(port): {"mode": m} for port, m in port_level.items()}
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "PeerAuthentication",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "creationTimestamp": created,
            "generation": 1,
            "resourceVersion": str(abs(hash((name, namespace, created))) % 100000 + 1),
            "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{namespace}/{name}/{created}")),
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": json.dumps(
                {"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
                 "metadata": {"name": name, "namespace": namespace}, "spec": spec})},
        },
        "spec": spec,
    }


def peer_config(*policies: dict, trust_domains: list[str] | None = None,
                principal_header: str | None = PRINCIPAL_HEADER) -> dict:
    """The server sidecars' pluginConfig for a set of PeerAuthentications."""
    cfg: dict = {"peerAuthentications": list(policies), "rootNamespace": ROOT_NAMESPACE}
    if principal_header:
        cfg["outputPeerPrincipalToHeader"] = principal_header
    if trust_domains is not None:
        cfg["trustDomains"] = list(trust_domains)
    return cfg


RBAC_TYPE = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
REQUEST_HEADER_KEY = re.compile(r"request\.headers\[(.+)\]")


def rbac_filters(docs: list[dict], namespace: str, labels: dict[str, str]) -> list[dict]:
    """The HTTP RBAC filter istiod renders for a workload's ALLOW AuthorizationPolicies (none when
    none applies), as pilot/pkg/security/authz/builder and model do it: one policy per rule, named
    `ns[<ns>]-policy[<name>]-rule[<i>]`, permissions `any` (no `to`), and each `when` condition one
    OR of header principals inside the rule's AND; a policy without rules never matches. Only the
    conditions the filter's headers need, `request.headers[...]`, are rendered."""
    policies: dict[str, dict] = {}
    for doc in docs:
        meta, spec = doc["metadata"], doc["spec"]
        if doc["kind"] != "AuthorizationPolicy" or meta["namespace"] not in (namespace, ROOT_NAMESPACE):
            continue
        selector = spec.get("selector", {}).get("matchLabels", {})
        # a sidecar ignores targetRef policies (pilot/pkg/model/policyattachment.go)
        if spec.get("targetRef") or spec.get("targetRefs") or any(
                labels.get(k) != v for k, v in selector.items()):
            continue
        if spec.get("action", "ALLOW") != "ALLOW":
            raise NotImplementedError(f"{meta['name']}: only ALLOW policies are rendered here")
        rules = spec.get("rules", [])
        for i, rule in enumerate(rules):
            policies[f"ns[{meta['namespace']}]-policy[{meta['name']}]-rule[{i}]"] = _rbac_policy(rule)
        if not rules:
            policies[f"ns[{meta['namespace']}]-policy[{meta['name']}]-rule[0]"] = {
                "permissions": [{"not_rule": {"any": True}}],
                "principals": [{"not_id": {"any": True}}]}
    if not policies:
        return []
    # istiod always names the dry-run prefix of the action, even with no dry-run rules.
    return [{"name": "envoy.filters.http.rbac", "typed_config": {
        "@type": RBAC_TYPE,
        "rules": {"policies": policies},
        "shadow_rules_stat_prefix": "istio_dry_run_allow_",
    }}]


def _rbac_policy(rule: dict) -> dict:
    if set(rule) - {"when"}:
        raise NotImplementedError(f"only `when` is rendered here, not {sorted(set(rule) - {'when'})}")
    ids = []
    for cond in rule.get("when", []):
        m = REQUEST_HEADER_KEY.fullmatch(cond["key"])
        if not m:
            raise NotImplementedError(f"only request.headers[...] is rendered here, not {cond['key']}")
        if cond.get("values"):
            ids.append({"or_ids": {"ids": [_header_principal(m[1], v) for v in cond["values"]]}})
        if cond.get("notValues"):
            ids.append({"not_id": {"or_ids": {"ids": [_header_principal(m[1], v)
                                                      for v in cond["notValues"]]}}})
    return {"permissions": [{"and_rules": {"rules": [{"any": True}]}}],
            "principals": [{"and_ids": {"ids": ids or [{"any": True}]}}]}


def _header_principal(name: str, value: str) -> dict:
    """Istio's HeaderMatcher: `*` is presence, a leading `*` a suffix, a trailing one a prefix;
    case-sensitive values, the header name as written (Envoy lowercases it)."""
    if value == "*":
        return {"header": {"name": name, "present_match": True}}
    if value.startswith("*"):
        return {"header": {"name": name, "string_match": {"suffix": value[1:]}}}
    if value.endswith("*"):
        return {"header": {"name": name, "string_match": {"prefix": value[:-1]}}}
    return {"header": {"name": name, "string_match": {"exact": value}}}


# --------------------------------------------------------------------------- Envoy configs


def node(workload: str, app: str, ns: str, labels: dict[str, str], pod: str) -> dict:
    """Envoy node identity and metadata as istio-agent sets them for a sidecar."""
    return {
        "id": f"sidecar~{HOST}~{pod}.{ns}~{ns}.svc.cluster.local",
        "cluster": f"{app}.{ns}",
        "metadata": {
            "NAMESPACE": ns,
            "LABELS": dict(labels),
            "WORKLOAD_NAME": workload,
            "CLUSTER_ID": "Kubernetes",
            "MESH_ID": TRUST_DOMAIN,
            "INSTANCE_IPS": HOST,
            "ISTIO_VERSION": "1.28.0",
        },
    }


def _tls_certificate(ident: Identity) -> dict:
    return {"certificate_chain": {"filename": str(ident.cert_path)},
            "private_key": {"filename": str(ident.key_path)}}


def inbound_listener(port: int, ident: Identity, ca_path: Path, plugin_config: dict | str | None,
                     wasm: Path | None = None, network_config: dict | str | None = None,
                     tcp_cluster: str | None = None, authz_filters: list[dict] | None = None) -> dict:
    """An Istio-PERMISSIVE-style inbound listener: mTLS and plaintext on the same port, the wasm
    filter deciding. Like Istio's inbound HCM, XFCC is APPEND_FORWARD with the current peer's
    subject/URI/DNS set (so the app can see who connected, independent of the filter).
    `plugin_config` None: no HTTP plugin; `network_config`: the NETWORK plugin in front of the HCM
    (or of `tcp_proxy` to `tcp_cluster`, for a TCP service), as a `type: NETWORK` WasmPlugin;
    `authz_filters`: HTTP filters after the plugin, where istiod puts AuthorizationPolicies' RBAC
    filters (`rbac_filters`)."""
    name = f"inbound_{port}"
    cluster = f"inbound|{port}||"

    def filters(chain: str) -> list[dict]:
        front = [] if network_config is None else [
            harness.network_wasm_filter(f"{name}_network", network_config, wasm)]
        if tcp_cluster:
            return front + [harness.tcp_proxy(f"{name}_{chain}", tcp_cluster)]
        return front + [hcm(chain)]

    def hcm(chain: str) -> dict:
        http_filters = [] if plugin_config is None else [harness.wasm_filter(name, plugin_config, wasm)]
        return {"name": "envoy.filters.network.http_connection_manager", "typed_config": {
            "@type": HCM_TYPE,
            "stat_prefix": f"{name}_{chain}",
            "forward_client_cert_details": "APPEND_FORWARD",
            "set_current_client_cert_details": {"subject": True, "dns": True, "uri": True},
            "route_config": {"name": name, "virtual_hosts": [{
                "name": "inbound", "domains": ["*"],
                "routes": [{"match": {"prefix": "/"}, "route": {"cluster": cluster}}],
            }]},
            "http_filters": [*http_filters, *(authz_filters or []), harness.ROUTER],
        }}

    return {
        "name": name,
        "address": {"socket_address": {"address": HOST, "port_value": port}},
        "listener_filters": [{
            "name": "envoy.filters.listener.tls_inspector",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.listener."
                                      "tls_inspector.v3.TlsInspector"},
        }],
        "filter_chains": [
            {
                "name": "tls",
                "filter_chain_match": {"transport_protocol": "tls"},
                "transport_socket": {"name": TLS_SOCKET, "typed_config": {
                    "@type": DOWNSTREAM_TLS,
                    "require_client_certificate": True,
                    "common_tls_context": {
                        "tls_certificates": [_tls_certificate(ident)],
                        "validation_context": {"trusted_ca": {"filename": str(ca_path)}},
                    },
                }},
                "filters": filters("tls"),
            },
            {
                "name": "plaintext",
                "filter_chain_match": {"transport_protocol": "raw_buffer"},
                "filters": filters("plaintext"),
            },
        ],
    }


def outbound_listener(name: str, port: int, cluster: str) -> dict:
    return harness.listener(name, port, [], cluster=cluster)


def outbound_cluster(name: str, port: int, ident: Identity | None = None, ca_path: Path | None = None,
                     server_spiffe: str | None = None, sni: str | None = None) -> dict:
    """A cluster to a destination; with `ident`, it originates Istio mTLS (client cert, CA, the
    server's SPIFFE URI verified)."""
    cluster = harness.static_cluster(name, port)
    if ident is not None:
        validation: dict = {"trusted_ca": {"filename": str(ca_path)}}
        if server_spiffe:
            validation["match_typed_subject_alt_names"] = [
                {"san_type": "URI", "matcher": {"exact": server_spiffe}}]
        tls: dict = {"@type": UPSTREAM_TLS, "common_tls_context": {
            "tls_certificates": [_tls_certificate(ident)],
            "validation_context": validation,
        }}
        if sni:
            tls["sni"] = sni
        cluster["transport_socket"] = {"name": TLS_SOCKET, "typed_config": tls}
    return cluster


# --------------------------------------------------------------------------- the mesh


@dataclass
class Cell(harness.Response):
    """One curl: `status` 0 (printed 000) means the connection failed or was reset."""
    headers: dict[str, list[str]] = field(default_factory=dict)
    body: bytes = b""
    error: str = ""

    @property
    def code(self) -> str:
        return f"{self.status:03d}"

    @property
    def rejected_by_peer_authn(self) -> bool:
        return self.status == 401 and self.text == PEER_AUTHN_FAILED

    def __repr__(self) -> str:
        extra = f" error={self.error!r}" if self.error else f" body={self.text[:120]!r}"
        return f"Cell({self.code}{extra})"


@dataclass
class ServerSidecar:
    ns: str
    ident: Identity
    app: harness.EchoServer
    ports: dict[str, int]
    admin_port: int
    envoy: harness.Envoy | None = None
    generation: int = 0

    @property
    def labels(self) -> dict[str, str]:
        return {"app": "httpbin", "version": "v1"}


class Mesh:
    """See the module docstring. Use as a context manager or call start()/stop()."""

    CLIENTS = {  # client sidecar -> (namespace, trust domain)
        "foo": ("foo", TRUST_DOMAIN),
        "bar": ("bar", TRUST_DOMAIN),
        "evil": ("foo", "evil.local"),
    }

    def __init__(self, workdir: Path, wasm: Path | None = None, verbose: bool = True,
                 server_clusters: list[dict] | None = None) -> None:
        self.workdir = Path(workdir)
        # extra clusters for the server sidecars, e.g. a JWKS host's outbound|443||host
        self.server_clusters = list(server_clusters or [])
        self.wasm = wasm
        self.verbose = verbose
        self.pki = Pki(self.workdir / "pki")
        self.plugin_config: dict | str | None = None
        self.servers: dict[str, ServerSidecar] = {}
        self.clients: dict[str, harness.Envoy] = {}
        # (client, destination ns, port name) -> client sidecar outbound port
        self.outbound: dict[tuple[str, str, str], int] = {}
        self.legacy_app: harness.EchoServer | None = None
        self._apps: list[harness.EchoServer] = []

    # ---- lifecycle

    def start(self, plugin_config: dict | str = "{}") -> "Mesh":
        try:
            self.legacy_app = self._app()
            for ns in SIDECAR_NAMESPACES:
                ident = self.pki.issue(f"httpbin.{ns}", spiffe_id(ns, "httpbin"),
                                       dns=[f"httpbin.{ns}.svc.cluster.local"], ips=[HOST])
                self.servers[ns] = ServerSidecar(
                    ns, ident, self._app(), {p: harness.free_port() for p in PORT_NAMES},
                    harness.free_port())
            for client in self.CLIENTS:
                self.clients[client] = self._client_sidecar(client)
            for envoy in self.clients.values():
                envoy.wait_ready()
            for port in self.outbound.values():
                harness.wait_for_port(port)
            self.apply(plugin_config)
        except BaseException:
            self.stop()
            raise
        return self

    def _app(self) -> harness.EchoServer:
        app = harness.EchoServer().__enter__()
        self._apps.append(app)
        return app

    def _client_sidecar(self, client: str) -> harness.Envoy:
        ns, td = self.CLIENTS[client]
        ident = self.pki.issue(f"curl.{client}", spiffe_id(ns, "curl", td))
        listeners, clusters = [], []
        for dst, server in self.servers.items():
            for port_name, port in server.ports.items():
                host = f"httpbin.{dst}.svc.cluster.local"
                cluster = f"outbound|{port}||{host}"
                clusters.append(outbound_cluster(cluster, port, ident, self.pki.ca_path,
                                                 server.ident.spiffe, sni=f"outbound_.{port}_._.{host}"))
                local = harness.free_port()
                self.outbound[(client, dst, port_name)] = local
                listeners.append(outbound_listener(f"outbound_{dst}_{port_name}", local, cluster))
        legacy_cluster = f"outbound|{self.legacy_app.port}||httpbin.legacy.svc.cluster.local"
        clusters.append(outbound_cluster(legacy_cluster, self.legacy_app.port))
        local = harness.free_port()
        self.outbound[(client, "legacy", "http")] = local
        listeners.append(outbound_listener("outbound_legacy_http", local, legacy_cluster))

        admin = harness.free_port()
        config = harness.bootstrap(admin, listeners, clusters)
        config["node"] = node("curl", "curl", ns, {"app": "curl"}, f"curl-{client}-5d8f6b7c9-abcde")
        workdir = self.workdir / f"curl.{client}"
        workdir.mkdir(parents=True, exist_ok=True)
        return harness.Envoy(config, workdir, admin, concurrency=1).start()

    def _server_config(self, server: ServerSidecar, plugin_config: dict | str | None,
                       network_config: dict | str | None = None,
                       authz_filters: list[dict] | None = None) -> dict:
        listeners = [inbound_listener(port, server.ident, self.pki.ca_path, plugin_config, self.wasm,
                                      network_config, authz_filters=authz_filters)
                     for port in server.ports.values()]
        clusters = [harness.static_cluster(f"inbound|{port}||", server.app.port)
                    for port in server.ports.values()] + self.server_clusters
        config = harness.bootstrap(server.admin_port, listeners, clusters)
        config["node"] = node("httpbin", "httpbin", server.ns, server.labels,
                              f"httpbin-7b4f9d6c8-{server.ns}xyz")
        return config

    def apply(self, plugin_config: dict | str | None, force: bool = False,
              network: dict | str | None = None, authz_filters: list[dict] | None = None) -> None:
        """(Re)start both server sidecars with this pluginConfig (None: no HTTP plugin), with
        `network`, the NETWORK plugin's, and with `authz_filters` after the HTTP plugin, unless
        they are already running so. Raises harness.EnvoyStartError when a sidecar refuses them."""
        key = json.dumps([plugin_config, network, authz_filters or []], sort_keys=True)
        if not force and key == self.plugin_config and all(
                s.envoy and s.envoy.proc.poll() is None for s in self.servers.values()):
            return
        self.plugin_config = None
        running = [s.envoy for s in self.servers.values() if s.envoy and s.envoy.proc.poll() is None]
        for envoy in running:
            envoy.proc.terminate()  # both at once; stop() then waits
        for envoy in running:
            envoy.stop()
        for server in self.servers.values():
            server.generation += 1
            workdir = self.workdir / f"httpbin.{server.ns}" / f"gen-{server.generation:02d}"
            workdir.mkdir(parents=True, exist_ok=True)
            server.envoy = harness.Envoy(self._server_config(server, plugin_config, network, authz_filters),
                                         workdir, server.admin_port, concurrency=1).start()
        for server in self.servers.values():
            server.envoy.wait_ready()
            for port in server.ports.values():
                harness.wait_for_port(port)
        self.plugin_config = key

    def stop(self) -> None:
        for server in self.servers.values():
            if server.envoy:
                server.envoy.stop()
        for envoy in self.clients.values():
            envoy.stop()
        for app in self._apps:
            app.__exit__(None, None, None)
        self._apps.clear()

    def assert_no_vm_crash(self) -> None:
        """Every server sidecar generation's log, once the mesh has stopped."""
        for envoy_dir in sorted(self.workdir.glob("httpbin.*/gen-*")):
            harness.assert_no_vm_crash((envoy_dir / "envoy.log").read_text(errors="replace"), envoy_dir)

    def __enter__(self) -> "Mesh":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def envoys(self) -> list[harness.Envoy]:
        return [s.envoy for s in self.servers.values() if s.envoy] + list(self.clients.values())

    # ---- traffic

    def port(self, src: str, dst: str, port: str = "http") -> int:
        """Where the Python 'curl' of namespace `src` connects to reach httpbin.`dst`."""
        if src == "legacy":
            if dst == "legacy":
                return self.legacy_app.port
            return self.servers[dst].ports[port]
        return self.outbound[(src, dst, port if dst != "legacy" else "http")]

    def call(self, src: str, dst: str, port: str = "http", path: str = "/ip", headers=None,
             timeout: float = 5.0) -> Cell:
        """GET like `curl http://httpbin.<dst>:<port>/ip` from curl.<src>; status 0 on a reset."""
        pairs = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
        host_port = self.servers[dst].ports[port] if dst in self.servers else self.legacy_app.port
        conn = http.client.HTTPConnection(HOST, self.port(src, dst, port), timeout=timeout)
        try:
            conn.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
            conn.putheader("Host", f"httpbin.{dst}:{host_port}")
            conn.putheader("User-Agent", "curl/8.5.0")
            conn.putheader("Accept", "*/*")
            for name, value in pairs:
                conn.putheader(name, value)
            conn.endheaders()
            resp = conn.getresponse()
            got: dict[str, list[str]] = {}
            for name, value in resp.getheaders():
                got.setdefault(name.lower(), []).append(value)
            return Cell(resp.status, got, resp.read())
        except (OSError, http.client.HTTPException) as err:
            return Cell(0, error=f"{type(err).__name__}: {err}")
        finally:
            conn.close()

    def curl(self, src: str, dst: str, port: str = "http", path: str = "/ip",
             headers: dict[str, str] | None = None) -> tuple[int, str]:
        """The seeds' own client: `curl -s http://httpbin.<dst>:<port>/ip -o /dev/null -w
        "%{http_code}"` from curl.<src>; (curl's exit code, the printed code, 000 when no HTTP
        answer came)."""
        host_port = self.servers[dst].ports[port] if dst in self.servers else self.legacy_app.port
        cmd = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10",
               "-H", f"Host: httpbin.{dst}:{host_port}"]
        for name, value in (headers or {}).items():
            cmd += ["-H", f"{name}: {value}"]
        cmd.append(f"http://{HOST}:{self.port(src, dst, port)}{path}")
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        return out.returncode, out.stdout.strip()

    def curl_matrix(self, title: str = "", port: str = "http") -> dict[tuple[str, str], tuple[int, str]]:
        """The task's reachability table with real curl, printed as the task prints it, with
        kubectl's "command terminated with exit code N" for a curl that failed."""
        cells = {(src, dst): self.curl(src, dst, port) for src in NAMESPACES for dst in NAMESPACES}
        if self.verbose:
            lines = [f"--- {title}" + ("" if port == "http" else f" ({port} port)")]
            for (src, dst), (code, printed) in cells.items():
                lines.append(f"curl.{src} to httpbin.{dst}: {printed}")
                if code:
                    lines.append(f"command terminated with exit code {code}")
            print("\n".join(lines))
        return cells

    def matrix(self, title: str = "", port: str = "http", show: bool | None = None) -> dict[tuple[str, str], Cell]:
        """The task's reachability table, from ∈ {foo, bar, legacy} to httpbin.{foo, bar, legacy}
        (`port` of foo/bar: "http" = main, "alt" = the second inbound port). Printed like
        `curl.foo to httpbin.bar: 200`."""
        cells = {(src, dst): self.call(src, dst, port) for src in NAMESPACES for dst in NAMESPACES}
        if self.verbose if show is None else show:
            print(format_matrix(cells, title, port))
        return cells


def format_matrix(cells: dict[tuple[str, str], Cell], title: str = "", port: str = "http") -> str:
    suffix = "" if port == "http" else f" ({port} port)"
    lines = [f"--- {title}{suffix}" if title else f"---{suffix}"]
    for (src, dst), cell in cells.items():
        note = ""
        if cell.status == 0:
            note = f"   ({cell.error})"
        elif cell.status != 200:
            note = f"   ({cell.text[:60]!r})"
        lines.append(f"curl.{src} to httpbin.{dst}{'' if dst == 'legacy' or port == 'http' else ':' + port}: "
                     f"{cell.code}{note}")
    return "\n".join(lines)


def stats(envoy: harness.Envoy, *fragments: str) -> dict[str, int]:
    """Counters/gauges of an Envoy whose name contains all `fragments`."""
    status, text = envoy.admin_get("/stats")
    assert status == 200, f"admin /stats answered {status}"
    out = {}
    for line in text.splitlines():
        name, _, value = line.partition(": ")
        if all(f in name for f in fragments) and value.strip().lstrip("-").isdigit():
            out[name] = int(value)
    return out

