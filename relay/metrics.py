"""Prometheus metrics of a relay: one class of metrics, per worker and for the process group.

Every ``RelayMetrics`` owns its own ``CollectorRegistry`` (never the global default one), so
tests can build several relays in one process and each ``/metrics`` shows only its own.
Names carry units, counters end in ``_total``, latencies are histograms. No label ever holds
a flag key, an environment's SDK key or any other secret; the only labels are small closed
sets (close reasons, endpoints, status codes).

Process group (``flagstream relay --workers N``, N > 1): the supervisor calls
``enable_process_group_metrics(directory)`` before it forks, which switches
prometheus-client to its multiprocess mode: every worker's values live in memory-mapped
files in that directory, and ``render()`` of any worker answers for the whole group
(``MultiProcessCollector``: counters and histograms summed over every worker that ever ran,
so they never go back when a worker is restarted; each gauge aggregated over the live
workers as its ``multiprocess_mode`` says). ``render_worker()`` is the answering worker's
own view (``GET /metrics/worker``). So: **every Gauge names its ``multiprocess_mode``**
(``livesum`` for counts of things a worker holds, ``livemax``/``livemin`` for states), and
a value computed on demand (``set_function``, ``refreshers``) is written into the worker's
file by ``refresh()``, which the worker runs every second and before each scrape.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

__all__ = [
    "CONTENT_TYPE",
    "PREFIX",
    "ProcessGroupCollector",
    "RelayMetrics",
    "enable_process_group_metrics",
    "forget_worker",
    "process_group_directory",
]

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


# The multiprocess directory of this process group, once enabled (inherited by forked workers).
_group_directory: Path | None = None


def enable_process_group_metrics(directory: Path) -> None:
    """Keep the metrics of this process and of the processes it forks in ``directory``.

    Call it before any ``RelayMetrics`` is built in this process (the supervisor does, before
    forking its workers); ``directory`` must be empty and private to this process group.
    """
    global _group_directory
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    # prometheus-client chooses its value class when it is imported; this is the same choice
    # made later, for a process that imported it before the directory existed.
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]
    _group_directory = directory


def process_group_directory() -> Path | None:
    return _group_directory


def forget_worker(pid: int) -> None:
    """A worker exited: its live gauges (streams it held, its state) leave the group view."""
    if _group_directory is not None:
        mark_process_dead(pid, str(_group_directory))  # type: ignore[no-untyped-call]


class ProcessGroupCollector(MultiProcessCollector):
    """The group's metric files, merged, without the files a worker is still creating.

    A worker (re)started by the supervisor creates each of its files empty and only then
    sizes it; prometheus-client's collector fails on an empty file (``struct.error``), which
    made a scrape answer 500 in the instant a killed worker came back. A file that is not
    empty is readable: sized files start zeroed, which reads as holding no values yet.
    """

    def collect(self) -> Iterable[Metric]:
        files = []
        for entry in os.scandir(self._path):
            if entry.name.endswith(".db"):
                try:
                    if entry.stat().st_size > 0:
                        files.append(entry.path)
                except FileNotFoundError:  # removed since the scan: a dead worker's gauges
                    continue
        return self.merge(files, accumulate=True)  # type: ignore[no-any-return, no-untyped-call]


class _SampledGauge(Gauge):
    """A gauge whose ``set_function`` value ``refresh()`` also writes into the shared file."""

    _sample: Callable[[], float] | None = None

    def set_function(self, f: Callable[[], float]) -> None:
        self._sample = f
        super().set_function(f)

    def refresh(self) -> None:
        if self._sample is not None:
            self.set(float(self._sample()))


class RelayMetrics:
    """The relay's metrics. Attribute names are part of the relay-core / fan-out contract."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        # Called by refresh(): set gauges whose value is computed on demand (e.g. lag).
        self.refreshers: list[Callable[[], None]] = []
        r = self.registry
        p = PREFIX

        # --- connections (updated by the hub) --------------------------------------------
        self.connections = Gauge(
            p + "connections", "Open SSE streams", registry=r, multiprocess_mode="livesum"
        )
        self.max_connections = Gauge(
            p + "max_connections",
            "Streams accepted before new ones are answered 503 (process group: all workers)",
            registry=r,
            multiprocess_mode="livesum",
        )
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
            multiprocess_mode="livemax",
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
        self.environments = Gauge(
            p + "environments",
            "Environments held in memory",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.items = Gauge(
            p + "items",
            "Flags and segments held (tombstones included)",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.evaluation_items_pending = Gauge(
            p + "evaluation_items_pending",
            "Flags and segments applied but not compiled for evaluation yet (after a bootstrap)",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.ready = Gauge(
            p + "ready",
            "1 once the bootstrap read reached the watermarks (process group: every worker)",
            registry=r,
            multiprocess_mode="livemin",
        )
        self.stale = _SampledGauge(
            p + "stale",
            "1 while Kafka is unreachable and the state may be old (process group: any worker)",
            registry=r,
            multiprocess_mode="livemax",
        )
        self.source_reconnects_total = Counter(
            p + "source_reconnects", "Times the Kafka source was (re)started", registry=r
        )
        self.last_record_age_seconds = Gauge(
            p + "last_record_age_seconds",
            "Age of the newest applied record's publish timestamp at the time it was applied",
            registry=r,
            multiprocess_mode="livemax",
        )

        # --- client-side and mobile SDKs (relay.clientside, relay.evalstream) ---------------
        self.client_streams = Gauge(
            p + "client_streams",
            "Open client-side/mobile SSE streams, by SDK (js|mobile) and mode (evaluated|ping)",
            ["sdk", "mode"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.client_stream_contexts = Gauge(
            p + "client_stream_contexts",
            "Distinct contexts among the open evaluated streams (one evaluation group each)",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.client_stream_evaluations_total = Counter(
            p + "client_stream_evaluations",
            "Flag evaluations done for evaluated streams after changes, by state evaluated "
            "(new: what is sent; previous: to tell whether a result changed)",
            ["state"],
            registry=r,
        )
        self.client_stream_evaluations_per_change = Histogram(
            p + "client_stream_evaluations_per_change",
            "Evaluations of the new state per applied change fanned out to evaluated streams",
            buckets=(0, 1, 10, 100, 1000, 10_000, 100_000, 1_000_000),
            registry=r,
        )
        self.client_patches_suppressed_total = Counter(
            p + "client_patches_suppressed",
            "Evaluated patches not sent because the context's result did not change",
            registry=r,
        )
        self.client_requests_total = Counter(
            p + "client_requests",
            "Client-side/mobile evaluation requests, by SDK (js|mobile|server), request "
            "(poll|stream) and status code",
            ["sdk", "request", "code"],
            registry=r,
        )
        self.sdk_event_payloads_total = Counter(
            p + "sdk_event_payloads",
            "Analytics/diagnostic event payloads accepted from SDKs (202), by SDK and kind",
            ["sdk", "kind"],
            registry=r,
        )
        self.sdk_events_total = Counter(
            p + "sdk_events",
            "Analytics events received in accepted payloads (not forwarded anywhere)",
            ["sdk"],
            registry=r,
        )

        # Series of closed label sets start at 0, so a rate() has a start and the group view
        # (which only shows series some worker wrote) names them before the first event.
        for reason in ("unauthorized", "not_ready", "full", "behind"):
            self.connections_rejected_total.labels(reason=reason)
        for code in ("200", "304"):
            self.polling_requests_total.labels(code=code)

        # --- process (set by relay.server) ----------------------------------------------
        self.worker_info = Gauge(
            p + "worker_info",
            "The relay worker processes answering (value 1 each)",
            ["worker", "pid"],
            registry=r,
            # One series per live worker. (The group view labels "all" gauges with the pid of
            # the file they come from: the same value as this label.)
            multiprocess_mode="liveall",
        )

    def refresh(self) -> None:
        """Bring on-demand values up to date (into the group's files in a process group)."""
        for refresher in self.refreshers:
            refresher()
        self.stale.refresh()

    def render(self) -> bytes:
        """The Prometheus text exposition: the whole process group if there is one."""
        self.refresh()
        if _group_directory is None:
            return generate_latest(self.registry)
        group = CollectorRegistry()
        ProcessGroupCollector(group, path=str(_group_directory))  # type: ignore[no-untyped-call]
        return generate_latest(group)

    def render_worker(self) -> bytes:
        """The Prometheus text exposition of this worker process alone."""
        self.refresh()
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
