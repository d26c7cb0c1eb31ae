"""An in-memory partitioned log: the publisher's ``RecordLog`` and the relay's ``RecordSource``.

``flagstream dev`` and the in-memory test runs use it in place of Kafka, so everything above
the log (the publisher's outbox forwarder, the relay's follower, state, hub and endpoints)
is the same code as in production.

Rules (the same ones Kafka gives flagstream, minus durability across processes):

- **Partitions and offsets.** A record goes to partition
  ``protocol.keys.partition_for(partition_env, partitions)``; its offset is its index in that
  partition (0, 1, 2, …). Nothing is ever compacted or removed, which a compacted topic
  allows: a reader simply sees every version of an item, in order.
- **Acknowledgement.** ``send`` appends synchronously and returns: in memory, appended is
  as durable as it gets. Records whose ``send`` calls start in a given order are appended in
  that order (there is no ``await`` before the append).
- **Readers.** ``MemoryLog`` is the writer's face (``RecordLog``). ``MemoryLog.source()``
  returns a reader (``RecordSource``) with its own positions; any number of relays can read
  one log, each from the beginning. A waiting ``fetch`` wakes as soon as a record is
  appended, so the tail latency is a task switch, not a poll interval.
- **Epoch.** The log has a random ``topic_id`` like a Kafka topic id; ``recreate()`` empties
  the log and draws a new one, as deleting and re-creating a topic would (readers then see a
  new epoch).
- **No fencing, no transactions.** The log has exactly one writer, the publisher in the same
  process, so there is no deposed forwarder to fence (``publisher.log.FencingRecordLog`` is
  for Kafka): a batch is appended as sent, and every record is "committed" when appended.
- **Outages.** Setting ``available = False`` makes ``send`` raise ``LogUnavailable`` and
  every reader call raise ``SourceUnavailable``, so outage behaviour can be tested without
  Kafka; setting it back resumes where everything was.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Mapping

from protocol.keys import partition_for
from relay.source import SourceBatch, SourceLayout, SourceUnavailable
from relay.state import SourceRecord

__all__ = ["LogUnavailable", "MemoryLog", "MemorySource"]

DEFAULT_PARTITIONS = 6
# At most this many records per fetch, like KafkaSource's max_records: a long bootstrap is
# applied in slices so the relay's event loop keeps answering requests meanwhile.
MAX_FETCH_RECORDS = 10_000


class LogUnavailable(ConnectionError):
    """``send`` on a log marked unavailable (a simulated broker outage)."""


class MemoryLog:
    """A ``publisher.log.RecordLog`` held in lists; ``source()`` gives ``RecordSource`` readers."""

    def __init__(self, partitions: int = DEFAULT_PARTITIONS) -> None:
        if partitions < 1:
            raise ValueError("partitions must be >= 1")
        self._partition_count = partitions
        self.topic_id = str(uuid.uuid4())
        self._records: list[list[SourceRecord]] = [[] for _ in range(partitions)]
        self.available = True
        # Replaced (after being set) on every append: a reader that waits on the current
        # event is woken by the next record, whichever reader or loop created it.
        self._appended = asyncio.Event()

    # --- RecordLog (the publisher's side) ----------------------------------------------

    async def start(self) -> None:
        """Nothing to connect to; the "topic" exists from construction."""

    async def stop(self) -> None:
        """Nothing to flush: records are appended when ``send`` returns."""

    async def partitions(self) -> int:
        return self._partition_count

    async def send(self, partition_env: str, key: bytes, value: bytes) -> None:
        if not self.available:
            raise LogUnavailable("the in-memory log is marked unavailable")
        self.append(partition_for(partition_env, self._partition_count), key, value)

    # --- direct access (tests, and the reader below) ------------------------------------

    def append(self, partition: int, key: bytes | None, value: bytes | None) -> int:
        """Append one raw record to ``partition``; return its offset. Wakes waiting readers."""
        records = self._records[partition]
        offset = len(records)
        records.append(SourceRecord(partition, offset, key, value))
        self._appended.set()
        self._appended = asyncio.Event()
        return offset

    def records(self, partition: int) -> list[SourceRecord]:
        """A copy of a partition's records, in offset order."""
        return list(self._records[partition])

    def high_watermarks(self) -> dict[int, int]:
        """The next offset to be written in every partition."""
        return {p: len(records) for p, records in enumerate(self._records)}

    def recreate(self) -> None:
        """Empty the log under a new topic id (a deleted and re-created topic: new epoch)."""
        self.topic_id = str(uuid.uuid4())
        self._records = [[] for _ in range(self._partition_count)]
        self._appended.set()
        self._appended = asyncio.Event()

    def layout(self) -> SourceLayout:
        return SourceLayout(topic_id=self.topic_id, partitions=self._partition_count)

    def source(self) -> MemorySource:
        """A new reader with its own positions (one per relay)."""
        return MemorySource(self)


class MemorySource:
    """A ``relay.source.RecordSource`` reading one ``MemoryLog``; see the module rules."""

    def __init__(self, log: MemoryLog) -> None:
        self.log = log
        self._positions: dict[int, int] | None = None
        self._topic_id: str | None = None

    def _check(self) -> dict[int, int]:
        if not self.log.available:
            raise SourceUnavailable("the in-memory log is marked unavailable")
        if self._positions is None:
            raise SourceUnavailable("not started")
        if self._topic_id != self.log.topic_id:
            # The log was re-created under us: like Kafka, reading on would mix two
            # incarnations' offsets. Fail so the follower restarts and sees the new epoch.
            raise SourceUnavailable("the log was re-created")
        return self._positions

    async def start(self, from_offsets: Mapping[int, int]) -> SourceLayout:
        if not self.log.available:
            raise SourceUnavailable("the in-memory log is marked unavailable")
        layout = self.log.layout()
        ends = self.log.high_watermarks()
        # Like a Kafka seek: an offset past the end waits at the end (here: is clamped).
        self._positions = {
            p: min(max(0, from_offsets.get(p, 0)), ends[p]) for p in range(layout.partitions)
        }
        self._topic_id = layout.topic_id
        return layout

    async def stop(self) -> None:
        self._positions = None
        self._topic_id = None

    async def high_watermarks(self) -> dict[int, int]:
        self._check()
        return self.log.high_watermarks()

    async def fetch(self, timeout_ms: int) -> SourceBatch:
        positions = self._check()
        batch = self._take(positions)
        if batch.records:
            return batch
        appended = self.log._appended
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(appended.wait(), max(0, timeout_ms) / 1000)
        positions = self._check()
        return self._take(positions)

    def _take(self, positions: dict[int, int]) -> SourceBatch:
        out: list[SourceRecord] = []
        budget = MAX_FETCH_RECORDS
        for partition, position in positions.items():
            if budget <= 0:
                break
            records = self.log._records[partition]
            if position < len(records):
                chunk = records[position : position + budget]
                out.extend(chunk)
                budget -= len(chunk)
                positions[partition] = position + len(chunk)
        return SourceBatch(out, dict(positions))
