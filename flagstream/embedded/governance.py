"""``SQLiteGovernanceStore``: the ``GovernanceStore`` of ``publisher.governance`` in the
embedded SQLite file, next to the ``SQLiteStore`` whose audit log and outbox it writes into.

Built like ``SQLiteStore`` (see its docstring): every method is one transaction, a short
synchronous function ``_name(tx, ...)`` run on the database's single thread by
``db.write``/``db.read``; the tables are migration 2 of ``database.MIGRATIONS``. So the
guarantees of ``publisher.governance.store`` follow from the transactional layer:

- compare-and-set on a record's revision: the check and the change are one transaction;
- ``commit_write`` is one transaction that checks the lease holder and the record, then
  runs the item write through the store's own ``_write_items`` (the code of every direct
  write: environment, policy revision, version compare-and-set, item, audit entry, outbox
  entry), then stores the record; any failure rolls all of it back;
- the schedule, the secret index, the creation counter and the rate windows are tables of
  the same file, so scheduled work survives a restart of ``flagstream dev`` (and is applied
  late, by the scheduler of the next process, which holds the lease of this file);
- the policy of environment E is the row (``policy``, E, E) of ``gov_records``, whose
  revision the store's item writes compare with ``ItemWrite.policy_revision``.
"""

from __future__ import annotations

import sqlite3

from flagstream.embedded.store import SQLiteStore, _append_audit, _holds, _now_ms, _write_items
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
from publisher.store import ItemWrite

__all__ = ["SQLiteGovernanceStore"]


class SQLiteGovernanceStore:
    """A ``GovernanceStore`` in the ``SQLiteStore``'s database (see the module docstring)."""

    def __init__(self, store: SQLiteStore) -> None:
        self._store = store
        # The store's own transaction runners: same database, same error mapping.
        self._write = store._write
        self._read = store._read

    async def get(self, collection: Collection, env: str, record_id: str) -> bytes | None:
        return await self._read(_get, collection, env, record_id)

    async def list_records(self, collection: Collection, env: str) -> list[bytes]:
        return await self._read(_list_records, collection, env)

    async def next_seq(self) -> int:
        return await self._write(_next_seq)

    async def update(self, update: RecordUpdate, *, audit: bytes | None) -> None:
        await self._write(_update, update, audit, self._store._audit_max)

    async def commit_write(
        self, update: RecordUpdate, write: ItemWrite, *, now_ms: int, lease_owner: str | None
    ) -> str:
        check_one_environment(update, write)
        return await self._write(
            _commit_write,
            update,
            write,
            now_ms,
            lease_owner,
            self._store._audit_max,
            _now_ms(),
        )

    async def due(self, now_ms: int, limit: int) -> list[ScheduledRef]:
        return await self._read(_due, now_ms, limit)

    async def find_secret(self, sha256: str) -> tuple[str, str] | None:
        return await self._read(_find_secret, sha256)

    async def take_rate(self, bucket: str, limit: int, window_ms: int, now_ms: int) -> int:
        return await self._write(_take_rate, bucket, limit, window_ms, now_ms)


# --- the transactions: one function each, run on the database thread -----------------------


def _get(tx: sqlite3.Connection, collection: str, env: str, record_id: str) -> bytes | None:
    row = tx.execute(
        "SELECT record FROM gov_records WHERE collection = ? AND env = ? AND id = ?",
        (collection, env, record_id),
    ).fetchone()
    return None if row is None else bytes(row[0])


def _list_records(tx: sqlite3.Connection, collection: str, env: str) -> list[bytes]:
    rows = tx.execute(
        "SELECT record FROM gov_records WHERE collection = ? AND env = ?", (collection, env)
    )
    return [bytes(row[0]) for row in rows]


def _next_seq(tx: sqlite3.Connection) -> int:
    tx.execute(
        "INSERT INTO gov_counters (name, value) VALUES ('seq', 1) "
        "ON CONFLICT (name) DO UPDATE SET value = value + 1"
    )
    return int(tx.execute("SELECT value FROM gov_counters WHERE name = 'seq'").fetchone()[0])


def _check(tx: sqlite3.Connection, u: RecordUpdate) -> None:
    row = tx.execute(
        "SELECT revision FROM gov_records WHERE collection = ? AND env = ? AND id = ?",
        (u.collection, u.env, u.id),
    ).fetchone()
    current = 0 if row is None else int(row[0])
    if current != u.expected_revision:
        raise StaleRecord(current)


def _store_record(tx: sqlite3.Connection, u: RecordUpdate) -> None:
    tx.execute(
        "INSERT OR REPLACE INTO gov_records (collection, env, id, revision, record) "
        "VALUES (?, ?, ?, ?, ?)",
        (u.collection, u.env, u.id, u.revision, u.value),
    )
    member = schedule_member(u.collection, u.env, u.id, u.seq)
    if u.schedule_at_ms is None:
        tx.execute("DELETE FROM gov_schedule WHERE member = ?", (member,))
    else:
        tx.execute(
            "INSERT OR REPLACE INTO gov_schedule (member, due_ms) VALUES (?, ?)",
            (member, u.schedule_at_ms),
        )
    if u.secret is not None:
        if u.secret.add:
            tx.execute(
                "INSERT OR REPLACE INTO gov_secrets (sha256, env, id) VALUES (?, ?, ?)",
                (u.secret.sha256, u.env, u.id),
            )
        else:
            tx.execute("DELETE FROM gov_secrets WHERE sha256 = ?", (u.secret.sha256,))


def _update(tx: sqlite3.Connection, u: RecordUpdate, audit: bytes | None, audit_max: int) -> None:
    _check(tx, u)
    _store_record(tx, u)
    if audit is not None:
        _append_audit(tx, u.env, audit, audit_max)


def _commit_write(
    tx: sqlite3.Connection,
    u: RecordUpdate,
    write: ItemWrite,
    now_ms: int,
    lease_owner: str | None,
    audit_max: int,
    clock_ms: int,
) -> str:
    if lease_owner is not None and _holds(tx, lease_owner, clock_ms) is None:
        raise NotLeaseHolder(lease_owner)
    _check(tx, u)
    (outcome,) = _write_items(tx, [write], True, now_ms, audit_max)
    if not isinstance(outcome, str):
        raise outcome  # nothing was written: the transaction is rolled back
    _store_record(tx, u)
    return outcome


def _due(tx: sqlite3.Connection, now_ms: int, limit: int) -> list[ScheduledRef]:
    rows = tx.execute(
        "SELECT member, due_ms FROM gov_schedule WHERE due_ms <= ? ORDER BY due_ms, member LIMIT ?",
        (now_ms, max(limit, 0)),
    )
    return [parse_member(str(member), int(due)) for member, due in rows]


def _find_secret(tx: sqlite3.Connection, sha256: str) -> tuple[str, str] | None:
    row = tx.execute("SELECT env, id FROM gov_secrets WHERE sha256 = ?", (sha256,)).fetchone()
    return None if row is None else (str(row[0]), str(row[1]))


def _take_rate(tx: sqlite3.Connection, bucket: str, limit: int, window_ms: int, now_ms: int) -> int:
    start = now_ms - now_ms % window_ms
    row = tx.execute(
        "SELECT window_start, calls FROM gov_rates WHERE bucket = ?", (bucket,)
    ).fetchone()
    calls = 1 if row is None or int(row[0]) != start else int(row[1]) + 1
    tx.execute(
        "INSERT OR REPLACE INTO gov_rates (bucket, window_start, calls) VALUES (?, ?, ?)",
        (bucket, start, calls),
    )
    return 0 if calls <= limit else start + window_ms - now_ms
