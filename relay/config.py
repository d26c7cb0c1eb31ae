"""Relay configuration: one settings class, read from ``FLAGSTREAM_*`` variables and flags.

Rules:
- Shared names (``FLAGSTREAM_KAFKA_BOOTSTRAP``, ``FLAGSTREAM_TOPIC``) are read without the
  relay prefix so one environment file configures publisher and relays alike; every
  relay-only option is ``FLAGSTREAM_RELAY_<FIELD>``.
- Command-line flags override the environment (``relay.cli`` passes them as init kwargs).
- Validation happens once, at construction; a bad value raises ``pydantic.ValidationError``
  which ``relay.cli`` turns into one line per field and exit code 2.
"""

from __future__ import annotations

import os
import re

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from flagstream.fdlimit import connection_budget

MIB = 1024 * 1024
# A DNS name or IPv4 address, or an IPv6 address in brackets.
_BOOTSTRAP_HOST = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*|\[[0-9A-Fa-f:.%]+\]")


class RelaySettings(BaseSettings):
    """Every knob of a relay process. Fan-out (hub, stream, server) reads these too."""

    model_config = SettingsConfigDict(
        env_prefix="FLAGSTREAM_RELAY_",
        populate_by_name=True,
        extra="forbid",
        frozen=True,
    )

    # --- listening -----------------------------------------------------------------------
    host: str = Field(default="127.0.0.1", description="address to bind")
    port: int = Field(default=8030, ge=0, le=65535, description="port to bind (0 = any free)")
    workers: int = Field(
        default_factory=lambda: os.cpu_count() or 1,
        ge=1,
        le=256,
        description="worker processes sharing the port (SO_REUSEPORT)",
    )
    share_port: bool = Field(
        default=False,
        description=(
            "start even if another relay already listens on the port and share it with it "
            "(SO_REUSEPORT), e.g. for a rolling restart on one host; otherwise a busy port "
            "is an error"
        ),
    )
    max_request_line: int = Field(default=8190, ge=256, description="max HTTP request line")
    max_header_size: int = Field(default=8190, ge=256, description="max HTTP header size")

    # --- Kafka source --------------------------------------------------------------------
    kafka_bootstrap: str = Field(
        default="127.0.0.1:19092",
        validation_alias=AliasChoices("kafka_bootstrap", "FLAGSTREAM_KAFKA_BOOTSTRAP"),
        description="Kafka bootstrap servers, comma separated",
    )
    topic: str = Field(
        default="flagstream.state",
        validation_alias=AliasChoices("topic", "FLAGSTREAM_TOPIC"),
        description="the compacted state topic",
    )
    fetch_max_wait_ms: int = Field(
        default=20,
        ge=0,
        le=10_000,
        description="how long a tail fetch waits for data (latency vs. idle polling)",
    )
    reconnect_backoff_max: float = Field(
        default=5.0, gt=0, description="max seconds between Kafka reconnect attempts"
    )
    stale_after: float = Field(
        default=10.0,
        gt=0,
        description="seconds without a successful fetch before the relay reports itself stale",
    )

    # --- streams and fan-out -------------------------------------------------------------
    max_connections: int = Field(
        default_factory=connection_budget,
        ge=1,
        description=(
            "streams per worker; 503 above this (default: the open-files limit minus "
            "64 + limit/20 kept for the process itself, see docs/reliability.md)"
        ),
    )
    max_buffer_bytes: int = Field(
        default=MIB, ge=1024, description="unsent bytes per connection before it is evicted"
    )
    heartbeat_interval: float = Field(default=15.0, gt=0, description="SSE comment every N s")
    max_connection_lifetime: float | None = Field(
        default=None, description="close streams after N s (with jitter); unset = never"
    )
    lifetime_jitter: float = Field(default=0.1, ge=0, le=1, description="fraction of lifetime")
    drain_window: float = Field(default=10.0, ge=0, description="SIGTERM: spread closes over N s")
    catchup_wait: float = Field(
        default=5.0,
        ge=0,
        description="how long a client whose Last-Event-ID is ahead of this relay is held",
    )
    retry_after: int = Field(
        default=2, ge=1, le=600, description="Retry-After seconds on 503 responses"
    )
    idle_connection_timeout: float = Field(
        default=75.0,
        gt=0,
        le=3600,
        description=(
            "close a connection that sends no complete request within N s (idle keep-alive, "
            "slow or stalled headers); streams are not affected"
        ),
    )

    # --- client-side and mobile SDKs (relay.clientside) ----------------------------------
    max_context_bytes: int = Field(
        default=16_384,
        ge=256,
        le=1_048_576,
        description="largest evaluation context (JSON bytes) a client-side or mobile request "
        "may send; larger → 413",
    )

    # --- OpenFeature remote evaluation (OFREP, docs/openfeature.md) ----------------------
    ofrep_credentials: str = Field(
        default="sdk,mobile,client",
        description=(
            "credentials the OFREP routes accept, comma separated: sdk (every flag), mobile "
            "(flags available to mobile keys), client (client-side id: flags available to "
            "browsers); a known credential of a kind not listed gets 403"
        ),
    )
    ofrep_rate_limit: float | None = Field(
        default=None,
        description=(
            "OFREP evaluations per second allowed per credential and worker (token bucket; "
            "429 with Retry-After above it); unset = no limit"
        ),
    )
    ofrep_rate_burst: int = Field(
        default=20, ge=1, description="requests a credential may make at once (bucket size)"
    )
    ofrep_max_body_bytes: int = Field(
        default=64 * 1024,
        ge=1024,
        le=MIB,
        description="largest OFREP request body; larger ones get 413",
    )
    ofrep_cors_origins: str = Field(
        default="*",
        description="browser origins allowed to call the OFREP routes, comma separated; * = any",
    )
    ofrep_inactivity_delay: int = Field(
        default=120,
        ge=1,
        description="inactivityDelaySec announced for the OFREP change-notification stream",
    )
    public_url: str | None = Field(
        default=None,
        description=(
            "this relay's base URL as clients reach it (scheme://host[:port]), used in the "
            "OFREP eventStreams URL; unset = the scheme and Host of each request"
        ),
    )
    access_log: bool = Field(
        default=False,
        description=(
            "log one line per request (logger flagstream.relay.access) with tokens and "
            "credentials redacted"
        ),
    )

    @field_validator("max_connection_lifetime")
    @classmethod
    def _positive_lifetime(cls, value: float | None) -> float | None:
        if value is not None and value <= 0:
            raise ValueError("must be > 0 seconds, or unset for no limit")
        return value

    @field_validator("kafka_bootstrap")
    @classmethod
    def _bootstrap_hosts(cls, value: str) -> str:
        hosts = [h.strip() for h in value.split(",") if h.strip()]
        if not hosts:
            raise ValueError("expected host:port[,host:port...], e.g. 127.0.0.1:19092")
        for entry in hosts:
            # ``host:port`` or ``[v6]:port``; a URL (``http://x:y``) is not a bootstrap server.
            host, sep, port = entry.rpartition(":")
            valid_host = _BOOTSTRAP_HOST.fullmatch(host) is not None
            if not sep or not valid_host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(
                    f"{entry!r} is not host:port (expected host:port[,host:port...], "
                    "e.g. 127.0.0.1:19092)"
                )
        return ",".join(hosts)

    @field_validator("topic")
    @classmethod
    def _topic_name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9._-]{1,249}", value):
            raise ValueError("Kafka topic names are 1..249 chars of [A-Za-z0-9._-]")
        return value

    # --- OFREP ---------------------------------------------------------------------------

    @field_validator("ofrep_credentials")
    @classmethod
    def _ofrep_credentials(cls, value: str) -> str:
        kinds = [k.strip() for k in value.split(",") if k.strip()]
        unknown = sorted(set(kinds) - set(OFREP_CREDENTIAL_KINDS))
        if unknown or not kinds:
            raise ValueError(
                f"expected a comma separated subset of {','.join(OFREP_CREDENTIAL_KINDS)}"
                + (f" (unknown: {', '.join(unknown)})" if unknown else "")
            )
        return ",".join(k for k in OFREP_CREDENTIAL_KINDS if k in kinds)

    @field_validator("ofrep_rate_limit")
    @classmethod
    def _positive_rate(cls, value: float | None) -> float | None:
        if value is not None and value <= 0:
            raise ValueError("must be > 0 requests per second, or unset for no limit")
        return value

    @field_validator("ofrep_cors_origins")
    @classmethod
    def _origins(cls, value: str) -> str:
        origins = [o.strip().rstrip("/") for o in value.split(",") if o.strip()]
        for origin in origins:
            if origin != "*" and not re.fullmatch(r"https?://[^/\s,]+", origin):
                raise ValueError(
                    f"{origin!r} is not an origin (scheme://host[:port], e.g. "
                    "https://app.example.com) or *"
                )
        if not origins:
            raise ValueError("expected * or a comma separated list of origins")
        return ",".join(origins)

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.rstrip("/")
        if not re.fullmatch(r"https?://[^/\s?#]+(/[^\s?#]*)?", value):
            raise ValueError("expected scheme://host[:port][/path], e.g. https://flags.example.com")
        return value


OFREP_CREDENTIAL_KINDS = ("sdk", "mobile", "client")
