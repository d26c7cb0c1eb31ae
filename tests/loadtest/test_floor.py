"""The kernel floor measures the asked number of connections and rounds."""

from __future__ import annotations

import pytest

from loadtest.floor import measure_floor

# Unmarked: loopback sockets and a child process, but no Kafka/Redis; a second or so.


def test_floor_small() -> None:
    result = measure_floor(50, 300, rounds=4, warmup=1)
    assert (result.connections, result.frame_bytes, result.rounds) == (50, 300, 4)
    assert result.send_loop_s["count"] == 4
    assert result.delivered_s["count"] == 4
    assert float(result.delivered_s["min"]) >= float(result.send_loop_s["min"]) >= 0


def test_floor_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        measure_floor(0, 10)
