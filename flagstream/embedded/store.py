"""``SQLiteStore``: the publisher's ``Store`` in an embedded SQLite file.

It keeps every guarantee of ``publisher.store`` (atomic compare-and-set writes with their
outbox and audit entries, versions that never go back, outbox order, fenced removal, leases
with growing fencing tokens, hashes only) through ``flagstream.embedded.database``: every
method is one transaction, i.e. one short synchronous function ``_name(tx, ...)`` over the
connection, and a one-line ``async`` method that runs it with ``db.write`` or ``db.read``.

Adding a ``Store`` method: write ``_name(tx, ...)`` (plain SQL; raise the ``StoreError`` it
needs: the transaction is rolled back), add ``async def name(...): return await
self._write(_name, ...)``, and if it needs a new table append a migration to
``database.MIGRATIONS``. The shared contract tests (tests/publisher/test_store.py) then run
on it as on the Redis and memory stores.

Differences that follow from being one embedded file: the lease is held by one process (the
data directory's lock guarantees there is no other), so ``open`` clears a lease left by a
previous process instead of waiting out its TTL; fencing tokens keep growing across
restarts. Outbox entry ids are ``"{enqueued_ms}-{seq}"`` like the other stores'.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from typing import Concatenate, ParamSpec, TypeVar

from flagstream.embedded.database import Database, DatabaseUnavailable
from protocol.environment import EnvironmentRecord
from publisher.store import (
    EnvironmentExists,
    ItemKind,
    ItemWrite,
    KafkaRecord,
    OutboxEntry,
    StoreUnavailable,
    TokenRecord,
    UnknownEnvironment,
    VersionConflict,
    WriteOutcome,
    check_writes,
)

__all__ = ["SQLiteStore"]

P = ParamSpec("P")
T = TypeVar("T")

_LEASE = "forwarder"


class SQLiteStore:
    """A ``publisher.store.Store`` over a ``Database`` (see the module docstring)."""

    def __init__(self, db: Database, *, audit_max_entries: int = 10_000) -> None:
        self.db = db
        self._audit_max = audit_max_entries

    async def open(self) -> None:
        """Forget a lease of a previous process (one process owns the data directory)."""
        await self._write(_release_any_lease)

    async def _write(
        self, fn: Callable[Concatenate[sqlite3.Connection, P], T], *a: P.args, **kw: P.kwargs
    ) -> T:
        try:
            return await self.db.write(fn, *a, **kw)
        except DatabaseUnavailable as exc:
            raise StoreUnavailable(str(exc)) from exc

    async def _read(
        self, fn: Callable[Concatenate[sqlite3.Connection, P], T], *a: P.args, **kw: P.kwargs
    ) -> T:
        try:
            return await self.db.read(fn, *a, **kw)
        except DatabaseUnavailable as exc:
            raise StoreUnavailable(str(exc)) from exc

    async def ping(self) -> None:
        await self._read(_ping)

    async def close(self) -> None:
        """The ``Database`` belongs to whoever opened it (it is shared with the log)."""

    # -- environments ------------------------------------------------------------------
    async def get_environment(self, env: str) -> EnvironmentRecord | None:
        return await self._read(_get_environment, env)

    async def list_environments(self) -> list[EnvironmentRecord]:
        return await self._read(_list_environments)

    async def write_environment(
        self,
        record: EnvironmentRecord,
        *,
        expected_version: int,
        outbox: KafkaRecord,
        audit: bytes,
        now_ms: int,
    ) -> str:
        return await self._write(
            _write_environment, record, expected_version, outbox, audit, now_ms, self._audit_max
        )

    # -- items -------------------------------------------------------------------------
    async def get_item(self, env: str, kind: ItemKind, key: str) -> bytes | None:
        return await self._read(_get_item, env, kind, key)

    async def get_items(self, env: str, kind: ItemKind, keys: Sequence[str]) -> list[bytes | None]:
        return await self._read(_get_items, env, kind, list(keys))

    async def list_items(self, env: str, kind: ItemKind) -> dict[str, bytes]:
        return await self._read(_list_items, env, kind)

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
        return await self._write(
            _write_item,
            env,
            kind,
            key,
            item,
            version,
            expected_version,
            outbox,
            audit,
            now_ms,
            self._audit_max,
        )

    async def write_items(
        self, writes: Sequence[ItemWrite], *, atomic: bool, now_ms: int
    ) -> list[WriteOutcome]:
        return await self._write(_write_items, list(writes), atomic, now_ms, self._audit_max)

    # -- audit -------------------------------------------------------------------------
    async def read_audit(self, env: str, limit: int) -> list[bytes]:
        return await self._read(_read_audit, env, limit)

    # -- outbox ------------------------------------------------------------------------
    async def outbox_read(self, count: int, *, after: str | None = None) -> list[OutboxEntry]:
        return await self._read(_outbox_read, count, after)

    async def outbox_remove(self, ids: list[str], *, owner: str, fence: int) -> int:
        return await self._write(_outbox_remove, ids, owner, fence, _now_ms())

    async def outbox_depth(self) -> int:
        return await self._read(_outbox_depth)

    async def outbox_append(self, records: Sequence[KafkaRecord], *, now_ms: int) -> list[str]:
        return await self._write(_outbox_append, list(records), now_ms)

    async def outbox_contains(self, entry_id: str) -> bool:
        return await self._read(_outbox_contains, entry_id)

    # -- forwarder lease ---------------------------------------------------------------
    async def acquire_lease(self, owner: str, ttl_ms: int) -> int | None:
        return await self._write(_acquire_lease, owner, ttl_ms, _now_ms())

    async def release_lease(self, owner: str) -> None:
        await self._write(_release_lease, owner)

    # -- tokens ------------------------------------------------------------------------
    async def create_token(self, token: TokenRecord) -> None:
        await self._write(_create_token, token)

    async def list_tokens(self) -> list[TokenRecord]:
        return await self._read(_list_tokens)

    async def delete_token(self, token_id: str) -> bool:
        return await self._write(_delete_token, token_id)

    async def find_token(self, secret_sha256: str) -> TokenRecord | None:
        return await self._read(_find_token, secret_sha256)


# --- the transactions: one function each, run on the database thread -----------------------


def _now_ms() -> int:
    return int(time.time() * 1000)


def _ping(tx: sqlite3.Connection) -> None:
    tx.execute("SELECT 1").fetchone()


def _get_environment(tx: sqlite3.Connection, env: str) -> EnvironmentRecord | None:
    row = tx.execute("SELECT record FROM environments WHERE key = ?", (env,)).fetchone()
    return None if row is None else EnvironmentRecord.from_json(row[0])


def _list_environments(tx: sqlite3.Connection) -> list[EnvironmentRecord]:
    rows = tx.execute("SELECT record FROM environments ORDER BY key").fetchall()
    return [EnvironmentRecord.from_json(row[0]) for row in rows]


def _write_environment(
    tx: sqlite3.Connection,
    record: EnvironmentRecord,
    expected_version: int,
    outbox: KafkaRecord,
    audit: bytes,
    now_ms: int,
    audit_max: int,
) -> str:
    row = tx.execute("SELECT version FROM environments WHERE key = ?", (record.key,)).fetchone()
    if expected_version == 0 and row is not None:
        raise EnvironmentExists(record.key)
    current = 0 if row is None else int(row[0])
    if current != expected_version:
        raise VersionConflict(current)
    tx.execute(
        "INSERT OR REPLACE INTO environments (key, version, record) VALUES (?, ?, ?)",
        (record.key, record.version, record.to_json()),
    )
    _append_audit(tx, record.key, audit, audit_max)
    return _enqueue(tx, outbox, now_ms)


def _get_item(tx: sqlite3.Connection, env: str, kind: ItemKind, key: str) -> bytes | None:
    row = tx.execute(
        "SELECT item FROM items WHERE env = ? AND kind = ? AND key = ?", (env, kind, key)
    ).fetchone()
    return None if row is None else bytes(row[0])


def _get_items(
    tx: sqlite3.Connection, env: str, kind: ItemKind, keys: list[str]
) -> list[bytes | None]:
    found: dict[str, bytes] = {}
    for start in range(0, len(keys), 500):  # below SQLite's limit of bound parameters
        chunk = keys[start : start + 500]
        rows = tx.execute(
            f"SELECT key, item FROM items WHERE env = ? AND kind = ? AND key IN "
            f"({','.join('?' * len(chunk))})",
            (env, kind, *chunk),
        )
        found.update((str(key), bytes(item)) for key, item in rows)
    return [found.get(key) for key in keys]


def _list_items(tx: sqlite3.Connection, env: str, kind: ItemKind) -> dict[str, bytes]:
    rows = tx.execute(
        "SELECT key, item FROM items WHERE env = ? AND kind = ? ORDER BY key", (env, kind)
    )
    return {str(key): bytes(item) for key, item in rows}


def _write_item(
    tx: sqlite3.Connection,
    env: str,
    kind: ItemKind,
    key: str,
    item: bytes,
    version: int,
    expected_version: int,
    outbox: KafkaRecord,
    audit: bytes,
    now_ms: int,
    audit_max: int,
) -> str:
    if not _environment_exists(tx, env):
        raise UnknownEnvironment(env)
    current = _item_version(tx, env, kind, key)
    if current != expected_version or version != expected_version + 1:
        raise VersionConflict(current)
    tx.execute(
        "INSERT OR REPLACE INTO items (env, kind, key, version, item) VALUES (?, ?, ?, ?, ?)",
        (env, kind, key, version, item),
    )
    _append_audit(tx, env, audit, audit_max)
    return _enqueue(tx, outbox, now_ms)


def _write_items(
    tx: sqlite3.Connection, writes: list[ItemWrite], atomic: bool, now_ms: int, audit_max: int
) -> list[WriteOutcome]:
    failures = check_writes(
        writes,
        env_exists=lambda env: _environment_exists(tx, env),
        policy_revision=lambda env: policy_revision(tx, env),
        stored_version=lambda env, kind, key: _item_version(tx, env, kind, key),
    )
    if atomic and any(f is not None for f in failures):
        return ["" if f is None else f for f in failures]
    outcomes: list[WriteOutcome] = []
    for w, failed in zip(writes, failures, strict=True):
        if failed is not None:
            outcomes.append(failed)
            continue
        tx.execute(
            "INSERT OR REPLACE INTO items (env, kind, key, version, item) VALUES (?, ?, ?, ?, ?)",
            (w.env, w.kind, w.key, w.version, w.item),
        )
        _append_audit(tx, w.env, w.audit, audit_max)
        outcomes.append(_enqueue(tx, w.outbox, now_ms))
    return outcomes


def _environment_exists(tx: sqlite3.Connection, env: str) -> bool:
    return tx.execute("SELECT 1 FROM environments WHERE key = ?", (env,)).fetchone() is not None


def _item_version(tx: sqlite3.Connection, env: str, kind: ItemKind, key: str) -> int:
    row = tx.execute(
        "SELECT version FROM items WHERE env = ? AND kind = ? AND key = ?", (env, kind, key)
    ).fetchone()
    return 0 if row is None else int(row[0])


def policy_revision(tx: sqlite3.Connection, env: str) -> int:
    """The revision of ``env``'s governance policy (0: none stored; see migration 2)."""
    row = tx.execute(
        "SELECT revision FROM gov_records WHERE collection = 'policy' AND env = ?1 AND id = ?1",
        (env,),
    ).fetchone()
    return 0 if row is None else int(row[0])


