"""A real Prometheus (Debian's package, unpacked by `make setup` into .prometheus/) on 127.0.0.1:
started with a scrape config and rules, queried through its HTTP API, stopped."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

from envoy_config import REPO
from servers import HOST, free_port

BIN = REPO / ".prometheus" / "root" / "usr" / "bin"


def binary(name: str = "prometheus") -> Path:
    return Path(os.environ.get(f"{name.upper()}_BIN", BIN / name))


class Prometheus:
    """Scrapes `targets` ({job: (host:port, metrics path)}) every `interval_s` and evaluates
    `rule_files` as often."""

    def __init__(self, workdir: Path, targets: dict[str, tuple[str, str]], rule_files: list[Path] = (),
                 interval_s: int = 1) -> None:
        self.workdir = workdir
        self.port = free_port()
        config = {
            "global": {"scrape_interval": f"{interval_s}s", "scrape_timeout": f"{interval_s}s",
                       "evaluation_interval": f"{interval_s}s"},
            "rule_files": [str(p) for p in rule_files],
            "scrape_configs": [{"job_name": job, "metrics_path": path,
                                "static_configs": [{"targets": [address]}]}
                               for job, (address, path) in targets.items()],
        }
        self.config_path = workdir / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.log_path = workdir / "prometheus.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Prometheus":
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [str(binary()), f"--config.file={self.config_path}",
             f"--storage.tsdb.path={self.workdir / 'data'}",
             f"--web.listen-address={HOST}:{self.port}", "--log.level=warn"],
            stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://{HOST}:{self.port}/-/ready", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"prometheus did not start:\n{self.log_path.read_text()[-3000:]}")
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> "Prometheus":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def api(self, path: str, **params) -> dict | list:
        url = f"http://{HOST}:{self.port}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                body = json.load(r)
        except urllib.error.HTTPError as err:
            body = json.load(err)
        assert body.get("status") == "success", f"{path} {params}: {body}"
        return body["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict]:
        """An instant query's vector: [{"metric": {labels}, "value": [t, "v"]}]."""
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        data = self.api("query", **params)
        assert data["resultType"] == "vector", f"{expr}: {data['resultType']}"
        return data["result"]

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict]:
        return self.api("query_range", query=expr, start=f"{start:.3f}", end=f"{end:.3f}",
                        step=str(step))["result"]

    def last_scrape(self, job: str) -> float:
        """When `job` was last scraped (Prometheus' own timestamp, ms precision); 0 before."""
        samples = self.query(f'timestamp(up{{job="{job}"}})')
        return float(samples[0]["value"][1]) if samples else 0.0

    def wait_scrapes(self, job: str, n: int = 2, timeout: float = 15.0) -> float:
        """Waits until `job` has been scraped `n` more times; the last scrape's time."""
        seen = self.last_scrape(job)
        deadline = time.monotonic() + timeout
        while n:
            assert time.monotonic() < deadline, f"{job} not scraped for {timeout} s"
            time.sleep(0.2)
            now = self.last_scrape(job)
            if now != seen:
                seen, n = now, n - 1
        return seen

    def alerts(self) -> list[dict]:
        return self.api("alerts")["alerts"]
