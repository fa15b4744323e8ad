"""Side-by-side benchmark: mesh-authn against Envoy's native jwt_authn, one token and many users.

    python envoy-test/bench.py [--seconds 5] [--rounds 3] [--pair-rounds 8] [--pair-seconds 3]
                               [--connections 32] [--soak 1000000]
                               [--users 20000] [--zipf-s 1.0] [--native-large-size N]
                               [--only one-token|many-users|dpop|network|all] [--baseline OTHER.wasm]

One token: one Envoy (--concurrency 1) with a listener per row, all answering with a direct
response so only the filters differ:
  none            no filter
  native          jwt_authn, no cache
  native-cache    jwt_authn with jwt_cache_config (jwt_cache_size 1024)
  wasm-floor      a wasm module that makes the host calls wasm-cache makes and does nothing else
                  (envoy-test/floor): the cost of the proxy-wasm ABI itself
  wasm-cache      mesh-authn, defaults (host verify_signature, verified-token cache)
  wasm-nocache    mesh-authn, jwtCacheSize 0 (every request verified by the host)
  wasm-module     mesh-authn, signatureVerifier "wasm", jwtCacheSize 0 (verified in the module)
With --baseline, also
  wasm-baseline   another build of mesh-authn (say, the last release), defaults: an A/B of a
                  change measured in the same Envoy and rounds as wasm-cache (and, in the NETWORK
                  tables, conn-baseline: that build as the NETWORK plugin beside conn-strict)
Each is driven by wrk in interleaved rounds with the same token, for RS256-2048 and ES256. Prints
req/s (median of rounds), p50 and p99 latency, ratios to the native rows; wasm-cache against the
floor (and the baseline) in --pair-rounds more rounds of the two alone, as the median of the
rounds' ratios; then
the VM's linear memory before and after a soak of --soak requests on wasm-cache.

Many users: --users RS256 tokens of one key, a `sub` each, sent by envoy-test/bench_zipf.lua with
Zipf(--zipf-s) popularity (the user of rank i with weight 1/i^s), to the rows
  istio           jwt_authn without jwt_cache_config: what istiod renders for RequestAuthentication
  native-default  jwt_authn with jwt_cache_config {} (Envoy's default: 100 tokens per worker)
  native-large    jwt_authn with jwt_cache_size = the entries mesh-authn's cache holds when full on
                  this workload (probed first on an Envoy of its own; --native-large-size overrides)
  wasm            mesh-authn, defaults
on Envoy --concurrency 1 (pinned like the one-token run), then on a fresh Envoy --concurrency 2
(not pinned). Every row is warmed for 3 s before the interleaved rounds. Prints req/s, p50, p99,
the cache hit ratio over the measured rounds and wasm's ratio to each native row; then VM memory
and the cache's bytes against its budget around a soak of --soak requests on wasm.

Sender-constrained tokens (--only dpop): one ES256 token on one worker, sent as a bearer token
(`bearer`) and as a DPoP-bound token with a fresh proof each request (`dpop`, proofs made
beforehand and each sent once, by envoy-test/bench_dpop.lua); and over mutual TLS, as a bearer token
(`mtls-bearer`) and bound to the client certificate (`mtls-bound`), through a front listener that
adds the client certificate wrk cannot present. Each pair in interleaved rounds.

The NETWORK plugin (--only network): Istio-style inbound listeners (mTLS and plaintext on one
port) answering directly, reached over mTLS through front listeners: a new connection per request
with the plugin under STRICT (`conn-strict`) and without it (`conn-none`); and mTLS clients while
a second wrk floods the port with plaintext, refused by the plugin (`flood-strict`) or by
filter-chain matching alone, as Istio does (`flood-chain`); and new mTLS connections with no
flood (`quiet-strict`) and while 10 500 connections that send a ClientHello and nothing more
(clients.StalledHandshakes, each opened again once closed) flood the listener with the plugin
(`stalled-strict`, more than the 10 000 handshakes it holds) and without it (`stalled-none`),
with the plugin's held gauge, its `overload` refusals, the listener's open connections and
Envoy's heap.

The tables also go to target/bench/bench.md, and a chart of every row's req/s to
target/bench/bench.png (matplotlib, from envoy-test/bench-requirements.txt).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
from jwt_mint import ISSUER, Key, claims, ec_key, jwks, mint, rsa_key  # noqa: E402

ONE_TOKEN_ROWS = ["none", "native", "native-cache", "wasm-floor", "wasm-cache", "wasm-nocache", "wasm-module"]
MANY_USERS_ROWS = ["istio", "native-default", "native-large", "wasm", "wasm-one-token"]
CACHED_ROWS = ["native-default", "native-large", "wasm"]
FLOOR = harness.REPO / "target" / "wasm32-wasip1" / "release" / "wasm_floor.wasm"
ZIPF_LUA = Path(__file__).resolve().parent / "bench_zipf.lua"
DPOP_LUA = Path(__file__).resolve().parent / "bench_dpop.lua"
DPOP_ROWS = {
    "bearer": "the token as a bearer token (cached)",
    "bearer-verify": "the token as a bearer token, its signature checked by the host every request",
    "bearer-fresh": "another token each request, none cached: a fresh signature checked by the host",
    "dpop": "DPoP-bound, a fresh proof each request",
}
OUT = harness.REPO / "target" / "bench"
WARMUP_SECONDS = 3
SOAK_USERS = 100_000  # the soak also runs with this many users: what a budget holds past the workload
# mesh-authn's default jwtCacheBytes, as the generated schema states it.
CACHE_BUDGET = json.loads((harness.REPO / "config-schema" / "plugin-config.schema.json").read_text())[
    "properties"]["jwtCacheBytes"]["default"]
LARGE_FALLBACK = 1024
TOKEN_LIFETIME = 7200

# With two or more CPUs, a one-worker Envoy runs on CPU 0 and wrk on CPU 1, so they do not trade
# places between rounds; that halves the spread between rounds on a 2-core machine.
CAN_PIN = (os.cpu_count() or 1) >= 2 and shutil.which("taskset") is not None

TIMES: dict[str, float] = {}


@contextmanager
def timed(part: str):
    start = time.monotonic()
    yield
    TIMES[part] = time.monotonic() - start


# --------------------------------------------------------------------------- Envoy


@dataclass
class Bench:
    """One Envoy with a direct-response listener per row."""
    envoy: harness.Envoy
    ports: dict[str, int]
    pinned: bool

    @property
    def threads(self) -> int:  # one wrk thread per Envoy worker
        return self.envoy.concurrency

    def conditions(self, args, rounds: int | None = None, seconds: int | None = None) -> str:
        return (f"{rounds or args.rounds} interleaved rounds of {seconds or args.seconds}s, wrk -t{self.threads} "
                f"-c{args.connections}, Envoy --concurrency {self.envoy.concurrency}"
                + (", Envoy on CPU 0 and wrk on CPU 1" if self.pinned else ""))

    def __enter__(self) -> "Bench":
        return self

    def __exit__(self, *exc) -> None:
        self.envoy.stop()


def direct_response_listener(name: str, port: int, filters: list[dict]) -> dict:
    lst = harness.listener(name, port, filters)
    hcm = lst["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["route_config"]["virtual_hosts"][0]["routes"] = [
        {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "ok"}}}]
    return lst


def native(jwks_json: str, cache: dict | None = None) -> list[dict]:
    f = harness.jwt_authn_filter({"jwtRules": [{"issuer": ISSUER, "jwks": jwks_json}], "requireToken": True})
    if cache is not None:
        for p in f["typed_config"]["providers"].values():
            p["jwt_cache_config"] = cache
    return [f]


def wasm(name: str, jwks_json: str, **extra) -> list[dict]:
    cfg = {"jwtRules": [{"issuer": ISSUER, "jwks": jwks_json}], "requireToken": True, **extra}
    return [harness.wasm_filter(name, cfg)]


def start(filters: dict[str, list[dict]], concurrency: int) -> Bench:
    ports = {name: harness.free_port() for name in filters}
    listeners = [direct_response_listener(n, ports[n], f) for n, f in filters.items()]
    return start_with(listeners, [], ports, concurrency)


def start_with(listeners: list[dict], clusters: list[dict], ports: dict[str, int], concurrency: int) -> Bench:
    """An Envoy of these listeners and clusters; `ports` are the rows wrk drives."""
    admin = harness.free_port()
    config = harness.bootstrap(admin, listeners, clusters)
    envoy = harness.Envoy(config, harness.scratch_dir("mesh-authn-bench-"), admin, concurrency).start()
    pinned = CAN_PIN and concurrency == 1
    try:
        envoy.wait_ready()
        if pinned:
            subprocess.run(["taskset", "-a", "-p", "-c", "0", str(envoy.proc.pid)], check=True, capture_output=True)
        for port in ports.values():
            harness.wait_for_port(port)
    except BaseException:
        envoy.stop()
        raise
    return Bench(envoy, ports, pinned)


def stats(envoy: harness.Envoy, *names: str) -> list[int | None]:
    """Envoy's stats by exact name, None for one it does not have (unlike harness.read_stats)."""
    pattern = "^(" + "|".join(re.escape(name) for name in names) + ")$"
    _, text = envoy.admin_get("/stats?filter=" + urllib.parse.quote(pattern))
    values = dict(line.rsplit(": ", 1) for line in text.splitlines() if ": " in line)
    return [int(values[name]) if name in values else None for name in names]


