"""Relay metrics for the whole process group (relay/metrics.py, relay/server.py's set-up):
every worker's ``/metrics`` answers for all workers (prometheus-client multiprocess mode),
``/metrics/worker`` for the answering one, and a killed worker's streams leave the totals
while its counters stay in them."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families
from test_hub import StreamClient
from test_server import RelayProcess, open_stream, relay_process, seeded, wait_ready

from relay.metrics import RelayMetrics


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(text: str, name: str, **labels: str) -> float:
    return samples(text)[(name, tuple(sorted(labels.items())))]


async def scrape(relay: RelayProcess, path: str) -> tuple[str, str]:
    """One scrape on a fresh connection (the kernel may pick any worker): (worker, text)."""
    connector = aiohttp.TCPConnector(force_close=True)
    async with (
        aiohttp.ClientSession(connector=connector) as session,
        session.get(relay.url + path) as resp,
    ):
        assert resp.status == 200
        return resp.headers["X-Flagstream-Worker"], await resp.text()


async def scrape_every_worker(relay: RelayProcess, path: str, workers: int) -> dict[str, str]:
    seen: dict[str, str] = {}
    for _ in range(200):
        worker, text = await scrape(relay, path)
        seen[worker] = text
        if len(seen) == workers:
            return seen
    raise AssertionError(f"only workers {sorted(seen)} answered {path}")


@pytest.mark.unit
def test_a_single_process_renders_its_own_registry_and_refreshes_on_demand_values() -> None:
    metrics = RelayMetrics()
    lag = [7]
    metrics.refreshers.append(lambda: metrics.consumer_lag_records.set(lag[0]))
    metrics.stale.set_function(lambda: 1.0)
    text = metrics.render().decode()
    assert value(text, "flagstream_relay_consumer_lag_records") == 7
    assert value(text, "flagstream_relay_stale") == 1
    lag[0] = 3
    assert value(metrics.render_worker().decode(), "flagstream_relay_consumer_lag_records") == 3


@pytest.mark.e2e
@pytest.mark.slow
async def test_every_worker_answers_for_the_group_and_a_dead_worker_leaves_it(
    tmp_path: Path, kafka_bootstrap: str, unique_name: str
) -> None:
    async with seeded(kafka_bootstrap, unique_name):
        with relay_process(tmp_path, kafka_bootstrap, unique_name, workers=2) as relay:
            await wait_ready(relay)
            streams = []
            by_worker: dict[str, list[StreamClient]] = {}
            for _ in range(64):  # connections are hashed over the workers: fill both
                stream = await open_stream(relay)
                streams.append(stream)
                by_worker.setdefault(stream.http.headers["x-flagstream-worker"], []).append(stream)
                if len(by_worker) == 2 and len(streams) >= 6:
                    break
            assert len(by_worker) == 2, by_worker
            total = len(streams)

            # /metrics: whichever worker answers, the totals are the group's. (A worker writes
            # its on-demand gauges, such as stale, into the group's files every second.)
            for _ in range(50):
                group = await scrape_every_worker(relay, "/metrics", 2)
                if all(value(t, "flagstream_relay_stale") == 0 for t in group.values()):
                    break
                await asyncio.sleep(0.1)
            for text in group.values():
                assert value(text, "flagstream_relay_connections") == total
                assert value(text, "flagstream_relay_connections_opened_total") == total
                assert value(text, "flagstream_relay_ready") == 1
                assert value(text, "flagstream_relay_stale") == 0
                infos = {
                    labels
                    for (name, labels) in samples(text)
                    if name == "flagstream_relay_worker_info"
                }
                assert {dict(labels)["worker"] for labels in infos} == {"0", "1"}
                assert {f"{dict(lb)['worker']}/{dict(lb)['pid']}" for lb in infos} == set(group)

            # /metrics/worker: each worker's own streams; they add up to the total.
            own = await scrape_every_worker(relay, "/metrics/worker", 2)
            for worker, text in own.items():
                assert value(text, "flagstream_relay_connections") == len(by_worker[worker])
                infos = [n for (n, _) in samples(text) if n == "flagstream_relay_worker_info"]
                assert len(infos) == 1

            # Kill one worker: the supervisor restarts it; its streams leave the live total,
            # its counters stay (the group's counters never go back).
            victim = sorted(by_worker)[0]
            survivors = len(by_worker[sorted(by_worker)[1]])
            os.kill(int(victim.split("/")[1]), signal.SIGKILL)
            for _ in range(200):
                worker, text = await scrape(relay, "/metrics")
                workers = {
                    f"{dict(lb)['worker']}/{dict(lb)['pid']}"
                    for (n, lb) in samples(text)
                    if n == "flagstream_relay_worker_info"
                }
                if victim not in workers and len(workers) == 2:
                    break
                await asyncio.sleep(0.1)
            assert victim not in workers and len(workers) == 2, workers
            assert value(text, "flagstream_relay_connections") == survivors
            assert value(text, "flagstream_relay_connections_opened_total") >= total
            await wait_ready(relay)
            for stream in streams:
                stream.close()
