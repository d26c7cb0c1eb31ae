"""In-memory stand-ins for the Kafka helpers of the relay and publisher tests.

The relay and publisher integration tests talk to Kafka through two seams:

- relay tests write records with ``relay_support.Producer(bootstrap, topic, partitions)``
  (``async with``, ``send(envelope, value=None) -> (partition, offset)``, ``send_many``) and
  read them with ``run_relay(settings, source)``;
- publisher tests build apps with ``make_api(store, log=...)`` over a ``RecordLog``.

``MemoryProducer`` has the ``Producer`` interface over a ``flagstream.memlog.MemoryLog``;
``log.source()`` is the matching ``RecordSource`` for ``run_relay``; a ``MemoryLog`` is itself
a ``RecordLog`` for ``make_api``. Parametrizing a test's ``producer``/source fixtures over
``("kafka", "memory")`` with these runs the same assertions on the in-memory backends, as
``flagstream dev`` uses them.
"""

from __future__ import annotations

from collections.abc import Iterable

from flagstream.memlog import MemoryLog
from protocol.envelope import Envelope, encode_envelope
from protocol.keys import partition_for, record_key


class MemoryProducer:
    """``relay_support.Producer``'s interface, appending to a ``MemoryLog``."""

    def __init__(self, log: MemoryLog) -> None:
        self.log = log

    @property
    def partitions(self) -> int:
        return len(self.log.high_watermarks())

    async def __aenter__(self) -> MemoryProducer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def send(self, e: Envelope, *, value: bytes | None = None) -> tuple[int, int]:
        """Append like the publisher does (key, partition by environment); (partition, offset)."""
        partition = partition_for(e.env, self.partitions)
        offset = self.log.append(
            partition,
            record_key(e.env, e.kind, e.key),
            encode_envelope(e) if value is None else value,
        )
        return partition, offset

    async def send_many(self, envelopes: Iterable[Envelope]) -> None:
        for e in envelopes:
            await self.send(e)