# --------------------------------------------------------------------------- load


@dataclass
class Load:
    """What wrk sends: its extra arguments, and the environment its Lua script reads."""
    args: list[str]
    env: dict[str, str] = field(default_factory=dict)


def one_token(token: str) -> Load:
    return Load(["-H", f"Authorization: Bearer {token}"])


def zipf(tokens: Path, s: float) -> Load:
    return Load(["-s", str(ZIPF_LUA)], {"BENCH_TOKENS": str(tokens), "BENCH_ZIPF_S": str(s)})


def in_order(tokens: Path, start: int) -> Load:
    return Load(["-s", str(ZIPF_LUA)], {"BENCH_TOKENS": str(tokens), "BENCH_ORDER": "seq", "BENCH_START": str(start)})


_SEEDS = itertools.count(1)  # every run its own Zipf stream, the same ones from one bench to the next


def wrk(bench: Bench, row: str, load: Load, seconds: int, connections: int, failures_allowed: bool = False) -> dict:
    """One wrk run; `failures`: answers other than 2xx and socket errors, which end the bench unless
    `failures_allowed`."""
    cmd = (["taskset", "-c", "1"] if bench.pinned else []) + [
        "wrk", f"-t{bench.threads}", f"-c{connections}", f"-d{seconds}s", "--latency", *load.args,
        f"http://{harness.HOST}:{bench.ports[row]}/"]
    env = {**os.environ, **load.env, "BENCH_SEED": str(next(_SEEDS))}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    out = done.stdout
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    failures = (int(non_2xx.group(1)) if non_2xx else 0) + (sum(map(int, socket_errors.groups())) if socket_errors else 0)
    if done.returncode != 0 or (non_2xx and not failures_allowed):
        raise SystemExit(f"wrk on {row} (port {bench.ports[row]}) failed:\n{out}{done.stderr}")

    def latency(pct: str) -> float:
        m = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not m:
            return float("nan")
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]

    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    return {"rps": float(rps.group(1)) if rps else 0.0, "p50": latency("50"), "p99": latency("99"),
            "requests": int(total.group(1)) if total else 0, "failures": failures}


def measure(bench: Bench, rows: list[str], load: Load | dict[str, Load], args,
            rounds: int | None = None, seconds: int | None = None) -> dict[str, dict]:
    """Medians over interleaved rounds (--rounds of --seconds unless given), so that drift on the
    machine spreads over every row, every other round in reverse order. `load`: what every row is
    sent, or each row's."""
    samples: dict[str, list[dict]] = {name: [] for name in rows}
    for i in range(rounds or args.rounds):
        # Every other round in reverse (ABBA), so that a row is not always measured after the same one.
        for name in (rows if i % 2 == 0 else rows[::-1]):
            row_load = load[name] if isinstance(load, dict) else load
            samples[name].append(wrk(bench, name, row_load, seconds or args.seconds, args.connections))
    return summarize(samples)


def summarize(samples: dict[str, list[dict]]) -> dict[str, dict]:
    """Each row's medians over its rounds, and `spread`: its rounds' req/s range over their median."""
    out = {}
    for name, runs in samples.items():
        out[name] = {k: statistics.median(r[k] for r in runs) for k in ("rps", "p50", "p99")}
        rps = [r["rps"] for r in runs]
        out[name]["spread"] = (max(rps) - min(rps)) / out[name]["rps"] if out[name]["rps"] else 0.0
        out[name]["rounds"] = len(runs)
        out[name]["runs"] = rps
    return out


def paired(measured: dict[str, dict], row: str, base: str) -> str:
    """`row` against `base` as the median of their rounds' ratios: each round measures the two
    back to back, so a round the machine was slower in slows both and cancels out."""
    ratios = sorted(a / b for a, b in zip(measured[row]["runs"], measured[base]["runs"]) if b)
    if not ratios:
        return "-"
    spread = f" (rounds {ratios[0]:.2f}-{ratios[-1]:.2f})" if len(ratios) > 1 else ""
    return f"{statistics.median(ratios):.2f}x{spread}"


def soak(bench: Bench, row: str, load: Load, total: int, connections: int) -> int:
    sent = 0
    while sent < total:
        sent += wrk(bench, row, load, 10, connections)["requests"]
    return sent


# --------------------------------------------------------------------------- output