def _append_audit(tx: sqlite3.Connection, env: str, entry: bytes, keep: int) -> None:
    tx.execute("INSERT INTO audit (env, entry) VALUES (?, ?)", (env, entry))
    # Keep the newest ``keep``: delete everything at or below the (keep+1)-th newest.
    tx.execute(
        "DELETE FROM audit WHERE env = ?1 AND seq <= ("
        " SELECT seq FROM audit WHERE env = ?1 ORDER BY seq DESC LIMIT 1 OFFSET ?2)",
        (env, keep),
    )


def _read_audit(tx: sqlite3.Connection, env: str, limit: int) -> list[bytes]:
    if limit <= 0:
        return []
    rows = tx.execute(
        "SELECT entry FROM audit WHERE env = ? ORDER BY seq DESC LIMIT ?", (env, limit)
    )
    return [bytes(row[0]) for row in rows]


def _entry_id(enqueued_ms: int, seq: int) -> str:
    return f"{enqueued_ms}-{seq}"


def _seq(entry_id: str) -> int | None:
    _, sep, seq = entry_id.rpartition("-")
    return int(seq) if sep and seq.isdigit() else None


def _enqueue(tx: sqlite3.Connection, record: KafkaRecord, now_ms: int) -> str:
    cursor = tx.execute(
        "INSERT INTO outbox (env, record_key, record_value, enqueued_ms) VALUES (?, ?, ?, ?)",
        (record.env, record.key, record.value, now_ms),
    )
    assert cursor.lastrowid is not None
    return _entry_id(now_ms, cursor.lastrowid)


