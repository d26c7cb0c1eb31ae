"""The lean hot-path Redis client (``publisher.resp``) against a real Redis: reply order under
pipelining, error replies, NOSCRIPT, timeouts, lost connections, cancelled callers and the
connection settings taken from the URL."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from flagstream.stack.redis import RedisServer
from publisher.resp import RespClient, RespReplyError, RespUnavailable

pytestmark = pytest.mark.integration


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[RespClient]:
    resp = RespClient.for_url(redis_url, connect_timeout=2.0, timeout=2.0)
    assert resp is not None
    try:
        yield resp
    finally:
        await resp.close()


async def test_concurrent_calls_are_pipelined_and_each_gets_its_own_reply(
    client: RespClient, unique_name: str
) -> None:
    key = f"{unique_name}:n"
    replies = await asyncio.gather(*(client.call("ECHO", f"v{i}") for i in range(300)))
    assert replies == [f"v{i}".encode() for i in range(300)]
    # one connection, in call order: the increments come back numbered as they were sent
    counts = await asyncio.gather(*(client.call("INCR", key) for _ in range(50)))
    assert counts == list(range(1, 51))
    await client.call("DEL", key)


async def test_an_error_reply_raises_and_leaves_the_connection_usable(
    client: RespClient, unique_name: str
) -> None:
    await client.call("SET", f"{unique_name}:s", b"text")
    with pytest.raises(RespReplyError, match="WRONGTYPE"):
        await client.call("LPUSH", f"{unique_name}:s", b"x")
    assert await client.call("GET", f"{unique_name}:s") == b"text"
    assert await client.call("GET", f"{unique_name}:missing") is None
    await client.call("DEL", f"{unique_name}:s")


async def test_a_script_redis_does_not_know_is_loaded_and_run(
    private_redis: RedisServer,
) -> None:
    resp = RespClient.for_url(private_redis.url, connect_timeout=2.0, timeout=2.0)
    assert resp is not None
    # registered as the store registers its scripts: redis-py computes .sha, sends nothing
    script = aioredis.Redis().register_script("return {KEYS[1], ARGV[1], tonumber(ARGV[2]) + 1}")
    boom = aioredis.Redis().register_script("return redis.error_reply('boom')")
    try:
        await resp.call("SCRIPT", "FLUSH")
        assert await resp.script(script.sha, script.script, ["k"], [b"a", 41]) == [b"k", b"a", 42]
        assert await resp.call("SCRIPT", "EXISTS", script.sha) == [1]
        assert await resp.script(script.sha, script.script, ["k"], [b"b", 1]) == [b"k", b"b", 2]
        with pytest.raises(RespReplyError, match="boom"):
            await resp.script(boom.sha, boom.script, [], [])
    finally:
        await resp.close()


async def test_a_reply_later_than_the_timeout_fails_every_waiting_call_then_reconnects(
    redis_url: str,
) -> None:
    resp = RespClient.for_url(redis_url, connect_timeout=2.0, timeout=0.2)
    assert resp is not None
    try:
        # BLPOP on a key nobody writes answers nil after 1 s: longer than the 0.2 s timeout
        slow = asyncio.ensure_future(resp.call("BLPOP", "flagstream-test:none", 1))
        behind = asyncio.ensure_future(resp.call("PING"))
        with pytest.raises(RespUnavailable, match=r"did not answer within 0\.2s"):
            await slow
        with pytest.raises(RespUnavailable):
            await behind  # queued behind it on the same connection: its reply is unknowable
        assert await resp.call("PING") == b"PONG"  # a new connection
    finally:
        await resp.close()


async def test_a_killed_connection_fails_its_waiting_call_and_the_next_call_reconnects(
    client: RespClient, redis_url: str
) -> None:
    own_id = await client.call("CLIENT", "ID")
    waiting = asyncio.ensure_future(client.call("BLPOP", "flagstream-test:none", 5))
    await asyncio.sleep(0.1)
    admin = aioredis.Redis.from_url(redis_url)
    try:
        assert await admin.client_kill_filter(_id=own_id) == 1
    finally:
        await admin.aclose()
    with pytest.raises(RespUnavailable, match="lost"):
        await asyncio.wait_for(waiting, 5)
    assert await client.call("ECHO", b"again") == b"again"
    assert await client.call("CLIENT", "ID") != own_id


async def test_a_cancelled_caller_does_not_shift_the_replies_of_the_next(
    client: RespClient,
) -> None:
    blocked = asyncio.ensure_future(client.call("BLPOP", "flagstream-test:none", 0.3))
    await asyncio.sleep(0.05)
    blocked.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await blocked
    # the BLPOP's nil arrives first and is dropped; ECHO gets its own reply
    assert await client.call("ECHO", b"mine") == b"mine"


async def test_nothing_listening_is_unavailable(unique_name: str) -> None:
    resp = RespClient(host="127.0.0.1", port=9, connect_timeout=1.0, timeout=1.0)
    with pytest.raises(RespUnavailable, match="cannot connect to Redis"):
        await resp.call("PING")


async def test_url_settings_password_and_database(private_redis: RedisServer) -> None:
    admin = aioredis.Redis.from_url(private_redis.url)
    try:
        await admin.config_set("requirepass", "s3cret-pass")
        base = f"127.0.0.1:{private_redis.port}"
        good = RespClient.for_url(
            f"redis://:s3cret-pass@{base}/3", connect_timeout=2.0, timeout=2.0
        )
        wrong = RespClient.for_url(f"redis://:nope@{base}/3", connect_timeout=2.0, timeout=2.0)
        assert good is not None and wrong is not None
        try:
            await good.call("SET", "where", b"db3")
            assert await good.call("GET", "where") == b"db3"
            with pytest.raises(RespUnavailable, match="refused the connection's setup"):
                await wrong.call("PING")  # AUTH refused (the SELECT behind it fails too)
        finally:
            await good.close()
            await wrong.close()
        authed = aioredis.Redis.from_url(f"redis://:s3cret-pass@{base}/3", decode_responses=True)
        try:
            assert await authed.get("where") == "db3"  # database 3, as the URL said
            await authed.config_set("requirepass", "")
        finally:
            await authed.aclose()
    finally:
        await admin.aclose()


def test_which_urls_it_handles() -> None:
    assert RespClient.for_url("rediss://h:6380/0", connect_timeout=1, timeout=1) is None
    unix = RespClient.for_url("unix:///run/redis.sock?db=2", connect_timeout=1, timeout=1)
    assert unix is not None and unix._path == "/run/redis.sock" and unix._db == 2
    tcp = RespClient.for_url("redis://u:p@10.0.0.5:6390/4", connect_timeout=1, timeout=1)
    assert tcp is not None
    assert (tcp._host, tcp._port, tcp._db, tcp._username, tcp._password) == (
        "10.0.0.5",
        6390,
        4,
        "u",
        "p",
    )
