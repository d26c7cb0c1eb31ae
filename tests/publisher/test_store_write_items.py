"""``Store.write_items`` (group commit and bulk), checked on both implementations."""

from __future__ import annotations

import json

from test_store import env_record, rec

from publisher.store import ItemWrite, Store, UnknownEnvironment, VersionConflict, audit_entry


def write(env: str, key: str, version: int, expected: int, n: int = 0) -> ItemWrite:
    item = b'{"key":"%s","version":%d}' % (key.encode(), version)
    return ItemWrite(env, "flag", key, item, version, expected, rec(env, n), b'{"n":%d}' % n)


async def make_env(store: Store, key: str = "prod") -> None:
    await store.write_environment(
        env_record(key), expected_version=0, outbox=rec(key, 0), audit=b"{}", now_ms=1
    )


async def test_group_commit_each_write_on_its_own_in_sequence(store: Store) -> None:
    await make_env(store)
    depth = await store.outbox_depth()
    outcomes = await store.write_items(
        [
            write("prod", "a", 1, 0, 1),
            write("prod", "a", 2, 1, 2),  # sees the write before it in the same call
            write("prod", "b", 2, 1, 3),  # b does not exist: conflict, alone
            write("nope", "c", 1, 0, 4),  # unknown environment, alone
            write("prod", "c", 1, 0, 5),
        ],
        atomic=False,
        now_ms=2000,
    )
    ok = [o for o in outcomes if isinstance(o, str)]
    assert len(ok) == 3 and ok == sorted(ok, key=lambda i: tuple(map(int, i.split("-"))))
    assert isinstance(outcomes[2], VersionConflict) and outcomes[2].current == 0
    assert isinstance(outcomes[3], UnknownEnvironment)
    assert json.loads((await store.get_item("prod", "flag", "a")) or b"")["version"] == 2
    assert await store.get_item("prod", "flag", "b") is None
    assert await store.outbox_depth() == depth + 3
    entries = await store.outbox_read(100)
    assert [e.record.value for e in entries[-3:]] == [b"value-1", b"value-2", b"value-5"]
    assert await store.read_audit("prod", 3) == [b'{"n":5}', b'{"n":2}', b'{"n":1}']


async def test_atomic_call_applies_all_or_nothing(store: Store) -> None:
    await make_env(store)
    await store.write_items([write("prod", "a", 1, 0, 1)], atomic=False, now_ms=1)
    depth = await store.outbox_depth()
    outcomes = await store.write_items(
        [write("prod", "b", 1, 0, 2), write("prod", "a", 5, 4, 3), write("prod", "c", 1, 0, 4)],
        atomic=True,
        now_ms=2,
    )
    assert outcomes[0] == "" and outcomes[2] == ""
    assert isinstance(outcomes[1], VersionConflict) and outcomes[1].current == 1
    assert await store.get_item("prod", "flag", "b") is None
    assert await store.outbox_depth() == depth
    assert await store.read_audit("prod", 100) == [b'{"n":1}', b"{}"]
    outcomes = await store.write_items(
        [write("prod", "b", 1, 0, 2), write("prod", "a", 2, 1, 3), write("prod", "b", 2, 1, 4)],
        atomic=True,
        now_ms=3,
    )
    assert all(isinstance(o, str) and o for o in outcomes)
    assert json.loads((await store.get_item("prod", "flag", "b")) or b"")["version"] == 2
    assert await store.outbox_depth() == depth + 3


async def test_empty_call_and_audit_entry_splices_item_json(store: Store) -> None:
    assert await store.write_items([], atomic=True, now_ms=1) == []
    entry = audit_entry(
        actor="ci",
        action="put",
        kind="flag",
        key="k",
        version=2,
        before=b'{"key":"k","version":1}',
        after=b'{"key":"k","version":2,"name":"\xc3\xa9"}',
        comment=None,
        now_ms=5,
        request_id="r1",
    )
    parsed = json.loads(entry)
    assert parsed["before"] == {"key": "k", "version": 1} and parsed["after"]["name"] == "é"
    assert parsed["requestId"] == "r1" and len(parsed["id"]) == 32
    assert set(parsed) == {
        "id", "timeMs", "actor", "action", "kind", "key", "version", "comment", "requestId",
        "before", "after",
    }  # fmt: skip
