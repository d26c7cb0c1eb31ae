"""The HTTP/1.1 response reader: framing, any split of the input, errors."""

from __future__ import annotations

import pytest

from loadtest.httpreader import HTTPReaderError, ResponseReader

pytestmark = pytest.mark.unit

CHUNKED = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5\r\nhello\r\n"
    b"1;ext=1\r\n \r\n"
    b"5\r\nworld\r\n"
    b"0\r\nX-Trailer: 1\r\n\r\n"
)


def _feed_all(reader: ResponseReader, parts: list[bytes]) -> bytes:
    return b"".join(piece for part in parts for piece in reader.feed(part))


def test_chunked_body_and_headers() -> None:
    r = ResponseReader()
    assert _feed_all(r, [CHUNKED]) == b"hello world"
    assert r.status == 200
    assert r.headers["content-type"] == "text/event-stream"
    assert r.done


@pytest.mark.parametrize("split", range(1, len(CHUNKED)))
def test_chunked_any_split_point(split: int) -> None:
    r = ResponseReader()
    assert _feed_all(r, [CHUNKED[:split], CHUNKED[split:]]) == b"hello world"
    assert r.done


def test_chunked_byte_by_byte() -> None:
    r = ResponseReader()
    assert _feed_all(r, [bytes([b]) for b in CHUNKED]) == b"hello world"


def test_close_delimited_body_runs_until_eof() -> None:
    r = ResponseReader()
    body = _feed_all(r, [b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nabc", b"def"])
    assert body == b"abcdef"
    assert not r.done
    r.eof()
    assert r.done


def test_content_length_body_and_lax_line_ends() -> None:
    r = ResponseReader()
    body = _feed_all(r, [b"HTTP/1.0 401 Unauthorized\nContent-Length: 3\n\nabcEXTRA"])
    assert (r.status, body, r.done) == (401, b"abc", True)


def test_cut_chunked_body_is_an_error_at_eof() -> None:
    r = ResponseReader()
    r.feed(CHUNKED[:-10])
    with pytest.raises(HTTPReaderError):
        r.eof()


@pytest.mark.parametrize(
    "raw",
    [
        b"SPDY/3 200 OK\r\n\r\n",
        b"HTTP/1.1 abc OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n",
    ],
)
def test_malformed_responses_raise(raw: bytes) -> None:
    with pytest.raises(HTTPReaderError):
        ResponseReader().feed(raw)


def test_head_size_is_bounded() -> None:
    r = ResponseReader(max_head_bytes=100)
    with pytest.raises(HTTPReaderError):
        r.feed(b"HTTP/1.1 200 OK\r\nX: " + b"a" * 200)
