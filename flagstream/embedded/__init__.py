"""Embedded backends that keep their data: the publisher's ``Store`` and ``RecordLog`` and the
relay's ``RecordSource`` in one SQLite file in a data directory, for ``flagstream dev`` and
one-box deployments (docs/operations.md, "Embedded mode").

- ``database``: the transactional layer (one connection on one thread, WAL, fsync per commit,
  schema migrations);
- ``store``: ``SQLiteStore`` (publisher.store.Store), one short function per method;
- ``log``: ``SQLiteLog`` (publisher.log.RecordLog) and its readers ``SQLiteSource``
  (relay.source.RecordSource), positions stable across restarts;
- ``datadir``: the directory, its exclusive lock and its owner-only secrets.

``open_embedded(path)`` opens all of them in order and ``Embedded.close()`` closes them.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from flagstream.embedded.database import Database, DatabaseUnavailable, DataDirError
from flagstream.embedded.datadir import DataDir
from flagstream.embedded.log import SQLiteLog, SQLiteSource
from flagstream.embedded.store import SQLiteStore

__all__ = [
    "DataDir",
    "DataDirError",
    "Database",
    "DatabaseUnavailable",
    "Embedded",
    "SQLiteLog",
    "SQLiteSource",
    "SQLiteStore",
    "open_embedded",
]


@dataclass
class Embedded:
    """The opened backends of one data directory."""

    datadir: DataDir
    db: Database
    store: SQLiteStore
    log: SQLiteLog

    async def get_meta(self, name: str) -> str | None:
        """A value kept for the program using the directory (``flagstream dev``'s markers)."""
        return await self.db.read(_get_meta, name)

    async def set_meta(self, name: str, value: str) -> None:
        await self.db.write(_set_meta, name, value)

    async def close(self) -> None:
        try:
            await self.db.close()
        finally:
            self.datadir.close()


def _get_meta(tx: sqlite3.Connection, name: str) -> str | None:
    row = tx.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
    return None if row is None else str(row[0])


def _set_meta(tx: sqlite3.Connection, name: str, value: str) -> None:
    tx.execute("INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)", (name, value))


async def open_embedded(
    path: Path, *, partitions: int = 6, audit_max_entries: int = 10_000
) -> Embedded:
    """Lock ``path``, open its database and the store and log over it.

    Raises ``DataDirError`` (one line naming the fix) if the directory is in use, not
    writable, or holds a file that is not a database of this flagstream.
    """
    datadir = DataDir(path)
    datadir.open()
    db = Database(datadir.db_path)
    try:
        await db.open()
        store = SQLiteStore(db, audit_max_entries=audit_max_entries)
        await store.open()
        log = SQLiteLog(db, partitions=partitions)
        await log.open()
    except BaseException:
        await db.close()
        datadir.close()
        raise
    return Embedded(datadir=datadir, db=db, store=store, log=log)
