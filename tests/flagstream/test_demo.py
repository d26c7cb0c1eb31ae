"""``flagstream demo``: the stream client's bookkeeping (unit) and a small run end to end on
the local stack (publisher + two relays as processes, a relay SIGKILLed mid-run)."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from flagstream import demo
from flagstream.demo import Receipts, StreamClient
from protocol.sse import SSEEvent

REPO = Path(__file__).resolve().parents[2]


def _event(kind: str, body: dict[str, Any], id: str) -> SSEEvent:
    return SSEEvent(event=kind, data=json.dumps(body), id=id, retry=None)


def _put(versions: dict[str, int], id: str = "e:1") -> SSEEvent:
    flags = {k: {"key": k, "version": v} for k, v in versions.items()}
    return _event("put", {"path": "/", "data": {"flags": flags, "segments": {}}}, id)


def _patch(key: str, version: int, id: str) -> SSEEvent:
    return _event("patch", {"path": f"/flags/{key}", "data": {"key": key, "version": version}}, id)


def _client(receipts: Receipts) -> StreamClient:
    return StreamClient(0, ["http://a", "http://b"], 0, "sdk-x", None, receipts)  # type: ignore[arg-type]


@pytest.mark.unit
def test_client_applies_newer_versions_and_records_receipts() -> None:
    receipts = Receipts()
    client = _client(receipts)
    client._on_event(_put({"a": 1, "b": 4}), 1.0)
    client._on_event(_patch("a", 2, "e:2"), 2.0)
    client._on_event(_event("delete", {"path": "/flags/b", "version": 5}, "e:3"), 3.0)
    client._on_event(_patch("segment-like", 1, "e:4"), 4.0)
    assert client.versions == {"a": 2, "b": 5, "segment-like": 1}
    assert client.last_event_id == "e:4"
    assert receipts.of("a", 2) == [2.0] and receipts.of("b", 5) == [3.0]
    assert client.stats.puts == 1 and client.stats.regressions == 0


@pytest.mark.unit
def test_client_counts_regressions_and_ignores_them() -> None:
    client = _client(Receipts())
    client._on_event(_put({"a": 3}), 1.0)
    client._on_event(_patch("a", 2, "e:2"), 2.0)
    assert client.versions == {"a": 3}
    client._on_event(_put({"a": 1}, "e:3"), 3.0)
    assert client.stats.regressions == 2


@pytest.mark.unit
def test_reconnect_is_classified_by_its_first_event() -> None:
    client = _client(Receipts())
    client._awaiting_first_event = True
    client._on_event(_patch("a", 2, "e:2"), 1.0)
    client._awaiting_first_event = True
    client._on_event(_put({"a": 2}, "e:3"), 2.0)
    assert (client.stats.resumed, client.stats.full) == (1, 1)


@pytest.mark.unit
def test_bad_arguments_are_one_line_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert demo.main(["--clients", "1"]) == 2
    assert demo.main(["--toggles", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("flagstream demo: --") for line in err)


@pytest.mark.e2e
@pytest.mark.slow
async def test_small_demo_runs_end_to_end(kafka_bootstrap: str, redis_url: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "flagstream",
        "demo",
        "--clients",
        "20",
        "--toggles",
        "2",
        "--interval",
        "0.1",
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 240)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = out.decode()
    assert proc.returncode == 0, text
    # Every toggle reached all 20 streams, with a first and a last delay.
    toggles = re.findall(
        r"^\s+(\S+)\s+(on|off)\s+v\d+\s+([\d.]+) ms\s+([\d.]+) ms\s+20/20", text, re.M
    )
    assert [t[0] for t in toggles] == ["1/2", "2/2", "after"], text
    assert all(float(first) <= float(last) for _, _, first, last in toggles)
    resumed = re.search(
        r"streams: (\d+) resumed \(patch only, no put\), (\d+) needed a full put", text
    )
    assert resumed and int(resumed.group(1)) == 10 and resumed.group(2) == "0", text
    assert "convergence: 20/20 streams" in text
    assert "LaunchDarkly SDK holds the publisher's versions: True" in text
    assert "monotonicity: 0 version regressions" in text
    assert "processes left running: none" in text
    assert "demo complete: every check held" in text


def _processes_with(marker: bytes) -> list[int]:
    """PIDs whose environment mentions ``marker`` (the demo passes its topic to children)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker in (entry / "environ").read_bytes():
                pids.append(int(entry.name))
        except OSError:
            continue
    return pids


@pytest.mark.e2e
@pytest.mark.slow
async def test_sigterm_mid_run_stops_everything_it_started(
    kafka_bootstrap: str, redis_url: str
) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "flagstream",
        "demo",
        "--clients",
        "10",
        "--toggles",
        "200",
        cwd=REPO,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        while not any(line.startswith("   toggle") for line in lines):
            line = (await asyncio.wait_for(proc.stdout.readline(), 120)).decode()
            assert line, "".join(lines)
            lines.append(line)
        topic = re.search(r"flagstream\.demo-[0-9a-f]+", "".join(lines))
        assert topic, "".join(lines)
        assert _processes_with(topic.group(0).encode())  # publisher and relays are running
        proc.terminate()
        rest, _ = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = "".join(lines) + rest.decode()
    assert proc.returncode == 130, text
    assert "processes left running: none" in text
    assert _processes_with(topic.group(0).encode()) == []
