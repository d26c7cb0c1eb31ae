"""Prometheus metrics of one relay process.

Every ``RelayMetrics`` owns its own ``CollectorRegistry`` (never the global default one), so
tests can build several relays in one process and each ``/metrics`` shows only its own.
Names carry units, counters end in ``_total``, latencies are histograms. No label ever holds
a flag key, an environment's SDK key or any other secret; the only labels are small closed
sets (close reasons, endpoints, status codes).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

PREFIX = "flagstream_relay_"

CONTENT_TYPE = CONTENT_TYPE_LATEST

# Fan-out delay (publish timestamp -> bytes written) spans sub-millisecond to seconds.
_DELAY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)


class RelayMetrics:
    """The relay's metrics. Attribute names are part of the relay-core / fan-out contract."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        p = PREFIX

        # --- connections (updated by the hub) --------------------------------------------
        self.connections = Gauge(p + "connections", "Open SSE streams", registry=r)
        self.connections_opened_total = Counter(
            p + "connections_opened", "SSE streams opened", registry=r
        )
        self.connections_closed_total = Counter(
            p + "connections_closed",
            "SSE streams closed, by reason (client|evicted|lifetime|drain|reset)",
            ["reason"],
            registry=r,
        )
        self.connections_rejected_total = Counter(
            p + "connections_rejected",
            "Stream or polling requests refused, by reason (unauthorized|not_ready|full|behind)",
            ["reason"],
            registry=r,
        )
        self.events_sent_total = Counter(
            p + "events_sent", "SSE events written to streams (one per connection)", registry=r
        )
        self.bytes_sent_total = Counter(p + "bytes_sent", "Bytes written to streams", registry=r)
        self.fanout_delay_seconds = Histogram(
            p + "fanout_delay_seconds",
            "Delay from the record's publish timestamp to the write to a stream",
            buckets=_DELAY_BUCKETS,
            registry=r,
        )
        self.coalesced_updates_total = Counter(
            p + "coalesced_updates",
            "Pending changes replaced by a later version before they were sent",
            registry=r,
        )

        # --- stream starts (updated by the app) ------------------------------------------
        self.resumptions_total = Counter(
            p + "resumptions",
            "Streams resumed from Last-Event-ID with patch-only catch-up (no put)",
            registry=r,
        )
        self.full_puts_total = Counter(
            p + "full_puts", "Streams started with a full put event", registry=r
        )
        self.catchup_holds_total = Counter(
            p + "catchup_holds",
            "Streams held because the client's position was ahead of this relay",
            registry=r,
        )
        self.polling_requests_total = Counter(
            p + "polling_requests",
            "Polling requests answered, by result (200|304)",
            ["code"],
            registry=r,
        )

        # --- consumer (updated by the state / source loop) -------------------------------
        self.consumer_lag_records = Gauge(
            p + "consumer_lag_records",
            "Records between this relay's position and the last known high watermarks",
            registry=r,
        )
        self.records_consumed_total = Counter(
            p + "records_consumed", "Kafka records read", registry=r
        )
        self.records_applied_total = Counter(
            p + "records_applied", "Records that changed the state", registry=r
        )
        self.records_ignored_total = Counter(
            p + "records_ignored",
            "Records whose version was not greater than the one held (idempotent replay)",
            registry=r,
        )
        self.records_skipped_total = Counter(
            p + "records_skipped", "Undecodable or invalid records skipped", registry=r
        )
        self.environments = Gauge(p + "environments", "Environments held in memory", registry=r)
        self.items = Gauge(p + "items", "Flags and segments held (tombstones included)", registry=r)
        self.ready = Gauge(
            p + "ready", "1 once the bootstrap read reached the watermarks", registry=r
        )
        self.stale = Gauge(
            p + "stale", "1 while Kafka is unreachable and the state may be old", registry=r
        )
        self.source_reconnects_total = Counter(
            p + "source_reconnects", "Times the Kafka source was (re)started", registry=r
        )
        self.last_record_age_seconds = Gauge(
            p + "last_record_age_seconds",
            "Age of the newest applied record's publish timestamp at the time it was applied",
            registry=r,
        )

    def render(self) -> bytes:
        """The Prometheus text exposition of this relay's registry."""
        return generate_latest(self.registry)


# Handler time of an OFREP request: tens of microseconds to a few milliseconds.
_OFREP_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)


class OfrepMetrics:
    """Metrics of the OpenFeature (OFREP) routes (``relay.ofrep``), in a relay's registry.

    Labels are closed sets: ``route`` is ``flag`` (one flag), ``bulk`` or ``notices`` (the
    change-notification stream), ``code`` an HTTP status. The notice streams themselves are
    counted with every other stream (``flagstream_relay_connections``…).
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        p = PREFIX + "ofrep_"
        self.requests_total = Counter(
            p + "requests",
            "OFREP requests answered, by route (flag|bulk|notices) and HTTP status",
            ["route", "code"],
            registry=registry,
        )
        self.request_seconds = Histogram(
            p + "request_seconds",
            "Time to answer an OFREP evaluation (handler only: body read, evaluation, encoding)",
            ["route"],
            buckets=_OFREP_BUCKETS,
            registry=registry,
        )
        self.rate_limited_total = Counter(
            p + "rate_limited",
            "OFREP evaluations refused with 429 by the per-credential rate limit",
            registry=registry,
        )
        self.evaluations_total = Counter(
            p + "evaluations",
            "Flags evaluated for OFREP answers (constant flags are encoded once, not counted)",
            registry=registry,
        )
