"""Process-wide logging for flagstream services: one JSON object per line on stderr.

Services call :func:`configure_logging` once at start. Fields: ``ts`` (UTC, ISO 8601 with
milliseconds), ``level``, ``logger``, ``msg``, any ``extra={...}`` fields given to the log
call, and ``exc`` when an exception is attached. Never pass secrets (SDK keys, tokens) in
messages or extras: log lines are shipped and kept.
"""

from __future__ import annotations

import json as _json
import logging
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", None, None)).keys() | {"message", "asctime"}
)
_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """Formats a record as one compact JSON line; non-JSON extras are rendered with str()."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return _json.dumps(entry, default=str, separators=(",", ":"))


def configure_logging(level: str = "INFO", json: bool = True) -> None:
    """Send every log record at ``level`` or above to stderr, as JSON lines or plain text.

    Idempotent: replaces the handlers it installed before. Raises ValueError for an unknown
    level name.
    """
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r} (use DEBUG, INFO, WARNING, ERROR)")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json else logging.Formatter(_TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_flagstream", False):
            root.removeHandler(old)
    handler._flagstream = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(numeric)
    # aiokafka logs every reconnect attempt at ERROR/WARNING; keep its noise bounded.
    logging.getLogger("aiokafka").setLevel(max(numeric, logging.WARNING))


class RateLimitFilter(logging.Filter):
    """Lets each distinct record (level + formatted message) through at most once per
    ``interval`` seconds; the next one let through after a quiet period says how many were
    suppressed meanwhile.

    Made for aiokafka: while a topic is missing, its metadata refresh logs
    ``Topic X not found in cluster metadata`` at ERROR thousands of times a second, drowning
    the one line that matters. At most ``max_keys`` distinct messages are remembered, so
    memory stays bounded whatever is logged.
    """

    def __init__(
        self,
        interval: float = 10.0,
        max_keys: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.interval = interval
        self.max_keys = max_keys
        self._clock = clock
        self._seen: dict[tuple[int, str], list[float]] = {}  # key -> [passed at, suppressed]

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            return True  # a broken record is the handler's to report, not ours to hide
        key = (record.levelno, message)
        now = self._clock()
        entry = self._seen.get(key)
        if entry is not None and now - entry[0] < self.interval:
            entry[1] += 1
            return False
        suppressed = int(entry[1]) if entry is not None else 0
        if entry is None and len(self._seen) >= self.max_keys:
            self._seen.clear()
        self._seen[key] = [now, 0]
        if suppressed:
            record.msg = f"{message} ({suppressed} more like this in the last {self.interval:g}s)"
            record.args = None
        return True


def rate_limit(logger_name: str, interval: float = 10.0) -> RateLimitFilter:
    """Attach one ``RateLimitFilter`` to ``logger_name`` and return it. Idempotent: the
    publisher and the relay both call it for ``aiokafka.cluster``, in one process too."""
    logger = logging.getLogger(logger_name)
    for existing in logger.filters:
        if isinstance(existing, RateLimitFilter):
            return existing
    limiter = RateLimitFilter(interval)
    logger.addFilter(limiter)
    return limiter
