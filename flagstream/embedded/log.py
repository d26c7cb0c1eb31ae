"""``SQLiteLog``: a partitioned record log in the embedded SQLite file, the publisher's
``RecordLog``; ``SQLiteLog.source()`` gives the relay's ``RecordSource`` readers.

Rules (the ones Kafka gives flagstream, for one process and one file):

- **Partitions and offsets.** A record goes to partition
  ``protocol.keys.partition_for(partition_env, partitions)``; offsets count from 0 in each
  partition and are never reused (the next offset of each partition is stored, not derived).
- **Durability and order.** ``send`` returns once the record is committed to disk (see
  ``database``: ``synchronous=FULL``). Sends are committed in the order they were called:
  each is submitted to the database's single thread before its first ``await``.
- **Epoch.** The log's ``topic_id`` (a UUID) and partition count are drawn when the file is
  created and stored with it, so stream positions ``{epoch}:{offset}`` stay valid across
  restarts: an SDK that reconnects to a restarted ``flagstream dev`` resumes without a
  ``put``. The partition count of an existing file wins over the one asked for.
- **Compaction.** ``compact()`` deletes every record that has a later record with the same
  key in its partition (what a compacted Kafka topic may do); ``open`` runs it once. Readers
  see offsets with gaps, which ``RecordSource`` allows; the state they rebuild is the same.
- **No fencing, no transactions.** One process, one publisher, one writer: there is no
  deposed forwarder to fence (``publisher.log.FencingRecordLog`` is for Kafka), and a record
  is readable once its write committed, so readers need no isolation level.
- **Readers.** Each ``source()`` has its own positions. A waiting ``fetch`` wakes as soon as a
  record of this process is committed (no polling interval), or after its timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import uuid
from collections.abc import Mapping

from flagstream.embedded.database import Database, DatabaseUnavailable
from protocol.keys import partition_for
from relay.source import SourceBatch, SourceLayout, SourceUnavailable
from relay.state import SourceRecord

__all__ = ["LogUnavailable", "SQLiteLog", "SQLiteSource"]

# At most this many records per fetch (like KafkaSource's max_records), so a long bootstrap
# is applied in slices and the event loop keeps answering meanwhile.
MAX_FETCH_RECORDS = 10_000


class LogUnavailable(ConnectionError):
    """``send`` could not commit the record (disk full, I/O error): the forwarder retries."""


class SQLiteLog:
    """A ``publisher.log.RecordLog`` in a ``Database``; ``source()`` gives ``RecordSource``s."""

    def __init__(self, db: Database, *, partitions: int = 6) -> None:
        if partitions < 1:
            raise ValueError("partitions must be >= 1")
        self.db = db
        self._asked_partitions = partitions
        self._partitions: int | None = None
        self.topic_id: str | None = None
        # Replaced (after being set) on every commit: readers waiting on the current event
        # are woken by the next record.
        self._appended = asyncio.Event()

    async def open(self) -> None:
        """Create the log's identity on first use, read it otherwise; compact once."""
        self.topic_id, self._partitions = await self.db.write(
            _ensure_layout, self._asked_partitions, str(uuid.uuid4())
        )
        await self.compact()

    def layout(self) -> SourceLayout:
        if self.topic_id is None or self._partitions is None:
            raise SourceUnavailable("the log is not open")
        return SourceLayout(topic_id=self.topic_id, partitions=self._partitions)

    async def compact(self) -> int:
        """Delete records superseded by a later one with the same key; return how many."""
        return await self.db.write(_compact)

    # --- RecordLog ------------------------------------------------------------------------

    async def start(self) -> None:
        """The log is ready once opened; nothing to connect to."""

    async def stop(self) -> None:
        """Nothing to flush: a record is committed when ``send`` returns."""

    async def partitions(self) -> int:
        return self.layout().partitions

    async def send(self, partition_env: str, key: bytes, value: bytes) -> None:
        partition = partition_for(partition_env, self.layout().partitions)
        try:
            await self.db.write(_append, partition, key, value)
        except DatabaseUnavailable as exc:
            raise LogUnavailable(str(exc)) from exc
        self._appended.set()
        self._appended = asyncio.Event()

    # --- readers --------------------------------------------------------------------------

    def source(self) -> SQLiteSource:
        """A new reader with its own positions (one per relay)."""
        return SQLiteSource(self)


