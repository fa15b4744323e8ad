"""The scene test_monitoring.py watches: one Envoy, its stats configured as istio-agent renders
them from the documented extraStatTags (with Istio's default stats matcher), plugins whose outcomes
are known (JWT enforced and in a dry run, keys that go stale, keys never fetched, the three peer
modes, the NETWORK plugin), key servers, and a real Prometheus scraping it with the alert rules
loaded, their windows scaled down. One measured round of traffic between two scrapes, then a
rollout (PERMISSIVE + census, dry-run STRICT, STRICT) while the alerts are watched."""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
import time
from collections import defaultdict
from pathlib import Path

import yaml

import harness
from jwt_mint import claims, ec_key, jwks, mint
from prometheus_process import Prometheus

MONITORING = harness.REPO / "docs" / "monitoring"
RULES = MONITORING / "mesh-authn.rules.yaml"
ISTIO_STATS = MONITORING / "istio-stats.yaml"
KEY = ec_key("k1")
SCALE = 30  # rule windows: 1 min -> 2 s
REASONS = ("missing", "malformed", "issuer", "expired", "not_yet_valid", "audience", "key_not_found",
           "signature", "jwks_unavailable", "peer_plaintext", "peer_untrusted", "internal", "binding",
           "dpop", "overload")

# plugin -> pluginConfig ("{A}", "{B}", "{down}": JWKS URIs and clusters filled in below)
PLUGINS = {
    "jwt": {"jwtRules": [{"jwksUri": "A"}], "requireToken": True},
    "jwt-dry": {"jwtRules": [{"jwksUri": "A"}], "requireToken": True, "dryRun": True},
    "keys-stale": {"jwtRules": [{"jwksUri": "B", "jwksCacheDuration": "2s"}]},
    "jwks-down": {"jwtRules": [{"jwksUri": "down", "timeout": "1s"}]},
    "census": {"mtls": {"mode": "PERMISSIVE"}},
    "strict-dry": {"mtls": {"mode": "STRICT"}, "dryRun": True},
    "strict": {"mtls": {"mode": "STRICT"}},
}
NETWORK = "net"  # the NETWORK plugin, STRICT: plaintext connections refused

# One round of traffic per plugin: (what is sent, how many)
ROUND = {
    "jwt": [("good", 6), ("expired", 3), ("missing", 2)],
    "jwt-dry": [("good", 4), ("expired", 2), ("missing", 1)],
    "keys-stale": [("good", 3)],
    "jwks-down": [("good", 3)],
    "census": [("missing", 5)],
    "strict-dry": [("missing", 4)],
    "strict": [("missing", 2)],
    NETWORK: [("connection", 3)],
}


def istio_stats_config(extra_stat_tags: list[str]) -> dict:
    """The stats config istio-agent writes into a proxy's bootstrap (tools/packaging/common/
    envoy_bootstrap.json and pkg/bootstrap in istio/istio), reduced to what decides the plugin's
    series: one `(<tag>=\\.=(.*?);\\.;)` regex per extraStatTags name, Envoy's default tags off,
    and the stats matcher's inclusion list with only the patterns istio-agent always adds (no
    proxyStatsMatcher, no annotations)."""
    prefixes = ["reporter=", "cluster_manager", "listener_manager", "server", "cluster.xds-grpc",
                "wasm", "component", "istio"]
    suffixes = ["rbac.allowed", "rbac.denied", "shadow_allowed", "shadow_denied"]
    return {
        "use_all_default_tags": False,
        "stats_tags": [{"tag_name": t, "regex": f"({t}=\\.=(.*?);\\.;)"} for t in extra_stat_tags],
        "stats_matcher": {"inclusion_list": {"patterns": [
            *({"prefix": p} for p in prefixes), *({"suffix": s} for s in suffixes),
            {"safe_regex": {"regex": r"vhost\..*\.route\..*"}}]}},
    }


def extra_stat_tags() -> list[str]:
    (operator,) = list(yaml.safe_load_all(ISTIO_STATS.read_text()))
    return operator["spec"]["meshConfig"]["defaultConfig"]["extraStatTags"]


def scaled(text: str) -> str:
    """A rules file with every duration (range, offset, `for`) divided by SCALE, at least 1 s."""
    def seconds(n: str, unit: str) -> str:
        s = int(n) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]
        return f"{max(1, s // SCALE)}s"

    text = re.sub(r"\[(\d+)([smhd])\]", lambda m: f"[{seconds(*m.groups())}]", text)
    text = re.sub(r"offset (\d+)([smhd])", lambda m: f"offset {seconds(*m.groups())}", text)
    return re.sub(r"for: (\d+)([smhd])", lambda m: f"for: {seconds(*m.groups())}", text)


