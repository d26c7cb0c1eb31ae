"""The ``GovernanceStore`` contract, on Redis, SQLite and in memory (same guarantees, same
tests; the in-memory store is the reference)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from embedded_support import embedded

from flagstream.embedded.governance import SQLiteGovernanceStore
from protocol.envelope import decode_envelope
from publisher.governance.memory_store import MemoryGovernanceStore
from publisher.governance.redis_store import RedisGovernanceStore
from publisher.governance.store import (
    GovernanceStore,
    NotLeaseHolder,
    RecordUpdate,
    ScheduledRef,
    SecretIndex,
    StaleRecord,
)
from publisher.memory_store import MemoryStore
from publisher.redis_store import RedisStore
from publisher.store import (
    ItemWrite,
    PolicyChanged,
    Store,
    UnknownEnvironment,
    VersionConflict,
    outbox_record,
)


@dataclass
class Stores:
    store: Store
    gov: GovernanceStore


@pytest.fixture(params=[pytest.param("redis", marks=pytest.mark.integration), "memory", "sqlite"])
async def stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stores]:
    if request.param == "memory":
        memory = MemoryStore()
        yield Stores(memory, MemoryGovernanceStore(memory))
        return
    if request.param == "sqlite":
        async with embedded(tmp_path / "data") as backends:
            yield Stores(backends.store, SQLiteGovernanceStore(backends.store))
        return
    redis_url: str = request.getfixturevalue("redis_url")
    unique_name: str = request.getfixturevalue("unique_name")
    redis = RedisStore(redis_url, prefix=f"{unique_name}:")
    try:
        yield Stores(redis, RedisGovernanceStore(redis))
    finally:
        await redis.delete_all()
        await redis.close()


async def make_env(s: Stores, env: str = "prod") -> None:
    from protocol.environment import EnvironmentRecord

    record = EnvironmentRecord(env, env, 1, (), (), "abc")
    await s.store.write_environment(
        record,
        expected_version=0,
        outbox=outbox_record("env", env, env, 1, "t", record.to_json(), deleted=False, now_ms=1),
        audit=b'{"action":"create-environment"}',
        now_ms=1,
    )


def upd(
    rid: str,
    expected: int,
    *,
    value: bytes = b"{}",
    seq: int = 1,
    at: int | None = None,
    secret: SecretIndex | None = None,
    collection: str = "change-request",
) -> RecordUpdate:
    return RecordUpdate(
        collection,  # type: ignore[arg-type]
        "prod",
        rid,
        value,
        expected,
        expected + 1,
        seq,
        at,
        secret,
    )


def item_write(version: int, *, salt: str = "x", policy: int | None = None) -> ItemWrite:
    item = json.dumps({"key": "f1", "version": version, "salt": salt}).encode()
    return ItemWrite(
        "prod",
        "flag",
        "f1",
        item,
        version,
        version - 1,
        outbox_record("flag", "prod", "f1", version, "t", item, deleted=False, now_ms=5),
        json.dumps({"action": "patch", "version": version}).encode(),
        policy,
    )


async def test_update_is_compare_and_set_on_revision_with_its_audit_entry(stores: Stores) -> None:
    await make_env(stores)
    g = stores.gov
    await g.update(upd("cr-1", 0, value=b'{"r":1}'), audit=b'{"a":1}')
    with pytest.raises(StaleRecord) as info:
        await g.update(upd("cr-1", 0, value=b'{"r":"again"}'), audit=b'{"a":2}')
    assert info.value.current == 1
    with pytest.raises(StaleRecord):
        await g.update(upd("cr-1", 5), audit=b'{"a":3}')
    await g.update(upd("cr-1", 1, value=b'{"r":2}'), audit=None)
    assert await g.get("change-request", "prod", "cr-1") == b'{"r":2}'
    assert await g.get("change-request", "prod", "nope") is None
    assert await g.list_records("change-request", "prod") == [b'{"r":2}']
    audit = await stores.store.read_audit("prod", 10)
    assert audit[0] == b'{"a":1}' and len(audit) == 2  # the refused ones appended nothing


async def test_schedule_orders_by_time_then_creation_and_leaves_with_the_step(
    stores: Stores,
) -> None:
    g = stores.gov
    await g.update(upd("cr-3", 0, seq=3, at=1000), audit=None)
    await g.update(upd("cr-2", 0, seq=2, at=1000), audit=None)
    await g.update(upd("cr-10", 0, seq=10, at=1000), audit=None)
    await g.update(upd("cr-1", 0, seq=1, at=2000), audit=None)
    await g.update(upd("rollout-4", 0, seq=4, at=500, collection="rollout"), audit=None)
    assert [r.id for r in await g.due(999, 10)] == ["rollout-4"]
    due = await g.due(1500, 10)
    assert [r.id for r in due] == ["rollout-4", "cr-2", "cr-3", "cr-10"]
    assert due[1] == ScheduledRef("change-request", "prod", "cr-2", 1000)
    assert [r.id for r in await g.due(5000, 2)] == ["rollout-4", "cr-2"]
    await g.update(upd("cr-2", 1, seq=2, at=None), audit=None)  # unscheduled by its next state
    assert [r.id for r in await g.due(5000, 10)] == ["rollout-4", "cr-3", "cr-10", "cr-1"]


async def test_commit_write_is_one_atomic_step(stores: Stores) -> None:
    await make_env(stores)
    g, s = stores.gov, stores.store
    await g.update(upd("cr-1", 0, at=10), audit=None)
    outbox_before = await s.outbox_depth()

    entry = await g.commit_write(
        upd("cr-1", 1, value=b'{"applied":1}', at=None), item_write(1), now_ms=5, lease_owner=None
    )
    assert await s.outbox_contains(entry)
    assert json.loads(await s.get_item("prod", "flag", "f1") or b"")["version"] == 1
    assert await g.get("change-request", "prod", "cr-1") == b'{"applied":1}'
    assert await g.due(10**15, 10) == []
    assert await s.outbox_depth() == outbox_before + 1
    assert json.loads((await s.read_audit("prod", 1))[0]) == {"action": "patch", "version": 1}
    records = await s.outbox_read(100)
    assert decode_envelope(records[-1].record.value).version == 1

    # a stale record: nothing written, neither the item nor the outbox nor the audit
    audit_len = len(await s.read_audit("prod", 100))
    with pytest.raises(StaleRecord):
        await g.commit_write(upd("cr-1", 1), item_write(2), now_ms=5, lease_owner=None)
    # a version conflict: the record is not changed either
    with pytest.raises(VersionConflict) as info:
        await g.commit_write(upd("cr-1", 2, value=b"{}"), item_write(5), now_ms=5, lease_owner=None)
    assert info.value.current == 1
    assert json.loads(await s.get_item("prod", "flag", "f1") or b"")["version"] == 1
    assert await g.get("change-request", "prod", "cr-1") == b'{"applied":1}'
    assert await s.outbox_depth() == outbox_before + 1
    assert len(await s.read_audit("prod", 100)) == audit_len


async def test_commit_write_is_fenced_by_the_lease(stores: Stores) -> None:
    await make_env(stores)
    g, s = stores.gov, stores.store
    await g.update(upd("cr-1", 0, at=10), audit=None)
    assert await s.acquire_lease("leader", 10_000) is not None
    with pytest.raises(NotLeaseHolder):
        await g.commit_write(upd("cr-1", 1), item_write(1), now_ms=5, lease_owner="deposed")
    assert await s.get_item("prod", "flag", "f1") is None
    assert [r.id for r in await g.due(10**15, 10)] == ["cr-1"]
    await g.commit_write(upd("cr-1", 1), item_write(1), now_ms=5, lease_owner="leader")
    assert await g.due(10**15, 10) == []


async def test_commit_write_to_an_unknown_environment_changes_nothing(stores: Stores) -> None:
    g = stores.gov
    await g.update(upd("cr-1", 0, at=10), audit=None)
    with pytest.raises(UnknownEnvironment):
        await g.commit_write(upd("cr-1", 1), item_write(1), now_ms=5, lease_owner=None)
    assert [r.id for r in await g.due(10**15, 10)] == ["cr-1"]


async def test_secret_index_and_sequence_and_rate(stores: Stores) -> None:
    g = stores.gov
    digest = "ab" * 32
    await g.update(
        upd("trigger-1", 0, collection="trigger", secret=SecretIndex(digest, True)), audit=None
    )
    assert await g.find_secret(digest) == ("prod", "trigger-1")
    assert await g.find_secret("cd" * 32) is None
    await g.update(
        upd("trigger-1", 1, collection="trigger", secret=SecretIndex(digest, False)), audit=None
    )
    assert await g.find_secret(digest) is None

    seqs = [await g.next_seq() for _ in range(5)]
    assert seqs == sorted(set(seqs))

    window = 60_000
    now = 1_000_000_000_123
    assert [await g.take_rate("b", 3, window, now) for _ in range(3)] == [0, 0, 0]
    wait = await g.take_rate("b", 3, window, now)
    assert 0 < wait <= window
    assert await g.take_rate("other", 3, window, now) == 0
    assert await g.take_rate("b", 3, window, now + window) == 0  # the next window


async def test_the_policy_is_the_record_the_item_writes_check(stores: Stores) -> None:
    """An item write carrying a policy revision commits only under that revision, checked in
    the store's atomic step: by ``Store.write_items`` (group commit and bulk) and by
    ``commit_write``; a write without one is not checked."""
    await make_env(stores)
    g, s = stores.gov, stores.store
    await g.update(upd("cr-1", 0), audit=None)
    write = item_write(1, policy=0)  # decided under "no policy stored"
    assert isinstance((await s.write_items([write], atomic=False, now_ms=5))[0], str)
    await g.update(upd("prod", 0, collection="policy"), audit=b'{"action":"update-policy"}')
    outcomes = await s.write_items([item_write(2, policy=0)], atomic=False, now_ms=5)
    assert isinstance(outcomes[0], PolicyChanged) and outcomes[0].current == 1
    outcomes = await s.write_items(
        [item_write(2, policy=1, salt="a"), item_write(3, policy=0, salt="b")],
        atomic=True,
        now_ms=5,
    )
    assert outcomes[0] == "" and isinstance(outcomes[1], PolicyChanged)
    with pytest.raises(PolicyChanged) as info:
        await g.commit_write(upd("cr-1", 1), item_write(2, policy=0), now_ms=5, lease_owner=None)
    assert info.value.current == 1
    assert json.loads(await s.get_item("prod", "flag", "f1") or b"")["version"] == 1
    assert await g.get("change-request", "prod", "cr-1") == b"{}"
    await g.commit_write(upd("cr-1", 1), item_write(2, policy=1), now_ms=5, lease_owner=None)
    outcomes = await s.write_items([item_write(3, salt="unchecked")], atomic=False, now_ms=5)
    assert isinstance(outcomes[0], str)
    # group commit: one write's stale policy does not fail the others
    outcomes = await s.write_items(
        [item_write(4, policy=0, salt="stale"), item_write(4, policy=1, salt="ok")],
        atomic=False,
        now_ms=5,
    )
    assert isinstance(outcomes[0], PolicyChanged) and isinstance(outcomes[1], str)
    stored = json.loads(await s.get_item("prod", "flag", "f1") or b"")
    assert (stored["version"], stored["salt"]) == (4, "ok")


async def test_sqlite_records_survive_a_restart(tmp_path: Path) -> None:
    """``flagstream dev`` keeps governance in its data directory: records, the schedule, the
    secret index, the sequence and the policy revision are there after a reopen."""
    async with embedded(tmp_path / "data") as backends:
        s = Stores(backends.store, SQLiteGovernanceStore(backends.store))
        await make_env(s)
        await s.gov.update(upd("cr-1", 0, seq=1, at=1000, value=b'{"cr":1}'), audit=None)
        await s.gov.update(
            upd("trigger-1", 0, collection="trigger", secret=SecretIndex("ab", True)), audit=None
        )
        await s.gov.update(upd("prod", 0, collection="policy"), audit=None)
        seq = await s.gov.next_seq()
    async with embedded(tmp_path / "data") as backends:
        g = SQLiteGovernanceStore(backends.store)
        assert await g.get("change-request", "prod", "cr-1") == b'{"cr":1}'
        assert [r.id for r in await g.due(2000, 10)] == ["cr-1"]
        assert await g.find_secret("ab") == ("prod", "trigger-1")
        assert await g.next_seq() == seq + 1
        outcomes = await backends.store.write_items(
            [item_write(1, policy=0)], atomic=False, now_ms=5
        )
        assert isinstance(outcomes[0], PolicyChanged) and outcomes[0].current == 1


def test_the_redis_script_is_built_from_the_write_fragments() -> None:
    """The governed write is the RedisStore's single-write frame around its item fragments,
    with the governance parts in between: a change there is a change here."""
    from publisher import redis_store
    from publisher.governance import redis_store as gov_redis

    script = gov_redis._COMMIT_WRITE
    assert script.startswith(redis_store._WRITE_HEAD)
    assert script.endswith(redis_store._WRITE_TAIL)
    for fragment in (
        redis_store._LUA_CHECK_ITEM,
        redis_store._LUA_STORE_ITEM,
        redis_store._LUA_APPEND,
    ):
        assert fragment in script
    assert "cjson" not in script  # no JSON parsing in Lua: revisions are kept apart