@dataclass
class Table:
    """One benchmark's rows: printed, written as markdown, and drawn (req/s with `ratios`)."""
    name: str
    conditions: str
    header: list[str]
    rows: list[list[str]]
    notes: list[str]
    rps: dict[str, float]
    ratios: dict[str, str]
    # Each row's medians (rps, p50, p99 ms) and round-to-round spread, as `summarize` gives them.
    measured: dict[str, dict] = field(default_factory=dict)

    def text(self) -> str:
        widths = [max(len(row[i]) for row in [self.header, *self.rows]) for i in range(len(self.header))]

        def line(cells: list[str]) -> str:  # the first and last columns are words, the rest numbers
            inner = "".join(f"{c:>{w + 2}}" for c, w in zip(cells[1:-1], widths[1:-1]))
            return f"{cells[0]:<{widths[0]}}{inner}   {cells[-1]}".rstrip()

        return "\n".join([f"\n{self.name}: {self.conditions}", line(self.header), *map(line, self.rows), *self.notes])

    def markdown(self) -> str:
        align = ["---", *["--:"] * (len(self.header) - 2), "---"]
        grid = ("| " + " | ".join(row) + " |" for row in (self.header, align, *self.rows))
        return "\n".join([f"### {self.name}", "", self.conditions, "", *grid, "", *(f"{n}  " for n in self.notes)])


LATENCY_HEADER = ["listener", "req/s", "p50 ms", "p99 ms"]


def latency_cells(row: dict) -> list[str]:
    return [f"{row['rps']:.0f}", f"{row['p50']:.3f}", f"{row['p99']:.3f}"]


RECORDED = harness.REPO / "docs" / "performance.md"


def recorded_tables(text: str) -> dict[str, dict[str, float]]:
    """{table name: {listener: req/s}} of the tables docs/performance.md records in this script's
    markdown (`### <name>`, then rows `| <listener> | <req/s> | …`)."""
    tables: dict[str, dict[str, float]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("### "):
            current = tables.setdefault(line[4:].strip(), {})
        elif current is not None and (m := re.match(r"\|\s*`?([\w-]+)`?\s*\|\s*([\d ,]+)\s*\|", line)):
            current[m.group(1)] = float(m.group(2).replace(" ", "").replace(",", ""))
    return tables


def regressions(tables: list[Table], recorded: dict[str, dict[str, float]]) -> list[str]:
    """Rows whose req/s, relative to their table's first row (this run against the record: the
    machines may differ), fell by more than the two rows' round-to-round spread in this run."""
    found = []
    for t in tables:
        rec = recorded.get(t.name, {})
        ref = next((n for n in t.rps if n in rec), None)
        if ref is None:
            continue
        for row, rps in t.rps.items():
            if row == ref or row not in rec or not t.rps[ref] or not rec[ref]:
                continue
            if min(t.measured.get(n, {}).get("rounds", 0) for n in (row, ref)) < 2:
                continue  # one round has no spread to judge by
            now, then = rps / t.rps[ref], rec[row] / rec[ref]
            allowed = t.measured.get(row, {}).get("spread", 0) + t.measured.get(ref, {}).get("spread", 0)
            if now < then * (1 - allowed):
                found.append(f"{t.name}: {row} at {now:.2f}x {ref}, recorded {then:.2f}x "
                             f"(-{100 * (1 - now / then):.0f}%, beyond this run's spread of {100 * allowed:.0f}%)")
    return found


def pair(name: str, conditions: str, measured: dict[str, dict], base: tuple[str, str],
         row: tuple[str, str], unit: str) -> Table:
    """A table of two rows, `row` against `base` ((listener, what) each), printed."""
    ratio = f"{measured[row[0]]['rps'] / measured[base[0]]['rps']:.2f}x {unit}"
    t = Table(name, conditions, [*LATENCY_HEADER, "what"],
              [[base[0], *latency_cells(measured[base[0]]), base[1]],
               [row[0], *latency_cells(measured[row[0]]), f"{row[1]}: {ratio}"]],
              [f"{row[0]} / {base[0]}: {ratio}; median of the rounds' ratios {paired(measured, row[0], base[0])}"], {n: measured[n]["rps"] for n in (base[0], row[0])},
              {row[0]: ratio}, measured)
    print(t.text())
    return t


def write_markdown(tables: list[Table], memory: list[str]) -> Path:
    path = OUT / "bench.md"
    parts = [t.markdown() for t in tables]
    if memory:
        parts.append("### Memory\n\n" + "\n".join(f"{line}  " for line in memory))
    path.write_text("\n\n".join(parts) + "\n")
    return path


def chart(tables: list[Table]) -> Path | None:
    try:
        import matplotlib
    except ImportError:
        print("no chart: matplotlib is not installed (pip install -r envoy-test/bench-requirements.txt)")
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(tables), 2, figsize=(14, 1.2 + 0.45 * sum(len(t.rps) + 1 for t in tables)),
                             gridspec_kw={"height_ratios": [len(t.rps) + 1 for t in tables],
                                          "width_ratios": [3, 2]}, squeeze=False)
    for ax, table in zip(axes[:, 1], tables):  # latency: p99 behind p50, from the same rounds
        names = [n for n in list(table.rps)[::-1] if n in table.measured]
        p50 = [table.measured[n]["p50"] for n in names]
        p99 = [table.measured[n]["p99"] for n in names]
        ax.barh(names, p99, color="tab:gray", alpha=0.4, label="p99")
        ax.barh(names, p50, color=["tab:orange" if n.startswith("wasm") else "tab:blue" for n in names],
                label="p50")
        for y, (a, b) in enumerate(zip(p50, p99)):
            ax.text(b, y, f" {a:.2f} / {b:.2f}", va="center", fontsize=7)
        ax.set_xlim(0, max(p99, default=1) * 1.45)
        ax.set_title("p50 / p99 ms", fontsize=9, loc="left")
        ax.tick_params(labelsize=8)
        ax.set_yticklabels([])
    axes[-1, 1].set_xlabel("latency, ms (median of rounds)")
    for ax, table in zip(axes[:, 0], tables):
        names = list(table.rps)[::-1]
        values = [table.rps[n] for n in names]
        bars = ax.barh(names, values, color=["tab:orange" if n.startswith("wasm") else "tab:blue" for n in names])
        for bar, name in zip(bars, names):
            label = f" {table.rps[name]:,.0f}" + (f"  ({table.ratios[name]})" if name in table.ratios else "")
            ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, label, va="center", fontsize=8)
        ax.set_xlim(0, max(values) * 1.6)
        ax.set_title(table.name, fontsize=9, loc="left")
        ax.tick_params(labelsize=8)
    axes[-1, 0].set_xlabel("requests per second (median of rounds)")
    fig.tight_layout()
    path = OUT / "bench.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- one token


