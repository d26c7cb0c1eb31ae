"""The rate limit on noisy loggers: one line per template and interval, with a count."""

from __future__ import annotations

import logging
import time

import pytest

from publisher.logfilter import RateLimitFilter, install_rate_limit

pytestmark = pytest.mark.unit


def test_one_line_per_interval_then_a_count_of_what_was_suppressed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logger = logging.getLogger("flagstream.test.noisy")
    limiter = RateLimitFilter(interval=0.2)
    logger.addFilter(limiter)
    try:
        caplog.set_level(logging.ERROR, logger=logger.name)
        for _ in range(1000):
            logger.error("Topic %s not found", "x")
        logger.error("another message %d", 1)  # another template is not limited by the first
        time.sleep(0.25)
        logger.error("Topic %s not found", "x")
        messages = [r.getMessage() for r in caplog.records]
        assert messages == [
            "Topic x not found",
            "another message 1",
            "Topic x not found (999 similar messages suppressed in the last 0s)",
        ]
    finally:
        logger.removeFilter(limiter)


def test_install_is_idempotent() -> None:
    a = install_rate_limit("flagstream.test.idem")
    assert install_rate_limit("flagstream.test.idem") is a
    assert len(logging.getLogger("flagstream.test.idem").filters) == 1
