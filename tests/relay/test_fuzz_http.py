"""Hypothesis-driven HTTP at a real relay process (real Kafka), plus a connection flood past
``max_connections`` and a client that sends its headers too slowly.

Requests are built as raw bytes so they can be anything a client might send: methods,
paths (known, unknown, odd bytes), ``Authorization`` (valid, unknown, empty, oversized,
binary), ``Last-Event-ID`` (valid positions, other epochs, offsets past the log, garbage),
extra and oversized headers, bodies, all sent at once, trickled in pieces, or sent by a
client that leaves at once. For every
request: an answer arrives, its status is below 500, an error is ``application/problem+json``
and never echoes the key it was given. After all of them, the relay's log holds no
traceback and it still serves a stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from relay_support import flag, item_envelope
from test_hub import StreamClient, events_of
from test_server import ENV, SDK_KEY, RelayProcess, relay_process, seed_topic, seeded, wait_ready

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

STREAM_REQUEST = f"GET /all HTTP/1.1\r\nHost: x\r\nAuthorization: {SDK_KEY}\r\n\r\n".encode()
KNOWN_PATHS = (
    "/all",
    "/flags",
    "/sdk/latest-all",
    "/status",
    "/livez",
    "/readyz",
    "/metrics",
    "/",
    "/all/",
    "/flags/x",
    "/sdk/latest-all?filter=1",
    "/%2e%2e/all",
    "//all",
    "/all?x=" + "y" * 3000,
)


@pytest.fixture(scope="module")
def fuzzed_relay(
    tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str
) -> Iterator[RelayProcess]:
    topic = f"t-{uuid.uuid4().hex[:12]}"

    async def seed() -> None:
        producer = await seed_topic(kafka_bootstrap, topic)
        await producer.__aexit__(None, None, None)

    asyncio.run(seed())
    tmp = tmp_path_factory.mktemp("relay-fuzz")
    with relay_process(tmp, kafka_bootstrap, topic, workers=1, heartbeat_interval=1) as relay:
        asyncio.run(wait_ready(relay))
        yield relay
        log = relay.log()
        assert "Traceback" not in log, log[-4000:]
    with contextlib.suppress(Exception):
        from loadtest.driver import delete_topic

        asyncio.run(delete_topic(kafka_bootstrap, topic))


def _header_value() -> st.SearchStrategy[bytes]:
    printable = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80).map(
        str.encode
    )
    return st.one_of(
        printable,
        st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
        st.integers(min_value=1, max_value=20_000).map(lambda n: b"k" * n),  # oversized
    )


last_event_ids = st.one_of(
    st.sampled_from([b"", b"0:0", b"nope", b"::", b"-1", b"0123456789ab:-5"]),
    st.tuples(st.text("0123456789abcdef", min_size=0, max_size=14), st.integers()).map(
        lambda t: f"{t[0]}:{t[1]}".encode()
    ),
    _header_value(),
)

authorizations = st.one_of(
    st.sampled_from(
        [SDK_KEY.encode(), b"", b"sdk-unknown-key-123456", b"Bearer " + SDK_KEY.encode()]
    ),
    _header_value(),
)

methods = st.one_of(
    st.sampled_from(["GET", "GET", "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "REPORT"]),
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=12),
)

paths = st.one_of(
    st.sampled_from(KNOWN_PATHS),
    st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=60).map(
        lambda p: "/" + p
    ),
)


@st.composite
def raw_requests(draw: st.DrawFn) -> tuple[bytes, str, bytes | None, str]:
    method = draw(methods)
    path = draw(paths)
    version = draw(st.sampled_from(["HTTP/1.1", "HTTP/1.1", "HTTP/1.0", "HTTP/2.0", "HTP/1"]))
    lines = [f"{method} {path} {version}".encode(), b"Host: relay"]
    auth = draw(st.none() | authorizations)
    if auth is not None:
        lines.append(b"Authorization: " + auth)
    if draw(st.booleans()):
        lines.append(b"Last-Event-ID: " + draw(last_event_ids))
    for name, value in draw(
        st.lists(
            st.tuples(
                st.sampled_from(
                    [b"Accept", b"If-None-Match", b"X-Junk", b"Content-Length", b"Connection"]
                )
                | st.text("abcxyz-", min_size=1, max_size=10).map(str.encode),
                _header_value(),
            ),
            max_size=4,
        )
    ):
        lines.append(name + b": " + value)
    body = draw(st.binary(max_size=64)) if draw(st.booleans()) else b""
    if body:
        lines.append(f"Content-Length: {len(body)}".encode())
    raw = b"\r\n".join(lines) + b"\r\n\r\n" + body
    pace = draw(st.integers(min_value=0, max_value=10))
    # one in 11 trickled, one in 11 gone as soon as it was sent (no answer read)
    return raw, method, auth, {0: "slow", 1: "vanish"}.get(pace, "")


def _exchange(port: int, raw: bytes, pace: str) -> bytes:
    """Send ``raw`` and read until the head (and a little of the body) or the close;
    ``pace``: "slow" trickles the request, "vanish" closes without reading (returns b"")."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        if pace == "vanish":
            with contextlib.suppress(OSError):
                sock.sendall(raw)
            return b""
        try:
            if pace == "slow":
                for i in range(0, len(raw), 7):
                    sock.sendall(raw[i : i + 7])
                    time.sleep(0.01)
            else:
                sock.sendall(raw)
        except OSError:
            pass  # the relay may answer and close before a long request is written
        data = b""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except (TimeoutError, OSError):
                break
            if not chunk:
                break
            data += chunk
            head, sep, body = data.partition(b"\r\n\r\n")
            if sep and (b" 200 " in head.split(b"\r\n")[0] or len(body) > 200):
                break  # a stream or a long body: enough seen
            if sep and b"content-length: " in head.lower():
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                if len(body) >= length:
                    break
        return data


