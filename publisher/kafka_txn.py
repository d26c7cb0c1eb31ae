"""One Kafka transaction in three requests, sent directly: AddPartitionsToTxn, Produce, EndTxn.

``KafkaRecordLog`` starts an aiokafka producer per lease term (its ``InitProducerId`` is what
fences earlier producers) and then sends each transaction itself, through that producer's
client connections and with its producer id and epoch, instead of through aiokafka's
``begin_transaction``/``send_batch``/``commit_transaction``. Why: aiokafka's transaction
takes ~24 event-loop turns (a shielded task to begin, its sender task woken through
``asyncio.wait``, a task per request, a shield to commit); under load each turn waits behind
every ready HTTP request, so a transaction took two to three times as long at concurrency 32
as alone, and the forwarder sends one transaction at a time. Here a transaction is its three
round trips and little else.

Guarantees (what ``KafkaRecordLog.send_batch`` relies on):

- **All or nothing.** ``commit`` returns only after the coordinator accepted the commit of a
  transaction whose every Produce was acknowledged (``acks=all``). Any error raises: the
  transaction was not committed, or its outcome is unknown (EndTxn unanswered); the caller
  treats both as failed and sends the records again after a new start (at-least-once).
- **Never reused after a failure.** After any raise the instance refuses to send
  (``TransactionError``); the log starts a new producer, whose ``InitProducerId`` aborts
  whatever this one left open. So the sequence numbers kept here only need to be right on
  the path where everything succeeded: per partition they start at 0 with the producer id
  and epoch and grow by the records each acknowledged Produce carried.
- **Fencing is reported as such.** ``PRODUCER_FENCED`` and ``INVALID_PRODUCER_EPOCH`` from
  any of the three requests raise ``TransactionFenced``.
- **Order.** One call at a time (the caller's lock); within a call, records keep their order
  per partition (one batch, or consecutive batches with consecutive sequences).
- **What is retried** (until the caller's timeout): the coordinator's "not yet"
  (``CONCURRENT_TRANSACTIONS`` while it still writes the previous transaction's markers,
  ``COORDINATOR_LOAD_IN_PROGRESS``) every ``retry_backoff``; a coordinator that moved (looked
  up again) and the errors Kafka calls retriable (a leader that moved, a topic just created)
  every ``metadata_backoff``, after a metadata refresh. A Produce is retried with the very
  same batch, so with the same sequence numbers: the broker keeps it once. Anything else
  raises.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.client import ConnectionGroup, CoordinationType
from aiokafka.errors import for_code
from aiokafka.protocol.produce import ProduceRequest
from aiokafka.protocol.transaction import AddPartitionsToTxnRequest, EndTxnRequest
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.structs import TopicPartition

__all__ = ["DirectTransactions", "TransactionError", "TransactionFenced"]

_NONE = 0
_LEADER_NOT_AVAILABLE = 5
_COORDINATOR_LOAD_IN_PROGRESS = 14
_COORDINATOR_NOT_AVAILABLE = 15
_NOT_COORDINATOR = 16
_DUPLICATE_SEQUENCE_NUMBER = 46
_INVALID_PRODUCER_EPOCH = 47
_CONCURRENT_TRANSACTIONS = 51
_PRODUCER_FENCED = 90
_FENCED = frozenset({_INVALID_PRODUCER_EPOCH, _PRODUCER_FENCED})
_NOT_YET = frozenset({_COORDINATOR_LOAD_IN_PROGRESS, _CONCURRENT_TRANSACTIONS})
_COORDINATOR_MOVED = frozenset({_COORDINATOR_NOT_AVAILABLE, _NOT_COORDINATOR})
# a batch sent again that the broker already had is answered DUPLICATE_SEQUENCE_NUMBER
_PRODUCED = frozenset({_NONE, _DUPLICATE_SEQUENCE_NUMBER})
# A transaction's AddPartitionsToTxn often arrives while the coordinator still writes the
# previous transaction's commit markers (CONCURRENT_TRANSACTIONS). aiokafka waited 20 ms
# before asking again, most of a batch's time (BENCHMARKS.md, "fencing"); the retry is one
# small request to the coordinator, so ask again after 2 ms.
_NOT_YET_BACKOFF = 0.002


class TransactionError(Exception):
    """The transaction did not commit (or its outcome is unknown)."""


class TransactionFenced(TransactionError):
    """A newer producer of the transactional id started: this one can no longer write."""


class DirectTransactions:
    """Transactions of one started transactional aiokafka producer (module docstring)."""

    def __init__(
        self,
        producer: AIOKafkaProducer,
        topic: str,
        *,
        request_timeout_ms: int,
        max_batch_bytes: int,
        retry_backoff: float = _NOT_YET_BACKOFF,
        metadata_backoff: float = 0.1,
    ) -> None:
        manager: Any = producer._txn_manager  # aiokafka has no public accessor for these
        if manager is None or manager.producer_id < 0:
            raise ValueError("a started transactional producer is needed")
        self._client: Any = producer.client
        self._topic = topic
        self._transactional_id: str = manager.transactional_id
        self._producer_id: int = manager.producer_id
        self._epoch: int = manager.producer_epoch
        self._timeout_ms = request_timeout_ms
        self._max_batch_bytes = max_batch_bytes
        self._retry_backoff = retry_backoff
        self._metadata_backoff = metadata_backoff
        self._sequences: dict[int, int] = {}
        self._coordinator: int | None = None
        self._failed = False

    async def commit(self, batches: Sequence[tuple[int, Sequence[tuple[bytes, bytes]]]]) -> None:
        """Commit ``(partition, [(key, value), ...])`` as one transaction (module docstring).

        A partition appears at most once. Raises ``TransactionError`` (``TransactionFenced``
        when fenced) or the client's error if a request could not be sent or answered.
        """
        if self._failed:
            raise TransactionError("a failed transaction's producer must be started again")
        rounds, counts = self._encode(batches)  # a record too large fails before anything is sent
        self._failed = True  # until the commit below succeeded
        request = AddPartitionsToTxnRequest(
            self._transactional_id,
            self._producer_id,
            self._epoch,
            [(self._topic, [partition for partition, _ in batches])],
        )
        while True:
            response = await self._to_coordinator(request)
            codes = {code for _, errors in response.errors for _, code in errors}
            if not await self._retry(codes, "AddPartitionsToTxn"):
                break
        for batches_of_round in rounds:  # a partition's next batch once its previous one is in
            await self._produce(batches_of_round)
        end = EndTxnRequest(self._transactional_id, self._producer_id, self._epoch, True)
        while await self._retry({(await self._to_coordinator(end)).error_code}, "EndTxn"):
            pass
        for partition, count in counts.items():
            self._sequences[partition] = self._sequences.get(partition, 0) + count
        self._failed = False

    async def _to_coordinator(self, request: Any) -> Any:
        if self._coordinator is None:
            self._coordinator = await self._client.coordinator_lookup(
                CoordinationType.TRANSACTION, self._transactional_id
            )
        return await self._client.send(
            self._coordinator, request, group=ConnectionGroup.COORDINATION
        )

    async def _retry(self, codes: set[int], request: str) -> bool:
        """False if every code is success; True after waiting if each may pass when asked
        again (the caller asks again, within its timeout); else raises."""
        codes.discard(_NONE)
        if not codes:
            return False
        for code in codes:
            if not for_code(code).retriable and code not in _NOT_YET:
                _check(code, request)
        if codes & _COORDINATOR_MOVED:
            self._coordinator = None
        if codes <= _NOT_YET:
            await asyncio.sleep(self._retry_backoff)  # the coordinator is done in a moment
        else:
            # a leader moved or a topic is missing: not a matter of milliseconds, and each
            # attempt costs the cluster a metadata request
            await self._client.force_metadata_update()
            await asyncio.sleep(self._metadata_backoff)
        return True

    def _encode(
        self, batches: Sequence[tuple[int, Sequence[tuple[bytes, bytes]]]]
    ) -> tuple[list[list[tuple[int, bytes]]], dict[int, int]]:
        """The record batches to produce, in rounds: round k holds the k-th batch of every
        partition (Kafka takes one batch per partition per request); and the records per
        partition."""
        now_ms = int(time.time() * 1000)
        limit = self._max_batch_bytes
        rounds: list[list[tuple[int, bytes]]] = []
        counts: dict[int, int] = {}
        for partition, records in batches:
            first = sequence = self._sequences.get(partition, 0)
            builder, appended, k = self._builder(sequence), 0, 0
            for key, value in records:
                if len(key) + len(value) > limit:
                    # the builder would take it alone in an oversized batch; aiokafka refused
                    # it, and so does this (the publisher checks record sizes before the outbox)
                    raise ValueError(f"a record of {len(value)} bytes does not fit a batch")
                if builder.append(appended, now_ms, key, value, []) is None:
                    _put(rounds, k, partition, builder)
                    sequence += appended
                    builder, appended, k = self._builder(sequence), 0, k + 1
                    builder.append(appended, now_ms, key, value, [])
                appended += 1
            _put(rounds, k, partition, builder)
            counts[partition] = sequence + appended - first
        return rounds, counts

    def _builder(self, base_sequence: int) -> Any:
        # magic 2, no compression, transactional
        return DefaultRecordBatchBuilder(
            2, 0, 1, self._producer_id, self._epoch, base_sequence, self._max_batch_bytes
        )

    async def _produce(self, batches: list[tuple[int, bytes]]) -> None:
        """Produce one batch per partition, each to its partition's leader; a batch answered
        with a retriable error is sent again as it was (same sequence: the broker keeps it
        once) after a metadata refresh."""
        while batches:
            by_node: dict[int, list[tuple[int, bytes]]] = {}
            leader_for = self._client.cluster.leader_for_partition
            for partition, data in batches:
                node = leader_for(TopicPartition(self._topic, partition))
                if node is not None and node >= 0:  # else: unanswered, so tried again below
                    by_node.setdefault(node, []).append((partition, data))
            sends = [
                self._client.send(
                    node,
                    ProduceRequest(
                        self._transactional_id, -1, self._timeout_ms, [(self._topic, data)]
                    ),
                )
                for node, data in by_node.items()
            ]
            # one send awaited directly: gather would wrap it in a task (a loop turn more)
            responses = [await sends[0]] if len(sends) == 1 else await asyncio.gather(*sends)
            answered = {
                answer[0]: answer[1]
                for response in responses
                for _, partitions in response.topics
                for answer in partitions
            }
            code_of = {p: answered.get(p, _LEADER_NOT_AVAILABLE) for p, _ in batches}
            again = [(p, data) for p, data in batches if code_of[p] not in _PRODUCED]
            if not await self._retry({code_of[p] for p, _ in again}, "Produce"):
                return
            batches = again


def _put(rounds: list[list[tuple[int, bytes]]], k: int, partition: int, builder: Any) -> None:
    if len(rounds) == k:
        rounds.append([])
    rounds[k].append((partition, bytes(builder.build())))


def _check(code: int, request: str) -> None:
    """Raise the failure that error ``code`` (not 0) of ``request`` means."""
    if code in _FENCED:
        raise TransactionFenced(f"{request}: fenced by a newer producer (error code {code})")
    raise TransactionError(f"{request}: {for_code(code).__name__} (error code {code})")
