"""A stream client that leaves before its answer began (connect, send ``GET /all``, close) is
a normal departure: the relay logs no traceback and keeps serving."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from test_hub import StreamClient
from test_server import SDK_KEY, relay_process, seeded, wait_ready

pytestmark = [pytest.mark.e2e]

REQUEST = f"GET /all HTTP/1.1\r\nHost: x\r\nAuthorization: {SDK_KEY}\r\n\r\n".encode()


async def test_clients_gone_before_the_stream_began_leave_no_traceback(
    tmp_path: Path, kafka_bootstrap: str, unique_name: str
) -> None:
    async with seeded(kafka_bootstrap, unique_name):
        with relay_process(tmp_path, kafka_bootstrap, unique_name, workers=1) as relay:
            await wait_ready(relay)
            for _ in range(200):
                _reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
                writer.write(REQUEST)
                writer.close()
            await asyncio.sleep(1.0)
            stream = await StreamClient.open(
                relay.port, "/all", extra_headers=f"Authorization: {SDK_KEY}\r\n"
            )
            assert await stream.head() == 200
            log = relay.log()
            assert "Traceback" not in log and "Error handling request" not in log, log[-3000:]
