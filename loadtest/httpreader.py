"""A sans-I/O reader of one HTTP/1.1 response: the head, then the body's framing.

Rules (RFC 9112 §6, only what a streaming GET needs):

1. The head is everything up to the first blank line (CRLF CRLF, or LF LF from lax servers);
   it is refused if it grows past ``max_head_bytes``.
2. The status line is ``HTTP/1.x SP 3DIGIT [SP reason]``; header names are case-insensitive
   (stored lower-cased); a repeated header keeps the last value.
3. Body framing: ``Transfer-Encoding: chunked`` wins; else ``Content-Length``; else the body
   runs until the peer closes (close-delimited).
4. Chunked: ``hex-size[;ext] CRLF data CRLF`` repeated; size 0 ends the body, trailers up to
   a blank line are skipped.

``feed`` returns body pieces in order; splitting the input anywhere gives the same bytes.
"""

from __future__ import annotations

from typing import Final

__all__ = ["HTTPReaderError", "ResponseReader"]

_HEAD_END: Final = (b"\r\n\r\n", b"\n\n")


class HTTPReaderError(Exception):
    """The peer sent something that is not a well-formed HTTP/1.1 response."""


class ResponseReader:
    """Feed it the bytes of one response; it returns the body bytes as they complete."""

    __slots__ = (
        "_buf",
        "_chunk_left",
        "_length_left",
        "_max_head",
        "_mode",
        "done",
        "headers",
        "status",
    )

    def __init__(self, *, max_head_bytes: int = 65536) -> None:
        self.status: int | None = None
        self.headers: dict[str, str] = {}
        self.done = False
        self._max_head = max_head_bytes
        self._buf = b""
        # "head" -> "chunk-size" | "chunk-data" | "chunk-crlf" | "trailers" | "length" | "close"
        self._mode = "head"
        self._chunk_left = 0
        self._length_left = 0

    @property
    def head_complete(self) -> bool:
        return self._mode != "head"

    def feed(self, data: bytes) -> list[bytes]:
        """Consume ``data``; return the body pieces it completed (possibly empty)."""
        if self.done:
            return []
        buf = self._buf + data if self._buf else data
        self._buf = b""
        out: list[bytes] = []
        if self._mode == "head":
            buf = self._read_head(buf)
            if self._mode == "head":
                return out
        if self._mode == "close":
            if buf:
                out.append(buf)
            return out
        if self._mode == "length":
            take = buf[: self._length_left]
            self._length_left -= len(take)
            if take:
                out.append(take)
            if self._length_left == 0:
                self.done = True
            return out
        self._read_chunked(buf, out)
        return out

    def eof(self) -> None:
        """The peer closed. Raises HTTPReaderError if the body was cut short."""
        if self._mode == "close":
            self.done = True
        if not self.done:
            raise HTTPReaderError("connection closed before the response was complete")

    def _read_head(self, buf: bytes) -> bytes:
        end = -1
        sep = b""
        for candidate in _HEAD_END:
            i = buf.find(candidate)
            if i >= 0 and (end < 0 or i < end):
                end, sep = i, candidate
        if end < 0:
            if len(buf) > self._max_head:
                raise HTTPReaderError("response head too large")
            self._buf = buf
            return b""
        head, rest = buf[:end], buf[end + len(sep) :]
        lines = head.decode("latin-1").replace("\r\n", "\n").split("\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise HTTPReaderError(f"bad status line {lines[0][:80]!r}")
        self.status = int(parts[1])
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if not colon:
                raise HTTPReaderError(f"bad header line {line[:80]!r}")
            self.headers[name.strip().lower()] = value.strip()
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            self._mode = "chunk-size"
        elif "content-length" in self.headers:
            try:
                self._length_left = int(self.headers["content-length"])
            except ValueError:
                raise HTTPReaderError("bad Content-Length") from None
            self._mode = "length"
            if self._length_left == 0:
                self.done = True
        else:
            self._mode = "close"
        return rest

    def _read_chunked(self, buf: bytes, out: list[bytes]) -> None:
        pos = 0
        n = len(buf)
        while pos < n and not self.done:
            mode = self._mode
            if mode == "chunk-data":
                take = min(self._chunk_left, n - pos)
                out.append(buf[pos : pos + take])
                pos += take
                self._chunk_left -= take
                if self._chunk_left == 0:
                    self._mode = "chunk-crlf"
                continue
            nl = buf.find(b"\n", pos)
            if nl < 0:
                if n - pos > 4096:
                    raise HTTPReaderError("chunk size line too long")
                break
            line = buf[pos:nl].rstrip(b"\r")
            pos = nl + 1
            if mode == "chunk-crlf":
                if line:
                    raise HTTPReaderError("missing CRLF after chunk data")
                self._mode = "chunk-size"
            elif mode == "chunk-size":
                size_text = line.split(b";", 1)[0].strip()
                try:
                    size = int(size_text, 16)
                except ValueError:
                    raise HTTPReaderError(f"bad chunk size {size_text[:20]!r}") from None
                if size == 0:
                    self._mode = "trailers"
                else:
                    self._chunk_left = size
                    self._mode = "chunk-data"
            elif not line:  # trailers: a blank line ends the message
                self.done = True
        self._buf = buf[pos:] if not self.done else b""
