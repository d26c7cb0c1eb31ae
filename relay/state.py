"""The relay's in-memory state: every environment, every item, every partition's progress.

Rules (the state machine is fed records in partition order by ``relay.source.Follower``):

- Positions. An environment lives in exactly one partition (``partition_for(env, n)``), so
  its changes are totally ordered by offset. Each item remembers the offset of the record
  that last changed it; an environment's *position* is the highest offset that changed it.
  A client at position X of an environment has missed exactly the items whose offset is > X
  (DESIGN.md §3): each environment keeps its items ordered by that offset (an updated item
  moves to the end), so "changes after X" walks back from the end and stops at X.
- Idempotence. A record whose version is not greater than the version held for its item is
  ignored (replays, duplicates, an older write reordered by a retry). Deletions are
  versioned tombstones and are kept, so an older update can never resurrect an item.
- Poison. A record that cannot be decoded, whose key does not match its envelope, whose item
  JSON is not an object with the same key and version, or that sits on the wrong partition
  is counted (``records_skipped_total``), logged without secrets, and skipped. Applying
  never raises.
- Readiness. ``ready`` becomes true once every partition was consumed up to the high
  watermark captured when the bootstrap started, and stays true (a later outage makes the
  relay *stale*, not unready).
- Caching. The encoded ``put`` events and polling body of an environment are built once per
  position and reused by every request until the next change of that environment, so a
  reconnect herd costs one encode.
- Evaluation. Every applied flag or segment (bootstrap included) is handed to
  ``self.evaluation`` (``relay.evaluation.EvaluationService``) right after it is stored:
  filed during the bootstrap and compiled in the background once ready, compiled when
  applied after that; compiled once per version, never per request, and never read partly
  compiled. A malformed item is still stored and served raw; it evaluates to
  ``ERROR/MALFORMED_FLAG``.
- Listeners. Once ready, every *applied* item change is passed to the listeners (the hub's
  ``publish``) synchronously, in offset order, right after the state changed. The ``Change``
  carries ``affected_flags``: the flag keys whose evaluation it can alter. During the
  bootstrap nothing is published: no stream can exist yet.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from protocol import ld
from protocol.envelope import Envelope, decode_envelope
from protocol.errors import EnvelopeError, ProtocolError
from protocol.keys import ItemKind, partition_for, record_key
from protocol.position import Position
from relay.credentials import CredentialIndex
from relay.evaluation import EvaluationService
from relay.metrics import RelayMetrics
from relay.stream import StreamKind

log = logging.getLogger("flagstream.relay.state")


@dataclass(frozen=True, slots=True)
class Change:
    """One applied change of one item, as handed to the hub for fan-out."""

    env: str
    kind: ItemKind
    key: str
    version: int
    deleted: bool
    item: bytes  # pre-encoded item JSON from the envelope
    offset: int  # Kafka offset that carried it
    published_ms: int  # envelope publish timestamp (for fan-out delay metric)
    position: str  # str(Position(epoch, offset)) — the SSE id for this change
    # Flag keys whose evaluated result this change can alter (relay.evaluation, rule 4).
    affected_flags: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """One record as read from the log: where it sits and its raw key and value."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass(slots=True)
class Item:
    """The current state of one flag or segment (tombstones included)."""

    kind: ItemKind
    key: str
    version: int
    deleted: bool
    item: bytes
    offset: int


