"""Shared pytest fixtures: the real local stack and private instances for fault tests.

- ``kafka_bootstrap`` / ``redis_url`` (session): the shared stack of ``flagstream stack up``
  (FLAGSTREAM_STACK_* env vars select ports/data dir). A running stack is reused; a missing
  one is started once per session and left running afterwards (other sessions may be using
  it, and the next run starts in a fraction of a second). Never stop it from a test.
- ``unique_name`` (function): a fresh ``"t-<hex>"`` for topic names and key prefixes, so tests
  sharing the one broker and Redis never see each other's data.
- ``private_kafka`` / ``private_redis`` (function): a started KafkaBroker / RedisServer of
  this test alone, on free ports in ``tmp_path``; stop, kill and restart them freely; they are
  torn down afterwards. Their ``start``/``stop`` block: from async tests call them through
  ``await asyncio.to_thread(...)``.

Tests that use any of these fixtures are marked ``integration`` automatically. At the end
of a session that used the shared stack, the topics and Redis keys whose names start with a
``unique_name`` it handed out are deleted (best effort), so the long-lived shared broker does
not accumulate thousands of test partitions.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from flagstream.stack.errors import StackError
from flagstream.stack.kafka import KafkaBroker
from flagstream.stack.process import free_port, free_ports
from flagstream.stack.redis import RedisServer
from flagstream.stack.stack import Stack, resolve_config

_STACK_FIXTURES = frozenset(
    {"kafka_bootstrap", "redis_url", "local_stack", "private_kafka", "private_redis"}
)


# Test helper modules (``relay_support``, ``stack_support``, ...) live next to the tests that
# use them and are imported by plain name. Putting every test directory on sys.path keeps that
# working under ``--import-mode=importlib``, which in turn lets test files in different
# directories share a basename (tests/relay/test_app.py and tests/publisher/test_app.py).
for _directory in sorted(Path(__file__).parent.iterdir()):
    _usable = _directory.is_dir() and not _directory.name.startswith((".", "_"))
    if _usable and str(_directory) not in sys.path:
        sys.path.append(str(_directory))

_issued_names: list[str] = []
_shared_stack: list[Stack] = []


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _STACK_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


def _progress(message: str) -> None:
    print(f"stack: {message}", file=sys.stderr)


@pytest.fixture(scope="session")
def local_stack() -> Stack:
    """The shared stack, up and answering (started here only if it was not running)."""
    stack = Stack(resolve_config())
    try:
        stack.up(timeout=240.0, say=_progress)
    except StackError as error:
        pytest.fail(f"local stack unavailable: {error}", pytrace=False)
    _shared_stack.append(stack)
    return stack


@pytest.fixture(scope="session")
def kafka_bootstrap(local_stack: Stack) -> str:
    return local_stack.kafka.bootstrap


@pytest.fixture(scope="session")
def redis_url(local_stack: Stack) -> str:
    return local_stack.redis.url


@pytest.fixture
def unique_name() -> str:
    name = f"t-{uuid.uuid4().hex[:12]}"
    _issued_names.append(name)
    return name


async def _delete_test_data(stack: Stack, prefixes: tuple[str, ...]) -> None:
    from aiokafka.admin import AIOKafkaAdminClient
    from redis.asyncio import Redis

    admin = AIOKafkaAdminClient(bootstrap_servers=stack.kafka.bootstrap, request_timeout_ms=10000)
    await admin.start()
    try:
        topics = [t for t in await admin.list_topics() if t.startswith(prefixes)]
        if topics:
            await admin.delete_topics(topics)
    finally:
        await admin.close()
    client = Redis.from_url(stack.redis.url)
    try:
        for prefix in prefixes:
            keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=1000)]
            if keys:
                await client.unlink(*keys)
    finally:
        await client.aclose()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not _shared_stack or not _issued_names:
        return
    prefixes = tuple(_issued_names)

    def clean() -> None:
        # A fresh loop in a thread: the session's loop may be closed or still running.
        with contextlib.suppress(Exception):
            asyncio.run(asyncio.wait_for(_delete_test_data(_shared_stack[0], prefixes), 60))

    worker = threading.Thread(target=clean, daemon=True)
    worker.start()
    worker.join(70)


@pytest.fixture
def private_kafka(tmp_path: Path) -> Iterator[KafkaBroker]:
    port, controller_port = free_ports(2)
    broker = KafkaBroker(tmp_path / "kafka", port, controller_port)
    try:
        broker.start(timeout=240.0)
        yield broker
    finally:
        broker.kill()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis", free_port())
    try:
        server.start()
        yield server
    finally:
        server.kill()
