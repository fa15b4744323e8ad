"""Run the mesh-authn wasm module inside a real Envoy on 127.0.0.1: the one module the tests
import. The pieces live by concern (`servers`: upstreams and key servers; `envoy_config`: filters,
listeners, bootstrap; `envoy_process`: the Envoy process and its stats; `clients`: requests);
here the gateway that puts them together: one Envoy with a listener per scenario.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from clients import Response, eventually, request  # noqa: F401
from envoy_config import (  # noqa: F401
    ISTIO_BASE_NORMALIZATION, NETWORK_ROOT_ID, REPO, ROOT_ID, ROUTER, VM_ID, WithHcm, bootstrap,
    jwt_authn_filter, listener, network_wasm_filter, static_cluster, tcp_proxy, wasm_filter,
    wasm_path)
from envoy_process import (  # noqa: F401
    BATCHED_COUNTERS, Envoy, EnvoyStartError, assert_no_vm_crash, envoy_binary, envoy_version,
    filter_counter, filter_stat, read_stats, wait_for_flush)
from servers import HOST, EchoServer, JwksServer, TcpServer, free_port, wait_for_port  # noqa: F401


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