def one_token_filters(jwks_json: str, baseline: Path | None) -> dict[str, list[dict]]:
    rows = {
        "none": [],
        "native": native(jwks_json),
        "native-cache": native(jwks_json, {"jwt_cache_size": 1024}),
        "wasm-floor": [harness.wasm_filter("wasm-floor", {}, FLOOR)],
        "wasm-cache": wasm("wasm-cache", jwks_json),
        "wasm-nocache": wasm("wasm-nocache", jwks_json, jwtCacheSize=0),
        "wasm-module": wasm("wasm-module", jwks_json, jwtCacheSize=0, signatureVerifier="wasm"),
    }
    if baseline:
        config = {"jwtRules": [{"issuer": ISSUER, "jwks": jwks_json}], "requireToken": True}
        rows["wasm-baseline"] = [harness.wasm_filter("wasm-baseline", config, baseline)]
    return rows


def one_token_table(title: str, bench: Bench, token: str, args) -> Table:
    names = [*ONE_TOKEN_ROWS, *(["wasm-baseline"] if args.baseline else [])]
    table = measure(bench, names, one_token(token), args)
    rows, ratios = [], {}
    for name in names:
        base = "native-cache" if name in ("wasm-cache", "wasm-floor", "wasm-baseline") else "native"
        if name.startswith("wasm"):
            ratios[name] = f"{table[name]['rps'] / table[base]['rps']:.2f}x {base}"
        rows.append([name, *latency_cells(table[name]), ratios.get(name, "")])
    over_none = {n: 1e6 / table[n]["rps"] - 1e6 / table["none"]["rps"] for n in ("native-cache", "wasm-floor", "wasm-cache")}
    # The hit path against the floor is a few percent: it gets rounds of its own, the two rows back
    # to back in each, and the median of the rounds' ratios.
    hit_rows = ["wasm-floor", "wasm-cache", *(["wasm-baseline"] if args.baseline else [])]
    hit = measure(bench, hit_rows, one_token(token), args, args.pair_rounds, args.pair_seconds)
    notes = [f"per request over `none`: native-cache {over_none['native-cache']:.2f} us, wasm-floor "
             f"{over_none['wasm-floor']:.2f} us, wasm-cache {over_none['wasm-cache']:.2f} us "
             f"(filter logic {over_none['wasm-cache'] - over_none['wasm-floor']:.2f} us above the floor)",
             f"wasm-cache / wasm-floor: {paired(hit, 'wasm-cache', 'wasm-floor')}, "
             f"{args.pair_rounds} more rounds of {args.pair_seconds}s of the two alone"]
    if args.baseline:
        notes.append(f"wasm-cache / wasm-baseline ({args.baseline.name}): "
                     f"{paired(hit, 'wasm-cache', 'wasm-baseline')}")
    return Table(f"One token, {title}", bench.conditions(args), [*LATENCY_HEADER, "vs native"],
                 rows, notes, {n: table[n]["rps"] for n in names}, ratios, table)


def vm_memory(envoy: harness.Envoy, plugin: str) -> int | None:
    return stats(envoy, harness.filter_stat(plugin, "vm_memory_bytes"))[0]


def kib(value: int | None) -> str:
    return "n/a" if value is None else f"{value / 1024:.0f} KiB"


def run_one_token(jwks_json: str, rsa: Key, ec: Key, args) -> tuple[list[Table], list[str]]:
    with start(one_token_filters(jwks_json, args.baseline), 1) as bench:
        rs256 = mint(rsa, "RS256", rsa.kid, claims(sub="bench", lifetime=TOKEN_LIFETIME))
        es256 = mint(ec, "ES256", ec.kid, claims(sub="bench", lifetime=TOKEN_LIFETIME))
        for name, port in bench.ports.items():  # warm-up, and every listener must accept the tokens
            for token in (rs256, es256):
                status = harness.request(port, headers={"Authorization": f"Bearer {token}"}).status
                assert status == 200, (name, status)
        tables = []
        for title, token in (("RS256-2048", rs256), ("ES256", es256)):
            with timed(f"one token {title}"):
                tables.append(one_token_table(title, bench, token, args))
            print(tables[-1].text())

        with timed("one-token soak"):
            before = vm_memory(bench.envoy, "wasm-cache")
            sent = soak(bench, "wasm-cache", one_token(rs256), args.soak, args.connections)
            memory = [f"VM linear memory (one token, wasm-cache): {kib(before)} before, "
                      f"{kib(vm_memory(bench.envoy, 'wasm-cache'))} after {sent} more requests"]
    print("\n" + memory[0])
    return tables, memory


# --------------------------------------------------------------------------- DPoP


def dpop_requests(idp: Key, port: int, count: int, path: Path) -> str:
    """`count` DPoP requests for `port`, each its own fresh proof, with one token bound to the
    client's key; returns that token. Proofs stay fresh for the run under maxAge 3600s."""
    from jwt_mint import _public_members, dpop_proof, jwk_thumbprint

    client = ec_key("bench-dpop-client")
    jkt = jwk_thumbprint(_public_members(client.private))
    token = mint(idp, "ES256", idp.kid, claims(sub="bench", lifetime=TOKEN_LIFETIME, cnf={"jkt": jkt}))
    htu = f"http://{harness.HOST}:{port}/"

    def one(i: int) -> str:
        return f"DPoP {token} {dpop_proof(client, 'ES256', 'GET', htu, token)}"

    with ThreadPoolExecutor(os.cpu_count()) as pool:
        lines = list(pool.map(one, range(count), chunksize=2000))
    path.write_text("\n".join(lines) + "\n")
    return token


def mint_fresh(key: Key, count: int, path: Path) -> None:
    """`count` ES256 bearer tokens, each its own `sub`; one a line, as bench_dpop.lua reads them."""
    def one(i: int) -> str:
        return "Bearer " + mint(key, "ES256", key.kid, claims(sub=f"fresh-{i}", lifetime=TOKEN_LIFETIME))

    with ThreadPoolExecutor(os.cpu_count()) as pool:
        path.write_text("\n".join(pool.map(one, range(count), chunksize=2000)) + "\n")


