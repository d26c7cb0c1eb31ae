"""Rate-limiting of noisy third-party loggers.

aiokafka logs ``ERROR Topic X not found in cluster metadata`` on every metadata refresh while
the topic is missing: thousands of lines a second, drowning the one line that matters. The
filter lets the first record of each message template through, then at most one per
``interval`` seconds, suffixed with how many identical records it suppressed meanwhile.
"""

from __future__ import annotations

import logging
import time

__all__ = ["RateLimitFilter", "install_rate_limit"]


class RateLimitFilter(logging.Filter):
    """Passes at most one record per message template (``record.msg``) every ``interval`` s."""

    def __init__(self, interval: float = 10.0) -> None:
        super().__init__()
        self.interval = interval
        self._last: dict[str, float] = {}  # template -> monotonic time it last passed
        self._suppressed: dict[str, int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        template = str(record.msg)
        now = time.monotonic()
        last = self._last.get(template)
        if last is not None and now - last < self.interval:
            self._suppressed[template] = self._suppressed.get(template, 0) + 1
            return False
        self._last[template] = now
        suppressed = self._suppressed.pop(template, 0)
        if suppressed and not isinstance(record.args, dict):
            record.msg = f"{record.msg} (%d similar messages suppressed in the last %.0fs)"
            record.args = (*_args(record), suppressed, self.interval)
        return True


def _args(record: logging.LogRecord) -> tuple[object, ...]:
    if record.args is None:
        return ()
    return tuple(record.args)


def install_rate_limit(logger_name: str, interval: float = 10.0) -> RateLimitFilter:
    """Attach one ``RateLimitFilter`` to ``logger_name`` (idempotent); return it."""
    logger = logging.getLogger(logger_name)
    for existing in logger.filters:
        if isinstance(existing, RateLimitFilter):
            return existing
    limiter = RateLimitFilter(interval)
    logger.addFilter(limiter)
    return limiter