class Traffic:
    def __init__(self, envoy, ports: dict[str, int], net_port: int) -> None:
        self.envoy, self.ports, self.net_port = envoy, ports, net_port
        now = {"good": mint(KEY, "ES256", KEY.kid, claims(lifetime=3600)),
               "expired": mint(KEY, "ES256", KEY.kid, claims(lifetime=-3600))}
        self.tokens = now

    def send(self, plugin: str, what: str, n: int) -> None:
        for _ in range(n):
            if plugin == NETWORK:
                with socket.create_connection((harness.HOST, self.net_port), timeout=5) as s:
                    s.sendall(b"hello")
                    try:
                        s.recv(16)
                    except OSError:
                        pass
                continue
            headers = {"Authorization": f"Bearer {self.tokens[what]}"} if what in self.tokens else {}
            harness.request(self.ports[plugin], "GET", "/", headers)

    def round(self, only: set[str] | None = None) -> None:
        for plugin, sends in ROUND.items():
            if only is None or plugin in only:
                for what, n in sends:
                    self.send(plugin, what, n)


def envoy_total(envoy, metric: str) -> int:
    status, text = envoy.admin_get("/stats?filter=" + metric)
    assert status == 200
    return sum(int(line.rsplit(": ", 1)[1]) for line in text.splitlines() if line.endswith(tuple("0123456789"))
               and f";.;{metric}:" in line)


@contextlib.contextmanager
def observe(upstream_port: int, workdir: Path):
    """Sets the scene up, plays it, and yields what was seen (`run`)."""
    servers = {"A": harness.JwksServer().start(), "B": harness.JwksServer().start()}
    for s in servers.values():
        s.serve(jwks(KEY.jwk()))
    dead_port = harness.free_port()
    clusters = [harness.static_cluster(f"jwks-{n}", s.port) for n, s in servers.items()]
    clusters.append(harness.static_cluster("jwks-down", dead_port))
    ports = {p: harness.free_port() for p in PLUGINS}
    listeners = []
    for plugin, cfg in PLUGINS.items():
        cfg = json.loads(json.dumps(cfg))
        for rule in cfg.get("jwtRules", []):
            src = rule["jwksUri"]
            rule["issuer"] = claims()["iss"]
            rule["jwksUri"] = (servers[src].uri if src in servers
                               else f"http://{harness.HOST}:{dead_port}/keys")
            rule["jwksCluster"] = f"jwks-{src}"
        listeners.append(harness.listener(plugin, ports[plugin], [harness.wasm_filter(plugin, cfg)]))
    net_port = harness.free_port()
    listeners.append({
        "name": NETWORK, "address": {"socket_address": {"address": harness.HOST, "port_value": net_port}},
        "filter_chains": [{"filters": [harness.network_wasm_filter(NETWORK, {"mtls": {"mode": "STRICT"}}),
                                       harness.tcp_proxy(NETWORK, "tcp-echo")]}]})
    tcp = harness.TcpServer().__enter__()
    clusters.append(harness.static_cluster("tcp-echo", tcp.port))
    admin = harness.free_port()
    config = harness.bootstrap(admin, listeners, [harness.static_cluster("echo", upstream_port), *clusters])
    config["stats_config"] = istio_stats_config(extra_stat_tags())
    envoy = harness.Envoy(config, workdir, admin).start()
    rules = workdir / "rules.yaml"
    rules.write_text(scaled(RULES.read_text()))
    prom = Prometheus(workdir, {"envoy": (f"{harness.HOST}:{admin}", "/stats/prometheus")}, [rules])
    try:
        envoy.wait_ready()
        prom.start()
        yield run(envoy, prom, servers, ports, net_port)
    finally:
        prom.stop()
        envoy.stop()
        tcp.__exit__(None, None, None)
        for s in servers.values():
            s.stop()
        harness.assert_no_vm_crash(envoy.log_text(), "monitoring")


