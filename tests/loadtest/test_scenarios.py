"""Smoke runs of every scenario at small sizes against the shared stack: correct counts only.

Each run is the real command (``python -m flagstream loadtest ...``) in a subprocess, with
spawned publisher/relays on a topic prefixed by this test's unique name. No timing asserts:
the figures go to BENCHMARKS.md, not to the test verdict.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from loadtest.driver import delete_topic, ensure_topic
from loadtest.procs import spawn_relay, wait_ready

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _run(
    scenario: str,
    args: list[str],
    tmp_path: Path,
    kafka_bootstrap: str,
    redis_url: str,
    unique_name: str,
    timeout: float = 120,
) -> dict[str, Any]:
    cmd = [
        sys.executable,
        "-m",
        "flagstream",
        "loadtest",
        scenario,
        "--spawn",
        "--kafka",
        kafka_bootstrap,
        "--redis",
        redis_url,
        "--topic",
        unique_name,
        "--out",
        str(tmp_path),
        "--quiet",
        "--ready-timeout",
        "60",
        *args,
    ]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ}, check=False
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stderr[-3000:]}"
    data: dict[str, Any] = json.loads((tmp_path / f"{scenario}.json").read_text())
    md = (tmp_path / f"{scenario}.md").read_text()
    assert f"flagstream loadtest {scenario}" in md
    for plot in data["plots"]:
        assert Path(plot).read_bytes()[:4] == b"\x89PNG"
    assert data["ok"] is True
    return data


def test_fanout_via_publisher(
    tmp_path: Path, kafka_bootstrap: str, redis_url: str, unique_name: str
) -> None:
    data = _run(
        "fanout",
        ["--streams", "30", "--changes", "5", "--interval", "0.05", "--floor-rounds", "3"],
        tmp_path,
        kafka_bootstrap,
        redis_url,
        unique_name,
    )
    f = data["figures"]
    assert data["via"] == "publisher"
    assert f["changes_accepted"] == 5
    assert f["write_errors"] == 0
    assert f["streams_not_converged"] == 0
    assert f["deliveries_received"] <= f["deliveries_expected"] == 150
    assert f["floor"]["connections"] == 30


def test_throughput_via_kafka(
    tmp_path: Path, kafka_bootstrap: str, redis_url: str, unique_name: str
) -> None:
    data = _run(
        "throughput",
        ["--envs", "3", "--streams-per-env", "4", "--rates", "20,40", "--step-seconds", "1"],
        tmp_path,
        kafka_bootstrap,
        redis_url,
        unique_name,
    )
    f = data["figures"]
    assert data["via"] == "kafka"
    assert f["streams"] == 12
    assert f["streams_not_converged"] == 0
    assert 1 <= len(f["steps"]) <= 2
    for step in f["steps"]:
        assert step["accepted"] > 0
        assert step["errors"] == 0
        assert step["deliveries"] <= step["deliveries_expected"] == step["accepted"] * 4


@pytest.mark.parametrize("procs", [1, 2])
def test_capacity(
    tmp_path: Path, kafka_bootstrap: str, redis_url: str, unique_name: str, procs: int
) -> None:
    data = _run(
        "capacity",
        [
            "--swarm-procs",
            str(procs),
            "--streams",
            "60",
            "--steps",
            "2",
            "--hold",
            "1.5",
            "--relay-env",
            "FLAGSTREAM_RELAY_HEARTBEAT_INTERVAL=0.5",
        ],
        tmp_path,
        kafka_bootstrap,
        redis_url,
        unique_name,
    )
    f = data["figures"]
    assert data["config"]["swarm_procs"] == procs
    assert f["streams_open"] == 60
    assert [s["open"] for s in f["steps"]] == [30, 60]
    assert f["relay_rss_base"] > 0
    assert f["steps"][-1]["heartbeats_per_s"] > 0
    assert set(f["statuses"]) == {"200"}  # JSON keys: no 401/503 on the way


def test_reconnect_storm(
    tmp_path: Path, kafka_bootstrap: str, redis_url: str, unique_name: str
) -> None:
    data = _run(
        "reconnect-storm",
        ["--streams", "40", "--flags", "20", "--changes-during", "3", "--reconnect-delay", "0.2"],
        tmp_path,
        kafka_bootstrap,
        redis_url,
        unique_name,
    )
    with_ids, without = data["figures"]["phases"]
    assert with_ids["resume"] and not without["resume"]
    for phase in (with_ids, without):
        assert phase["caught_up"] == 40
        assert phase["changes_during"] == 3
    assert with_ids["full_puts"] == 0  # resumed from Last-Event-ID
    assert without["full_puts"] == 40
    if with_ids["relay_metrics_found"]:
        assert with_ids["relay_resumptions"] == 40
        assert without["relay_full_puts"] == 40


def test_cold_start(tmp_path: Path, kafka_bootstrap: str, redis_url: str, unique_name: str) -> None:
    data = _run(
        "cold-start",
        ["--sizes", "100,1000", "--envs", "3"],
        tmp_path,
        kafka_bootstrap,
        redis_url,
        unique_name,
    )
    runs = data["figures"]["runs"]
    assert [r["flags"] for r in runs] == [100, 1000]
    assert all(r["ready_s"] > 0 and r["relay_rss"] > 0 for r in runs)


async def test_fanout_against_a_running_relay(
    tmp_path: Path, kafka_bootstrap: str, unique_name: str
) -> None:
    """Targeting a given relay URL (no --spawn): the scenario writes into that relay's topic."""
    topic = f"{unique_name}.given"
    await ensure_topic(kafka_bootstrap, topic, 3)
    relay = spawn_relay(kafka_bootstrap=kafka_bootstrap, topic=topic)
    try:
        await wait_ready(relay.url, within=60, service=relay)
        cmd = [
            sys.executable,
            "-m",
            "flagstream",
            "loadtest",
            "fanout",
            "--relay",
            relay.url,
            "--via",
            "kafka",
            "--kafka",
            kafka_bootstrap,
            "--topic",
            topic,
            "--streams",
            "20",
            "--changes",
            "3",
            "--interval",
            "0.05",
            "--no-floor",
            "--no-plots",
            "--quiet",
            "--out",
            str(tmp_path),
        ]
        proc = await asyncio.to_thread(
            subprocess.run, cmd, capture_output=True, text=True, timeout=120, check=False
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        data = json.loads((tmp_path / "fanout.json").read_text())
        assert data["figures"]["changes_accepted"] == 3
        assert data["figures"]["streams_not_converged"] == 0
        assert data["figures"]["floor"] is None
        assert data["plots"] == []
    finally:
        relay.close()
        await delete_topic(kafka_bootstrap, topic)
