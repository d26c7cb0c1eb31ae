"""Publisher configuration: one settings class, read from ``FLAGSTREAM_*`` variables and flags.

Rules:
- Shared names (``FLAGSTREAM_KAFKA_BOOTSTRAP``, ``FLAGSTREAM_TOPIC``, ``FLAGSTREAM_REDIS_URL``,
  ``FLAGSTREAM_ADMIN_TOKEN``, ``FLAGSTREAM_TOPIC_PARTITIONS``) are read without the publisher
  prefix so one environment file configures publisher and relays alike; every publisher-only
  option is ``FLAGSTREAM_PUBLISHER_<FIELD>``.
- Command-line flags override the environment (``publisher.cli`` passes them as init kwargs).
- Validation happens once, at construction; a bad value raises ``pydantic.ValidationError``
  which ``publisher.cli`` turns into one line per field and exit code 2.
"""

from __future__ import annotations

import re

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from flagstream.fdlimit import connection_budget
from flagstream.gcpolicy import DEFAULT_GEN0_THRESHOLD

__all__ = ["MIB", "PublisherSettings"]

MIB = 1024 * 1024
_TOPIC_RE = re.compile(r"[A-Za-z0-9._-]{1,249}")


def _shared(name: str) -> AliasChoices:
    return AliasChoices(name, f"FLAGSTREAM_{name.upper()}")


class PublisherSettings(BaseSettings):
    """Every knob of a publisher process."""

    model_config = SettingsConfigDict(
        env_prefix="FLAGSTREAM_PUBLISHER_",
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )

    # --- listening -----------------------------------------------------------------------
    host: str = Field(default="127.0.0.1", description="address to bind")
    port: int = Field(default=8031, ge=0, le=65535, description="port to bind (0 = any free)")

    max_connections: int = Field(
        default_factory=connection_budget,
        ge=1,
        description=(
            "open connections; 503 above this (default: the open-files limit minus "
            "64 + limit/20 kept for the process itself, see docs/reliability.md)"
        ),
    )

    # --- backends ------------------------------------------------------------------------
    redis_url: str = Field(
        default="redis://127.0.0.1:16379/0",
        validation_alias=_shared("redis_url"),
        description="Redis URL of the system of record (redis:// or rediss://)",
    )
    redis_prefix: str = Field(
        default="flagstream:",
        min_length=1,
        max_length=100,
        description="prefix of every Redis key the publisher uses",
    )
    kafka_bootstrap: str = Field(
        default="127.0.0.1:19092",
        validation_alias=_shared("kafka_bootstrap"),
        description="Kafka bootstrap servers, comma separated",
    )
    topic: str = Field(
        default="flagstream.state",
        validation_alias=_shared("topic"),
        description="the compacted state topic",
    )
    topic_partitions: int = Field(
        default=6,
        ge=1,
        le=10_000,
        validation_alias=_shared("topic_partitions"),
        description="partitions of the topic when the publisher creates it (existing: unchanged)",
    )
    topic_replication_factor: int = Field(
        default=1, ge=1, le=16, description="replication factor when creating the topic"
    )
    kafka_request_timeout: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="seconds before a Kafka send is given up and retried",
    )

    # --- API -----------------------------------------------------------------------------
    admin_token: SecretStr | None = Field(
        default=None,
        validation_alias=_shared("admin_token"),
        description="bootstrap admin token (all scopes); required by `flagstream publisher`",
    )
    ack_timeout: float = Field(
        default=2.0,
        ge=0,
        le=60,
        description="seconds a write waits for Kafka's ack before answering 202 (pending)",
    )
    max_body_bytes: int = Field(
        default=MIB, ge=1024, le=64 * MIB, description="larger request bodies get 413"
    )
    max_record_bytes: int = Field(
        default=1_000_000,
        ge=1024,
        le=64 * MIB,
        description="largest Kafka record (envelope); keep below the broker's message.max.bytes",
    )
    audit_max_entries: int = Field(
        default=10_000, ge=1, description="audit entries kept per environment (oldest dropped)"
    )

    # --- forwarder -----------------------------------------------------------------------
    lease_ttl: float = Field(
        default=10.0,
        ge=1,
        le=300,
        description="forwarder lease TTL in seconds (one active forwarder)",
    )
    forward_batch: int = Field(
        default=500, ge=1, le=10_000, description="outbox records sent to Kafka per batch"
    )
    transactional_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=249,
        description="Kafka transactional.id shared by every publisher of this deployment, so "
        "a new forwarder leader fences the old one (default: flagstream-publisher.<topic>)",
    )

    # --- governance (publisher.governance) --------------------------------------------
    scheduler_interval: float = Field(
        default=0.5,
        gt=0,
        le=60,
        description="seconds between looks at due scheduled changes and rollout steps "
        "(on the forwarder lease holder)",
    )
    trigger_rate_limit: int = Field(
        default=10, ge=1, le=10_000, description="calls per trigger URL per rate window"
    )
    trigger_rate_window: float = Field(
        default=60.0, ge=1, le=86_400, description="seconds of a trigger URL's rate window"
    )

    log_level: str = Field(default="INFO", description="DEBUG, INFO, WARNING or ERROR")

    # --- write path (issue 18) -----------------------------------------------------------
    token_cache_ttl: float = Field(
        default=5.0,
        ge=0,
        le=300,
        description="seconds an API token's principal is remembered: a token revoked on "
        "another instance stops working here within this time (0 = ask Redis every request)",
    )
    max_bulk_body_bytes: int = Field(
        default=16 * MIB,
        ge=1024,
        le=256 * MIB,
        description="larger bodies of POST .../bulk (up to 1,000 items) get 413",
    )
    group_commit_max: int = Field(
        default=256,
        ge=1,
        le=1000,
        description="most item writes committed together in one Redis script (group commit)",
    )

    gc_gen0_threshold: int = Field(
        default=DEFAULT_GEN0_THRESHOLD,
        ge=0,
        description=(
            "youngest-generation threshold of the garbage collector, applied with gc.freeze "
            "once listening (flagstream.gcpolicy; 0 = Python's defaults)"
        ),
    )

    @field_validator("topic")
    @classmethod
    def _topic_name(cls, v: str) -> str:
        if not _TOPIC_RE.fullmatch(v) or v in {".", ".."}:
            raise ValueError("must be 1..249 characters of A-Z, a-z, 0-9, '.', '_', '-'")
        return v

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, v: str) -> str:
        if not v.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return v

    @field_validator("kafka_bootstrap")
    @classmethod
    def _bootstrap(cls, v: str) -> str:
        for server in v.split(","):
            host, sep, port = server.strip().rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"{server.strip()!r} is not host:port")
        return v

    @field_validator("admin_token")
    @classmethod
    def _token_length(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and len(v.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters")
        return v

    @field_validator("log_level")
    @classmethod
    def _level(cls, v: str) -> str:
        if v.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
        return v.upper()
