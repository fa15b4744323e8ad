"""Renders docs/monitoring/rollout.png, the README's picture of a rollout, from what
monitoring_scene.py saved of its Prometheus (target/monitoring/rollout.json): run that test, then
`.venv/bin/python envoy-test/rollout_chart.py` (matplotlib comes with `make bench`'s set-up)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "target" / "monitoring" / "rollout.json"
OUT = REPO / "docs" / "monitoring" / "rollout.png"

PANELS = [
    ("census", "Plaintext callers by port\nmesh_authn_plaintext_total", lambda m, d: f"port {m['port']} ({m['mode']})"),
    ("would_refuse", "Dry run would refuse\nmesh_authn_refused_total{dry_run=\"true\"}", lambda m, d: m["reason"]),
    ("refused", "Refused\nmesh_authn_refused_total{dry_run=\"false\"}", lambda m, d: m["reason"]),
]


def main() -> None:
    data = json.loads(DATA.read_text())
    t0 = data["stages"]["PERMISSIVE + census"]
    stages = sorted(data["stages"].items(), key=lambda kv: kv[1]) + [("end", data["end"])]
    fig, axes = plt.subplots(len(PANELS), 1, figsize=(9, 6.5), sharex=True)
    for ax, (key, title, label) in zip(axes, PANELS):
        shown = 0
        for s in data["series"][key]:
            xs = [float(t) - t0 for t, _ in s["values"]]
            ys = [float(v) for _, v in s["values"]]
            if key == "census" or s["metric"].get("reason") == "peer_plaintext":
                ax.plot(xs, ys, label=label(s["metric"], data), linewidth=1.8)
                shown += 1
        ax.set_title(title, fontsize=9, loc="left")
        ax.set_ylabel("per second", fontsize=8)
        ax.set_ylim(bottom=0, top=max(ax.get_ylim()[1], 1))
        if shown:
            ax.legend(fontsize=7, loc="upper right")
        for i, (name, at) in enumerate(stages[:-1]):
            ax.axvspan(at - t0, stages[i + 1][1] - t0, alpha=0.08 * (i + 1), color="tab:blue")
            if ax is axes[0]:
                ax.text(at - t0 + 0.5, ax.get_ylim()[1] * 0.97, name, fontsize=8, va="top")
    axes[-1].set_xlabel("seconds (a real rollout takes days: the test runs one in a minute)")
    fig.suptitle("Rolling out STRICT with mesh-authn: what the operator watches", fontsize=11)
    fig.tight_layout()
    fig.savefig(OUT, dpi=110)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