@dataclass(slots=True)
class Environment:
    """Everything the relay holds about one environment."""

    key: str
    partition: int
    # (kind, key) -> item, ordered by ascending offset: an update pops and re-inserts.
    items: dict[tuple[str, str], Item] = field(default_factory=dict)
    offset: int = -1  # highest offset that changed this environment
    record_version: int = 0  # version of the last applied `env` record
    deleted: bool = False
    _cache: dict[str, bytes] = field(default_factory=dict)
    _cache_offset: int = -2

    def _cached(self, name: str, build: Callable[[], bytes]) -> bytes:
        if self._cache_offset != self.offset:
            self._cache.clear()
            self._cache_offset = self.offset
        body = self._cache.get(name)
        if body is None:
            body = self._cache[name] = build()
        return body

    def _maps(self) -> tuple[dict[str, bytes], dict[str, bytes]]:
        flags: dict[str, bytes] = {}
        segments: dict[str, bytes] = {}
        for it in self.items.values():
            (flags if it.kind == "flag" else segments)[it.key] = it.item
        return flags, segments

    def put_event(self, stream: StreamKind, position: str) -> bytes:
        """The full-state event for ``stream`` (cached until the next change)."""

        def build() -> bytes:
            flags, segments = self._maps()
            if stream == "flags":
                return ld.flags_put_event(flags, position)
            return ld.put_event(flags, segments, position)

        return self._cached(f"put:{stream}:{position}", build)

    def polling_body(self) -> bytes:
        """The ``/sdk/latest-all`` body (cached until the next change)."""
        return self._cached("poll", lambda: ld.polling_body(*self._maps()))

    def changes_after(self, offset: int) -> list[Item]:
        """Items whose offset is greater than ``offset``, in ascending offset order."""
        out: list[Item] = []
        for it in reversed(self.items.values()):
            if it.offset <= offset:
                break
            out.append(it)
        out.reverse()
        return out


def item_event(it: Item | Change, stream: StreamKind, position: str) -> bytes:
    """The patch/delete event of one item for ``stream`` (``/flags`` takes flags only)."""
    if stream == "flags":
        if it.deleted:
            return ld.flags_delete_event(it.key, it.version, position)
        return ld.flags_patch_event(it.key, it.item, position)
    if it.deleted:
        return ld.delete_event(it.kind, it.key, it.version, position)
    return ld.patch_event(it.kind, it.key, it.item, position)


def catchup_events(items: Iterable[Item], stream: StreamKind, epoch: str) -> bytes:
    """patch/delete events for ``items`` (a resumption's catch-up), each with its own id."""
    return b"".join(
        item_event(it, stream, str(Position(epoch, it.offset)))
        for it in items
        if stream == "all" or it.kind == "flag"
    )


