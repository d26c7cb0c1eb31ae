"""Redis of the stack: a real server (redis-py asyncio round trip) and private servers
that keep their data across stop + start."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from flagstream.stack import redis as stack_redis
from flagstream.stack.redis import RedisServer

pytestmark = pytest.mark.integration


async def test_asyncio_round_trip(redis_url: str, unique_name: str) -> None:
    client = aioredis.from_url(redis_url)
    try:
        key = f"{unique_name}:hash"
        await client.hset(key, mapping={"a": "1", "b": "2"})
        async with client.pipeline(transaction=True) as pipe:
            pipe.hincrby(key, "a", 41)
            pipe.hgetall(key)
            incremented, everything = await pipe.execute()
        assert incremented == 42
        assert everything == {b"a": b"42", b"b": b"2"}
        assert await client.delete(key) == 1
        assert await client.exists(key) == 0
    finally:
        await client.aclose()


async def test_config_is_ours(redis_url: str) -> None:
    client = aioredis.from_url(redis_url)
    try:
        config = await client.config_get("appendonly")
        assert config == {"appendonly": "yes"}
        assert (await client.config_get("bind"))["bind"] == "127.0.0.1"
    finally:
        await client.aclose()


async def test_private_redis_keeps_data_across_stop_and_kill(
    private_redis: RedisServer, unique_name: str
) -> None:
    server = private_redis
    first_pid = server.pid
    client = aioredis.from_url(server.url)
    try:
        await client.set(unique_name, "kept")
    finally:
        await client.aclose()

    await asyncio.to_thread(server.stop)
    assert server.pid is None and not stack_redis.ping(server.port)
    await asyncio.to_thread(server.start)
    assert server.pid not in (None, first_pid)

    await asyncio.to_thread(server.kill)
    assert server.pid is None and not stack_redis.ping(server.port)
    await asyncio.to_thread(server.restart)

    client = aioredis.from_url(server.url)
    try:
        assert await client.get(unique_name) == b"kept"
    finally:
        await client.aclose()


def test_start_is_idempotent(private_redis: RedisServer) -> None:
    pid = private_redis.pid
    RedisServer(private_redis.data_dir, private_redis.port).start()
    assert private_redis.pid == pid


def test_ping_is_false_where_nothing_listens(private_redis: RedisServer) -> None:
    port = private_redis.port
    private_redis.stop()
    assert stack_redis.ping(port) is False
