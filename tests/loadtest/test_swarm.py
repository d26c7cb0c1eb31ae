"""The swarm against a tiny SSE server: counts, Last-Event-ID, 401, fail-over, sources."""

from __future__ import annotations

import time

import pytest
from loadtest_support import GOOD_KEY, TinySSEServer

from loadtest.procs import free_port
from loadtest.recorder import DeliveryRecorder
from loadtest.swarm import Swarm, Target

# Not "unit" (real loopback sockets) nor "integration" (no Kafka/Redis): unmarked, fast.

N = 40


async def _open(server: TinySSEServer, **kwargs: object) -> tuple[Swarm, DeliveryRecorder]:
    rec = DeliveryRecorder()
    swarm = Swarm([Target.from_url(server.url)], rec, **kwargs)  # type: ignore[arg-type]
    clients = swarm.add(N, "env", GOOD_KEY)
    await swarm.connect_all(clients)
    assert await swarm.wait_until(lambda: rec.puts >= N, 10)
    return swarm, rec


async def test_every_stream_gets_put_and_every_patch(sse_server: TinySSEServer) -> None:
    swarm, rec = await _open(sse_server)
    try:
        assert swarm.open_count == N
        for _ in range(3):
            now = time.perf_counter()
            version = sse_server.broadcast()
            rec.accepted("env", "flag-0", version, sent=now, accepted=now)
        assert await swarm.wait_deliveries(3 * N, 10)
        changes = rec.changes()
        assert [c.version for c in changes] == [2, 3, 4]
        assert all(c.receivers == N for c in changes)
        assert len(rec.delays()) == 3 * N
        assert rec.lagging_streams(swarm.streams_by_env()) == 0
        assert swarm.comments == N  # one heartbeat each
        assert {c.last_event_id for c in swarm.clients} == {"e:3"}
    finally:
        await swarm.close()
    assert swarm.open_count == 0


async def test_identical_frames_are_parsed_once(sse_server: TinySSEServer) -> None:
    swarm, rec = await _open(sse_server)
    try:
        for _ in range(3):
            now = time.perf_counter()
            version = sse_server.broadcast(split=False)
            rec.accepted("env", "flag-0", version, sent=now, accepted=now)
            assert await swarm.wait_deliveries(len(rec.receipt_time) + N, 10)
        assert all(c.receivers == N for c in rec.changes())
        assert {c.last_event_id for c in swarm.clients} == {"e:3"}
        assert {c.parser.last_event_id for c in swarm.clients} == {"e:3"}
        if sse_server.framing == "chunked":  # one chunk = one read: the cache applies
            assert swarm.parse_cache_hits > 0
    finally:
        await swarm.close()


async def test_lagging_stream_is_counted(sse_server: TinySSEServer) -> None:
    swarm, rec = await _open(sse_server)
    try:
        now = time.perf_counter()
        rec.accepted("env", "flag-0", 99, sent=now, accepted=now)  # never sent by the server
        assert rec.lagging_streams(swarm.streams_by_env()) == N
    finally:
        await swarm.close()


@pytest.mark.parametrize("resume", [True, False])
async def test_reconnect_sends_last_event_id_only_when_resuming(
    sse_server: TinySSEServer, resume: bool
) -> None:
    swarm, rec = await _open(sse_server, resume=resume, reconnect_delay=0.05)
    try:
        sse_server.broadcast()
        assert await swarm.wait_deliveries(N, 10)
        sse_server.last_event_ids.clear()
        sse_server.drop_all()
        assert await swarm.wait_until(lambda: rec.puts >= 2 * N, 10)
        assert swarm.opened_total == 2 * N
        expected = "e:1" if resume else None
        assert sse_server.last_event_ids == [expected] * N
    finally:
        await swarm.close()


async def test_unauthorized_streams_stop_without_retry(sse_server: TinySSEServer) -> None:
    rec = DeliveryRecorder()
    swarm = Swarm([Target.from_url(sse_server.url)], rec, reconnect_delay=0.01)
    clients = swarm.add(5, "env", "sdk-wrong")
    await swarm.connect_all(clients)
    assert await swarm.wait_until(lambda: swarm.statuses[401] == 5, 10)
    await swarm.wait_until(lambda: False, 0.2)  # would-be retries had time to happen
    assert swarm.attempts == 5
    assert all(c.stopped for c in clients)
    assert swarm.open_count == 0
    await swarm.close()


async def test_fails_over_to_the_next_target(sse_server: TinySSEServer) -> None:
    dead = Target("127.0.0.1", free_port())  # nothing listens there
    rec = DeliveryRecorder()
    swarm = Swarm([dead, Target.from_url(sse_server.url)], rec, reconnect_delay=0.01)
    clients = swarm.add(10, "env", GOOD_KEY)
    await swarm.connect_all(clients)
    try:
        assert await swarm.wait_open(10, 10)
        assert swarm.errors["ECONNREFUSED"] == 10
    finally:
        await swarm.close()


async def test_spreads_over_source_addresses(sse_server: TinySSEServer) -> None:
    swarm, _ = await _open(sse_server, source_ips=4)
    await swarm.close()
    assert set(sse_server.peers) == {f"127.0.0.{i}" for i in range(2, 6)}


def test_target_from_url() -> None:
    assert Target.from_url("http://127.0.0.1:8030") == Target("127.0.0.1", 8030, "/all")
    assert Target.from_url("http://h:1/flags") == Target("h", 1, "/flags")
    assert not Target("10.0.0.1", 1).loopback
    with pytest.raises(ValueError):
        Target.from_url("http://nohost")
