"""Prometheus metrics of governance, registered in the publisher app's own registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

__all__ = ["GovernanceMetrics"]


class GovernanceMetrics:
    """Labels never carry environment or flag keys, request ids or secrets."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = registry if registry is not None else CollectorRegistry()
        self.scheduled = Counter(
            "flagstream_publisher_scheduled_writes_total",
            "Writes made by the scheduler, by what: change-request (a scheduled change "
            "applied), rollout-step; and failed (a due change request that failed its checks).",
            ["what"],
            registry=r,
        )
        self.lateness = Histogram(
            "flagstream_publisher_scheduled_lateness_seconds",
            "How long after its executeAt a scheduled change request was applied.",
            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600),
            registry=r,
        )
        self.trigger_calls = Counter(
            "flagstream_publisher_trigger_calls_total",
            "Calls of trigger URLs by result: changed, unchanged (flag already in the "
            "trigger's state), refused (disabled or awaiting approval), rate-limited, "
            "not-found (no trigger has that secret).",
            ["result"],
            registry=r,
        )
