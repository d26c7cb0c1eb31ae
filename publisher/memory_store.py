"""In-memory ``Store`` with the same semantics as the Redis one (for ``flagstream dev`` and tests).

Atomicity comes from asyncio itself: no method awaits between reading and writing, so each
compare-and-set runs to completion before any other coroutine sees the state. Nothing is
durable: the state lives as long as the object.
"""

from __future__ import annotations

import itertools
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence

from protocol.environment import EnvironmentRecord
from publisher.store import (
    EnvironmentExists,
    ItemKind,
    ItemWrite,
    KafkaRecord,
    OutboxEntry,
    TokenRecord,
    UnknownEnvironment,
    VersionConflict,
    WriteOutcome,
    check_writes,
)

__all__ = ["MemoryStore"]


class MemoryStore:
    """A ``publisher.store.Store`` held in dictionaries (see that module for the guarantees)."""

    def __init__(self, *, audit_max_entries: int = 10_000) -> None:
        self._audit_max = audit_max_entries
        self._envs: dict[str, EnvironmentRecord] = {}
        self._items: dict[tuple[str, str], dict[str, tuple[int, bytes]]] = {}
        self._audit: dict[str, list[bytes]] = {}
        self._outbox: OrderedDict[str, OutboxEntry] = OrderedDict()
        self._outbox_seq = 0
        self._tokens: dict[str, TokenRecord] = {}
        self._lease: tuple[str, float] | None = None  # (owner, expires at monotonic)
        self._fence = 0
        # env -> revision of its governance policy, kept by MemoryGovernanceStore
        self.policy_revisions: dict[str, int] = {}

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None

    # -- environments ------------------------------------------------------------------
    async def get_environment(self, env: str) -> EnvironmentRecord | None:
        return self._envs.get(env)

    async def list_environments(self) -> list[EnvironmentRecord]:
        return [self._envs[k] for k in sorted(self._envs)]

    async def write_environment(
        self,
        record: EnvironmentRecord,
        *,
        expected_version: int,
        outbox: KafkaRecord,
        audit: bytes,
        now_ms: int,
    ) -> str:
        current = self._envs.get(record.key)
        if expected_version == 0 and current is not None:
            raise EnvironmentExists(record.key)
        current_version = current.version if current is not None else 0
        if current_version != expected_version:
            raise VersionConflict(current_version)
        self._envs[record.key] = record
        return self._append(record.key, outbox, audit, now_ms)

    # -- items -------------------------------------------------------------------------
    async def get_item(self, env: str, kind: ItemKind, key: str) -> bytes | None:
        found = self._items.get((env, kind), {}).get(key)
        return found[1] if found is not None else None

    async def get_items(self, env: str, kind: ItemKind, keys: Sequence[str]) -> list[bytes | None]:
        items = self._items.get((env, kind), {})
        return [None if (found := items.get(key)) is None else found[1] for key in keys]

    async def list_items(self, env: str, kind: ItemKind) -> dict[str, bytes]:
        return {k: v[1] for k, v in sorted(self._items.get((env, kind), {}).items())}

    async def write_item(
        self,
        env: str,
        kind: ItemKind,
        key: str,
        item: bytes,
        *,
        version: int,
        expected_version: int,
        outbox: KafkaRecord,
        audit: bytes,
        now_ms: int,
    ) -> str:
        if env not in self._envs:
            raise UnknownEnvironment(env)
        current = self._version(env, kind, key)
        if current != expected_version or version != expected_version + 1:
            raise VersionConflict(current)
        self._items.setdefault((env, kind), {})[key] = (version, item)
        return self._append(env, outbox, audit, now_ms)

    async def write_items(
        self, writes: Sequence[ItemWrite], *, atomic: bool, now_ms: int
    ) -> list[WriteOutcome]:
        failures = check_writes(
            writes,
            env_exists=self._envs.__contains__,
            policy_revision=lambda env: self.policy_revisions.get(env, 0),
            stored_version=self._version,
        )
        if atomic and any(f is not None for f in failures):
            return ["" if f is None else f for f in failures]
        outcomes: list[WriteOutcome] = []
        for w, failed in zip(writes, failures, strict=True):
            if failed is not None:
                outcomes.append(failed)
                continue
            self._items.setdefault((w.env, w.kind), {})[w.key] = (w.version, w.item)
            outcomes.append(self._append(w.env, w.outbox, w.audit, now_ms))
        return outcomes

    def _version(self, env: str, kind: ItemKind, key: str) -> int:
        found = self._items.get((env, kind), {}).get(key)
        return found[0] if found is not None else 0

    def _enqueue(self, record: KafkaRecord, now_ms: int) -> str:
        self._outbox_seq += 1
        # Same shape as a Redis stream id, so ids compare the same way in both stores.
        entry_id = f"{now_ms}-{self._outbox_seq}"
        self._outbox[entry_id] = OutboxEntry(entry_id, record, now_ms)
        return entry_id

    def _append(self, env: str, outbox: KafkaRecord, audit: bytes, now_ms: int) -> str:
        entry_id = self._enqueue(outbox, now_ms)
        log = self._audit.setdefault(env, [])
        log.append(audit)
        if len(log) > self._audit_max:
            del log[: len(log) - self._audit_max]
        return entry_id

    # -- audit -------------------------------------------------------------------------
    async def read_audit(self, env: str, limit: int) -> list[bytes]:
        log = self._audit.get(env, [])
        return list(reversed(log[-limit:])) if limit > 0 else []

    # -- outbox ------------------------------------------------------------------------
    async def outbox_read(self, count: int, *, after: str | None = None) -> list[OutboxEntry]:
        entries: Iterable[OutboxEntry] = self._outbox.values()
        if after is not None:
            # ids are "{ms}-{seq}" with one sequence for the whole store, kept in append order
            after_seq = int(after.rpartition("-")[2])
            entries = itertools.dropwhile(
                lambda e: int(e.id.rpartition("-")[2]) <= after_seq, entries
            )
        return list(itertools.islice(entries, max(count, 0)))

    async def outbox_remove(self, ids: list[str], *, owner: str, fence: int) -> int:
        if not self._holds(owner) or fence != self._fence:
            return 0
        removed = 0
        for entry_id in ids:
            if self._outbox.pop(entry_id, None) is not None:
                removed += 1
        return removed

    async def outbox_depth(self) -> int:
        return len(self._outbox)

    async def outbox_append(self, records: Sequence[KafkaRecord], *, now_ms: int) -> list[str]:
        return [self._enqueue(record, now_ms) for record in records]

    async def outbox_contains(self, entry_id: str) -> bool:
        return entry_id in self._outbox

    # -- lease -------------------------------------------------------------------------
    def _holds(self, owner: str) -> bool:
        return (
            self._lease is not None
            and self._lease[0] == owner
            and self._lease[1] > time.monotonic()
        )

    async def acquire_lease(self, owner: str, ttl_ms: int) -> int | None:
        now = time.monotonic()
        if self._holds(owner):
            self._lease = (owner, now + ttl_ms / 1000)
            return self._fence
        if self._lease is not None and self._lease[1] > now:
            return None
        self._lease = (owner, now + ttl_ms / 1000)
        self._fence += 1
        return self._fence

    async def release_lease(self, owner: str) -> None:
        if self._lease is not None and self._lease[0] == owner:
            self._lease = None

    # -- tokens ------------------------------------------------------------------------
    async def create_token(self, token: TokenRecord) -> None:
        self._tokens[token.id] = token

    async def list_tokens(self) -> list[TokenRecord]:
        return sorted(self._tokens.values(), key=lambda t: (t.created_ms, t.id))

    async def delete_token(self, token_id: str) -> bool:
        return self._tokens.pop(token_id, None) is not None

    async def find_token(self, secret_sha256: str) -> TokenRecord | None:
        for token in self._tokens.values():
            if token.secret_sha256 == secret_sha256:
                return token
        return None
