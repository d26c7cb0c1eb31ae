"""A real Prometheus (Debian's ``prometheus`` package, installed by ``make ops-tools``) for the
tests of deploy/prometheus and deploy/grafana, and helpers to read metric names.

``Prometheus`` runs the server on a free loopback port with a configuration and rule files
written to a temporary directory, and answers queries and the active alerts over its HTTP API.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from flagstream.stack.process import free_port

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = REPO / "deploy" / "prometheus" / "alerts.test.yml"
EXAMPLE_CONFIG = REPO / "deploy" / "prometheus" / "prometheus.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "flagstream.json"

# Names PromQL knows that are not metrics (functions, keywords, aggregations).
_NAME = re.compile(r"\bflagstream_[a-z0-9_]+\b")


def tool(name: str) -> str:
    """The path of ``name`` (promtool, prometheus), or a failure naming the install step."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} is missing: run `make ops-tools` (apt-get install prometheus)",
            pytrace=False,
        )
    return path


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("promtool"), *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def rule_expressions() -> dict[str, str]:
    """alertname -> expr of every rule in alerts.yml."""
    doc = yaml.safe_load(RULES.read_text())
    return {rule["alert"]: rule["expr"] for group in doc["groups"] for rule in group["rules"]}


def dashboard_expressions() -> list[str]:
    import json

    doc = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in doc["panels"] for t in p.get("targets", [])]


def metric_names(expressions: Iterable[str]) -> set[str]:
    """Every flagstream metric name used in ``expressions``."""
    return {name for expr in expressions for name in _NAME.findall(expr)}


def exposed_names(exposition: str) -> set[str]:
    """Every name a query may use for the series of an exposition: sample names (with
    ``_total``, ``_bucket``...) and, for families with no sample yet (labelled metrics not
    used so far), the names their samples will have."""
    names: set[str] = set()
    for family in text_string_to_metric_families(exposition):
        names.update(sample.name for sample in family.samples)
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names.update(family.name + suffix for suffix in ("_bucket", "_sum", "_count"))
        else:
            names.add(family.name)
    return names


class Prometheus:
    """A Prometheus server scraping ``targets`` by job, with ``rules`` (YAML text)."""

    def __init__(self, workdir: Path, targets: dict[str, list[str]], rules: str) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "alerts.yml").write_text(rules)
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": ["alerts.yml"],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": hosts}]}
                for job, hosts in targets.items()
            ],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> None:
        log = (self.workdir / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(
            [
                tool("prometheus"),
                f"--config.file={self.workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout

        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited: {self.log()}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(self.url + "/-/ready", timeout=2) as resp,
            ):
                if resp.status == 200:
                    return
            time.sleep(0.2)
        raise AssertionError(f"prometheus not ready after {timeout}s: {self.log()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def log(self) -> str:
        path = self.workdir / "prometheus.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    async def api(self, session: aiohttp.ClientSession, path: str, **params: str) -> Any:
        async with session.get(self.url + "/api/v1/" + path, params=params) as resp:
            body = await resp.json()
            assert body["status"] == "success", body
            return body["data"]

    async def alerts(self, session: aiohttp.ClientSession, name: str) -> list[dict[str, Any]]:
        data = await self.api(session, "alerts")
        return [a for a in data["alerts"] if a["labels"]["alertname"] == name]

    async def wait_alert(
        self, session: aiohttp.ClientSession, name: str, state: str | None, within: float
    ) -> list[dict[str, Any]]:
        """Until alert ``name`` is in ``state`` ("firing"), or gone (``state=None``)."""
        deadline = time.monotonic() + within
        while True:
            found = await self.alerts(session, name)
            states = {a["state"] for a in found}
            if (state is None and not found) or (state is not None and state in states):
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"{name}: wanted {state}, have {found}\n{self.log()}")
            await asyncio.sleep(0.5)


@contextlib.contextmanager
def prometheus(workdir: Path, targets: dict[str, list[str]], rules: str) -> Iterator[Prometheus]:
    server = Prometheus(workdir, targets, rules)
    try:
        server.start()
        yield server
    finally:
        server.stop()
