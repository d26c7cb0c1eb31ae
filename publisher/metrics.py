"""Prometheus metrics of one publisher app, in a registry of its own (not the global one)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["PublisherMetrics"]


class PublisherMetrics:
    """The publisher's metrics. Labels never carry flag keys, environment keys or secrets."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.writes = Counter(
            "flagstream_publisher_writes_total",
            "Write requests by result: acknowledged (Kafka acked in time), pending (stored, "
            "delivery pending: 202), rejected (4xx), conflict (412), unavailable (503).",
            ["result"],
            registry=r,
        )
        self.outbox_depth = Gauge(
            "flagstream_publisher_outbox_depth",
            "Records in the Redis outbox not yet acknowledged by Kafka.",
            registry=r,
        )
        self.forward_latency = Histogram(
            "flagstream_publisher_forward_latency_seconds",
            "From the write's commit in Redis to Kafka's acknowledgement of its record.",
            buckets=(
                0.001,
                0.0025,
                0.005,
                0.01,
                0.025,
                0.05,
                0.1,
                0.25,
                0.5,
                1,
                2.5,
                5,
                10,
                30,
                60,
            ),
            registry=r,
        )
        self.kafka_errors = Counter(
            "flagstream_publisher_kafka_errors_total",
            "Failed Kafka operations (connect, send); the forwarder retries with backoff.",
            registry=r,
        )
        self.records_forwarded = Counter(
            "flagstream_publisher_records_forwarded_total",
            "Outbox records acknowledged by Kafka and removed from the outbox.",
            registry=r,
        )
        self.forwarder_leader = Gauge(
            "flagstream_publisher_forwarder_leader",
            "1 if this instance holds the forwarder lease.",
            registry=r,
        )
        self.store_errors = Counter(
            "flagstream_publisher_store_errors_total",
            "Requests or forwarder steps that failed because Redis was unreachable.",
            registry=r,
        )
