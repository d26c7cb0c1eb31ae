"""A fenced producer's leftovers: aiokafka fails futures nobody awaits when its sender dies;
``publisher.log`` marks them seen, so asyncio never logs "exception was never retrieved" (with
a traceback, at ERROR, in whatever code runs when the garbage collector frees them: CI saw one
inside an unrelated relay test that checks its own logs). Real aiokafka objects, no broker:
the sender's death is the one aiokafka's own done callback handles."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import ProducerFenced

from publisher.log import _consume_failures

UNRETRIEVED = "exception was never retrieved"


async def _sender_fenced_after(delay: float) -> None:
    await asyncio.sleep(delay)
    raise ProducerFenced()


def _dead_sender(producer: AIOKafkaProducer, delay: float) -> asyncio.Task[None]:
    """In a transaction, the sender task as ``Sender.start`` makes it, dying of a fence after
    ``delay``."""
    txn: Any = producer._txn_manager
    txn.set_pid_and_epoch(1, 0)  # what InitProducerId gives a started producer
    txn.begin_transaction()
    sender: Any = producer._sender
    sender._sender_task = task = asyncio.create_task(_sender_fenced_after(delay))
    task.add_done_callback(sender._fail_all)
    return task


async def _unretrieved_after(consume: bool, *, sender_still_running: bool) -> list[str]:
    loop = asyncio.get_running_loop()
    reported: list[str] = []
    loop.set_exception_handler(lambda _, context: reported.append(str(context["message"])))
    try:
        producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:9", transactional_id="t")
        task = _dead_sender(producer, 0.05 if sender_still_running else 0)
        if not sender_still_running:
            await asyncio.wait({task})
        if consume:
            _consume_failures(producer)  # as KafkaRecordLog does when it closes a producer
        await asyncio.wait({task})
        await asyncio.sleep(0)  # the done callbacks run
        del producer, task
        gc.collect()
        await asyncio.sleep(0)
        return reported
    finally:
        loop.set_exception_handler(None)


@pytest.mark.parametrize("sender_still_running", [False, True])
async def test_a_dead_producers_failures_are_never_reported_as_unretrieved(
    sender_still_running: bool,
) -> None:
    # Without the consumer the transaction's waiter is reported (the test can fail) ...
    leaked = await _unretrieved_after(False, sender_still_running=sender_still_running)
    assert any(UNRETRIEVED in message for message in leaked), leaked
    # ... with it, nothing: whether the sender died before the producer was closed or after.
    kept = await _unretrieved_after(True, sender_still_running=sender_still_running)
    assert not [message for message in kept if UNRETRIEVED in message], kept
