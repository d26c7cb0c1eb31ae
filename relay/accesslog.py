"""The relay's access log: aiohttp's line format, with secrets redacted.

Rules:
- Off by default (``FLAGSTREAM_RELAY_ACCESS_LOG``); when on, one INFO line per request on the
  logger ``flagstream.relay.access``, in aiohttp's (Apache-like) format.
- Nothing that opens anything is written: the value of every ``token`` query parameter (the
  OFREP notice-stream token, whose URL must work without headers, so it sits in the query)
  becomes ``[redacted]`` in the request line, the path and any header logged; the values of
  the ``Authorization`` and ``X-API-Key`` headers are never written.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

from aiohttp.web_log import AccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

__all__ = ["ACCESS_LOG", "RedactingAccessLogger", "redact"]

ACCESS_LOG = logging.getLogger("flagstream.relay.access")

_TOKEN = re.compile(r"((?:^|[?&;])token=)[^&;#\s\"]*", re.IGNORECASE)
_SECRET_HEADERS = frozenset({"authorization", "x-api-key"})
REDACTED = "[redacted]"


def redact(text: str) -> str:
    """``text`` with the value of every ``token`` query parameter replaced."""
    return _TOKEN.sub(r"\1" + REDACTED, text) if "token=" in text.lower() else text


class RedactingAccessLogger(AccessLogger):
    """aiohttp's ``AccessLogger`` that never writes a secret (rules above)."""

    def _format_line(
        self, request: BaseRequest, response: StreamResponse, time: float
    ) -> Iterable[tuple[str | tuple[str, str], str]]:
        out: list[tuple[str | tuple[str, str], str]] = []
        for key, value in super()._format_line(request, response, time):
            if isinstance(key, tuple) and key[1].lower() in _SECRET_HEADERS and value != "-":
                value = REDACTED
            elif isinstance(value, str):
                value = redact(value)
            out.append((key, value))
        return out
