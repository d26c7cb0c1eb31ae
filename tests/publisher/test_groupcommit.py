"""Group commit through the API: writes that arrive together share store calls, and each
keeps its own If-Match check and its own answer (Redis + Kafka and in memory)."""

from __future__ import annotations

import asyncio
import json

from publisher_support import Api, read_topic
from test_app import ENV, create_env, flag
from test_forwarder_pipeline import GatedStore

from publisher.app import PUBLISHER
from publisher.groupcommit import GroupCommitter
from publisher.memory_store import MemoryStore
from publisher.store import ItemWrite, StoreUnavailable, VersionConflict, WriteOutcome


async def test_concurrent_writes_share_store_calls_and_all_apply(
    api: Api, kafka_bootstrap: str
) -> None:
    await create_env(api)
    for i in range(40):
        await api.call("PUT", f"{ENV}/prod/flags/f{i}", flag(f"f{i}"))
    committer = api.app[PUBLISHER].committer
    batches, writes = committer.batches, committer.writes
    results = await asyncio.gather(
        *(api.call("PATCH", f"{ENV}/prod/flags/f{i}", {"salt": f"s{i}"}) for i in range(40))
    )
    assert [r[0] for r in results] == [200] * 40
    assert [r[1]["salt"] for r in results] == [f"s{i}" for i in range(40)]
    assert committer.writes - writes == 40
    assert committer.batches - batches < 40  # grouped: fewer store calls than writes
    envelopes = await read_topic(kafka_bootstrap, api.topic, "prod", expect=81)
    salts = {e.key: json.loads(e.item).get("salt") for e in envelopes if e.version == 2}
    assert salts == {f"f{i}": f"s{i}" for i in range(40)}


async def test_if_match_is_checked_per_write_inside_a_group(api: Api) -> None:
    await create_env(api)
    for key in ("a", "b"):
        await api.call("PUT", f"{ENV}/prod/flags/{key}", flag(key))
    calls = [
        api.call("PATCH", f"{ENV}/prod/flags/a", {"salt": "x"}, headers={"If-Match": "1"}),
        api.call("PATCH", f"{ENV}/prod/flags/b", {"salt": "y"}, headers={"If-Match": "5"}),
        api.call("PATCH", f"{ENV}/prod/flags/a", {"salt": "z"}, headers={"If-Match": "1"}),
        api.call("PUT", f"{ENV}/prod/flags/c", flag("c"), headers={"If-Match": "0"}),
    ]
    results = await asyncio.gather(*calls)
    assert [r[0] for r in results] == [200, 412, 412, 201]
    assert results[1][1]["currentVersion"] == 1 and results[2][1]["currentVersion"] == 2
    _, a, _ = await api.call("GET", f"{ENV}/prod/flags/a")
    assert a["salt"] == "x" and a["version"] == 2


class _FailingStore(MemoryStore):
    async def write_items(self, *args: object, **kwargs: object) -> list[WriteOutcome]:
        raise StoreUnavailable("Redis is unreachable (test)")


def _write(key: str, expected: int) -> ItemWrite:
    from test_store import rec

    return ItemWrite("prod", "flag", key, b"{}", expected + 1, expected, rec("prod", 1), b"{}")


async def test_committer_groups_by_arrival_and_reports_each_outcome() -> None:
    store = MemoryStore()
    from test_store_write_items import make_env

    await make_env(store)
    committer = GroupCommitter(store, max_writes=3)
    outcomes = await asyncio.gather(*(committer.commit(_write(f"k{i}", 0)) for i in range(7)))
    assert all(isinstance(o, str) for o in outcomes)
    # the first write goes alone (no timer), the six that queued meanwhile in two groups
    assert committer.batches == 3 and committer.writes == 7
    stale = await committer.commit(_write("k0", 0))
    assert isinstance(stale, VersionConflict) and stale.current == 1


async def test_a_store_failure_fails_every_write_of_the_group() -> None:
    committer = GroupCommitter(_FailingStore())
    results = await asyncio.gather(
        *(committer.commit(_write(f"k{i}", 0)) for i in range(3)), return_exceptions=True
    )
    assert all(isinstance(r, StoreUnavailable) for r in results)
    again = await asyncio.gather(committer.commit(_write("k", 0)), return_exceptions=True)
    assert isinstance(again[0], StoreUnavailable)  # the committer keeps working


async def test_settled_waits_for_the_store_call_in_flight_and_no_later_one() -> None:
    from test_store_write_items import make_env

    store = GatedStore()
    store.gate.set()
    await make_env(store)
    committer = GroupCommitter(store)
    await asyncio.wait_for(committer.settled(), 1)  # nothing in flight: at once
    store.gate.clear()
    first = asyncio.create_task(committer.commit(_write("a", 0)))
    await asyncio.sleep(0)
    queued = asyncio.create_task(committer.commit(_write("b", 0)))  # queued behind the first
    settled = asyncio.create_task(committer.settled())
    await asyncio.sleep(0.02)
    assert not settled.done()  # the first group's store call has not returned
    cancelled = asyncio.create_task(committer.settled())
    await asyncio.sleep(0)
    cancelled.cancel()  # a waiter that gives up does not disturb the commit
    store.gate.set()
    await asyncio.wait_for(settled, 1)
    assert first.done() and isinstance(first.result(), str)  # its writer's outcome is set
    assert isinstance(await queued, str) and isinstance(await first, str)
    assert committer.batches == 2
