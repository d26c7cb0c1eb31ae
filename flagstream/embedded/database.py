"""The transactional layer under the embedded store and log: one SQLite file, one thread.

Rules (in the order a call meets them):

1. **One connection, one thread.** Every statement runs on a single dedicated thread that
   owns the only connection, so calls are executed one at a time, in the order they were
   submitted (``read``/``write`` submit before their first ``await``). The event loop never
   blocks on the disk.
2. **A call is a transaction.** ``write(fn, ...)`` runs ``fn(connection, ...)`` between
   ``BEGIN IMMEDIATE`` and ``COMMIT``: all of it or (on any exception) none of it.
   ``read(fn, ...)`` runs ``fn`` in a read transaction, so everything it reads is one
   consistent snapshot. ``fn`` is plain synchronous code: it must not touch the event loop.
3. **Durability.** WAL journal with ``synchronous=FULL``: ``write`` returns only after its
   commit is on disk (fsync), so an acknowledged change survives a crash of the process or
   of the machine. Other processes may read the file (backups, ``sqlite3`` CLI); writers
   from elsewhere wait at most ``busy_timeout``.
4. **Failures.** ``sqlite3.OperationalError`` and ``DatabaseError`` (disk full, I/O error,
   locked past the busy timeout, a file damaged while open) raise ``DatabaseUnavailable``
   with the transaction rolled back; programming errors (``IntegrityError``, ``fn`` raising)
   propagate unchanged, also after a rollback.
5. **Schema.** ``PRAGMA user_version`` is the number of ``MIGRATIONS`` applied. Opening
   applies the missing ones in one transaction; a file whose version is higher than this
   code knows, or that is not a SQLite database, is refused with a ``DataDirError`` naming
   the fix. To change the schema, append a migration: never edit a released one.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Concatenate, ParamSpec, TypeVar

__all__ = [
    "MIGRATIONS",
    "DataDirError",
    "Database",
    "DatabaseUnavailable",
]

P = ParamSpec("P")
T = TypeVar("T")

BUSY_TIMEOUT_MS = 5_000

# Each entry is a script applied once, in order; ``user_version`` counts them.
MIGRATIONS: tuple[str, ...] = (
    # 1: the store (publisher.store.Store) and the record log (publisher.log / relay.source).
    """
    CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
    CREATE TABLE environments (
        key TEXT PRIMARY KEY, version INTEGER NOT NULL, record BLOB NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE items (
        env TEXT NOT NULL, kind TEXT NOT NULL, key TEXT NOT NULL,
        version INTEGER NOT NULL, item BLOB NOT NULL,
        PRIMARY KEY (env, kind, key)
    ) WITHOUT ROWID;
    CREATE TABLE audit (seq INTEGER PRIMARY KEY AUTOINCREMENT, env TEXT NOT NULL,
                        entry BLOB NOT NULL);
    CREATE INDEX audit_by_env ON audit (env, seq);
    CREATE TABLE outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, env TEXT NOT NULL,
                         record_key BLOB NOT NULL, record_value BLOB NOT NULL,
                         enqueued_ms INTEGER NOT NULL);
    CREATE TABLE tokens (
        id TEXT PRIMARY KEY, secret_sha256 TEXT NOT NULL UNIQUE,
        created_ms INTEGER NOT NULL, record BLOB NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE lease (
        name TEXT PRIMARY KEY, owner TEXT, expires_ms INTEGER NOT NULL, fence INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE log_partitions (
        partition INTEGER PRIMARY KEY, next_offset INTEGER NOT NULL
    );
    CREATE TABLE log_records (
        partition INTEGER NOT NULL, offset INTEGER NOT NULL,
        record_key BLOB, record_value BLOB,
        PRIMARY KEY (partition, offset)
    ) WITHOUT ROWID;
    CREATE INDEX log_records_by_key ON log_records (partition, record_key, offset);
    """,
    # 2: governance records (publisher.governance.store.GovernanceStore, embedded.governance).
    # The policy of an environment is the record (policy, env, env); item writes that carry
    # a policy revision compare it with that row's revision (embedded.store._write_items).
    """
    CREATE TABLE gov_records (
        collection TEXT NOT NULL, env TEXT NOT NULL, id TEXT NOT NULL,
        revision INTEGER NOT NULL, record BLOB NOT NULL,
        PRIMARY KEY (collection, env, id)
    ) WITHOUT ROWID;
    CREATE TABLE gov_schedule (member TEXT PRIMARY KEY, due_ms INTEGER NOT NULL) WITHOUT ROWID;
    CREATE INDEX gov_schedule_by_due ON gov_schedule (due_ms, member);
    CREATE TABLE gov_secrets (
        sha256 TEXT PRIMARY KEY, env TEXT NOT NULL, id TEXT NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE gov_rates (
        bucket TEXT PRIMARY KEY, window_start INTEGER NOT NULL, calls INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE gov_counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
    """,
)


class DataDirError(Exception):
    """The data directory cannot be used; the message is one line that names the fix."""


class DatabaseUnavailable(Exception):
    """A statement failed for a reason outside the program (disk, lock, damage); rolled back."""


class Database:
    """One SQLite file used through one thread (see the module rules)."""

    def __init__(
        self,
        path: Path,
        *,
        migrations: Sequence[str] = MIGRATIONS,
        busy_timeout_ms: int = BUSY_TIMEOUT_MS,
    ) -> None:
        self.path = path
        self._migrations = tuple(migrations)
        self._busy_timeout_ms = busy_timeout_ms
        self._closed = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="flagstream-db")
        self._conn: sqlite3.Connection | None = None

    # --- opening and closing --------------------------------------------------------------

    async def open(self) -> None:
        """Open (creating if missing) and migrate; ``DataDirError`` if the file is unusable."""
        await self._run(self._open)

    def _open(self) -> None:
        fix = (
            f"move {self.path} aside (or delete it) to start with an empty data directory, "
            "or choose another --data-dir"
        )
        try:
            conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=0
            )
        except sqlite3.Error as exc:
            raise DataDirError(f"cannot open {self.path}: {exc}; {fix}") from None
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise DataDirError(f"{self.path}: cannot switch to WAL mode (got {mode}); {fix}")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            problems = [row[0] for row in conn.execute("PRAGMA quick_check").fetchall()]
            if problems != ["ok"]:
                raise DataDirError(
                    f"{self.path} is damaged (SQLite quick_check: {problems[0]}); {fix}"
                )
            self._migrate(conn, fix)
        except DataDirError:
            conn.close()
            raise
        except sqlite3.OperationalError as exc:
            conn.close()
            if "locked" in str(exc) or "busy" in str(exc):
                raise DataDirError(
                    f"{self.path} is locked by another program ({exc}); close it and start again"
                ) from None
            raise DataDirError(f"cannot use {self.path}: {exc}; {fix}") from None
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise DataDirError(
                f"{self.path} is not a usable SQLite database ({exc}); {fix}"
            ) from None
        self._conn = conn

    def _migrate(self, conn: sqlite3.Connection, fix: str) -> None:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version > len(self._migrations):
            raise DataDirError(
                f"{self.path} was written by a newer flagstream (schema {version}, this one "
                f"knows {len(self._migrations)}); upgrade flagstream, or {fix}"
            )
        if version == len(self._migrations):
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            for script in self._migrations[version:]:
                for statement in _statements(script):
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {len(self._migrations)}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    async def close(self) -> None:
        if self._closed:
            return
        if self._conn is not None:
            await self._run(self._close)
        self._closed = True
        self._executor.shutdown(wait=True)

    def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                # Fold the WAL back into the main file, so the directory is one file at rest.
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.close()

    # --- transactions ---------------------------------------------------------------------

    async def write(
        self, fn: Callable[Concatenate[sqlite3.Connection, P], T], *args: P.args, **kw: P.kwargs
    ) -> T:
        """Run ``fn(connection, *args)`` in one write transaction (rule 2)."""
        return await self._run(lambda: self._transaction("BEGIN IMMEDIATE", fn, *args, **kw))

    async def read(
        self, fn: Callable[Concatenate[sqlite3.Connection, P], T], *args: P.args, **kw: P.kwargs
    ) -> T:
        """Run ``fn(connection, *args)`` in one read transaction (a consistent snapshot)."""
        return await self._run(lambda: self._transaction("BEGIN DEFERRED", fn, *args, **kw))

    def _transaction(
        self,
        begin: str,
        fn: Callable[Concatenate[sqlite3.Connection, P], T],
        *args: P.args,
        **kw: P.kwargs,
    ) -> T:
        conn = self._conn
        if conn is None:
            raise DatabaseUnavailable("the database is closed")
        try:
            conn.execute(begin)
            try:
                result = fn(conn, *args, **kw)
                conn.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                raise
        except sqlite3.IntegrityError:
            raise
        except sqlite3.DatabaseError as exc:  # OperationalError is a DatabaseError
            raise DatabaseUnavailable(f"{type(exc).__name__}: {exc}") from exc
        return result

    async def _run(self, fn: Callable[[], T]) -> T:
        if self._closed:
            raise DatabaseUnavailable("the database is closed")
        loop = asyncio.get_running_loop()
        # run_in_executor submits at once (before the first await): FIFO order per rule 1.
        return await loop.run_in_executor(self._executor, fn)


def _statements(script: str) -> list[str]:
    """The statements of a migration script (none of them contains a ';' of its own)."""
    return [s.strip() for s in script.split(";") if s.strip()]
