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
