"""``python -m loadtest.bench_publisher --kafka-batches``: the record log's cost per batch,
transactional (the forwarder's) beside a plain idempotent producer, on the real Kafka."""

from __future__ import annotations

import json

import pytest

from loadtest.bench_publisher import main

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
