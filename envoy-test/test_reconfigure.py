"""Plugins that come and go in one VM: a listener's pluginConfig replaced over and over (file-based
LDS, as istiod's pushes do), while another plugin keeps running in the same VM. Each new config gets
its own root context; the old root is told it is done and frees its state; requests always reach
the root of the plugin that serves them."""

from __future__ import annotations

import json
import os

import harness
from harness import eventually
from bench import direct_response_listener
from jwt_mint import claims, jwks, mint, rsa_key

CYCLES = 4


def plugin_config(issuer: str, key, version: int = 0) -> dict:
    # A different clock skew makes each version a new plugin (Envoy shares identical ones).
    return {"jwtRules": [{"issuer": issuer, "jwks": jwks(key.jwk())}], "requireToken": True,
            "clockSkewSeconds": 60 + version}


def write_lds(path, listener: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"resources": [
        {"@type": "type.googleapis.com/envoy.config.listener.v3.Listener", **listener}]}))
    os.rename(tmp, path)  # Envoy watches for the file being moved into place


def status(port: int, token: str) -> int:
    return harness.request(port, headers={"Authorization": f"Bearer {token}"}).status


def test_plugin_config_replaced_repeatedly(tmp_path):
    keys = {"a": rsa_key("a"), "b": rsa_key("b")}
    tokens = {n: mint(k, "RS256", k.kid, claims(iss=f"https://{n}.example")) for n, k in keys.items()}

    def filters(n: str, version: int) -> list[dict]:
        return [harness.wasm_filter("swapped", plugin_config(f"https://{n}.example", keys[n], version))]

    steady_port, swapped_port, admin = harness.free_port(), harness.free_port(), harness.free_port()
    lds = tmp_path / "lds.json"
    write_lds(lds, direct_response_listener("swapped", swapped_port, filters("a", 0)))
    config = harness.bootstrap(admin, [direct_response_listener(
        "steady", steady_port, [harness.wasm_filter("steady", plugin_config("https://a.example", keys["a"]))])], [])
    config["node"] = {"id": "reconfigure", "cluster": "mesh-authn-test"}
    config["dynamic_resources"] = {"lds_config": {"path_config_source": {"path": str(lds)},
                                                  "resource_api_version": "V3"}}
    envoy = harness.Envoy(config, tmp_path, admin, concurrency=2,
                          extra_args=("--drain-time-s", "1", "--drain-strategy", "immediate")).start()
    try:
        envoy.wait_ready()
        harness.wait_for_port(swapped_port)
        for cycle in range(CYCLES):
            now, old = ("a", "b") if cycle % 2 == 0 else ("b", "a")
            if cycle:
                write_lds(lds, direct_response_listener("swapped", swapped_port, filters(now, cycle)))
            assert eventually(lambda: status(swapped_port, tokens[now]) == 200
                              and status(swapped_port, tokens[old]) == 401), (cycle, envoy.log_tail())
            for _ in range(10):
                assert status(swapped_port, tokens[now]) == 200
                assert status(swapped_port, tokens[old]) == 401
                # The plugin that never changed still answers from its own root.
                assert status(steady_port, tokens["a"]) == 200
                assert status(steady_port, tokens["b"]) == 401
        # Replaced roots were told they are done (after the 1 s drain) on both workers, and the
        # plugins still running are unaffected.
        assert eventually(lambda: envoy.log_path.read_text().count("done; its keys, cache and counts are freed")
                          >= 2 * (CYCLES - 1), timeout=20), envoy.log_tail()
        assert status(swapped_port, tokens[now]) == 200 and status(swapped_port, tokens[old]) == 401
        assert status(steady_port, tokens["a"]) == 200 and status(steady_port, tokens["b"]) == 401
        log = envoy.log_path.read_text()
        assert "panicked" not in log and "Function: proxy_on" not in log, envoy.log_tail()
    finally:
        envoy.stop()
