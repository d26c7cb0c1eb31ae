"""In-memory ``GovernanceStore``: the reference for the semantics (``flagstream dev``, tests).

It sits on a ``publisher.memory_store.MemoryStore`` and writes into that store's audit log
and outbox (``commit_write`` calls its ``write_items`` with the one write, exactly as a
direct write is committed), and keeps each environment's policy revision in that store's
``policy_revisions`` (which its ``write_items`` checks). Atomicity comes from asyncio: no
method awaits anything that can yield between its checks and its changes (``MemoryStore``'s
methods never yield), so each compare-and-set runs to completion before any other coroutine
sees the state. Nothing is durable: the records live as long as the object.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator

from publisher.governance.store import (
    Collection,
    NotLeaseHolder,
    RecordUpdate,
    ScheduledRef,
    StaleRecord,
    check_one_environment,
    parse_member,
    schedule_member,
)
from publisher.memory_store import MemoryStore
from publisher.store import ItemWrite

__all__ = ["MemoryGovernanceStore"]


def _append_audit(store: MemoryStore, env: str, entry: bytes) -> None:
    """Append to the MemoryStore's audit log as its own writes do (oldest first, capped)."""
    log = store._audit.setdefault(env, [])
    log.append(entry)
    if len(log) > store._audit_max:
        del log[: len(log) - store._audit_max]


class MemoryGovernanceStore:
    """A ``GovernanceStore`` in dictionaries (see ``governance.store`` for the guarantees)."""

    def __init__(self, store: MemoryStore) -> None:
        self._store = store
        self._records: dict[tuple[str, str], dict[str, tuple[int, bytes]]] = {}
        self._schedule: dict[str, int] = {}  # member -> due ms
        self._secrets: dict[str, tuple[str, str]] = {}
        self._seq = itertools.count(1)
        self._rates: dict[str, tuple[int, int]] = {}  # bucket -> (window start, count)

    async def get(self, collection: Collection, env: str, record_id: str) -> bytes | None:
        found = self._records.get((collection, env), {}).get(record_id)
        return None if found is None else found[1]

    async def list_records(self, collection: Collection, env: str) -> list[bytes]:
        return [v for _, v in self._records.get((collection, env), {}).values()]

    async def next_seq(self) -> int:
        return next(self._seq)

    # -- the compare-and-set steps --------------------------------------------------------
    def _check(self, update: RecordUpdate) -> None:
        found = self._records.get((update.collection, update.env), {}).get(update.id)
        current = 0 if found is None else found[0]
        if current != update.expected_revision:
            raise StaleRecord(current)

    def _store_record(self, update: RecordUpdate) -> None:
        records = self._records.setdefault((update.collection, update.env), {})
        records[update.id] = (update.revision, update.value)
        if update.collection == "policy":
            self._store.policy_revisions[update.env] = update.revision
        member = schedule_member(update.collection, update.env, update.id, update.seq)
        if update.schedule_at_ms is None:
            self._schedule.pop(member, None)
        else:
            self._schedule[member] = update.schedule_at_ms
        if update.secret is not None:
            if update.secret.add:
                self._secrets[update.secret.sha256] = (update.env, update.id)
            else:
                self._secrets.pop(update.secret.sha256, None)

    async def update(self, update: RecordUpdate, *, audit: bytes | None) -> None:
        self._check(update)
        self._store_record(update)
        if audit is not None:
            _append_audit(self._store, update.env, audit)

    async def commit_write(
        self, update: RecordUpdate, write: ItemWrite, *, now_ms: int, lease_owner: str | None
    ) -> str:
        check_one_environment(update, write)
        if lease_owner is not None and not self._store._holds(lease_owner):
            raise NotLeaseHolder(lease_owner)
        self._check(update)
        # MemoryStore.write_items never yields: the check above and both changes are one step.
        (outcome,) = await self._store.write_items([write], atomic=True, now_ms=now_ms)
        if not isinstance(outcome, str):
            raise outcome
        self._store_record(update)
        return outcome

    # -- schedule, secrets, rate limits --------------------------------------------------
    async def due(self, now_ms: int, limit: int) -> list[ScheduledRef]:
        due: Iterator[tuple[int, str]] = (
            (at, member) for member, at in self._schedule.items() if at <= now_ms
        )
        return [parse_member(m, at) for at, m in heapq.nsmallest(max(limit, 0), due)]

    async def find_secret(self, sha256: str) -> tuple[str, str] | None:
        return self._secrets.get(sha256)

    async def take_rate(self, bucket: str, limit: int, window_ms: int, now_ms: int) -> int:
        start = now_ms - now_ms % window_ms
        window, count = self._rates.get(bucket, (start, 0))
        if window != start:
            count = 0
        self._rates[bucket] = (start, count + 1)
        return 0 if count + 1 <= limit else start + window_ms - now_ms