@given(request=raw_requests())
@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_any_request_gets_a_clean_answer(
    fuzzed_relay: RelayProcess, request: tuple[bytes, str, bytes | None, str]
) -> None:
    raw, method, auth, pace = request
    answer = _exchange(fuzzed_relay.port, raw, pace)
    if pace == "vanish":
        assert fuzzed_relay.proc.poll() is None, fuzzed_relay.log()[-3000:]
        return  # what the relay made of it shows in its log (checked at the end)
    assert answer.startswith(b"HTTP/"), (raw[:300], answer[:300])
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert status < 500, (raw[:300], answer[:500])
    if status >= 400 and method != "HEAD":
        assert b"content-type: application/problem+json" in head.lower(), (raw[:300], head)
    if auth is not None and len(auth) >= 8:
        assert auth not in body, "the answer echoes the Authorization value it was given"
    assert fuzzed_relay.proc.poll() is None, fuzzed_relay.log()[-3000:]


def test_the_relay_still_serves_after_the_fuzzing(fuzzed_relay: RelayProcess) -> None:
    answer = _exchange(fuzzed_relay.port, STREAM_REQUEST, "")
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    assert b"event: put" in answer or b"event:put" in answer or b"200 OK" in answer


# --- a flood past max_connections and a slow-header client -----------------------------------


async def test_a_flood_past_max_connections_and_a_slow_header_client(
    tmp_path: Path, kafka_bootstrap: str, unique_name: str
) -> None:
    limit = 20
    async with seeded(kafka_bootstrap, unique_name) as producer:
        with relay_process(
            tmp_path,
            kafka_bootstrap,
            unique_name,
            workers=1,
            max_connections=limit,
            idle_connection_timeout=2,
            retry_after=1,
        ) as relay:
            await wait_ready(relay)
            live = []
            for _ in range(limit):
                stream = await StreamClient.open(
                    relay.port, "/all", extra_headers=f"Authorization: {SDK_KEY}\r\n"
                )
                assert await stream.head() == 200
                live.append(stream)

            # The flood: every stream past the limit is refused with 503 + Retry-After.
            async def one_more() -> bytes:
                reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
                writer.write(
                    f"GET /all HTTP/1.1\r\nHost: x\r\nAuthorization: {SDK_KEY}\r\n\r\n".encode()
                )
                data = await asyncio.wait_for(reader.read(4096), 20)
                writer.close()
                return data

            answers = await asyncio.gather(*(one_more() for _ in range(100)))
            for data in answers:
                assert data.startswith(b"HTTP/1.1 503"), data[:200]
                assert b"retry-after: " in data.lower()
                assert b"application/problem+json" in data.lower()

            # A client that sends its headers too slowly is closed after the idle timeout.
            reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
            writer.write(b"GET /all HTTP/1.1\r\nHo")
            started = time.monotonic()
            closed = False
            for byte in b"st: x\r\nAuthorization: " + SDK_KEY.encode() * 4:
                try:
                    writer.write(bytes([byte]))
                    await writer.drain()
                    data = await asyncio.wait_for(reader.read(100), 0.5)
                except (TimeoutError, ConnectionError):
                    continue
                if data == b"":
                    closed = True
                    break
            assert closed, "the slow-header client is still connected"
            assert time.monotonic() - started < 30
            writer.close()

            # The live streams saw none of this: a change reaches every one of them.
            await producer.send(item_envelope(ENV, "flag", flag("flag-0", 42)))
            for stream in live:
                items = await stream.until(lambda i: len(events_of(i)) >= 2, 20)
                assert b'"version":42' in events_of(items)[-1].data.encode()
            log = relay.log()
            assert "Traceback" not in log, log[-3000:]
