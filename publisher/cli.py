"""``flagstream publisher``: run the admin API and the outbox forwarder on Redis and Kafka."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from flagstream.gcpolicy import tune_collector
from publisher.app import build_app
from publisher.config import PublisherSettings
from publisher.log import KafkaRecordLog, TopicConfigError, check_topic_config
from publisher.redis_store import RedisStore

__all__ = ["main", "parse_settings"]

# flag -> settings field (flags override the FLAGSTREAM_* environment)
_FLAGS: tuple[tuple[str, str, type, str], ...] = (
    ("--host", "host", str, "address to bind (FLAGSTREAM_PUBLISHER_HOST)"),
    ("--port", "port", str, "port to bind (FLAGSTREAM_PUBLISHER_PORT)"),
    ("--redis-url", "redis_url", str, "Redis URL (FLAGSTREAM_REDIS_URL)"),
    ("--redis-prefix", "redis_prefix", str, "Redis key prefix (FLAGSTREAM_PUBLISHER_REDIS_PREFIX)"),
    ("--kafka-bootstrap", "kafka_bootstrap", str, "Kafka bootstrap (FLAGSTREAM_KAFKA_BOOTSTRAP)"),
    ("--topic", "topic", str, "state topic (FLAGSTREAM_TOPIC)"),
    (
        "--topic-partitions",
        "topic_partitions",
        str,
        "partitions when creating the topic (FLAGSTREAM_TOPIC_PARTITIONS)",
    ),
    (
        "--ack-timeout",
        "ack_timeout",
        str,
        "seconds to wait for Kafka before answering 202 (FLAGSTREAM_PUBLISHER_ACK_TIMEOUT)",
    ),
    ("--log-level", "log_level", str, "DEBUG, INFO, WARNING or ERROR"),
)

# field -> how the user sets it, for error messages
_SOURCES = {field: f"{flag} / " for flag, field, _, _ in _FLAGS}


def _env_name(field: str) -> str:
    info = PublisherSettings.model_fields[field]
    alias = info.validation_alias
    choices = getattr(alias, "choices", None)
    if choices:
        names = [c for c in choices if isinstance(c, str) and c != field]
        if names:
            return names[0].upper()
    return f"FLAGSTREAM_PUBLISHER_{field.upper()}"


def _format_errors(exc: ValidationError) -> list[str]:
    lines = []
    for err in exc.errors():
        loc = str(err["loc"][0]) if err["loc"] else ""
        field = loc
        # an alias-named location (FLAGSTREAM_...) maps back to its field
        for name in PublisherSettings.model_fields:
            if loc.upper() == _env_name(name):
                field = name
        where = _SOURCES.get(field, "") + (
            _env_name(field) if field in PublisherSettings.model_fields else loc
        )
        msg = str(err["msg"]).removeprefix("Value error, ")
        lines.append(f"flagstream publisher: invalid {where}: {msg}")
    return lines


def parse_settings(argv: Sequence[str]) -> PublisherSettings | int:
    """Settings from the environment and ``argv`` (flags win), or an exit code."""
    parser = argparse.ArgumentParser(
        prog="flagstream publisher",
        description="Admin API (Redis system of record) and outbox forwarder to Kafka. "
        "Every option is also a FLAGSTREAM_* environment variable; flags win.",
    )
    for flag, field, typ, help_ in _FLAGS:
        if "FLAGSTREAM_" not in help_:  # every flag names its environment variable
            help_ = f"{help_} ({_env_name(field)})"
        parser.add_argument(flag, dest=field, type=typ, default=None, help=help_)
    args = parser.parse_args(list(argv))
    overrides: dict[str, Any] = {k: v for k, v in vars(args).items() if v is not None}
    try:
        settings = PublisherSettings(**overrides)
    except ValidationError as exc:
        for line in _format_errors(exc):
            print(line, file=sys.stderr)
        return 2
    if settings.admin_token is None:
        print(
            "flagstream publisher: FLAGSTREAM_ADMIN_TOKEN is required (the bootstrap admin "
            "token, at least 16 characters), e.g. export FLAGSTREAM_ADMIN_TOKEN=$(openssl rand "
            "-hex 24)",
            file=sys.stderr,
        )
        return 2
    return settings


def _guarded_site(runner: web.AppRunner, settings: PublisherSettings) -> web.BaseSite:
    """Accepts with back-off on EMFILE and at most ``max_connections`` open connections
    (``flagstream.fdlimit``), under the open-files limit raised to its hard maximum."""
    from flagstream.fdlimit import GuardedSite, raise_nofile_limit

    raise_nofile_limit()
    return GuardedSite(
        runner, host=settings.host, port=settings.port, max_connections=settings.max_connections
    )


async def _serve(settings: PublisherSettings) -> int:
    try:
        await check_topic_config(
            settings.kafka_bootstrap,
            settings.topic,
            replication_factor=settings.topic_replication_factor,
            timeout_ms=int(min(settings.kafka_request_timeout, 5.0) * 1000),
        )
    except TopicConfigError as exc:
        print(f"flagstream publisher: {exc}", file=sys.stderr)
        return 2
    store = RedisStore(
        settings.redis_url,
        prefix=settings.redis_prefix,
        audit_max_entries=settings.audit_max_entries,
    )
    log = KafkaRecordLog(
        settings.kafka_bootstrap,
        settings.topic,
        create_partitions=settings.topic_partitions,
        replication_factor=settings.topic_replication_factor,
        request_timeout_ms=int(settings.kafka_request_timeout * 1000),
        transactional_id=settings.transactional_id,
    )
    app = build_app(settings, store, log)
    # A connection that sends no complete request for 75 s is closed (aiohttp's default is
    # an hour): slow or idle clients must not hold the connection budget (fdlimit).
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=75.0)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        site = _guarded_site(runner, settings)
        try:
            await site.start()
        except OSError as exc:
            print(
                f"flagstream publisher: cannot listen on {settings.host}:{settings.port}: "
                f"{exc.strerror or exc}",
                file=sys.stderr,
            )
            return 1
        tune_collector(settings.gc_gen0_threshold)  # after startup: see flagstream.gcpolicy
        logging.getLogger("flagstream.publisher").info(
            "publisher listening on http://%s:%d (redis %s, kafka %s, topic %s)",
            settings.host,
            settings.port,
            settings.redis_url.split("@")[-1],  # never log a password from the URL
            settings.kafka_bootstrap,
            settings.topic,
        )
        await stop.wait()
        return 0
    finally:
        await runner.cleanup()
        await store.close()


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_settings(sys.argv[1:] if argv is None else argv)
    if isinstance(settings, int):
        return settings
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        import uvloop

        return uvloop.run(_serve(settings))
    except ImportError:  # pragma: no cover - uvloop is a dependency on every supported OS
        return asyncio.run(_serve(settings))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
