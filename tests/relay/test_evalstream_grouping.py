"""Grouping: 1,000 evaluated streams over 10 distinct contexts, one rule change that flips some
of them: exactly the flipped streams get a patch, the change costs 10 evaluations of the new
state, and every stream of a group receives the very same bytes (relay/evalstream.py)."""

from __future__ import annotations

import asyncio
import json
from collections import Counter

import pytest
from client_support import CLIENT_ID, ENV, b64, client_relay, env_envelope, seed, targeted
from relay_support import MemoryBackend, item_envelope, metric, wait_until

from flagstream.memlog import MemoryLog
from protocol.sse import SSEEvent, SSEParser
from relay.app import HUB_KEY

STREAMS = 1000
CONTEXTS = [
    {"kind": "user", "key": f"user-{i}", "tier": "gold" if i < 4 else "basic"} for i in range(10)
]


class RawStream:
    """One stream on a plain socket: the HTTP/1.1 chunks exactly as the relay wrote them."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.chunks: list[bytes] = []
        self.task = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, host: str, port: int, path: str) -> RawStream:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n\r\n".encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        assert b"transfer-encoding: chunked" in head.lower()
        return cls(reader, writer)

    async def _read(self) -> None:
        try:
            while True:
                size_line = await self.reader.readuntil(b"\r\n")
                size = int(size_line.strip(), 16)
                data = await self.reader.readexactly(size + 2)
                if size == 0:
                    return
                self.chunks.append(data[:-2])
        except (asyncio.IncompleteReadError, ConnectionError):
            return

    def events(self) -> list[SSEEvent]:
        parser = SSEParser()
        return [e for c in self.chunks for e in parser.feed(c) if isinstance(e, SSEEvent)]

    async def close(self) -> None:
        self.task.cancel()
        self.writer.close()


@pytest.mark.slow
async def test_a_rule_change_reaches_exactly_the_flipped_contexts_with_shared_bytes() -> None:
    backend = MemoryBackend(MemoryLog(3))
    await seed(backend, env_envelope(), flags=[targeted("banner", 1), targeted("steady", 1)])
    async with client_relay(backend, heartbeat_interval=600) as relay:
        host, port = "127.0.0.1", int(relay.url.rsplit(":", 1)[1])
        paths = [f"/eval/{CLIENT_ID}/{b64(CONTEXTS[i % 10])}" for i in range(STREAMS)]
        streams: list[RawStream] = []
        for start in range(0, STREAMS, 100):
            streams += await asyncio.gather(
                *(RawStream.open(host, port, p) for p in paths[start : start + 100])
            )
        try:
            await wait_until(lambda: all(s.chunks for s in streams), within=60)
            hub = relay.app[HUB_KEY]
            assert hub.stats()["evaluatedContexts"] == 10
            assert metric(relay.metrics, "flagstream_relay_client_stream_contexts") == 10
            # The put of one group is the same bytes on every stream of the group.
            for i in range(10):
                assert len({streams[j].chunks[0] for j in range(i, STREAMS, 10)}) == 1
            # Gold users get false from a new first rule: users 0-3 flip (true -> false).
            gold_rule = {
                "id": "gold",
                "variation": 1,
                "clauses": [{"attribute": "tier", "op": "in", "values": ["gold"]}],
            }
            flipped = targeted("banner", 2)
            flipped["rules"] = [gold_rule, *flipped["rules"]]
            async with backend.producer() as p:
                await p.send(item_envelope(ENV, "flag", flipped))
            await wait_until(
                lambda: all(len(streams[j].chunks) == 2 for j in range(STREAMS) if j % 10 < 4),
                within=60,
            )
            await hub.wait_idle()
            await asyncio.sleep(0.3)
            for j, stream in enumerate(streams):
                kinds = [e.event for e in stream.events()]
                if j % 10 < 4:
                    assert kinds == ["put", "patch"], (j, kinds)
                    patch = json.loads(stream.events()[1].data)
                    assert patch["key"] == "banner" and patch["value"] is False
                else:
                    assert kinds == ["put"], (j, kinds)
            for i in range(4):
                assert len({streams[j].chunks[1] for j in range(i, STREAMS, 10)}) == 1
            # All four flipped groups got the same result (false, rule 0): one encoding.
            assert len({streams[j].chunks[1] for j in range(0, 4)}) == 1
            m = relay.metrics
            name = "flagstream_relay_client_stream_evaluations_total"
            assert metric(m, name, {"state": "new"}) == 10  # one flag x 10 contexts
            assert metric(m, name, {"state": "previous"}) == 10
            assert metric(m, "flagstream_relay_client_patches_suppressed_total") == 6
            sent = Counter(len(s.chunks) for s in streams)
            assert sent == {2: 400, 1: 600}
        finally:
            await asyncio.gather(*(s.close() for s in streams))
