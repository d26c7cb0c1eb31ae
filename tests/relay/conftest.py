"""Fixtures of the relay tests: the log a test's relays read, on Kafka and in memory.

``backend`` is parametrized: every test that takes it runs once on a real compacted topic of
the local Kafka (``[kafka]``, marked ``integration``) and once on the in-memory log that
``flagstream dev`` uses (``[memory]``, no external service). Tests about Kafka itself (a
missing topic, a broker outage) take ``kafka_bootstrap`` directly instead.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from relay_support import Backend, KafkaBackend, MemoryBackend

from flagstream.memlog import MemoryLog

PARTITIONS = 3


@pytest.fixture(params=[pytest.param("kafka", marks=pytest.mark.integration), "memory"])
async def backend(request: pytest.FixtureRequest) -> Backend:
    """A fresh, empty log with ``PARTITIONS`` partitions (Kafka: a new compacted topic)."""
    if request.param == "memory":
        return MemoryBackend(MemoryLog(PARTITIONS))
    bootstrap: str = request.getfixturevalue("kafka_bootstrap")
    topic: str = request.getfixturevalue("unique_name")
    return await KafkaBackend(bootstrap, topic, PARTITIONS).create()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s