class SQLiteSource:
    """A ``relay.source.RecordSource`` reading one ``SQLiteLog``; see the module rules."""

    def __init__(self, log: SQLiteLog) -> None:
        self.log = log
        self._positions: dict[int, int] | None = None

    async def start(self, from_offsets: Mapping[int, int]) -> SourceLayout:
        layout = self.log.layout()
        ends = await self.high_watermarks()
        # Like a Kafka seek: an offset past the end waits at the end (here: is clamped).
        self._positions = {
            p: min(max(0, from_offsets.get(p, 0)), ends.get(p, 0)) for p in range(layout.partitions)
        }
        return layout

    async def stop(self) -> None:
        self._positions = None

    async def high_watermarks(self) -> dict[int, int]:
        try:
            return await self.log.db.read(_high_watermarks)
        except DatabaseUnavailable as exc:
            raise SourceUnavailable(str(exc)) from exc

    async def fetch(self, timeout_ms: int) -> SourceBatch:
        if self._positions is None:
            raise SourceUnavailable("not started")
        appended = self.log._appended  # taken before reading: a later commit wakes us
        batch = await self._take()
        if batch.records:
            return batch
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(appended.wait(), max(0, timeout_ms) / 1000)
        return await self._take()

    async def _take(self) -> SourceBatch:
        positions = self._positions
        if positions is None:
            raise SourceUnavailable("not started")
        try:
            records, ends = await self.log.db.read(_read_from, dict(positions), MAX_FETCH_RECORDS)
        except DatabaseUnavailable as exc:
            raise SourceUnavailable(str(exc)) from exc
        for partition, end in ends.items():
            positions[partition] = max(positions.get(partition, 0), end)
        return SourceBatch(records, dict(positions))


# --- the transactions ------------------------------------------------------------------------


def _ensure_layout(tx: sqlite3.Connection, partitions: int, new_id: str) -> tuple[str, int]:
    rows = dict(tx.execute("SELECT name, value FROM meta WHERE name IN ('topic_id', 'partitions')"))
    if "topic_id" in rows:
        return str(rows["topic_id"]), int(rows["partitions"])
    tx.executemany(
        "INSERT INTO meta (name, value) VALUES (?, ?)",
        [("topic_id", new_id), ("partitions", str(partitions))],
    )
    tx.executemany(
        "INSERT INTO log_partitions (partition, next_offset) VALUES (?, 0)",
        [(p,) for p in range(partitions)],
    )
    return new_id, partitions


def _append(tx: sqlite3.Connection, partition: int, key: bytes, value: bytes) -> int:
    row = tx.execute(
        "UPDATE log_partitions SET next_offset = next_offset + 1 WHERE partition = ? "
        "RETURNING next_offset - 1",
        (partition,),
    ).fetchone()
    offset = int(row[0])
    tx.execute(
        "INSERT INTO log_records (partition, offset, record_key, record_value) VALUES (?, ?, ?, ?)",
        (partition, offset, key, value),
    )
    return offset


def _high_watermarks(tx: sqlite3.Connection) -> dict[int, int]:
    return {
        int(p): int(n) for p, n in tx.execute("SELECT partition, next_offset FROM log_partitions")
    }


def _read_from(
    tx: sqlite3.Connection, positions: dict[int, int], budget: int
) -> tuple[list[SourceRecord], dict[int, int]]:
    """Records at or after each position, and each partition's next position after them."""
    ends = _high_watermarks(tx)
    out: list[SourceRecord] = []
    next_positions: dict[int, int] = {}
    for partition, position in sorted(positions.items()):
        if budget <= 0:
            break
        end = ends.get(partition, 0)
        if position >= end:
            continue
        rows = tx.execute(
            "SELECT offset, record_key, record_value FROM log_records "
            "WHERE partition = ? AND offset >= ? ORDER BY offset LIMIT ?",
            (partition, position, budget),
        ).fetchall()
        for offset, key, value in rows:
            out.append(
                SourceRecord(
                    partition,
                    int(offset),
                    None if key is None else bytes(key),
                    None if value is None else bytes(value),
                )
            )
        budget -= len(rows)
        # Everything up to the end was read unless the budget cut it short: then resume
        # after the last record (compaction gaps after it are skipped on the next read).
        next_positions[partition] = end if budget > 0 else int(rows[-1][0]) + 1
    return out, next_positions


def _compact(tx: sqlite3.Connection) -> int:
    return tx.execute(
        "DELETE FROM log_records WHERE record_key IS NOT NULL AND offset < ("
        " SELECT max(later.offset) FROM log_records AS later"
        " WHERE later.partition = log_records.partition"
        " AND later.record_key = log_records.record_key)"
    ).rowcount
