"""Every error a relay answers is ``application/problem+json`` with a detail, and none echoes
what the client sent (a request header may carry a secret) or logs a traceback."""

from __future__ import annotations

import asyncio
import json
import logging

import aiohttp
import pytest
from relay_support import MemoryBackend, run_relay

from flagstream.memlog import MemoryLog

SECRET = "sdk-this-must-never-be-echoed-0123456789"


def _relay_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """The records this test's relay logged. An earlier test's abandoned Kafka producer (its
    broker was down) can be garbage-collected at any time, and asyncio then logs "Task was
    destroyed but it is pending!": that record is not about this relay."""
    return [
        r
        for r in caplog.records
        if not (r.name == "asyncio" and r.getMessage().startswith("Task was destroyed"))
    ]


async def raw_request(url: str, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` as is over a fresh loopback connection; the status, headers, body."""
    host, port = url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(request)
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), 10)  # the relay closes the connection
    finally:
        writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body


def assert_problem(status: int, content_type: str, body: bytes, expected: int) -> dict[str, object]:
    assert status == expected, body
    assert content_type.startswith("application/problem+json"), content_type
    doc = json.loads(body)
    assert doc["status"] == expected and doc["detail"] and doc["title"]
    return dict(doc)


async def test_unknown_paths_and_wrong_methods_are_problem_json() -> None:
    backend = MemoryBackend(MemoryLog(3))
    async with (
        run_relay(backend.settings(), backend.source()) as relay,
        aiohttp.ClientSession() as session,
    ):
        async with session.get(relay.url + "/nope") as resp:
            assert_problem(resp.status, resp.content_type, await resp.read(), 404)
        async with session.post(relay.url + "/all", data=b"x") as resp:
            doc = assert_problem(resp.status, resp.content_type, await resp.read(), 405)
            assert resp.headers["Allow"] == "GET"
            assert "GET" in str(doc["detail"])
        async with session.head(relay.url + "/flags") as resp:  # streams answer GET only
            assert resp.status == 405 and resp.headers["Allow"] == "GET"


@pytest.mark.parametrize("where", ["header", "request line"])
async def test_oversized_requests_get_problem_json_without_echo_or_traceback(
    where: str, caplog: pytest.LogCaptureFixture
) -> None:
    backend = MemoryBackend(MemoryLog(3))
    settings = backend.settings(max_request_line=1024, max_header_size=1024)
    padding = SECRET + "x" * 2000
    if where == "header":
        request = f"GET /all HTTP/1.1\r\nHost: relay\r\nAuthorization: {padding}\r\n\r\n"
    else:
        request = f"GET /all?key={padding} HTTP/1.1\r\nHost: relay\r\n\r\n"
    caplog.set_level(logging.DEBUG)
    async with run_relay(settings, backend.source()) as relay:
        status, headers, body = await raw_request(relay.url, request.encode())
        # The relay still serves normal requests afterwards.
        async with aiohttp.ClientSession() as session, session.get(relay.url + "/livez") as resp:
            assert resp.status == 200
    doc = assert_problem(status, headers.get("content-type", ""), body, 400)
    assert "longer than" in str(doc["detail"])
    assert SECRET.encode() not in body
    for record in _relay_records(caplog):
        text = record.getMessage() + str(record.exc_text or "") + str(record.exc_info or "")
        assert SECRET not in text, record
        assert record.levelno < logging.WARNING, record.getMessage()
        assert record.exc_info is None, record.getMessage()


async def test_malformed_request_is_problem_json(caplog: pytest.LogCaptureFixture) -> None:
    backend = MemoryBackend(MemoryLog(3))
    caplog.set_level(logging.DEBUG)
    async with run_relay(backend.settings(), backend.source()) as relay:
        bad = f"GET /all HTTP/1.1\r\nHost: relay\r\nBad Header\x01: {SECRET}\r\n\r\n".encode()
        status, headers, body = await raw_request(relay.url, bad)
    assert_problem(status, headers.get("content-type", ""), body, 400)
    assert SECRET.encode() not in body
    assert not [r for r in _relay_records(caplog) if r.levelno >= logging.WARNING or r.exc_info]