def _outbox_read(tx: sqlite3.Connection, count: int, after: str | None) -> list[OutboxEntry]:
    # AUTOINCREMENT: a sequence number is never given twice, so "after" survives removals
    after_seq = -1 if after is None else _seq(after)
    if after_seq is None:
        raise ValueError(f"not an outbox entry id: {after!r}")
    rows = tx.execute(
        "SELECT seq, env, record_key, record_value, enqueued_ms FROM outbox WHERE seq > ?"
        " ORDER BY seq LIMIT ?",
        (after_seq, max(count, 0)),
    )
    return [
        OutboxEntry(_entry_id(ms, seq), KafkaRecord(env, bytes(key), bytes(value)), ms)
        for seq, env, key, value, ms in rows
    ]


def _holds(tx: sqlite3.Connection, owner: str, now_ms: int) -> int | None:
    """The fence of ``owner``'s lease if it holds it now."""
    row = tx.execute(
        "SELECT owner, expires_ms, fence FROM lease WHERE name = ?", (_LEASE,)
    ).fetchone()
    if row is None or row[0] != owner or int(row[1]) <= now_ms:
        return None
    return int(row[2])


def _outbox_remove(
    tx: sqlite3.Connection, ids: list[str], owner: str, fence: int, now_ms: int
) -> int:
    if _holds(tx, owner, now_ms) != fence:
        return 0
    removed = 0
    for entry_id in ids:
        seq = _seq(entry_id)
        if seq is not None:
            removed += tx.execute("DELETE FROM outbox WHERE seq = ?", (seq,)).rowcount
    return removed


