"""What the operator watches, tested against the real thing (the scene: monitoring_scene.py). A
real Prometheus scrapes a test Envoy whose stats are configured as istio-agent renders them, while
requests and connections with known outcomes flow. Every dashboard query and recording rule is run
over exactly the scrapes that saw one round of that traffic and must give what was sent; the
alerting rules, loaded into the same Prometheus with their windows scaled down (1 min -> 2 s), must
fire for the plugins whose condition holds, and only for them."""

from __future__ import annotations

import json
import re
from collections import defaultdict

import pytest
import yaml

import dashboard
from monitoring_scene import (MONITORING, NETWORK, PLUGINS, REASONS, ROUND, RULES, expected_firing,
                              extra_stat_tags, observe, seen)
from prometheus_process import binary


@pytest.fixture(scope="module")
def observed(upstream, wasm_module, tmp_path_factory):
    if not binary().is_file():
        pytest.fail("run `make setup` (Debian's prometheus, unpacked into .prometheus/) first", pytrace=False)
    with observe(upstream.port, tmp_path_factory.mktemp("monitoring")) as seen_:
        yield seen_


def expected_increments(ports: dict[str, int]) -> dict[tuple, float]:
    """What one ROUND adds to each series, by (metric, frozenset of labels): every series the
    plugins define from configuration on (zeros included), and the census series the round's
    callers create."""
    inc: dict[tuple, float] = {}

    def add(metric: str, n: float = 0, **labels: str) -> None:
        key = (metric, frozenset(labels.items()))
        inc[key] = inc.get(key, 0) + n

    for plugin in [*PLUGINS, NETWORK]:
        for d in ("allowed", "denied"):
            add("mesh_authn_requests_total", plugin=plugin, decision=d)
            add("mesh_authn_connections_total", plugin=plugin, decision=d)
        for r in REASONS:
            for dry in ("false", "true"):
                add("mesh_authn_refused_total", plugin=plugin, reason=r, dry_run=dry)
        for m in ("mesh_authn_host_verify_failed_total", "mesh_authn_dpop_replay_full_total",
                  "mesh_authn_jwks_keys_cut_total"):
            add(m, plugin=plugin)
    refusal = {"expired": "expired", "missing": "missing"}
    for plugin, sends in ROUND.items():
        cfg = PLUGINS.get(plugin, {})
        dry = "true" if cfg.get("dryRun") else "false"
        for what, n in sends:
            if plugin == NETWORK:
                add("mesh_authn_connections_total", n, plugin=plugin, decision="denied")
                add("mesh_authn_refused_total", n, plugin=plugin, reason="peer_plaintext", dry_run="false")
                continue
            reason = None
            if "mtls" in cfg:
                mode = cfg["mtls"]["mode"]
                if mode == "PERMISSIVE" or dry == "true":
                    add("mesh_authn_plaintext_total", n, plugin=plugin, port=str(ports[plugin]), mode=mode)
                reason = "peer_plaintext" if mode == "STRICT" else None
            elif plugin == "jwks-down":
                reason = "jwks_unavailable"
            elif what in refusal:
                reason = refusal[what]
            if reason is None or dry == "true":
                add("mesh_authn_requests_total", n, plugin=plugin, decision="allowed")
            else:
                add("mesh_authn_requests_total", n, plugin=plugin, decision="denied")
            if reason:
                add("mesh_authn_refused_total", n, plugin=plugin, reason=reason, dry_run=dry)
    return inc


def over_window(observed, expr: str) -> tuple[str, float, float]:
    """`expr` with its ranges and dashboard variables set to the window between the scrapes just
    before and just after the measured round; the time to evaluate it at, and the window (s).
    Evaluated at a scrape's own timestamp with a range that starts at another's, rate() and
    increase() see exactly the two scrapes' difference: nothing is extrapolated."""
    window_ms = round((observed["after"] - observed["before"]) * 1000)
    expr = expr.replace("$__rate_interval", f"{window_ms}ms").replace("$plugin", ".*")
    expr = re.sub(r"\[\d+[smhd]\]", f"[{window_ms}ms]", expr)
    return expr, observed["after"], window_ms / 1000


def evaluate(observed, expr: str, rate: bool) -> dict[frozenset, float]:
    """{labels: increase over the window} (for rate(): value x window)."""
    q, at, window = over_window(observed, expr)
    return {frozenset(s["metric"].items()): float(s["value"][1]) * (window if rate else 1)
            for s in observed["prom"].query(q, at)}


# Counted by what the key servers and the cache did, not by the round: checked on their own.
UNMODELLED = {"mesh_authn_jwks_fetches_total", "mesh_authn_jwt_cache_lookups_total"}
SIMPLE = re.compile(r'^sum by \(([\w, ]+)\) \((rate|increase)\((\w+)(?:\{([^}]*)\})?\[[^\]]+\]\)\)$')