class State:
    """All environments of one topic incarnation (one epoch), fed by one source."""

    def __init__(self, metrics: RelayMetrics) -> None:
        self.metrics = metrics
        self.credentials = CredentialIndex()
        self.evaluation = EvaluationService(metrics.evaluation_items_pending.set)
        self.environments: dict[str, Environment] = {}
        self.epoch: str | None = None
        self.partitions = 0
        # partition -> next offset to consume (everything below it has been applied).
        self.next_offsets: dict[int, int] = {}
        # partition -> high watermark to reach before the bootstrap is complete.
        self._bootstrap_targets: dict[int, int] | None = None
        self.high_watermarks: dict[int, int] = {}
        self.ready = False
        self.ready_event = asyncio.Event()
        self.listeners: list[Callable[[Change], None]] = []
        # Called when the topic's epoch changes: positions of the old incarnation mean
        # nothing now, so open streams must end and come back for a full put.
        self.reset_listeners: list[Callable[[], None]] = []
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._item_count = 0
        self._partition_cache: dict[str, int] = {}
        self._last_skip_log = -1.0e9
        self._skips_unlogged = 0

    # --- layout and bootstrap -----------------------------------------------------------

    def set_layout(self, epoch: str, partitions: int) -> bool:
        """Adopt the topic's epoch. Returns False (and resets everything) if it changed."""
        if self.epoch == epoch and self.partitions == partitions:
            return True
        changed = self.epoch is not None
        if changed:
            log.error("topic epoch changed (%s -> %s): rebuilding state", self.epoch, epoch)
            self.environments.clear()
            self.evaluation.clear()
            self.credentials = CredentialIndex()
            self.next_offsets = {}
            self._bootstrap_targets = None
            self._item_count = 0
            self.ready = False
            self.ready_event.clear()
            self.metrics.ready.set(0)
            for reset in self.reset_listeners:
                reset()
        self.epoch = epoch
        self.partitions = partitions
        self._partition_cache = {}
        for p in range(partitions):
            self.next_offsets.setdefault(p, 0)
        return not changed

    def set_bootstrap_targets(self, high_watermarks: dict[int, int]) -> None:
        """Record the watermarks the bootstrap must reach (only the first call counts)."""
        if self._bootstrap_targets is None:
            self._bootstrap_targets = dict(high_watermarks)
        self.observe_high_watermarks(high_watermarks)
        self._check_ready()

    def observe_high_watermarks(self, high_watermarks: dict[int, int]) -> None:
        self.high_watermarks = dict(high_watermarks)
        self.metrics.consumer_lag_records.set(self.lag())

    def lag(self) -> int:
        return sum(
            max(0, hw - self.next_offsets.get(p, 0)) for p, hw in self.high_watermarks.items()
        )

    def _check_ready(self) -> None:
        if self.ready or self._bootstrap_targets is None:
            return
        if all(self.next_offsets.get(p, 0) >= hw for p, hw in self._bootstrap_targets.items()):
            self.ready = True
            self.ready_event.set()
            self.metrics.ready.set(1)
            self.evaluation.ready()
            log.info(
                "bootstrap complete: %d environments, %d items",
                len(self.environments),
                self._item_count,
            )

    # --- applying records ---------------------------------------------------------------

    def apply_batch(self, records: Iterable[SourceRecord], next_offsets: dict[int, int]) -> int:
        """Apply records (in partition order), then advance the partitions' positions.

        ``next_offsets`` are the source's positions after this batch (they may be past the
        last record: compaction gaps and control records). Returns the number applied.
        """
        applied = 0
        now_ms = int(time.time() * 1000)
        last_published = 0
        consumed = 0
        for rec in records:
            consumed += 1
            env = self._apply(rec)
            if env is not None:
                applied += 1
                last_published = max(last_published, env.published_ms)
            nxt = rec.offset + 1
            if nxt > self.next_offsets.get(rec.partition, 0):
                self.next_offsets[rec.partition] = nxt
        for p, off in next_offsets.items():
            if off > self.next_offsets.get(p, 0):
                self.next_offsets[p] = off
        if consumed:
            self.metrics.records_consumed_total.inc(consumed)
        if applied:
            self.metrics.records_applied_total.inc(applied)
            self.metrics.environments.set(len(self.environments))
            self.metrics.items.set(self._item_count)
            self.metrics.last_record_age_seconds.set(max(0.0, (now_ms - last_published) / 1000))
        self.metrics.consumer_lag_records.set(self.lag())
        self._check_ready()
        self._wake_waiters()
        return applied

    def _skip(self, rec: SourceRecord, why: str) -> None:
        self.metrics.records_skipped_total.inc()
        # At most one line per second: a producer writing garbage must not flood the logs.
        now = time.monotonic()
        if now - self._last_skip_log < 1.0:
            self._skips_unlogged += 1
            return
        more = (
            f" (and {self._skips_unlogged} more since the last report)"
            if self._skips_unlogged
            else ""
        )
        log.warning(
            "skipping record partition=%d offset=%d: %s%s", rec.partition, rec.offset, why, more
        )
        self._last_skip_log = now
        self._skips_unlogged = 0

    def _apply(self, rec: SourceRecord) -> Envelope | None:
        """Apply one record; returns its envelope if it changed the state."""
        try:
            env = decode_envelope(rec.value)
        except EnvelopeError as exc:
            self._skip(rec, str(exc))
            return None
        if rec.key != record_key(env.env, env.kind, env.key):
            self._skip(rec, "record key does not match its envelope")
            return None
        if self.partitions and self._partition_of(env.env) != rec.partition:
            self._skip(rec, f"environment belongs to another partition than {rec.partition}")
            return None
        environment = self.environments.get(env.env)
        if env.kind == "env":
            return env if self._apply_env(rec, env, environment) else None
        return env if self._apply_item(rec, env, environment) else None

    def _partition_of(self, env: str) -> int:
        p = self._partition_cache.get(env)
        if p is None:
            p = self._partition_cache[env] = partition_for(env, self.partitions)
        return p

    def _environment(self, key: str, partition: int) -> Environment:
        environment = self.environments.get(key)
        if environment is None:
            environment = self.environments[key] = Environment(key=key, partition=partition)
        return environment

    def _apply_env(self, rec: SourceRecord, env: Envelope, environment: Environment | None) -> bool:
        if environment is not None and env.version <= environment.record_version:
            self.metrics.records_ignored_total.inc()
            return False
        if env.key != env.env:
            self._skip(rec, "env record key differs from its environment")
            return False
        if env.deleted:
            environment = self._environment(env.env, rec.partition)
            self.credentials.remove(env.env)
        else:
            try:
                self.credentials.update_from_json(env.env, env.item)
            except ProtocolError as exc:
                self._skip(rec, f"invalid environment record: {exc}")
                return False
            environment = self._environment(env.env, rec.partition)
        environment.record_version = env.version
        environment.deleted = env.deleted
        environment.offset = rec.offset
        return True

    def _apply_item(
        self, rec: SourceRecord, env: Envelope, environment: Environment | None
    ) -> bool:
        kind: ItemKind = "flag" if env.kind == "flag" else "segment"
        ident = (kind, env.key)
        held = environment.items.get(ident) if environment is not None else None
        if held is not None and env.version <= held.version:
            self.metrics.records_ignored_total.inc()
            return False
        problem, parsed = _check_item(env)
        if problem:
            self._skip(rec, problem)
            return False
        environment = self._environment(env.env, rec.partition)
        if held is not None:
            del environment.items[ident]  # re-insert at the end: offset order
        else:
            self._item_count += 1
        environment.items[ident] = Item(
            kind=kind,
            key=env.key,
            version=env.version,
            deleted=env.deleted,
            item=env.item,
            offset=rec.offset,
        )
        environment.offset = rec.offset
        affected = self.evaluation.apply(
            env.env, kind, env.key, None if env.deleted else parsed, env.item
        )
        # Before the bootstrap completed no stream exists (they are refused), so skipping
        # the hub keeps a large bootstrap cheap.
        if self.listeners and self.ready:
            change = Change(
                env=env.env,
                kind=kind,
                key=env.key,
                version=env.version,
                deleted=env.deleted,
                item=env.item,
                offset=rec.offset,
                published_ms=env.published_ms,
                position=str(self.position(environment)),
                affected_flags=affected,
            )
            for listener in self.listeners:
                try:
                    listener(change)
                except Exception:  # a listener bug must not stop the consumer
                    log.exception("change listener failed")
        return True

    # --- reading ------------------------------------------------------------------------

    def position(self, environment: Environment) -> Position:
        assert self.epoch is not None
        return Position(self.epoch, environment.offset)

    def consumed(self, partition: int) -> int:
        """The highest offset of ``partition`` this relay has applied (-1 if none)."""
        return self.next_offsets.get(partition, 0) - 1

    def iter_environments(self) -> Iterator[Environment]:
        return iter(self.environments.values())

    async def wait_consumed(self, partition: int, offset: int, wait_seconds: float) -> bool:
        """Wait (at most ``wait_seconds``) until ``partition`` was consumed up to ``offset``."""
        if self.consumed(partition) >= offset:
            return True
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (partition, offset, fut)
        self._waiters.append(entry)
        try:
            await asyncio.wait_for(asyncio.shield(fut), wait_seconds)
            return True
        except TimeoutError:
            return self.consumed(partition) >= offset
        finally:
            if entry in self._waiters:
                self._waiters.remove(entry)

    def _wake_waiters(self) -> None:
        if not self._waiters:
            return
        for partition, offset, fut in list(self._waiters):
            if not fut.done() and self.consumed(partition) >= offset:
                fut.set_result(None)


def _check_item(env: Envelope) -> tuple[str | None, Any]:
    """(why an item's JSON must not be spliced into SDK payloads or None, the parsed item).

    The relay treats items as opaque beyond key, version and deleted, but an item that is
    not a JSON object would break every SDK of the environment on the next ``put``.
    """
    try:
        obj = json.loads(env.item)
    except (ValueError, RecursionError):
        return "item is not valid JSON", None
    if not isinstance(obj, dict):
        return "item is not a JSON object", None
    if obj.get("key") != env.key:
        return "item key differs from the envelope", None
    if obj.get("version") != env.version:
        return "item version differs from the envelope", None
    return None, obj
