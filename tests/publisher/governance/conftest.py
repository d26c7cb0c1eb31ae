"""Fixtures of the governance tests (on top of tests/publisher/conftest.py).

``gov`` runs a test on every backend the product ships: ``[redis+kafka]`` (the Redis system
of record, the real Kafka topic), ``[sqlite]`` (the ``SQLiteStore`` of ``flagstream dev``
in a fresh data directory, with its ``SQLiteGovernanceStore``; the log in memory, so that
tests can read it back) and ``[memory]`` (``MemoryStore`` + the in-memory log of
``flagstream dev --ephemeral``). The app has an environment ``prod`` with flag ``f1`` (on,
variations true/false) and segment ``s1``, and a fast scheduler.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

if str(Path(__file__).parent) not in sys.path:
    sys.path.append(str(Path(__file__).parent))  # gov_support; after tests/publisher

from embedded_support import embedded_store
from gov_support import Gov, setup_gov
from publisher_support import PARTITIONS, ApiFactory

from flagstream.memlog import MemoryLog
from publisher.memory_store import MemoryStore
from publisher.redis_store import RedisStore


@pytest.fixture(
    params=[pytest.param("redis+kafka", marks=pytest.mark.integration), "sqlite", "memory"]
)
async def gov(
    request: pytest.FixtureRequest, make_api: ApiFactory, tmp_path: Path
) -> AsyncIterator[Gov]:
    if request.param == "memory":
        api = await make_api(MemoryStore(), MemoryLog(PARTITIONS), scheduler_interval=0.05)
        yield await setup_gov(api)
        return
    if request.param == "sqlite":
        async with embedded_store(tmp_path) as sqlite_store:
            api = await make_api(sqlite_store, MemoryLog(PARTITIONS), scheduler_interval=0.05)
            yield await setup_gov(api)
            await api.client.close()  # before the data directory is closed
        return
    redis_url: str = request.getfixturevalue("redis_url")
    unique_name: str = request.getfixturevalue("unique_name")
    store = RedisStore(redis_url, prefix=f"{unique_name}:")
    try:
        api = await make_api(store, scheduler_interval=0.05)
        yield await setup_gov(api)
    finally:
        await store.delete_all()
        await store.close()


@pytest.fixture
async def memory_gov(make_api: ApiFactory) -> Gov:
    """The in-memory backend only (where the logic is the same and no I/O is needed)."""
    api = await make_api(MemoryStore(), MemoryLog(PARTITIONS), scheduler_interval=0.05)
    return await setup_gov(api)