def expected_sum(observed, expr: str) -> dict[frozenset, float] | None:
    """What `sum by (…) (rate|increase(metric{…}[…]))` must give over the window, from the
    round's increments; None for other shapes."""
    m = SIMPLE.match(expr.strip())
    if not m:
        return None
    by, _, metric, filters = m.groups()
    if metric in UNMODELLED:
        return None
    matchers = re.findall(r'(\w+)\s*(=~|!=|=)\s*"([^"]*)"', filters or "")
    out: dict[frozenset, float] = defaultdict(float)
    for (name, labels), n in expected_increments(observed["ports"]).items():
        labels = dict(labels)
        if name != metric:
            continue
        ok = True
        for label, op, value in matchers:
            value = ".*" if value == "$plugin" else value
            have = labels.get(label, "")
            ok &= {"=": have == value, "!=": have != value,
                   "=~": re.fullmatch(value, have) is not None}[op]
        if ok:
            out[frozenset((k, labels[k]) for k in (b.strip() for b in by.split(",")))] += n
    return dict(out)


SPOT_CHECKS = {
    "Requests by decision": {"decision": "denied", "value": 5 + 3 + 2},  # jwt, jwks-down, strict
    "Refused by reason": {"reason": "peer_plaintext", "value": 2 + 3},  # strict, net
    "Dry run: would refuse, by reason": {"plugin": "jwt-dry", "reason": "expired", "value": 2},
    "Plaintext callers by port": {"port": "<strict-dry port>", "mode": "STRICT", "value": 4},
    "Connections by decision (NETWORK plugin)": {"plugin": "net", "decision": "denied", "value": 3},
}


def close(got: dict, want: dict) -> bool:
    return got.keys() == want.keys() and all(abs(got[k] - want[k]) < 1e-6 for k in want)


def show(d: dict) -> list:
    return sorted((sorted(k), v) for k, v in d.items())


def dashboard_targets() -> list[tuple[str, str]]:
    board = json.loads((MONITORING / "dashboard.json").read_text())
    return [(p["title"], t["expr"]) for p in board["panels"] if p["type"] != "row" for t in p["targets"]]


