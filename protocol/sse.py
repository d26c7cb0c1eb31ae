"""Server-Sent Events: frame encoder and an incremental, sans-I/O parser.

Parser rules (WHATWG HTML "server-sent events", §9.2.6 "Interpreting an event stream"):

1. The stream is UTF-8; one leading BOM is dropped; invalid bytes decode to U+FFFD.
2. Lines end with CRLF, LF or CR. A CR at the end of a chunk ends the line at once; an LF
   starting the next chunk is then swallowed, so any split of CRLF gives the same events.
3. A blank line dispatches: if the data buffer is empty nothing is dispatched; otherwise one
   trailing LF is removed from it and an event of type ``event`` (default ``"message"``)
   is emitted. Data and event-type buffers are reset either way.
4. A line starting with ``:`` is a comment (reported as ``SSEComment``; browsers ignore them,
   but load tests count heartbeats).
5. Otherwise ``field:value`` (one leading space of the value is stripped) or ``field`` alone
   (empty value). ``event`` sets the type, ``data`` appends ``value + LF``, ``id`` sets the
   last event id unless the value contains NUL, ``retry`` sets the reconnection time if the
   value is only ASCII digits; other fields are ignored.

The last event id persists across events (it is what a client sends as ``Last-Event-ID``),
so ``SSEEvent.id`` is the last id seen at dispatch time, not only one set by this event.
``SSEParser.last_event_id`` changes only when a blank line ends an event block, so after a
connection drops mid-event it still names the last event received completely.
``SSEEvent.retry`` is the ``retry`` value set within this event's lines (``None`` if none);
``SSEParser.retry`` keeps the current reconnection time.

Line splitting works on bytes (CR and LF never occur inside a UTF-8 multibyte sequence), and
only complete lines are decoded, so splits inside a multibyte character are harmless.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from protocol.errors import ProtocolError

__all__ = [
    "SSEComment",
    "SSEEvent",
    "SSEParser",
    "encode_comment",
    "encode_event",
    "encode_retry",
]

_BOM: Final = b"\xef\xbb\xbf"
_LINE_BREAK: Final = re.compile(rb"\r\n|\r|\n")


def _check_line(value: str, what: str, *, forbid_nul: bool = False) -> bytes:
    if "\n" in value or "\r" in value or (forbid_nul and "\x00" in value):
        raise ValueError(f"SSE {what} must not contain CR, LF{' or NUL' if forbid_nul else ''}")
    return value.encode()


def encode_event(data: bytes, *, event: str | None = None, id: str | None = None) -> bytes:
    """One SSE frame: optional ``event:`` and ``id:`` lines, ``data:`` lines, a blank line.

    Line breaks inside ``data`` (CRLF, CR, LF) become separate ``data:`` lines; a parser
    joins them with LF. Raises ValueError for an event name that is empty or has CR/LF, or
    an id with CR, LF or NUL (a parser would silently ignore such an id).
    """
    head = b""
    if event is not None:
        if not event:
            raise ValueError("SSE event name must not be empty")
        head += b"event: " + _check_line(event, "event name") + b"\n"
    if id is not None:
        head += b"id: " + _check_line(id, "id", forbid_nul=True) + b"\n"
    if b"\n" not in data and b"\r" not in data:
        # Fast path: every JSON payload we send is a single line.
        return head + b"data: " + data + b"\n\n"
    lines = _LINE_BREAK.split(data)
    return head + b"".join(b"data: " + line + b"\n" for line in lines) + b"\n"


def encode_comment(text: str = "") -> bytes:
    """A comment line (heartbeat): ``b":\\n"``, or ``b": text\\n"``."""
    if not text:
        return b":\n"
    return b": " + _check_line(text, "comment") + b"\n"


def encode_retry(ms: int) -> bytes:
    """A ``retry:`` frame telling the client its reconnection delay in milliseconds."""
    if ms < 0:
        raise ValueError("retry must be >= 0")
    return b"retry: %d\n\n" % ms


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """A dispatched event. ``id`` is the last event id at dispatch (persists across events)."""

    event: str
    data: str
    id: str | None
    retry: int | None


@dataclass(frozen=True, slots=True)
class SSEComment:
    """A comment line (``:text``), with one leading space stripped."""

    text: str


class SSEParser:
    """Incremental SSE parser: feed it bytes as they arrive, get events and comments back.

    The result is the same for any split of the byte stream into chunks. ``max_line_bytes``
    bounds the memory a peer can make it hold: an unterminated line longer than that raises
    ProtocolError (the stream is then unusable; drop the connection).
    """

    __slots__ = (
        "_block_retry",
        "_buf",
        "_data",
        "_event",
        "_id_buffer",
        "_max_line",
        "_skip_lf",
        "_started",
        "last_event_id",
        "retry",
    )

    def __init__(self, *, max_line_bytes: int | None = None) -> None:
        self.last_event_id: str | None = None
        self.retry: int | None = None
        self._max_line = max_line_bytes
        self._buf = b""
        self._started = False  # BOM check done
        self._skip_lf = False  # previous chunk ended with CR
        self._data: list[str] = []
        self._event = ""
        self._block_retry: int | None = None
        # The id of the event being received; committed to last_event_id only by the blank
        # line, so a stream cut mid-event never claims an event the client did not get.
        self._id_buffer: str | None = None

    def feed(self, chunk: bytes) -> list[SSEEvent | SSEComment]:
        """Consume ``chunk``; return the events and comments it completed, in order."""
        buf = self._buf + chunk if self._buf else chunk
        if self._skip_lf and buf:
            self._skip_lf = False
            if buf[0] == 0x0A:
                buf = buf[1:]
        if not self._started:
            if len(buf) < len(_BOM) and _BOM.startswith(buf):
                self._buf = buf  # could still become a BOM
                return []
            self._started = True
            if buf.startswith(_BOM):
                buf = buf[len(_BOM) :]
        out: list[SSEEvent | SSEComment] = []
        lines = buf.splitlines(keepends=True)  # bytes: splits on CRLF, CR, LF only
        if lines and not lines[-1].endswith((b"\n", b"\r")):
            self._buf = lines.pop()
            if self._max_line is not None and len(self._buf) > self._max_line:
                raise ProtocolError("SSE line too long")
        else:
            self._buf = b""
        for raw in lines:
            if raw.endswith(b"\r\n"):
                raw = raw[:-2]
            elif raw.endswith(b"\n"):
                raw = raw[:-1]
            else:
                raw = raw[:-1]
            self._line(raw.decode("utf-8", "replace"), out)
        if lines:
            # A CR ending the buffer may be the first half of a CRLF split across chunks.
            self._skip_lf = not self._buf and lines[-1].endswith(b"\r")
        return out

    def _line(self, line: str, out: list[SSEEvent | SSEComment]) -> None:
        if not line:
            self._dispatch(out)
            return
        if line[0] == ":":
            text = line[1:]
            out.append(SSEComment(text[1:] if text[:1] == " " else text))
            return
        field, sep, value = line.partition(":")
        if sep and value[:1] == " ":
            value = value[1:]
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._event = value
        elif field == "id":
            if "\x00" not in value:
                self._id_buffer = value
        elif field == "retry" and value.isascii() and value.isdigit():
            self.retry = self._block_retry = int(value)
        # Any other field is ignored, as the spec requires.

    def _dispatch(self, out: list[SSEEvent | SSEComment]) -> None:
        self.last_event_id = self._id_buffer
        if self._data:
            out.append(
                SSEEvent(
                    event=self._event or "message",
                    data="\n".join(self._data),
                    id=self.last_event_id,
                    retry=self._block_retry,
                )
            )
        self._data = []
        self._event = ""
        self._block_retry = None
