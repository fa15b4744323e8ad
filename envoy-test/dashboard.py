"""Writes docs/monitoring/dashboard.json, the Grafana dashboard operators import as is, from the
panels below. `python envoy-test/dashboard.py` after a change; test_monitoring.py checks the file
is current and runs every query against a live Prometheus scraping a test Envoy."""

from __future__ import annotations

import json
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "docs" / "monitoring" / "dashboard.json"

P = 'plugin=~"$plugin"'
RATE = "[$__rate_interval]"

# (row, title, unit, description, [(expr, legend)])
PANELS = [
    ("Decisions", "Requests by decision", "reqps",
     "Requests the HTTP plugins let through or refused. A dry run's would-refuse counts as allowed.",
     [(f"sum by (decision) (rate(mesh_authn_requests_total{{{P}}}{RATE}))", "{{decision}}")]),
    ("Decisions", "Refused by reason", "reqps",
     "Requests (and connections) refused in enforcement, by reason.",
     [(f'sum by (reason) (rate(mesh_authn_refused_total{{{P}, dry_run="false"}}{RATE}))', "{{reason}}")]),
    ("Decisions", "Dry run: would refuse, by reason", "reqps",
     "What enforcement would refuse in the plugins that run with dryRun: zero before enforcing.",
     [(f'sum by (plugin, reason) (rate(mesh_authn_refused_total{{{P}, dry_run="true"}}{RATE}))',
       "{{plugin}}: {{reason}}")]),
    ("Peers", "Plaintext callers by port", "reqps",
     "The plaintext census: callers without mTLS on PERMISSIVE ports, and on STRICT ports in a dry run. "
     "A port goes STRICT once its line stays at zero.",
     [(f"sum by (port, mode) (rate(mesh_authn_plaintext_total{{{P}}}{RATE}))", "{{port}} ({{mode}})")]),
    ("Peers", "Connections by decision (NETWORK plugin)", "cps",
     "Connections the NETWORK plugin let through or refused.",
     [(f"sum by (plugin, decision) (rate(mesh_authn_connections_total{{{P}}}{RATE}))",
       "{{plugin}}: {{decision}}")]),
    ("Keys and cache", "Key fetches by result", "ops",
     "Remote JWKS fetches. Failures keep the last good keys in use (see Key age).",
     [(f"sum by (plugin, result) (rate(mesh_authn_jwks_fetches_total{{{P}}}{RATE}))",
       "{{plugin}}: {{result}}")]),
    ("Keys and cache", "Key age", "s",
     "Age of the oldest remote key set in use; it climbs past jwksCacheDuration when refreshes fail.",
     [(f"max by (plugin) (mesh_authn_jwks_age_seconds{{{P}}})", "{{plugin}}")]),
    ("Keys and cache", "Token cache hit ratio", "percentunit",
     "Verified-token cache lookups that hit.",
     [(f'sum by (plugin) (rate(mesh_authn_jwt_cache_lookups_total{{{P}, result="hit"}}{RATE}))'
       f" / sum by (plugin) (rate(mesh_authn_jwt_cache_lookups_total{{{P}}}{RATE}))", "{{plugin}}")]),
    ("Keys and cache", "Memory (largest proxy)", "bytes",
     "Token cache bytes (all workers of a proxy) and one worker's VM memory.",
     [(f"max by (plugin) (mesh_authn_jwt_cache_bytes{{{P}}})", "{{plugin}}: token cache"),
      (f"max by (plugin) (mesh_authn_vm_memory_bytes{{{P}}})", "{{plugin}}: VM")]),
    ("Keys and cache", "Should stay at zero", "short",
     "Host signature checks that failed, and DPoP proofs refused because the replay store was full.",
     [(f"sum by (plugin) (increase(mesh_authn_host_verify_failed_total{{{P}}}{RATE}))",
       "{{plugin}}: host verify failed"),
      (f"sum by (plugin) (increase(mesh_authn_dpop_replay_full_total{{{P}}}{RATE}))",
       "{{plugin}}: DPoP replay store full")]),
]

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def panels() -> list[dict]:
    out, y, row, x = [], 0, None, 0
    for n, (row_title, title, unit, description, targets) in enumerate(PANELS):
        if row_title != row:
            if row is not None:
                y += 8
            out.append({"type": "row", "title": row_title, "id": 100 + len(out), "collapsed": False,
                        "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
            row, x, y = row_title, 0, y + 1
        elif x >= 24:
            x, y = 0, y + 8
        out.append({
            "type": "timeseries", "id": n + 1, "title": title, "description": description,
            "datasource": DATASOURCE,
            "gridPos": {"h": 8, "w": 8, "x": x, "y": y},
            "fieldConfig": {"defaults": {"unit": unit, "min": 0}, "overrides": []},
            "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                        "tooltip": {"mode": "multi", "sort": "desc"}},
            "targets": [{"datasource": DATASOURCE, "expr": expr, "legendFormat": legend,
                         "refId": chr(ord("A") + i)} for i, (expr, legend) in enumerate(targets)],
        })
        x += 8
    return out


def dashboard() -> dict:
    return {
        "title": "mesh-authn",
        "uid": "mesh-authn",
        "description": "Authentication decisions, dry runs, the plaintext census, keys and cache of the "
                       "mesh-authn Wasm plugin (docs/operating.md, \"Monitoring\").",
        "tags": ["istio", "envoy", "mesh-authn"],
        "editable": True,
        "schemaVersion": 39,
        "version": 1,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "30s",
        "templating": {"list": [
            {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
             "current": {}, "hide": 0, "refresh": 1},
            {"name": "plugin", "label": "Plugin", "type": "query", "datasource": DATASOURCE,
             "query": {"query": "label_values(mesh_authn_requests_total, plugin)", "refId": "plugins"},
             "definition": "label_values(mesh_authn_requests_total, plugin)",
             "includeAll": True, "multi": True, "allValue": ".*", "current": {}, "refresh": 2,
             "sort": 1},
        ]},
        "annotations": {"list": []},
        "panels": panels(),
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


if __name__ == "__main__":
    OUT.write_text(render())
    print(f"wrote {OUT}")
