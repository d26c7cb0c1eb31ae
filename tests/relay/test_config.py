"""``RelaySettings.kafka_bootstrap``: every entry must be host:port, refused at start with
exit code 2 and one line (the publisher does the same), not retried forever."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from relay.config import RelaySettings

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "bootstrap",
    [
        "http://x:y",
        "http://kafka:9092",
        "kafka",
        "kafka:",
        ":9092",
        "kafka:0",
        "kafka:65536",
        "a:1,b:port",
        "kafka:9092/",
    ],
)
def test_malformed_bootstrap_is_refused(bootstrap: str) -> None:
    with pytest.raises(ValidationError) as exc:
        RelaySettings(kafka_bootstrap=bootstrap)
    assert "is not host:port" in str(exc.value)


@pytest.mark.parametrize(
    ("bootstrap", "expected"),
    [
        ("127.0.0.1:19092", "127.0.0.1:19092"),
        (
            "kafka-1.internal:9092, kafka-2.internal:9093",
            "kafka-1.internal:9092,kafka-2.internal:9093",
        ),
        ("[::1]:9092", "[::1]:9092"),
        ("broker_1:1", "broker_1:1"),
        ("b:65535", "b:65535"),
    ],
)
def test_wellformed_bootstrap_is_kept(bootstrap: str, expected: str) -> None:
    assert RelaySettings(kafka_bootstrap=bootstrap).kafka_bootstrap == expected


def test_the_command_exits_2_with_one_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "relay.cli", "--kafka-bootstrap", "http://x:y", "--workers", "1"],
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.decode().strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("flagstream relay: invalid --kafka-bootstrap")
    assert "'http://x:y' is not host:port" in lines[0]
