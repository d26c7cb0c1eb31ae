"""The transactional layer: atomic transactions in submission order, durable across reopen,
and a clear ``DataDirError`` for a file that is not (or no longer) a usable database."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from flagstream.embedded.database import (
    MIGRATIONS,
    Database,
    DatabaseUnavailable,
    DataDirError,
)


def wal_is_empty(path: Path) -> bool:
    wal = Path(f"{path}-wal")
    return not wal.exists() or wal.stat().st_size == 0


async def opened(path: Path) -> Database:
    db = Database(path)
    await db.open()
    return db


def _put(tx: sqlite3.Connection, name: str, value: str) -> None:
    tx.execute("INSERT OR REPLACE INTO meta (name, value) VALUES (?, ?)", (name, value))


def _get(tx: sqlite3.Connection, name: str) -> str | None:
    row = tx.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
    return None if row is None else str(row[0])


async def test_a_failed_transaction_changes_nothing(tmp_path: Path) -> None:
    db = await opened(tmp_path / "x.db")

    def half_then_fail(tx: sqlite3.Connection) -> None:
        _put(tx, "a", "1")
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        await db.write(half_then_fail)
    assert await db.read(_get, "a") is None
    await db.write(_put, "a", "2")
    assert await db.read(_get, "a") == "2"
    await db.close()


async def test_concurrent_writes_commit_in_submission_order(tmp_path: Path) -> None:
    db = await opened(tmp_path / "x.db")

    def append(tx: sqlite3.Connection, n: int) -> int:
        before = _get(tx, "seq") or ""
        _put(tx, "seq", f"{before},{n}" if before else str(n))
        return n

    results = await asyncio.gather(*(db.write(append, n) for n in range(50)))
    assert results == list(range(50))
    assert await db.read(_get, "seq") == ",".join(str(n) for n in range(50))
    await db.close()


async def test_data_survives_reopen_and_the_schema_is_migrated_once(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    db = await opened(path)
    await db.write(_put, "kept", "yes")
    await db.close()
    assert wal_is_empty(path)  # checkpointed at close: the directory is one file at rest
    db = await opened(path)
    assert await db.read(_get, "kept") == "yes"
    version = await db.read(lambda tx: int(tx.execute("PRAGMA user_version").fetchone()[0]))
    assert version == len(MIGRATIONS)
    mode = await db.read(lambda tx: str(tx.execute("PRAGMA journal_mode").fetchone()[0]))
    assert mode == "wal"
    await db.close()


async def test_a_new_migration_is_applied_on_open(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    await (await opened(path)).close()
    db = Database(path, migrations=(*MIGRATIONS, "CREATE TABLE extra (x INTEGER)"))
    await db.open()
    await db.write(lambda tx: tx.execute("INSERT INTO extra VALUES (1)"))
    assert await db.read(lambda tx: tx.execute("SELECT x FROM extra").fetchone()[0]) == 1
    await db.close()


async def test_a_file_that_is_not_a_database_is_a_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    path.write_bytes(b"this is not SQLite at all, just some text that got here" * 100)
    with pytest.raises(DataDirError) as error:
        await Database(path).open()
    message = str(error.value)
    assert "\n" not in message
    assert str(path) in message and "move" in message and "--data-dir" in message


async def test_a_damaged_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    db = await opened(path)
    await db.write(lambda tx: [_put(tx, f"k{i}", "v" * 500) for i in range(200)])
    await db.close()
    raw = bytearray(path.read_bytes())
    # Overwrite the middle pages (b-tree pages of the meta table) with garbage.
    raw[8192:20480] = b"\xff" * (20480 - 8192)
    path.write_bytes(bytes(raw))
    with pytest.raises(DataDirError) as error:
        await Database(path).open()
    assert "\n" not in str(error.value) and str(path) in str(error.value)


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 5}")
    conn.close()
    with pytest.raises(DataDirError, match="newer flagstream"):
        await Database(path).open()


async def test_a_write_lock_held_elsewhere_makes_writes_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    db = Database(path, busy_timeout_ms=100)
    await db.open()
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another program holds the write lock
    try:
        with pytest.raises(DatabaseUnavailable, match="locked"):
            await db.write(_put, "a", "1")
        assert await db.read(_get, "a") is None  # readers go on (WAL)
    finally:
        other.execute("ROLLBACK")
        other.close()
    await db.write(_put, "a", "1")
    await db.close()


async def test_an_exclusive_lock_at_open_is_a_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "x.db"
    await (await opened(path)).close()
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("PRAGMA journal_mode = DELETE")
    other.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(DataDirError) as error:
            await Database(path, busy_timeout_ms=200).open()
        assert "locked" in str(error.value) and "\n" not in str(error.value)
    finally:
        other.execute("ROLLBACK")
        other.close()


async def test_closed_database_is_unavailable(tmp_path: Path) -> None:
    db = await opened(tmp_path / "x.db")
    await db.close()
    with pytest.raises(DatabaseUnavailable, match="closed"):
        await db.read(_get, "a")
    await db.close()  # idempotent