def run(envoy, prom: Prometheus, servers, ports, net_port) -> dict:
    traffic = Traffic(envoy, ports, net_port)
    started = time.time()
    # Warm-up: keys loaded, tokens cached, census series created; then B starts failing.
    assert harness.eventually(lambda: servers["A"].count and servers["B"].count, 10)
    traffic.round(only={"jwt", "keys-stale", "census", "strict-dry", "jwks-down"})
    servers["B"].fail("500")
    stale_since = time.time()

    def flushed(expected: int) -> bool:
        return envoy_total(envoy, "mesh_authn_requests_total") + \
            envoy_total(envoy, "mesh_authn_connections_total") >= expected

    warm = envoy_total(envoy, "mesh_authn_requests_total")
    time.sleep(1.2)  # the plugins add their counts once a second
    assert harness.eventually(lambda: flushed(warm), 5)
    before = prom.wait_scrapes("envoy", 2)
    sent = sum(n for sends in ROUND.values() for _, n in sends)
    baseline = envoy_total(envoy, "mesh_authn_requests_total") + envoy_total(envoy, "mesh_authn_connections_total")
    traffic.round()
    assert harness.eventually(lambda: flushed(baseline + sent), 10), "the round was not counted"
    after = prom.wait_scrapes("envoy", 2)

    # Then a rollout, while the scaled alerts are watched: the JWT plugins' rounds go on, and the
    # peers' callers move to mTLS one stage after another (PERMISSIVE + census, dry-run STRICT,
    # STRICT), until every expected alert has fired and the last stage has run.
    firing: dict[str, set] = defaultdict(set)
    stop = threading.Event()
    stages = {"PERMISSIVE + census": time.time()}

    def keep_sending() -> None:
        t0 = time.monotonic()
        while not stop.is_set():
            t = time.monotonic() - t0
            traffic.round(only={"jwt", "jwt-dry", "keys-stale", "jwks-down"})
            if t < STAGE_S:
                traffic.send("census", "missing", max(0, 4 - int(t * 5 // STAGE_S)))
            elif t < 2 * STAGE_S:
                stages.setdefault("dry-run STRICT", time.time())
                traffic.send("strict-dry", "missing", 2 if t < 1.6 * STAGE_S else 0)
            else:
                stages.setdefault("STRICT", time.time())
            stop.wait(1.0)

    sender = threading.Thread(target=keep_sending, daemon=True)
    sender.start()
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            for a in prom.alerts():
                if a["state"] == "firing":
                    firing[a["labels"]["alertname"]].add(frozenset(a["labels"].items()))
            if len(stages) == 3 and time.time() > stages["STRICT"] + STAGE_S and \
                    all(seen(firing, name) >= want for name, want in expected_firing(ports).items()):
                break
            time.sleep(1)
    finally:
        stop.set()
        sender.join(30)
    time.sleep(1.2)
    ended = prom.wait_scrapes("envoy", 2)
    save_rollout(prom, stages, started, ended, ports)
    return {"prom": prom, "envoy": envoy, "ports": ports, "before": before, "after": after,
            "firing": firing, "started": started, "stale_since": stale_since, "ended": ended,
            "asked": {name: server.count for name, server in servers.items()}}


STAGE_S = 15
ROLLOUT = harness.REPO / "target" / "monitoring" / "rollout.json"
ROLLOUT_QUERIES = {
    "census": 'sum by (port, mode) (rate(mesh_authn_plaintext_total{plugin=~"census|strict-dry"}[3s]))',
    "would_refuse": 'sum by (reason) (rate(mesh_authn_refused_total{plugin="strict-dry", dry_run="true"}[3s]))',
    "refused": 'sum by (reason) (rate(mesh_authn_refused_total{plugin="strict", dry_run="false"}[3s]))',
}


def save_rollout(prom: Prometheus, stages: dict, start: float, end: float, ports: dict) -> None:
    """The rollout as the test's Prometheus saw it, for envoy-test/rollout_chart.py (the README's
    picture): PERMISSIVE (census), dry-run STRICT and STRICT are three listeners of the test
    Envoy that the callers reach one after another."""
    ROLLOUT.parent.mkdir(parents=True, exist_ok=True)
    ROLLOUT.write_text(json.dumps({
        "stages": stages, "start": start, "end": end,
        "ports": {str(ports["census"]): "PERMISSIVE", str(ports["strict-dry"]): "dry-run STRICT"},
        "series": {name: prom.query_range(q, stages["PERMISSIVE + census"] + 1, end, 1)
                   for name, q in ROLLOUT_QUERIES.items()},
    }, indent=1))


def expected_firing(ports: dict[str, int]) -> dict[str, set[tuple]]:
    """Each alert's firing instances (their plugin, reason, port) while the rounds go on."""
    return {
        "MeshAuthnKeysStale": {(("plugin", "keys-stale"),)},
        "MeshAuthnJwksUnavailable": {(("plugin", "jwks-down"),)},
        "MeshAuthnDryRunWouldRefuse": {
            (("plugin", "jwt-dry"), ("reason", "expired")), (("plugin", "jwt-dry"), ("reason", "missing")),
            (("plugin", "strict-dry"), ("reason", "peer_plaintext"))},
        "MeshAuthnPlaintextOnStrictPort": {(("plugin", "strict-dry"), ("port", str(ports["strict-dry"])))},
        "MeshAuthnHostVerifyFailed": set(),
        "MeshAuthnVmFailing": set(),
    }


def seen(firing: dict[str, set], alert: str) -> set[tuple]:
    keep = {"plugin", "reason", "port"}
    return {tuple(sorted((k, v) for k, v in labels if k in keep)) for labels in firing.get(alert, ())}


# --------------------------------------------------------------------------- evaluation


