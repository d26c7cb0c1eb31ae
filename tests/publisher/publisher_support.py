"""Helpers of the publisher tests: settings, an API client wrapper, reading the log back
(the Kafka topic, or the in-memory log an app of ``make_api`` was given)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient
from aiokafka import AIOKafkaConsumer, TopicPartition
from multidict import CIMultiDict

from flagstream.memlog import MemoryLog
from protocol.envelope import Envelope, decode_envelope
from protocol.keys import partition_for
from publisher.app import FORWARDER
from publisher.config import PublisherSettings
from publisher.store import Store

ADMIN = "test-admin-token-0123456789"
PARTITIONS = 3
# Where an app on the in-memory log "finds Kafka": nothing listens there.
NO_KAFKA = "127.0.0.1:9"

# Topic name -> the MemoryLog standing in for it, for ``read_topic`` (make_api fills it).
_memory_logs: dict[str, MemoryLog] = {}


def remember_memory_log(topic: str, log: MemoryLog) -> None:
    _memory_logs[topic] = log


def forget_memory_log(topic: str) -> None:
    _memory_logs.pop(topic, None)


def settings_for(**overrides: Any) -> PublisherSettings:
    base: dict[str, Any] = {
        "admin_token": ADMIN,
        "topic_partitions": PARTITIONS,
        "ack_timeout": 5.0,
        "lease_ttl": 3.0,
    }
    base.update(overrides)
    return PublisherSettings(**base)


@dataclass
class Api:
    """A running publisher app and a client authenticated as the bootstrap admin."""

    client: TestClient[web.Request, web.Application]
    app: web.Application
    store: Store
    topic: str

    def url(self, path: str) -> str:
        return str(self.client.make_url(path))

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = ADMIN,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> tuple[int, Any, CIMultiDict[str]]:
        h = dict(headers or {})
        if token is not None:
            h["Authorization"] = f"Bearer {token}"
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        if data is not None:
            h.setdefault("Content-Type", "application/json")
        async with self.client.request(method, path, data=data, headers=h) as resp:
            text = await resp.read()
            parsed = json.loads(text) if text else None
            return resp.status, parsed, CIMultiDict(resp.headers)


ApiFactory = Callable[..., Awaitable[Api]]


async def read_topic(
    bootstrap: str, topic: str, env: str, *, partitions: int = PARTITIONS, expect: int
) -> list[Envelope]:
    """Read ``env``'s partition from the beginning (manual assignment, no group).

    For a topic an app of ``make_api`` wrote to a ``MemoryLog``, that log is read instead
    (its records are all there once ``send`` returned; ``expect`` is not needed).
    """
    memory = _memory_logs.get(topic)
    if memory is not None:
        records = memory.records(partition_for(env, partitions))
        decoded = [decode_envelope(r.value) for r in records]
        return [e for e in decoded if e.env == env]
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",  # the log as relays read it
    )
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition_for(env, partitions))
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        out: list[Envelope] = []
        for _ in range(100):
            batch = await consumer.getmany(tp, timeout_ms=200)
            for records in batch.values():
                out.extend(decode_envelope(r.value) for r in records)
            end = (await consumer.end_offsets([tp]))[tp]
            if len(out) >= expect and await consumer.position(tp) >= end:
                break
        return [e for e in out if e.env == env]
    finally:
        await consumer.stop()


async def wait_outbox_empty(app: web.Application, store: Store, seconds: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while await store.outbox_depth() > 0:
        if loop.time() > deadline:
            raise AssertionError(f"outbox not drained: {await store.outbox_depth()} left")
        app[FORWARDER].kick()
        await asyncio.sleep(0.1)