def run_dpop(idp: Key, args) -> Table:
    """One token, ES256, on one worker: as a bearer token, cached and checked every time, and as a
    DPoP-bound token with a fresh proof each request (the proof's signature checked by the host
    every time, the token cached). The issue's budget for a DPoP request is one host ES256
    verification plus 10 % over a cached bearer request. What one verification costs is measured
    in the same rounds: `bearer-fresh` sends another token each request with the cache off, so
    that, as with DPoP proofs, every signature is one the host has not checked before;
    `bearer-verify` checks the same token's signature every request, which BoringSSL's
    variable-time verification does faster (its branches repeat)."""
    rule = {"issuer": ISSUER, "jwks": jwks(idp.jwk())}
    dpop_rule = {**rule, "dpop": {"mode": "REQUIRED", "maxAge": "3600s"}}
    filters = {"bearer": [harness.wasm_filter("bearer", {"jwtRules": [rule], "requireToken": True})],
               "bearer-verify": [harness.wasm_filter("bearer-verify", {"jwtRules": [rule], "requireToken": True,
                                                                       "jwtCacheSize": 0})],
               "bearer-fresh": [harness.wasm_filter("bearer-fresh", {"jwtRules": [rule], "requireToken": True,
                                                                     "jwtCacheSize": 0})],
               "dpop": [harness.wasm_filter("dpop", {"jwtRules": [dpop_rule], "requireToken": True,
                                                     "dpopReplayEntries": 4 << 20})]}
    with start(filters, 1) as bench:
        count = 12_000 * (args.rounds + 1) * args.seconds
        with timed("dpop proofs"):
            lines = OUT / "dpop-requests.txt"
            OUT.mkdir(parents=True, exist_ok=True)
            token = dpop_requests(idp, bench.ports["dpop"], count, lines)
            fresh = OUT / "fresh-tokens.txt"
            mint_fresh(idp, count, fresh)
        bearer = one_token(token)
        used = {"dpop": 0, "bearer-fresh": 0}

        def sequence(row: str) -> Load:
            return Load(["-s", str(DPOP_LUA)], {"BENCH_REQUESTS": str(lines if row == "dpop" else fresh),
                                                "BENCH_START": str(used[row])})

        samples: dict[str, list[dict]] = {name: [] for name in DPOP_ROWS}
        with timed("dpop rows"):
            for i in range(args.rounds + 1):  # the first round warms up
                for row in (DPOP_ROWS if i % 2 == 0 else list(DPOP_ROWS)[::-1]):
                    if row in used:
                        run = wrk(bench, row, sequence(row), args.seconds, args.connections)
                        used[row] += run["requests"] + 1 + args.connections
                    else:
                        run = wrk(bench, row, bearer, args.seconds, args.connections)
                    if i:
                        samples[row].append(run)
        assert max(used.values()) < count, f"{used} requests needed, {count} made"
        table = summarize(samples)
    us = {row: 1e6 / table[row]["rps"] for row in DPOP_ROWS}
    budget = us["bearer"] + 1.1 * (us["bearer-fresh"] - us["bearer"])
    ratio = f"{table['dpop']['rps'] / table['bearer']['rps']:.2f}x bearer"
    notes = ["per request: " + ", ".join(f"{row} {us[row]:.1f} us" for row in DPOP_ROWS)
             + f"; budget (cached bearer + 1.1 x bearer-fresh's verification) {budget:.1f} us: dpop "
             f"{'within it' if us['dpop'] <= budget else 'over it'} by {abs(budget - us['dpop']):.1f} us",
             f"dpop / bearer-fresh: {table['dpop']['rps'] / table['bearer-fresh']['rps']:.2f}x; median of the "
             f"rounds' ratios {paired(table, 'dpop', 'bearer-fresh')}"]
    for n in notes:
        print(n)
    rows = [[row, *latency_cells(table[row]), what + (f": {ratio}" if row == "dpop" else "")]
            for row, what in DPOP_ROWS.items()]
    t = Table("DPoP, ES256 token and proofs", bench.conditions(args) + ", after a warm-up round",
              [*LATENCY_HEADER, "what"], rows, notes, {row: table[row]["rps"] for row in DPOP_ROWS},
              {"dpop": ratio}, table)
    print(t.text())
    return t


# --------------------------------------------------------------------------- certificate-bound


def run_bound(idp: Key, args) -> Table:
    """One ES256 token on one worker over mutual TLS, as a bearer token and bound to the client's
    certificate (`certificateBinding: REQUIRED`). wrk cannot present a certificate, so a front
    listener of the same Envoy takes wrk's plaintext and forwards it over mTLS with the client's
    certificate to the filter's TLS listener (connections reused); both rows take that path."""
    import hashlib

    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    import mesh
    from jwt_mint import b64url

    pki = mesh.Pki(harness.scratch_dir("mesh-authn-bench-pki-"))
    server = pki.issue("server", mesh.spiffe_id("bench", "server"), ips=[harness.HOST])
    client = pki.issue("client", mesh.spiffe_id("bench", "client"))
    der = x509.load_pem_x509_certificate(client.cert_path.read_bytes()).public_bytes(serialization.Encoding.DER)
    token = mint(idp, "ES256", idp.kid, claims(sub="bench", lifetime=TOKEN_LIFETIME,
                                               cnf={"x5t#S256": b64url(hashlib.sha256(der).digest())}))
    rule = {"issuer": ISSUER, "jwks": jwks(idp.jwk())}
    configs = {"bearer": {"jwtRules": [rule], "requireToken": True},
               "bound": {"jwtRules": [{**rule, "certificateBinding": "REQUIRED"}], "requireToken": True}}
    back = {name: harness.free_port() for name in configs}
    front = {f"mtls-{name}": harness.free_port() for name in configs}
    listeners, clusters = [], []
    for name, cfg in configs.items():
        lst = direct_response_listener(name, back[name], [harness.wasm_filter(name, cfg)])
        lst["filter_chains"][0]["transport_socket"] = {"name": mesh.TLS_SOCKET, "typed_config": {
            "@type": mesh.DOWNSTREAM_TLS, "require_client_certificate": True,
            "common_tls_context": {"tls_certificates": [mesh._tls_certificate(server)],
                                   "validation_context": {"trusted_ca": {"filename": str(pki.ca_path)}}}}}
        listeners.append(lst)
        cluster = harness.static_cluster(f"to-{name}", back[name])
        cluster["transport_socket"] = {"name": mesh.TLS_SOCKET, "typed_config": {
            "@type": mesh.UPSTREAM_TLS,
            "common_tls_context": {"tls_certificates": [mesh._tls_certificate(client)]}}}
        clusters.append(cluster)
        listeners.append(harness.listener(f"mtls-{name}", front[f"mtls-{name}"], [], cluster=f"to-{name}"))
    rows = list(front)
    with start_with(listeners, clusters, front, 1) as bench:
        for row in rows:  # every row must accept the token, and warm up
            status = harness.request(bench.ports[row], headers={"Authorization": f"Bearer {token}"}).status
            assert status == 200, (row, status)
        with timed("certificate-bound rows"):
            # A few percent is the target, with rounds moving by a tenth: the hit pair's rounds.
            rounds = max(args.rounds, args.pair_rounds)
            table = measure(bench, rows, one_token(token), args, rounds, args.pair_seconds)
    return pair("Certificate-bound, ES256 token over mTLS",
                bench.conditions(args, rounds, args.pair_seconds) + ", through a front listener",
                table, ("mtls-bearer", "the token as a bearer token (cached)"),
                ("mtls-bound", "bound to the client certificate"), "bearer")


# --------------------------------------------------------------------------- NETWORK plugin


