"""In-memory stand-ins for the Kafka helpers of the relay and publisher tests.

The relay and publisher integration tests talk to Kafka through two seams:

- relay tests write records with ``relay_support.Producer(bootstrap, topic, partitions)``
  (``async with``, ``send(envelope, value=None) -> (partition, offset)``, ``send_many``) and
  read them with ``run_relay(settings, source)``;
- publisher tests build apps with ``make_api(store, log=...)`` over a ``RecordLog``.

``MemoryProducer`` has the ``Producer`` interface over a ``flagstream.memlog.MemoryLog``;
``log.source()`` is the matching ``RecordSource`` for ``run_relay``; a ``MemoryLog`` is itself
a ``RecordLog`` for ``make_api``. tests/relay/conftest.py (``backend``) and
tests/publisher/conftest.py (``api``) use them to run the same integration tests once more
on the in-memory backends, as ``flagstream dev`` uses them.
"""

from __future__ import annotations

# MemoryProducer lives next to the Kafka ``Producer`` it stands in for (tests/relay is on
# sys.path, see tests/conftest.py); re-exported here for the tests of tests/flagstream.
from relay_support import MemoryProducer

__all__ = ["MemoryProducer"]
