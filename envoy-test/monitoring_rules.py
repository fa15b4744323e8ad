"""Writes docs/monitoring/prometheus-rule.yaml, the Prometheus Operator's PrometheusRule, from
docs/monitoring/mesh-authn.rules.yaml: `python envoy-test/monitoring_rules.py`.

The rules file's groups are copied as text under `spec:`, comments included, so the two cannot
say different things (test_monitoring_rules.py checks the written file is this output)."""

from __future__ import annotations

from pathlib import Path

MONITORING = Path(__file__).resolve().parent.parent / "docs" / "monitoring"
RULES = MONITORING / "mesh-authn.rules.yaml"
PROMETHEUS_RULE = MONITORING / "prometheus-rule.yaml"

HEADER = """\
# Generated from mesh-authn.rules.yaml by `python envoy-test/monitoring_rules.py`: edit that file.
# mesh-authn's recording and alerting rules for the Prometheus Operator.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: mesh-authn
  namespace: istio-system
  labels:
    # kube-prometheus-stack's Prometheus picks up only rules labelled with its Helm release name
    # (its ruleSelector): use yours.
    release: prometheus
spec:
"""


def render(rules_text: str) -> str:
    lines = rules_text.splitlines()
    while lines and (lines[0].startswith("#") or not lines[0].strip()):
        lines.pop(0)  # the rules file's own header is about that file
    return HEADER + "".join(f"  {line}\n" if line.strip() else "\n" for line in lines)


def main() -> None:
    PROMETHEUS_RULE.write_text(render(RULES.read_text()))
    print(f"wrote {PROMETHEUS_RULE}")


if __name__ == "__main__":
    main()