def run_network(args) -> list[Table]:
    """The NETWORK plugin under STRICT, on Istio-style inbound listeners (mTLS and plaintext on one
    port, tls_inspector choosing the chain: mesh.inbound_listener), answering directly. wrk cannot
    present a certificate, so front listeners of the same Envoy forward its plaintext over mTLS.

    New connections: every request a new mTLS connection (the front's cluster allows one request
    per connection), to a listener with the plugin and to the same listener without it.
    Plaintext flood: mTLS clients (connections reused) while a second wrk floods the same port with
    plaintext connections, which the plugin refuses, against the same flood on a listener that
    refuses plaintext by filter-chain matching alone (no plaintext chain: how Istio enforces
    STRICT)."""
    import mesh

    pki = mesh.Pki(harness.scratch_dir("mesh-authn-bench-pki-"))
    server = pki.issue("server", mesh.spiffe_id("bench", "server"), ips=[harness.HOST])
    client = pki.issue("client", mesh.spiffe_id("bench", "client"))
    strict = {"mtls": {"mode": "STRICT"}}
    back = {name: harness.free_port() for name in ("plain", "strict", "chain", *(["baseline"] if args.baseline else []))}
    listeners, clusters, front = [], [], {}
    for name, port in back.items():
        lst = mesh.inbound_listener(port, server, pki.ca_path, None, wasm=args.baseline if name == "baseline" else None,
                                    network_config=strict if name in ("strict", "baseline") else None)
        if name == "chain":
            lst["filter_chains"] = [c for c in lst["filter_chains"] if c["name"] == "tls"]
        for chain in lst["filter_chains"]:
            hcm = chain["filters"][-1]["typed_config"]
            hcm["route_config"]["virtual_hosts"][0]["routes"] = [
                {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "ok"}}}]
        listeners.append(lst)
    conn_rows = ["conn-none", "conn-strict", *(["conn-baseline"] if args.baseline else [])]
    for row, target, per_connection in [("conn-none", "plain", True), ("conn-strict", "strict", True),
                                        ("flood-strict", "strict", False), ("flood-chain", "chain", False),
                                        *([("conn-baseline", "baseline", True)] if args.baseline else [])]:
        cluster = mesh.outbound_cluster(f"to-{row}", back[target], client, pki.ca_path)
        if per_connection:
            cluster["typed_extension_protocol_options"] = {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "common_http_protocol_options": {"max_requests_per_connection": 1},
                    "explicit_http_config": {"http_protocol_options": {}}}}
        clusters.append(cluster)
        front[row] = harness.free_port()
        listeners.append(harness.listener(row, front[row], [], cluster=f"to-{row}"))
    with start_with(listeners, clusters, front, 1) as bench:
        for row in front:
            status = harness.request(bench.ports[row]).status
            assert status == 200, (row, status)
        with timed("network: new connections"):
            # A few percent either way, with rounds moving by a tenth: the pair gets as many rounds
            # as the hit path's, and its ratio is the median of the rounds' ratios.
            conn = measure(bench, conn_rows, Load([]), args,
                           max(args.rounds, args.pair_rounds), args.pair_seconds)
        with timed("network: plaintext flood"):
            flood = measure_flooded(bench, {"flood-strict": back["strict"], "flood-chain": back["chain"]}, args)
        refused = stats(bench.envoy, harness.filter_stat(f"inbound_{back['strict']}_network", "connections_refused"))[0]
        with timed("network: slow handshakes"):
            stalled, flood_notes = measure_stalled(bench, back, args)
    where = bench.conditions(args) + ", through a front listener"
    t3 = Table("NETWORK plugin, new mTLS connections under a slow-handshake flood",
               where + f"; {STALLED} connections that send a ClientHello and nothing more, each opened "
               "again once closed", [*LATENCY_HEADER, "failed", "what"],
               [[row, *latency_cells(stalled[row]), f"{stalled[row]['failed']:.1%}", what]
                for row, what in STALLED_ROWS.items()],
               flood_notes, {row: stalled[row]["rps"] for row in STALLED_ROWS}, {}, stalled)
    print(t3.text())
    conn_where = bench.conditions(args, max(args.rounds, args.pair_rounds), args.pair_seconds) + ", through a front listener"
    t1 = pair("NETWORK plugin, a new mTLS connection per request", conn_where, conn,
              ("conn-none", "inbound listener, no plugin"), ("conn-strict", "the NETWORK plugin, STRICT"), "without")
    if args.baseline:
        t1.notes.append(f"conn-strict / conn-baseline ({args.baseline.name}): {paired(conn, 'conn-strict', 'conn-baseline')}")
        print(t1.notes[-1])
    t2 = pair("NETWORK plugin, mTLS clients under a plaintext flood",
              where + f"; a second wrk -c{FLOOD_CONNECTIONS} floods the port in plaintext", flood,
              ("flood-chain", "plaintext refused by filter-chain matching (Istio)"),
              ("flood-strict", "plaintext refused by the NETWORK plugin"), "chain matching")
    t2.notes.append(f"the plugin refused {refused} plaintext connections")
    print(t2.notes[-1])
    return [t1, t2, t3]


STALLED = 10_500  # more than the 10 000 handshakes the plugin holds per worker (runtime/held.rs)
STALLED_ROWS = {
    "quiet-strict": "the NETWORK plugin, STRICT, no flood",
    "stalled-strict": "the NETWORK plugin, STRICT, under the flood",
    "stalled-none": "inbound listener, no plugin, under the flood",
}


