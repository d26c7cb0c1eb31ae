"""Fixtures for running flagstream on the in-memory backends (what ``flagstream dev`` uses).

``memory_log`` / ``memory_producer`` are the in-memory counterparts of the relay tests'
Kafka topic and ``relay_support.Producer``; ``memory_log.source()`` is the ``RecordSource``
to pass to ``run_relay``, and ``memory_log`` itself is a publisher ``RecordLog`` for
``make_api(store, log=...)``. ``dev_server`` is a running ``flagstream dev`` on a free port,
once on the SQLite backends in a fresh data directory (``[sqlite]``, the default of the
command) and once ``[ephemeral]`` (in memory).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from memory_backends import MemoryProducer

from flagstream import dev
from flagstream.dev import DevServer
from flagstream.memlog import MemoryLog

MEMORY_PARTITIONS = 3


@pytest.fixture
def memory_log() -> MemoryLog:
    return MemoryLog(partitions=MEMORY_PARTITIONS)


@pytest.fixture
async def memory_producer(memory_log: MemoryLog) -> AsyncIterator[MemoryProducer]:
    async with MemoryProducer(memory_log) as producer:
        yield producer


@pytest.fixture(params=["sqlite", "ephemeral"])
async def dev_server(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[DevServer]:
    data_dir = tmp_path / "data" if request.param == "sqlite" else None
    async with dev.running(
        port=0, relay_overrides={"heartbeat_interval": 1.0}, data_dir=data_dir
    ) as server:
        yield server
