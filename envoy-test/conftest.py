"""Fixtures: one echo upstream and ONE Envoy per test session.

Each test module declares the listeners it needs with a module-level
`envoy_scenarios(keys) -> {name: pluginConfig | None | [http filters]}`; the
session Envoy gets one listener per scenario of every collected module.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
from jwt_mint import KeyRing  # noqa: E402

_ENVOYS: list[harness.Envoy] = []  # whose logs a failing test reports


def pytest_report_header(config) -> str:
    """Which Envoy runs the tests (`make e2e` and `make e2e-oldest` differ only in that)."""
    try:
        return f"envoy {'.'.join(map(str, harness.envoy_version()))}: {harness.envoy_binary()}"
    except Exception as err:  # a header; a missing Envoy fails the tests themselves, with its cause
        return f"envoy: unknown ({err})"


@pytest.fixture(scope="session")
def keys() -> KeyRing:
    return KeyRing.generate()


@pytest.fixture(scope="session")
def upstream():
    with harness.EchoServer() as server:
        yield server


def _collected_scenarios(session, keys) -> dict:
    scenarios: dict = {}
    for module in {item.module for item in session.items if getattr(item, "module", None)}:
        builder = getattr(module, "envoy_scenarios", None)
        if builder:
            for name, cfg in builder(keys).items():
                assert name not in scenarios, f"scenario {name!r} declared twice"
                scenarios[name] = cfg
    return scenarios


def require_wasm() -> Path:
    path = harness.wasm_path()
    if not path.is_file():
        pytest.fail(f"wasm module not found at {path}: build it (cargo build --release "
                    f"--target wasm32-wasip1 -p mesh-authn) or set MESH_AUTHN_WASM", pytrace=False)
    return path


@pytest.fixture(scope="session")
def wasm_module() -> Path:
    return require_wasm()


@pytest.fixture(scope="session")
def gateway(request, keys, upstream, tmp_path_factory):
    scenarios = _collected_scenarios(request.session, keys)
    if any(isinstance(cfg, (dict, str)) for cfg in scenarios.values()):
        require_wasm()
    workdir = tmp_path_factory.mktemp("envoy")
    try:
        gw = harness.start_gateway(scenarios, workdir, upstream.port)
    except harness.EnvoyStartError as err:
        pytest.fail(str(err), pytrace=False)
    _ENVOYS.append(gw.envoy)
    yield gw
    gw.envoy.stop()
    _ENVOYS.remove(gw.envoy)


@pytest.fixture
def scratch_envoy(tmp_path):
    """Factory for a short-lived extra Envoy (e.g. one expected to refuse its config)."""
    started: list[harness.Envoy] = []

    def make(config: dict) -> harness.Envoy:
        envoy = harness.Envoy(config, tmp_path, config["admin"]["address"]["socket_address"]["port_value"])
        started.append(envoy)
        _ENVOYS.append(envoy)
        return envoy.start()

    yield make
    for envoy in started:
        envoy.stop()
        _ENVOYS.remove(envoy)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    item._envoy_log_marks = {id(e): e.log_size() for e in _ENVOYS}
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when != "teardown" and report.failed:
        marks = getattr(item, "_envoy_log_marks", {})
        for envoy in _ENVOYS:
            tail = envoy.log_tail(40, since=marks.get(id(envoy), 0))
            report.sections.append((f"envoy log ({envoy.log_path})", tail or "(empty)"))


def pytest_sessionfinish(session, exitstatus):
    for envoy in list(_ENVOYS):
        envoy.stop()