def measure_stalled(bench: Bench, back: dict[str, int], args) -> tuple[dict[str, dict], list[str]]:
    """A new mTLS connection per request (the conn-* front listeners) with no flood, and while
    `STALLED` stalled handshakes flood the inbound listener, with the plugin and without it. While
    each flood lasts, the plugin's held gauge is sampled, and Envoy's heap and the listener's open
    connections are read at its end."""
    from clients import StalledHandshakes

    targets = {"quiet-strict": ("conn-strict", None), "stalled-strict": ("conn-strict", back["strict"]),
               "stalled-none": ("conn-none", back["plain"])}
    for row, (front, _) in targets.items():
        bench.ports[row] = bench.ports[front]
    plugin = f"inbound_{back['strict']}_network"
    held, overload = harness.filter_stat(plugin, "held_connections"), harness.filter_stat(plugin, "refused_overload")
    heap = "server.memory_allocated"
    samples: dict[str, list[dict]] = {row: [] for row in targets}
    peaks: dict[str, list] = {"held": [], "overload_per_s": [], "heap": {}, "open": {}, "closed_per_s": []}
    affinity = os.sched_getaffinity(0)
    if bench.pinned:  # the flood's client beside wrk, off Envoy's CPU
        os.sched_setaffinity(0, {1})
    try:
        for _ in range(args.rounds):
            for row, (_, port) in targets.items():
                if port is None:
                    run = wrk(bench, row, Load([]), args.seconds, args.connections, failures_allowed=True)
                    peaks["heap"].setdefault("quiet", []).append(stats(bench.envoy, heap)[0])
                else:
                    with StalledHandshakes(port, STALLED, refill=True) as flood:
                        time.sleep(3)  # the flood opened and held
                        seen, stop = [], threading.Event()

                        def sample() -> None:
                            while not stop.wait(0.5):
                                seen.append(stats(bench.envoy, held)[0] or 0)

                        sampler = threading.Thread(target=sample, daemon=True)
                        before = (stats(bench.envoy, overload)[0] or 0, flood.closed_by_server, time.monotonic())
                        sampler.start()
                        run = wrk(bench, row, Load([]), args.seconds, args.connections, failures_allowed=True)
                        stop.set()
                        sampler.join()
                        spent = time.monotonic() - before[2]
                        peaks["heap"].setdefault(row, []).append(stats(bench.envoy, heap)[0])
                        listener = f"listener.{harness.HOST}_{port}.downstream_cx_active"
                        peaks["open"].setdefault(row, []).append(stats(bench.envoy, listener)[0])
                        peaks["closed_per_s"].append((row, (flood.closed_by_server - before[1]) / spent))
                        if row == "stalled-strict":
                            peaks["held"].append(max(seen, default=0))
                            peaks["overload_per_s"].append(((stats(bench.envoy, overload)[0] or 0) - before[0]) / spent)
                    # Envoy closing the flood's connections would land in the next row's latency.
                    deadline = time.monotonic() + 30
                    while (stats(bench.envoy, listener)[0] or 0) > 100 and time.monotonic() < deadline:
                        time.sleep(0.2)
                run["failed"] = run["failures"] / max(run["requests"] + run["failures"], 1)
                samples[row].append(run)
    finally:
        os.sched_setaffinity(0, affinity)
    measured = summarize(samples)
    for row in targets:
        measured[row]["failed"] = statistics.median(r["failed"] for r in samples[row])
    mib = {k: statistics.median(v) / (1 << 20) for k, v in peaks["heap"].items() if None not in v}
    closed = {row: statistics.median(v for r, v in peaks["closed_per_s"] if r == row) for row in ("stalled-strict", "stalled-none")}
    notes = [f"held by the plugin under the flood: at most {max(peaks['held'])} (its cap: 10 000); "
             f"{statistics.median(peaks['overload_per_s']):,.0f} connections/s refused as held longest (reason overload); "
             f"the flood's connections closed by the proxy: {closed['stalled-strict']:,.0f}/s with the plugin, "
             f"{closed['stalled-none']:,.0f}/s without",
             "open connections on the flooded listener at the end of a round: "
             + ", ".join(f"{row} {statistics.median(v):,.0f}" for row, v in peaks["open"].items()),
             "Envoy's heap: " + ", ".join(f"{k} {v:.0f} MiB" for k, v in mib.items())]
    for n in notes:
        print(n)
    return measured, notes


FLOOD_CONNECTIONS = 64


def measure_flooded(bench: Bench, targets: dict[str, int], args) -> dict[str, dict]:
    """`measure`, each row's rounds run while a plaintext wrk floods its target port."""
    samples: dict[str, list[dict]] = {name: [] for name in targets}
    for _ in range(args.rounds):
        for row, port in targets.items():
            cmd = (["taskset", "-c", "1"] if bench.pinned else []) + [
                "wrk", "-t1", f"-c{FLOOD_CONNECTIONS}", f"-d{args.seconds + 1}s", f"http://{harness.HOST}:{port}/"]
            flood = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                time.sleep(0.5)
                samples[row].append(wrk(bench, row, Load([]), args.seconds, args.connections))
            finally:
                flood.wait(30)
    return summarize(samples)


# --------------------------------------------------------------------------- many users


def mint_users(key: Key, users: int, path: Path) -> None:
    """One token per user, `sub` user-<rank>, the most active first; one a line."""
    def one(rank: int) -> str:
        return mint(key, "RS256", key.kid, claims(sub=f"user-{rank}", lifetime=TOKEN_LIFETIME))

    with ThreadPoolExecutor(os.cpu_count()) as pool:  # signing releases the GIL
        path.write_text("\n".join(pool.map(one, range(1, users + 1))) + "\n")


def many_users_filters(jwks_json: str, large: int) -> dict[str, list[dict]]:
    return {
        "istio": native(jwks_json),
        "native-default": native(jwks_json, {}),  # an empty jwt_cache_config: 100 tokens per worker
        "native-large": native(jwks_json, {"jwt_cache_size": large}),
        "wasm": wasm("wasm", jwks_json),
        # The same filter sent one of the users' tokens: what many users should cost.
        "wasm-one-token": wasm("wasm-one-token", jwks_json),
    }


def fill_cache(bench: Bench, tokens: Path, users: int, connections: int, row: str = "wasm") -> None:
    """Send every token at least once, then wait until the filter has counted every request."""
    sent = 0
    while sent < users:
        sent += wrk(bench, row, in_order(tokens, sent), 1, connections)["requests"]
    if row.startswith("wasm"):
        harness.wait_for_flush(bench.envoy, row)


def cache_gauges(envoy: harness.Envoy) -> list[int | None]:
    return stats(envoy, *(harness.filter_stat("wasm", f"jwt_cache_{g}") for g in ("entries", "bytes")))


def probe_capacity(jwks_json: str, tokens: Path, args) -> int:
    """How many of these tokens mesh-authn's cache holds (one worker, defaults) once every one was sent."""
    with start({"wasm": wasm("wasm", jwks_json)}, 1) as bench:
        fill_cache(bench, tokens, args.users, args.connections)
        entries, size = cache_gauges(bench.envoy)
    if entries is None:
        print(f"the filter has no jwt_cache_entries gauge: native-large falls back to jwt_cache_size {LARGE_FALLBACK}")
        return LARGE_FALLBACK
    print(f"mesh-authn's cache holds {entries} of the {args.users} tokens in {kib(size)}: "
          f"native-large gets jwt_cache_size {entries}")
    return entries


def cache_counts(bench: Bench, row: str) -> tuple[int, int] | None:
    """(hits, misses) so far, or None where the filter does not count them."""
    if row == "wasm":
        harness.wait_for_flush(bench.envoy, row)  # the module adds its counts once a second
        names = [harness.filter_stat(row, f"jwt_cache_{c}") for c in ("hit", "miss")]
    else:
        names = [f"http.{row}.jwt_authn.jwt_cache_{c}" for c in ("hit", "miss")]
    hits, misses = stats(bench.envoy, *names)
    return None if hits is None or misses is None else (hits, misses)


def hit_ratio(before, after) -> str:
    if before is None or after is None:
        return "n/a"
    hits, misses = after[0] - before[0], after[1] - before[1]
    return f"{100 * hits / (hits + misses):.1f}%" if hits + misses else "n/a"


