"""Istio's end-user authentication walkthrough against mesh-authn in a local Envoy.

    .venv/bin/python envoy-test/demo.py          # Ctrl-C to stop
    DEMO_PORT=9090 DEMO_SECONDS=5 .venv/bin/python envoy-test/demo.py
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
from jwt_mint import ISSUER, claims, jwks, mint, rsa_key  # noqa: E402

SCENARIO = "istio-demo"


def plugin_config(jwks_json: str) -> dict:
    """RequestAuthentication from the Istio task: one issuer, default token locations."""
    return {"jwtRules": [{"issuer": ISSUER, "jwks": jwks_json}], "requireToken": False}


def curl(url: str, token: str | None = None) -> str:
    args = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}\\n", url]
    if token:
        args[1:1] = ["-H", f"Authorization: Bearer {token}"]
    return " ".join(shlex.quote(a) for a in args)


def wait_for_stop(seconds: float | None) -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait(seconds)
    except KeyboardInterrupt:
        pass


def main() -> int:
    wasm = harness.wasm_path()
    if not wasm.is_file():
        print(f"wasm module not found at {wasm}; build it first or set MESH_AUTHN_WASM", file=sys.stderr)
        return 1
    port = int(os.environ.get("DEMO_PORT", "8080"))
    seconds = float(os.environ["DEMO_SECONDS"]) if os.environ.get("DEMO_SECONDS") else None
    workdir = harness.REPO / ".demo"
    workdir.mkdir(exist_ok=True)

    key = rsa_key("demo-key")
    jwks_json = jwks(key.jwk())
    (workdir / "jwks.json").write_text(json.dumps(json.loads(jwks_json), indent=2) + "\n")
    token = mint(key, "RS256", claims=claims(sub="demo-user", lifetime=3600))

    with harness.EchoServer() as upstream:
        try:
            gateway = harness.start_gateway({SCENARIO: plugin_config(jwks_json)}, workdir, upstream.port,
                                            ports={SCENARIO: port})
        except (harness.EnvoyStartError, TimeoutError) as err:
            print(err, file=sys.stderr)
            return 1
        try:
            url = f"http://{harness.HOST}:{port}/headers"
            print(f"mesh-authn demo: Envoy on {harness.HOST}:{port}, log {gateway.envoy.log_path}")
            print(f"JWKS: {workdir / 'jwks.json'}\n")
            print("# no token -> 200")
            print(curl(url))
            print("# invalid token -> 401")
            print(curl(url, "deadbeef"))
            print("# valid token (issuer testing@secure.istio.io, expires in 1 hour) -> 200")
            print(curl(url, token))
            print("\nCtrl-C to stop." if seconds is None else f"\nStopping in {seconds:g}s.", flush=True)
            wait_for_stop(seconds)
        finally:
            gateway.envoy.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
