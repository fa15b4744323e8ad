"""The Prometheus rules we ship (docs/monitoring/): the PrometheusRule is the rules file's groups,
passes the Prometheus Operator's CRD schema, every alert carries what an operator needs, and every
alert and recording rule has a promtool unit test. No Envoy."""

from __future__ import annotations

import copy
import re
import subprocess

import pytest
import yaml

import harness
import monitoring_rules
from test_istio_resources import crd_check

PROMTOOL = harness.REPO / ".prometheus" / "root" / "usr" / "bin" / "promtool"
RULES = monitoring_rules.RULES
RULES_TEST = RULES.with_name("mesh-authn.rules.test.yaml")
RUNBOOK = "https://github.com/mesh-authn/mesh-authn/blob/main/docs/operating.md#"
RUNBOOK_ANCHORS = {"rolling-out", "troubleshooting", "monitoring"}


def groups() -> list[dict]:
    return yaml.safe_load(RULES.read_text())["groups"]


def rules(kind: str) -> list[dict]:
    return [r for g in groups() for r in g["rules"] if kind in r]


def prometheus_rule() -> dict:
    return yaml.safe_load(monitoring_rules.PROMETHEUS_RULE.read_text())


def promtool(*args: str) -> subprocess.CompletedProcess:
    if not PROMTOOL.is_file():
        pytest.fail("run `make setup` (promtool into .prometheus/) first", pytrace=False)
    return subprocess.run([str(PROMTOOL), *args], capture_output=True, text=True, timeout=120)


def test_prometheus_rule_is_the_rules_file():
    assert prometheus_rule()["spec"]["groups"] == groups()
    written = monitoring_rules.PROMETHEUS_RULE.read_text()
    assert written == monitoring_rules.render(RULES.read_text()), \
        "run `python envoy-test/monitoring_rules.py`"


def test_prometheus_rule_passes_the_operator_crd_schema():
    doc = prometheus_rule()
    assert (doc["apiVersion"], doc["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    bad_for = copy.deepcopy(doc)
    bad_for["spec"]["groups"][1]["rules"][0]["for"] = "ten minutes"
    no_expr = copy.deepcopy(doc)
    del no_expr["spec"]["groups"][0]["rules"][0]["expr"]
    results = crd_check([doc, bad_for, no_expr])
    assert [r["valid"] for r in results] == [True, False, False], results
    assert "for" in results[1]["error"] and "expr" in results[2]["error"]


@pytest.mark.parametrize("rule", rules("alert"), ids=lambda r: r["alert"])
def test_alert_says_what_an_operator_needs(rule):
    assert re.fullmatch(r"MeshAuthn[A-Z][A-Za-z]+", rule["alert"])
    assert "for" in rule
    assert rule["labels"]["severity"] in {"critical", "warning", "info"}
    notes = rule["annotations"]
    assert notes["summary"].strip() and "{{ $labels.plugin }}" in notes["summary"]
    assert notes["description"].strip() and "{{ $labels.plugin }}" in notes["description"]
    assert notes["runbook_url"].startswith(RUNBOOK)
    assert notes["runbook_url"].removeprefix(RUNBOOK) in RUNBOOK_ANCHORS
    # What the alert is about survives its aggregation.
    assert re.search(r"\b(sum|max|count) by \([^)]*\bplugin\b", rule["expr"])


@pytest.mark.parametrize("rule", rules("record"), ids=lambda r: r["record"])
def test_recording_rule_is_named_level_metric_operations(rule):
    level, metric, operations = rule["record"].split(":")
    assert metric.startswith("mesh_authn_") and not metric.endswith("_total")
    assert operations == "rate5m" and "[5m]" in rule["expr"]
    by = re.search(r"\bby \(([^)]*)\)", rule["expr"])
    assert by and level == "_".join(label.strip() for label in by.group(1).split(","))


def test_every_rule_has_promtool_tests():
    tests = yaml.safe_load(RULES_TEST.read_text())["tests"]
    cases = [c for t in tests for c in t.get("alert_rule_test", [])]
    fires = {c["alertname"] for c in cases if c["exp_alerts"]}
    quiet = {c["alertname"] for c in cases if not c["exp_alerts"]}
    alerts = {r["alert"] for r in rules("alert")}
    assert alerts - fires == set(), "alerts with no test where they fire"
    assert alerts - quiet == set(), "alerts with no test where they must not fire"
    checked = {c["expr"] for t in tests for c in t.get("promql_expr_test", [])}
    records = {r["record"] for r in rules("record")}
    assert records - checked == set(), "recording rules without a test"


def test_promtool_checks_the_rules():
    out = promtool("check", "rules", str(RULES))
    assert out.returncode == 0, out.stdout + out.stderr


def test_promtool_check_can_fail(tmp_path):
    broken = copy.deepcopy(groups())
    broken[0]["rules"][0]["expr"] = "sum by (plugin) (rate(mesh_authn_requests_total[5m])"
    path = tmp_path / "broken.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": broken}))
    out = promtool("check", "rules", str(path))
    assert out.returncode != 0 and "parse error" in out.stdout + out.stderr


def test_promtool_unit_tests_can_fail(tmp_path):
    """The unit tests compare what fires: the same file with one expected severity changed fails."""
    (tmp_path / RULES.name).write_text(RULES.read_text())
    text = RULES_TEST.read_text()
    assert text.count("severity: critical") >= 1
    changed = text.replace("severity: critical", "severity: warning", 1)
    (tmp_path / RULES_TEST.name).write_text(changed)
    out = promtool("test", "rules", str(tmp_path / RULES_TEST.name))
    assert out.returncode != 0 and "FAILED" in out.stdout + out.stderr


def test_the_istio_stats_settings_pass_istio_crd_schemas():
    """docs/monitoring/istio-stats.yaml: an IstioOperator (whose meshConfig Istio's CRD leaves
    open; test_monitoring.py runs an Envoy with the stats config istio-agent renders from it)."""
    docs = list(yaml.safe_load_all((RULES.parent / "istio-stats.yaml").read_text()))
    assert [r for r in crd_check(docs) if not r["valid"]] == []
    bad = copy.deepcopy(docs[0])
    bad["apiVersion"] = "install.istio.io/v1"
    assert [r["valid"] for r in crd_check([bad])] == [False]
