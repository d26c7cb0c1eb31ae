"""flagstream.logs: one JSON object per line, extras kept, handlers not duplicated."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from flagstream.logs import JsonFormatter, RateLimitFilter, configure_logging, rate_limit

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def _restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines_with_extras_and_exception(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO")
    log = logging.getLogger("flagstream.test")
    log.debug("hidden")
    log.info("hello %s", "world", extra={"env": "prod", "count": 3})
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed")
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["msg"] == "hello world" and first["level"] == "INFO"
    assert first["logger"] == "flagstream.test"
    assert (first["env"], first["count"]) == ("prod", 3)
    assert first["ts"].endswith("+00:00")
    assert second["level"] == "ERROR" and "ValueError: boom" in second["exc"]


def test_reconfiguring_replaces_our_handler(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO")
    configure_logging("WARNING", json=False)
    log = logging.getLogger("flagstream.test")
    log.info("dropped")
    log.warning("plain %d", 1)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].endswith("WARNING flagstream.test: plain 1")


def test_unknown_level_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown log level 'LOUD'"):
        configure_logging("LOUD")


def test_non_json_extras_are_stringified() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
    record.obj = object()
    assert json.loads(JsonFormatter().format(record))["obj"].startswith("<object object")


def test_rate_limit_lets_one_line_per_interval_through_then_counts_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The filter's clock is the test's: on the real one, a stall of the loaded machine
    # during the 1000 calls below let one more line through before the interval was over.
    clock = {"now": 1000.0}
    logger = logging.getLogger("flagstream.test.noisy")
    limiter = RateLimitFilter(interval=0.2, clock=lambda: clock["now"])
    logger.addFilter(limiter)
    try:
        caplog.set_level(logging.WARNING, logger=logger.name)
        for _ in range(1000):
            logger.error("Topic %s not found", "a")
        logger.error("Topic %s not found", "b")  # another message is not held back
        logger.warning("Topic %s not found", "a")  # nor the same text at another level
        clock["now"] += 0.25
        logger.error("Topic %s not found", "a")
        assert [r.getMessage() for r in caplog.records if r.name == logger.name] == [
            "Topic a not found",
            "Topic b not found",
            "Topic a not found",
            "Topic a not found (999 more like this in the last 0.2s)",
        ]
    finally:
        logger.removeFilter(limiter)


def test_rate_limit_remembers_a_bounded_number_of_messages() -> None:
    limiter = RateLimitFilter(interval=60, max_keys=10)
    for i in range(100):
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "line %d", (i,), None)
        assert limiter.filter(record)
    assert len(limiter._seen) <= 10


def test_rate_limit_install_is_idempotent() -> None:
    a = rate_limit("flagstream.test.idem")
    try:
        assert rate_limit("flagstream.test.idem") is a
        assert logging.getLogger("flagstream.test.idem").filters == [a]
    finally:
        logging.getLogger("flagstream.test.idem").removeFilter(a)