def many_users_table(bench: Bench, tokens: Path, large: int, args) -> Table:
    load = zipf(tokens, args.zipf_s)
    loads = {name: load for name in MANY_USERS_ROWS}
    loads["wasm-one-token"] = one_token(tokens.read_text().split("\n", 1)[0])
    for name in MANY_USERS_ROWS:  # caches at their steady state before anything is measured
        if name in CACHED_ROWS:  # every user seen once: the misses left are the cache's own
            fill_cache(bench, tokens, args.users, args.connections, name)
        wrk(bench, name, loads[name], WARMUP_SECONDS, args.connections)
    before = {name: cache_counts(bench, name) for name in CACHED_ROWS}
    table = measure(bench, MANY_USERS_ROWS, loads, args)
    hits = {name: hit_ratio(before[name], cache_counts(bench, name)) for name in CACHED_ROWS}
    what = {"istio": "native, no cache (Istio as deployed)",
            "native-default": "native, jwt_cache_config {} (100 per worker)",
            "native-large": f"native, jwt_cache_size {large} (as many as mesh-authn holds)",
            "wasm": f"mesh-authn, defaults (jwtCacheBytes {CACHE_BUDGET >> 20} MiB per VM)",
            "wasm-one-token": "mesh-authn, defaults, one of the users' tokens"}
    rows = [[name, *latency_cells(table[name]), hits.get(name, "-"), what[name]] for name in MANY_USERS_ROWS]
    wasm_over = {name: table["wasm"]["rps"] / table[name]["rps"] for name in MANY_USERS_ROWS if name != "wasm"}
    notes = [", ".join(f"wasm / {name} {ratio:.2f}x" for name, ratio in wasm_over.items())]
    conditions = (f"{args.users} RS256 tokens, Zipf s={args.zipf_s}; {bench.conditions(args)}, "
                  f"after a {WARMUP_SECONDS}s warm-up per row")
    return Table(f"Many users, --concurrency {bench.envoy.concurrency}", conditions,
                 [*LATENCY_HEADER, "cache hits", "what"], rows, notes, {n: table[n]["rps"] for n in MANY_USERS_ROWS},
                 {n: f"wasm / this {r:.2f}x" for n, r in wasm_over.items()}, table)


def many_users_soak(jwks_json: str, tokens: Path, users: int, args) -> list[str]:
    """Bytes per cached user, hit ratio and VM memory: every one of `users` tokens sent once,
    then --soak requests with Zipf popularity."""
    with start({"wasm": wasm("wasm", jwks_json)}, 1) as bench:
        fill_cache(bench, tokens, users, args.connections)
        memory, (entries, cached) = vm_memory(bench.envoy, "wasm"), cache_gauges(bench.envoy)
        before = cache_counts(bench, "wasm")
        sent = soak(bench, "wasm", zipf(tokens, args.zipf_s), args.soak, args.connections)
        after = cache_counts(bench, "wasm")
        memory_after, (entries_after, cached_after) = vm_memory(bench.envoy, "wasm"), cache_gauges(bench.envoy)
    per_user = f"{cached / entries:.0f} bytes per cached user" if entries else "no entries"
    return [f"{users} users: the cache holds {entries} ({per_user}, {kib(cached)} of its {kib(CACHE_BUDGET)} "
            f"budget) with every token sent once; {hit_ratio(before, after)} hits over {sent} more requests "
            f"(Zipf s={args.zipf_s}), then {entries_after} entries in {kib(cached_after)}; VM linear memory "
            f"{kib(memory)}, then {kib(memory_after)} (wasm, --concurrency 1)"]


def run_many_users(jwks_json: str, rsa: Key, args) -> tuple[list[Table], list[str]]:
    tokens = harness.scratch_dir("mesh-authn-bench-tokens-") / "tokens.txt"
    with timed("minting"):
        mint_users(rsa, args.users, tokens)
    print(f"\nminted {args.users} RS256 tokens in {TIMES['minting']:.1f} s")
    large = args.native_large_size
    if large is None:
        with timed("probe"):
            large = probe_capacity(jwks_json, tokens, args)
    tables = []
    for concurrency in (1, 2):
        with timed(f"many users c{concurrency}"), start(many_users_filters(jwks_json, large), concurrency) as bench:
            tables.append(many_users_table(bench, tokens, large, args))
        print(tables[-1].text())
    memory = []
    for users in sorted({args.users, SOAK_USERS}):
        path = tokens
        if users != args.users:
            path = tokens.with_name(f"tokens-{users}.txt")
            mint_users(rsa, users, path)
        with timed(f"many-users soak {users}"):
            memory += many_users_soak(jwks_json, path, users, args)
    print("\n" + "\n".join(memory))
    return tables, memory


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--pair-rounds", type=int, default=8, help="extra rounds of wasm-cache against wasm-floor")
    ap.add_argument("--pair-seconds", type=int, default=3)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--soak", type=int, default=1_000_000)
    ap.add_argument("--users", type=int, default=20_000)
    ap.add_argument("--zipf-s", type=float, default=1.0)
    ap.add_argument("--native-large-size", type=int, help="jwt_cache_size of native-large (default: probed)")
    ap.add_argument("--only", choices=["one-token", "many-users", "dpop", "network", "all"], default="all")
    ap.add_argument("--baseline", type=Path, help="another mesh-authn module, measured beside this one")
    args = ap.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk not found: apt-get install wrk (or `make bench`, which does)")
    wasm_path = harness.wasm_path()
    print(f"module: {wasm_path} ({wasm_path.stat().st_size / 1024:.0f} KiB)")

    rsa, ec = rsa_key("bench-rsa"), ec_key("bench-ec")
    set_json = jwks(rsa.jwk(), ec.jwk())
    tables, memory = [], []
    if args.only in ("one-token", "all"):
        part = run_one_token(set_json, rsa, ec, args)
        tables += part[0]
        memory += part[1]
    if args.only in ("many-users", "all"):
        part = run_many_users(set_json, rsa, args)
        tables += part[0]
        memory += part[1]
    if args.only in ("dpop", "all"):
        tables.append(run_dpop(ec, args))
        tables.append(run_bound(ec, args))
    if args.only in ("network", "all"):
        tables += run_network(args)

    OUT.mkdir(parents=True, exist_ok=True)
    found = regressions(tables, recorded_tables(RECORDED.read_text()))
    if args.rounds < 2:
        print("\nno comparison with the recorded figures: one round has no spread to judge by")
    else:
        print(f"\nagainst the figures in {RECORDED.relative_to(harness.REPO)}: "
              + ("no row fell by more than the round-to-round spread" if not found else
                 f"{len(found)} row(s) fell by more than the round-to-round spread:\n  " + "\n  ".join(found)))
    print(f"\ntables: {write_markdown(tables, memory)}")
    if png := chart(tables):
        print(f"chart: {png}")
    print("time: " + ", ".join(f"{part} {seconds:.0f} s" for part, seconds in TIMES.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