def _outbox_depth(tx: sqlite3.Connection) -> int:
    return int(tx.execute("SELECT count(*) FROM outbox").fetchone()[0])


def _outbox_append(tx: sqlite3.Connection, records: list[KafkaRecord], now_ms: int) -> list[str]:
    return [_enqueue(tx, record, now_ms) for record in records]


def _outbox_contains(tx: sqlite3.Connection, entry_id: str) -> bool:
    seq = _seq(entry_id)
    if seq is None:
        return False
    return tx.execute("SELECT 1 FROM outbox WHERE seq = ?", (seq,)).fetchone() is not None


def _acquire_lease(tx: sqlite3.Connection, owner: str, ttl_ms: int, now_ms: int) -> int | None:
    row = tx.execute(
        "SELECT owner, expires_ms, fence FROM lease WHERE name = ?", (_LEASE,)
    ).fetchone()
    fence = 0 if row is None else int(row[2])
    held = row is not None and row[0] is not None and int(row[1]) > now_ms
    if held and row[0] != owner:
        return None
    if not held:
        fence += 1  # a new term (new owner, or the same one after expiry)
    tx.execute(
        "INSERT OR REPLACE INTO lease (name, owner, expires_ms, fence) VALUES (?, ?, ?, ?)",
        (_LEASE, owner, now_ms + ttl_ms, fence),
    )
    return fence


def _release_lease(tx: sqlite3.Connection, owner: str) -> None:
    tx.execute(
        "UPDATE lease SET owner = NULL, expires_ms = 0 WHERE name = ? AND owner = ?",
        (_LEASE, owner),
    )


def _release_any_lease(tx: sqlite3.Connection) -> None:
    tx.execute("UPDATE lease SET owner = NULL, expires_ms = 0 WHERE name = ?", (_LEASE,))


def _create_token(tx: sqlite3.Connection, token: TokenRecord) -> None:
    tx.execute(
        "INSERT OR REPLACE INTO tokens (id, secret_sha256, created_ms, record) VALUES (?, ?, ?, ?)",
        (token.id, token.secret_sha256, token.created_ms, token.to_json()),
    )


def _list_tokens(tx: sqlite3.Connection) -> list[TokenRecord]:
    rows = tx.execute("SELECT record FROM tokens ORDER BY created_ms, id")
    return [TokenRecord.from_json(row[0]) for row in rows]


def _delete_token(tx: sqlite3.Connection, token_id: str) -> bool:
    return tx.execute("DELETE FROM tokens WHERE id = ?", (token_id,)).rowcount > 0


def _find_token(tx: sqlite3.Connection, secret_sha256: str) -> TokenRecord | None:
    row = tx.execute("SELECT record FROM tokens WHERE secret_sha256 = ?", (secret_sha256,))
    found = row.fetchone()
    return None if found is None else TokenRecord.from_json(found[0])
