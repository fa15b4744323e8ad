"""Side-by-side benchmark: mesh-authn against Envoy's native jwt_authn in ONE Envoy (one worker).

    python envoy-test/bench.py [--seconds 5] [--rounds 3] [--connections 32] [--soak 1000000]

Listeners, all answering with a direct response so only the filters differ:
  none           no filter
  native         jwt_authn, no cache
  native-cache   jwt_authn with jwt_cache_config
  wasm-floor     a wasm module that makes the host calls wasm-cache makes and does nothing else
                 (envoy-test/floor): the cost of the proxy-wasm ABI itself
  wasm-cache     mesh-authn, defaults (host verify_signature, jwtCacheSize 1024)
  wasm-nocache   mesh-authn, jwtCacheSize 0 (every request verified by the host)
  wasm-module    mesh-authn, signatureVerifier "wasm", jwtCacheSize 0 (verified in the module)
Each is driven by wrk in interleaved rounds with the same token, for RS256-2048 and ES256. Prints
req/s (median of rounds), p50 and p99 latency, and ratios to the native rows; then the module size
and the VM's linear memory before and after a soak of --soak requests.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
from jwt_mint import ISSUER, claims, ec_key, jwks, mint, rsa_key  # noqa: E402

ROWS = ["none", "native", "native-cache", "wasm-floor", "wasm-cache", "wasm-nocache", "wasm-module"]
FLOOR = harness.REPO / "target" / "wasm32-wasip1" / "release" / "wasm_floor.wasm"
RATIOS = [("wasm-cache", "native-cache"), ("wasm-nocache", "native"), ("wasm-module", "native")]


def direct_response_listener(name: str, port: int, filters: list[dict]) -> dict:
    lst = harness.listener(name, port, filters)
    hcm = lst["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["route_config"]["virtual_hosts"][0]["routes"] = [
        {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "ok"}}}]
    return lst


def native(jwks_json: str, cache: bool) -> list[dict]:
    f = harness.jwt_authn_filter({"jwtRules": [{"issuer": ISSUER, "jwks": jwks_json}], "requireToken": True})
    if cache:
        for p in f["typed_config"]["providers"].values():
            p["jwt_cache_config"] = {"jwt_cache_size": 1024}
    return [f]


def wasm(name: str, jwks_json: str, **extra) -> list[dict]:
    cfg = {"jwtRules": [{"issuer": ISSUER, "jwks": jwks_json}], "requireToken": True, **extra}
    return [harness.wasm_filter(name, cfg)]


def start(jwks_json: str, workdir: Path) -> tuple[harness.Envoy, dict[str, int]]:
    filters = {
        "none": [],
        "native": native(jwks_json, cache=False),
        "native-cache": native(jwks_json, cache=True),
        "wasm-floor": [harness.wasm_filter("wasm-floor", {}, FLOOR)],
        "wasm-cache": wasm("wasm-cache", jwks_json),
        "wasm-nocache": wasm("wasm-nocache", jwks_json, jwtCacheSize=0),
        "wasm-module": wasm("wasm-module", jwks_json, jwtCacheSize=0, signatureVerifier="wasm"),
    }
    ports = {name: harness.free_port() for name in ROWS}
    admin = harness.free_port()
    config = harness.bootstrap(admin, [direct_response_listener(n, ports[n], filters[n]) for n in ROWS], [])
    config["admin"]["address"]["socket_address"]["port_value"] = admin
    envoy = harness.Envoy(config, workdir, admin, concurrency=1).start()
    envoy.wait_ready()
    if PINNED:
        subprocess.run(["taskset", "-a", "-p", "-c", "0", str(envoy.proc.pid)], check=True, capture_output=True)
    for port in ports.values():
        harness.wait_for_port(port)
    return envoy, ports


# With two or more CPUs, Envoy runs on CPU 0 and wrk on CPU 1, so they do not trade places between
# rounds; that halves the spread between rounds on a 2-core machine.
PINNED = (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None


def wrk(port: int, token: str, seconds: int, connections: int) -> dict:
    out = subprocess.run(
        (["taskset", "-c", "1"] if PINNED else []) + ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency",
         "-H", f"Authorization: Bearer {token}", f"http://{harness.HOST}:{port}/"],
        capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in out:
        raise SystemExit(f"non-2xx answers on port {port}:\n{out}")

    def latency(pct: str) -> float:
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not m:
            return float("nan")
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    return {"rps": float(rps.group(1)) if rps else 0.0, "p50": latency("50"), "p99": latency("99"),
            "requests": int(total.group(1)) if total else 0}


def run(title: str, envoy_ports: dict[str, int], token: str, args) -> dict[str, dict]:
    samples: dict[str, list[dict]] = {name: [] for name in ROWS}
    for _ in range(args.rounds):
        for name in ROWS:
            samples[name].append(wrk(envoy_ports[name], token, args.seconds, args.connections))
    table = {name: {k: statistics.median(s[k] for s in runs) for k in ("rps", "p50", "p99")}
             for name, runs in samples.items()}
    print(f"\n{title}: {args.rounds} interleaved rounds of {args.seconds}s, wrk -t1 -c{args.connections}, "
          "Envoy --concurrency 1" + (", Envoy on CPU 0 and wrk on CPU 1" if PINNED else ""))
    print(f"{'listener':<14}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}   vs native")
    for name in ROWS:
        row = table[name]
        base = "native-cache" if name in ("wasm-cache", "wasm-floor") else "native"
        ratio = f"{row['rps'] / table[base]['rps']:.2f}x {base}" if name.startswith("wasm") else ""
        print(f"{name:<14}{row['rps']:>10.0f}{row['p50']:>9.3f}{row['p99']:>9.3f}   {ratio}")
    over_none = {n: 1e6 / table[n]["rps"] - 1e6 / table["none"]["rps"] for n in ("native-cache", "wasm-floor", "wasm-cache")}
    print(f"per request over `none`: native-cache {over_none['native-cache']:.2f} us, wasm-floor "
          f"{over_none['wasm-floor']:.2f} us, wasm-cache {over_none['wasm-cache']:.2f} us "
          f"(filter logic {over_none['wasm-cache'] - over_none['wasm-floor']:.2f} us above the floor)")
    return table


def memory(envoy: harness.Envoy) -> int:
    _, text = envoy.admin_get("/stats?filter=mesh_authn\\.wasm-cache\\.vm_memory_bytes$")
    values = [int(l.rsplit(":", 1)[1]) for l in text.splitlines() if l.strip()]
    return max(values) if values else -1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--soak", type=int, default=1_000_000)
    args = ap.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk not found: apt-get install wrk (or `make bench`, which does)")
    wasm_path = harness.wasm_path()
    print(f"module: {wasm_path} ({wasm_path.stat().st_size / 1024:.0f} KiB)")

    rsa, ec = rsa_key("bench-rsa"), ec_key("bench-ec")
    set_json = jwks(rsa.jwk(), ec.jwk())
    envoy, ports = start(set_json, harness.scratch_dir("mesh-authn-bench-"))
    try:
        rs256 = mint(rsa, "RS256", rsa.kid, claims(sub="bench", lifetime=7200))
        es256 = mint(ec, "ES256", ec.kid, claims(sub="bench", lifetime=7200))
        for name, port in ports.items():  # warm-up, and every listener must accept the tokens
            for token in (rs256, es256):
                status = harness.request(port, headers={"Authorization": f"Bearer {token}"}).status
                assert status == 200, (name, status)
        run("RS256-2048", ports, rs256, args)
        run("ES256", ports, es256, args)

        before = memory(envoy)
        sent = 0
        while sent < args.soak:
            sent += wrk(ports["wasm-cache"], rs256, 10, args.connections)["requests"]
        print(f"\nVM linear memory (wasm-cache): {before / 1024:.0f} KiB before, "
              f"{memory(envoy) / 1024:.0f} KiB after {sent} more requests")
    finally:
        envoy.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
