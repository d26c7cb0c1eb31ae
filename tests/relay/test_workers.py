"""``--workers N``: N relay processes on one port (SO_REUSEPORT), each a complete relay."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
from pathlib import Path

import aiohttp
import pytest
from relay_support import flag, item_envelope
from test_hub import events_of
from test_server import (
    ENV,
    RELAY_COMMAND,
    RelayProcess,
    open_stream,
    relay_process,
    seeded,
    wait_ready,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


async def test_workers_share_the_port_and_each_serves_streams(
    tmp_path: Path, kafka_bootstrap: str, unique_name: str
) -> None:
    async with seeded(kafka_bootstrap, unique_name) as producer:
        with relay_process(
            tmp_path, kafka_bootstrap, unique_name, workers=2, drain_window=1
        ) as relay:
            await wait_ready(relay)
            streams = []
            by_worker: dict[str, int] = {}
            # New connections are hashed over the workers; open until both served some.
            for _ in range(64):
                stream = await open_stream(relay)
                streams.append(stream)
                worker = stream.http.headers["x-flagstream-worker"]
                by_worker[worker] = by_worker.get(worker, 0) + 1
                if len(by_worker) == 2 and len(streams) >= 8:
                    break
            assert len(by_worker) == 2, by_worker
            assert {w.split("/")[0] for w in by_worker} == {"0", "1"}
            assert len({w.split("/")[1] for w in by_worker}) == 2  # two processes

            for s in streams:
                items = await s.until(lambda i: len(events_of(i)) >= 1, 10)
                assert events_of(items)[0].event == "put"

            # Every worker consumes on its own: one write reaches the streams of both.
            await producer.send(item_envelope(ENV, "flag", flag("flag-2", 7)))
            for s in streams:
                items = await s.until(lambda i: len(events_of(i)) >= 2, 15)
                patch = events_of(items)[1]
                assert json.loads(patch.data)["data"]["version"] == 7

            # /status is per process and says which one answered.
            seen = set()
            for _ in range(40):
                # A fresh connection each time, so the kernel may pick either worker.
                connector = aiohttp.TCPConnector(force_close=True)
                async with (
                    aiohttp.ClientSession(connector=connector) as session,
                    session.get(relay.url + "/status") as resp,
                ):
                    body = await resp.json()
                    header = resp.headers["X-Flagstream-Worker"]
                    assert header == f"{body['hub']['worker']}/{body['hub']['pid']}"
                    seen.add(header)
                if len(seen) == 2:
                    break
            assert seen == set(by_worker)

            # SIGTERM to the supervisor drains every worker: each stream ends cleanly.
            relay.proc.send_signal(signal.SIGTERM)
            for s in streams:
                await s.until_eof(15)
                assert s.http.done, "a clean end of body, not a reset"
            assert relay.wait(20) == 0, relay.log()


async def worker_pids(
    relay: RelayProcess, workers: int, *, tries: int = 200, required: bool = True
) -> dict[str, str]:
    """worker index -> pid, from /status over fresh connections until every worker answered."""
    seen: dict[str, str] = {}
    for _ in range(tries):
        connector = aiohttp.TCPConnector(force_close=True)
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.get(relay.url + "/status") as resp,
        ):
            body = await resp.json()
            seen[str(body["hub"]["worker"])] = str(body["hub"]["pid"])
        if len(seen) == workers:
            return seen
    if required:
        raise AssertionError(f"only workers {seen} answered")
    return seen


async def test_a_dead_worker_is_replaced_on_the_same_port(
    tmp_path: Path, kafka_bootstrap: str, unique_name: str
) -> None:
    async with seeded(kafka_bootstrap, unique_name):
        with relay_process(
            tmp_path, kafka_bootstrap, unique_name, workers=2, port=0, drain_window=1
        ) as relay:
            relay.learn_port()  # the supervisor chose one free port for both workers
            await wait_ready(relay)
            before = await worker_pids(relay, 2)
            os.kill(int(before["0"]), signal.SIGKILL)
            # The supervisor starts a new worker 0; until it is ready the other one serves.
            after = before
            async with asyncio.timeout(60):
                while after.get("0", before["0"]) == before["0"]:
                    await asyncio.sleep(0.5)
                    with contextlib.suppress(aiohttp.ClientError):
                        after = await worker_pids(relay, 2, tries=20, required=False)
            await wait_ready(relay)
            after = await worker_pids(relay, 2)
            assert after["0"] != before["0"] and after["1"] == before["1"]
            stream = await open_stream(relay)
            assert (await stream.until(lambda i: len(events_of(i)) >= 1, 10))[0]
            stream.close()
            relay.proc.send_signal(signal.SIGTERM)
            assert relay.wait(20) == 0, relay.log()


def run_second_relay(port: int, topic: str, workers: int, within: float = 30.0) -> tuple[int, str]:
    """Start another relay on ``port``; its exit code and output (killed if still running)."""
    env = dict(
        os.environ,
        FLAGSTREAM_RELAY_HOST="127.0.0.1",
        FLAGSTREAM_RELAY_PORT=str(port),
        FLAGSTREAM_RELAY_WORKERS=str(workers),
        FLAGSTREAM_TOPIC=topic,
    )
    proc = subprocess.Popen(
        RELAY_COMMAND,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=within)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        return -1, out.decode(errors="replace")
    return proc.returncode, out.decode(errors="replace")


async def test_a_second_relay_on_a_live_relays_port_exits_2(
    tmp_path: Path, kafka_bootstrap: str, unique_name: str
) -> None:
    """Workers bind with SO_REUSEPORT; a second, unrelated relay must not silently share the
    port (the kernel would split new connections between the two)."""
    async with seeded(kafka_bootstrap, unique_name):
        with relay_process(
            tmp_path, kafka_bootstrap, unique_name, workers=2, port=0, drain_window=1
        ) as relay:
            port = relay.learn_port()
            await wait_ready(relay)
            for workers in (1, 2):
                code, output = await asyncio.to_thread(
                    run_second_relay, port, unique_name + ".other", workers
                )
                assert code == 2, output
                assert f"port {port} is in use" in output, output
                assert "listening" not in output and "Traceback" not in output, output
                assert len(output.strip().splitlines()) == 1, output
            # The first relay is untouched and still the only one answering.
            pids = await worker_pids(relay, 2)
            assert len(pids) == 2
            relay.proc.send_signal(signal.SIGTERM)
            assert relay.wait(20) == 0, relay.log()
