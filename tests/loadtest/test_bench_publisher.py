"""``python -m loadtest.bench_publisher``: the write benchmark against a real publisher process
(both HTTP clients), and ``--kafka-batches``: the record log's cost per batch, transactional
(the forwarder's) beside a plain idempotent producer, on the real Kafka."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from subprocess import Popen

import pytest

from flagstream.stack.process import free_port
from loadtest.bench_publisher import main
from loadtest.procs import spawn_publisher, wait_ready

TOKEN = "bench-admin-token-for-tests"

pytestmark = pytest.mark.integration


def test_the_kafka_mode_measures_both_producers(
    kafka_bootstrap: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--kafka-batches", "3", "--kafka-records", "4", "--kafka-bootstrap", kafka_bootstrap]
    assert main([*args, "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert (figures["batches"], figures["records"]) == (3, 4)
    for name in ("transaction", "idempotent"):
        assert 0 < figures[f"{name}_ms_p50"] <= figures[f"{name}_ms_max"]


def test_the_kafka_mode_refuses_a_remote_broker(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--kafka-batches", "1", "--kafka-bootstrap", "kafka.example:9092"]) == 2
    assert "loopback" in capsys.readouterr().err


@pytest.fixture
def running_publisher(
    kafka_bootstrap: str, redis_url: str, unique_name: str
) -> Iterator[tuple[Popen[bytes], str]]:
    """A real publisher process on the local stack (its own topic and Redis prefix)."""
    service = spawn_publisher(
        kafka_bootstrap=kafka_bootstrap,
        redis_url=redis_url,
        topic=unique_name,
        admin_token=TOKEN,
        extra_env={"FLAGSTREAM_PUBLISHER_REDIS_PREFIX": f"{unique_name}:"},  # cleaned up after
    )
    try:
        asyncio.run(wait_ready(service.url, service=service))
        yield service.proc, service.url
    finally:
        service.close()


@pytest.mark.parametrize("client", ["raw", "aiohttp"])
def test_the_write_benchmark_counts_acknowledged_writes(
    running_publisher: tuple[Popen[bytes], str], client: str, capsys: pytest.CaptureFixture[str]
) -> None:
    process, url = running_publisher
    args = ["--url", url, "--token", TOKEN, "--env", "bench", "--writes", "40", "--warmup", "5"]
    args += ["--concurrency", "4", "--client", client, "--publisher-pid", str(process.pid)]
    assert main([*args, "--stack-cpu", "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert (figures["client"], figures["writes"], figures["errors"]) == (client, 40, 0)
    # every write answered 200 (Kafka acknowledged) or 202 (queued), never lost
    assert figures["acknowledged"] + figures["pending_202"] == 40
    assert figures["latency_ms_p50"] <= figures["latency_ms_max"]
    # where the CPU went: every stage of the write path did work for every write
    cpu = figures["cpu_us_per_write"]
    assert set(cpu) == {"client", "publisher", "kafka", "redis"}
    # Redis's share of 40 writes (~3 ms) is below /proc's 10 ms tick: it may read 0
    assert cpu["client"] > 0 and cpu["publisher"] > 0 and cpu["kafka"] > 0, cpu
    assert cpu["redis"] >= 0, cpu
    assert figures["publisher_cpu_us_per_write"] == cpu["publisher"]
    assert 0 < figures["machine_cores_busy"] <= figures["cpus"]
    assert main(args) == 0  # the readable summary names them too
    summary = capsys.readouterr().out
    assert "CPU us/write: publisher " in summary and ", client " in summary, summary
    assert re.search(r"; [0-9.]+ of [0-9]+ cores busy$", summary.strip()), summary


@pytest.mark.parametrize(
    ("spec", "says"), [("kafka", "NAME=PID"), ("kafka=999999999", "no process 999999999")]
)
def test_a_process_to_measure_must_exist(
    spec: str, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--token", TOKEN, "--cpu-of", spec]) == 2
    assert says in capsys.readouterr().err


def test_the_write_benchmark_reports_an_unreachable_publisher(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert main(["--url", url, "--token", TOKEN, "--writes", "1", "--warmup", "0"]) == 3
    assert "cannot reach" in capsys.readouterr().err