def record_rules() -> list[tuple[str, str]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [(r["record"], r["expr"]) for g in groups for r in g["rules"] if "record" in r]


def alert_rules() -> dict[str, str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {r["alert"]: r["expr"] for g in groups for r in g["rules"] if "alert" in r}


# --------------------------------------------------------------------------- tests


def test_the_dashboard_file_is_current():
    assert (MONITORING / "dashboard.json").read_text() == dashboard.render(), \
        "run `python envoy-test/dashboard.py`"


def test_every_series_is_labelled_as_istio_extracts_it(observed):
    prom = observed["prom"]
    names = prom.api("label/__name__/values")
    ours = [n for n in names if n.startswith("mesh_authn")]
    assert ours and all(re.fullmatch(r"mesh_authn_[a-z_]+", n) for n in ours), ours
    unlabelled = prom.query('count by (__name__) ({__name__=~"mesh_authn_.+", plugin=""})')
    assert unlabelled == []
    # Every label the plugin emits is one the operator was told to extract.
    labels = {k for s in prom.query('{__name__=~"mesh_authn_.+"}') for k in s["metric"]}
    assert labels - {"__name__", "job", "instance"} == set(extra_stat_tags())


def test_every_metric_the_dashboard_and_rules_name_exists(observed):
    prom = observed["prom"]
    exprs = [e for _, e in dashboard_targets()] + [e for _, e in record_rules()] + list(alert_rules().values())
    names = {n for e in exprs for n in re.findall(r"\b((?:mesh_authn|envoy)_[a-z0-9_]+)\b", e)}
    assert {n for n in names if n.startswith("mesh_authn")}, names
    missing = [n for n in sorted(names) if not prom.query(f"count({n})")]
    assert missing == [], f"named in a query, absent from a live Envoy: {missing}"


@pytest.mark.parametrize("title,expr", dashboard_targets(), ids=[f"{t}/{e[:40]}" for t, e in dashboard_targets()])
def test_dashboard_query_gives_what_was_sent(observed, title, expr):
    want = expected_sum(observed, expr)
    if want is not None:
        got = evaluate(observed, expr, rate="rate(" in expr)
        assert close(got, want), f"{title}\n{expr}\ngot  {show(got)}\nwant {show(want)}"
        # And it shows what its title says, counted by hand from ROUND.
        spot = dict(SPOT_CHECKS.get(title, ()))
        spot = {k: str(observed["ports"]["strict-dry"]) if v == "<strict-dry port>" else v for k, v in spot.items()}
        if spot:
            value = spot.pop("value")
            assert got.get(frozenset(spot.items())) == pytest.approx(value), (title, spot, show(got))
        assert any(want.values()) or "stay at zero" in title.lower(), "the round must show in it"
        return
    got = evaluate(observed, expr, rate=False)
    by_plugin = {dict(k).get("plugin"): v for k, v in got.items()}
    now, window = observed["after"], observed["after"] - observed["before"]
    if "cache_lookups_total" in expr:
        assert_hit_ratio(observed, by_plugin)
    elif "jwks_age_seconds" in expr:
        stale = now - observed["stale_since"]
        assert stale - 1 <= by_plugin["keys-stale"] <= stale + 4, (by_plugin, stale)
        assert by_plugin["jwt"] >= now - observed["ended"] - 1 and by_plugin["jwks-down"] == 0, by_plugin
    elif "jwt_cache_bytes" in expr:
        assert by_plugin["jwt"] > 500 and by_plugin["census"] == 0, by_plugin
    elif "jwks_fetches_total" in expr:
        assert by_plugin, "checked against the key servers in its own test"
    elif "vm_memory_bytes" in expr:
        assert all(v > 1 << 20 for v in by_plugin.values()) and len(by_plugin) == len(PLUGINS) + 1, by_plugin
    else:
        pytest.fail(f"no expectation for {title}: {expr}")
    assert window > 0


def assert_hit_ratio(observed, by_plugin: dict) -> None:
    """keys-stale looks up one token, three times in the round: a worker misses it at most once
    (each worker has its own cache, and the warm-up filled one), so 1, 2 or 3 of 3 hit."""
    q = 'sum by (plugin) (increase(mesh_authn_jwt_cache_lookups_total{result=~"hit|miss"}[1m]))'
    lookups = {dict(k)["plugin"]: v for k, v in evaluate(observed, q, rate=False).items()}
    assert lookups["keys-stale"] == 3, lookups
    assert by_plugin["keys-stale"] * 3 == pytest.approx(round(by_plugin["keys-stale"] * 3)), by_plugin
    assert 1 / 3 - 1e-9 <= by_plugin["keys-stale"] <= 1 and 0 < by_plugin["jwt"] <= 1, by_plugin


def test_key_fetches_are_counted_as_the_key_servers_saw_them(observed):
    q = 'sum by (plugin, result) (rate(mesh_authn_jwks_fetches_total{plugin=~"$plugin"}[$__rate_interval]))'
    assert q in [e for _, e in dashboard_targets()]
    got = {(dict(k)["plugin"], dict(k)["result"]): v for k, v in evaluate(observed, q, rate=True).items()}
    fetched = {k: round(v) for k, v in got.items()}
    assert all(abs(v - round(v)) < 1e-6 for v in got.values()), "whole fetches: nothing extrapolated"
    assert fetched[("keys-stale", "success")] == 0, ("B fails from before the window", fetched)
    assert fetched[("jwks-down", "success")] == 0, fetched
    assert fetched[("jwt", "success")] == fetched[("jwt", "failed")] == 0, "keys for 10 minutes"
    # Over the whole run, against what the key servers answered (a fetch may be in flight).
    total = {(s["metric"]["plugin"], s["metric"]["result"]): float(s["value"][1]) for s in observed["prom"].query(
        "sum by (plugin, result) (mesh_authn_jwks_fetches_total)", observed["ended"])}
    asked = observed["asked"]
    assert total[("jwt", "success")] + total[("jwt-dry", "success")] == asked["A"], (total, asked)
    assert total[("jwt", "failed")] == total[("jwt-dry", "failed")] == 0, total
    stale = total[("keys-stale", "success")] + total[("keys-stale", "failed")]
    assert asked["B"] - 1 <= stale <= asked["B"], (total, asked)
    assert total[("keys-stale", "success")] >= 1 and total[("keys-stale", "failed")] >= 1, total
    assert total[("jwks-down", "failed")] >= 2 and total[("jwks-down", "success")] == 0, total


@pytest.mark.parametrize("record,expr", record_rules(), ids=[r for r, _ in record_rules()])
def test_recording_rule_gives_what_was_sent(observed, record, expr):
    want = expected_sum(observed, expr)
    if want is None:
        assert "cache_lookups_total" in expr, f"no expectation for {record}"
        got = {dict(k)["plugin"]: v for k, v in evaluate(observed, expr, rate=False).items()}
        assert_hit_ratio(observed, got)
        assert "census" not in got, "no lookups, no ratio"
        return
    got = evaluate(observed, expr, rate=True)
    assert close(got, want), f"{record}\ngot  {show(got)}\nwant {show(want)}"


def test_alerts_fire_for_what_happened_and_nothing_else(observed):
    want = expected_firing(observed["ports"])
    assert set(alert_rules()) == set(want)
    got = {name: seen(observed["firing"], name) for name in want}
    assert got == want


def test_an_alert_that_cannot_fire_here_still_evaluates(observed):
    """The unscaled expressions parse and run against the live series (empty: nothing failed)."""
    for name, expr in alert_rules().items():
        result = observed["prom"].query(expr)
        if name in ("MeshAuthnHostVerifyFailed", "MeshAuthnVmFailing"):
            assert result == [], (name, result)
