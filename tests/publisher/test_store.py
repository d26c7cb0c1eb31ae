"""The ``Store`` contract, checked on both implementations (Redis and in-memory)."""

from __future__ import annotations

import asyncio

import pytest

from protocol.environment import CredentialHash, EnvironmentRecord
from publisher.store import (
    EnvironmentExists,
    KafkaRecord,
    Store,
    TokenRecord,
    UnknownEnvironment,
    VersionConflict,
)


def env_record(key: str = "prod", version: int = 1) -> EnvironmentRecord:
    return EnvironmentRecord(key, key.title(), version, (CredentialHash("a" * 64),), (), "c" * 24)


def rec(env: str, n: int) -> KafkaRecord:
    return KafkaRecord(env, f"{env}/flag/k{n}".encode(), f"value-{n}".encode())


async def put(store: Store, env: str, key: str, version: int, expected: int, n: int = 0) -> str:
    return await store.write_item(
        env,
        "flag",
        key,
        b'{"key":"%s","version":%d}' % (key.encode(), version),
        version=version,
        expected_version=expected,
        outbox=rec(env, n),
        audit=b'{"n":%d}' % n,
        now_ms=1000 + n,
    )


async def test_environment_create_and_compare_and_set(store: Store) -> None:
    await store.write_environment(
        env_record(), expected_version=0, outbox=rec("prod", 0), audit=b"{}", now_ms=1
    )
    with pytest.raises(EnvironmentExists):
        await store.write_environment(
            env_record(), expected_version=0, outbox=rec("prod", 0), audit=b"{}", now_ms=1
        )
    with pytest.raises(VersionConflict) as conflict:
        await store.write_environment(
            env_record(version=3), expected_version=2, outbox=rec("prod", 0), audit=b"{}", now_ms=1
        )
    assert conflict.value.current == 1
    await store.write_environment(
        env_record(version=2), expected_version=1, outbox=rec("prod", 0), audit=b"{}", now_ms=1
    )
    assert (await store.get_environment("prod")) == env_record(version=2)
    assert [e.key for e in await store.list_environments()] == ["prod"]
    assert await store.get_environment("nope") is None
    assert await store.outbox_depth() == 2


async def test_item_writes_are_compare_and_set_and_atomic(store: Store) -> None:
    with pytest.raises(UnknownEnvironment):
        await put(store, "prod", "f", 1, 0)
    assert await store.outbox_depth() == 0
    await store.write_environment(
        env_record(), expected_version=0, outbox=rec("prod", 0), audit=b"{}", now_ms=1
    )
    await put(store, "prod", "f", 1, 0, n=1)
    await put(store, "prod", "f", 2, 1, n=2)
    depth, audit = await store.outbox_depth(), await store.read_audit("prod", 100)
    for version, expected in ((2, 1), (3, 0), (9, 2)):  # stale, stale, not expected+1
        with pytest.raises(VersionConflict):
            await put(store, "prod", "f", version, expected, n=9)
    # a failed precondition changes nothing: no state, no outbox entry, no audit entry
    assert await store.get_item("prod", "flag", "f") == b'{"key":"f","version":2}'
    assert await store.outbox_depth() == depth
    assert await store.read_audit("prod", 100) == audit
    assert await store.list_items("prod", "flag") == {"f": b'{"key":"f","version":2}'}
    assert await store.list_items("prod", "segment") == {}
    assert await store.read_audit("prod", 2) == [b'{"n":2}', b'{"n":1}']


async def test_get_items_reads_the_keys_asked_for_in_their_order(store: Store) -> None:
    await store.write_environment(
        env_record(), expected_version=0, outbox=rec("prod", 0), audit=b"{}", now_ms=1
    )
    for n in range(600):  # more than one SQLite statement's worth of keys
        await put(store, "prod", f"f{n}", 1, 0, n=n)
    keys = ["f599", "missing", "f0", "f17", "f599"] + [f"f{n}" for n in range(100, 600)]
    got = await store.get_items("prod", "flag", keys)
    assert got == [await store.get_item("prod", "flag", key) for key in keys]
    assert got[:5] == [b'{"key":"f599","version":1}', None, b'{"key":"f0","version":1}',
                       b'{"key":"f17","version":1}', b'{"key":"f599","version":1}']  # fmt: skip
    assert await store.get_items("prod", "segment", ["f0"]) == [None]
    assert await store.get_items("nope", "flag", ["f0"]) == [None]
    assert await store.get_items("prod", "flag", []) == []


async def test_outbox_order_fenced_removal_and_contains(store: Store) -> None:
    await store.write_environment(
        env_record(), expected_version=0, outbox=rec("prod", 0), audit=b"{}", now_ms=1
    )
    ids = [await put(store, "prod", "f", v, v - 1, n=v) for v in range(1, 6)]
    entries = await store.outbox_read(100)
    assert [e.id for e in entries[1:]] == ids
    assert [e.record.value for e in entries[1:]] == [f"value-{n}".encode() for n in range(1, 6)]
    assert entries[1].record.env == "prod" and entries[1].enqueued_ms == 1001

    assert await store.outbox_remove(ids[:2], owner="a", fence=1) == 0  # no lease
    fence = await store.acquire_lease("a", 5000)
    assert fence is not None
    assert await store.outbox_remove(ids[:2], owner="a", fence=fence + 1) == 0  # stale fence
    assert await store.outbox_remove(ids[:2], owner="b", fence=fence) == 0  # not the owner
    assert await store.outbox_remove(ids[:2], owner="a", fence=fence) == 2
    assert not await store.outbox_contains(ids[0]) and await store.outbox_contains(ids[2])
    assert [e.id for e in await store.outbox_read(2)] == [entries[0].id, ids[2]]
    assert await store.outbox_depth() == 4


async def test_outbox_read_after_an_entry_even_once_it_was_removed(store: Store) -> None:
    await store.write_environment(
        env_record(), expected_version=0, outbox=rec("prod", 0), audit=b"{}", now_ms=1
    )
    ids = [await put(store, "prod", "f", v, v - 1, n=v) for v in range(1, 7)]
    assert [e.id for e in await store.outbox_read(2, after=ids[1])] == ids[2:4]
    assert await store.outbox_read(5, after=ids[-1]) == []
    fence = await store.acquire_lease("a", 5000)
    assert fence is not None
    assert await store.outbox_remove(ids[:3], owner="a", fence=fence) == 3
    assert [e.id for e in await store.outbox_read(10, after=ids[2])] == ids[3:]
    # a later append never gets an id at or before one handed out, even once it was removed
    assert await store.outbox_remove(ids[3:], owner="a", fence=fence) == 3
    later = await put(store, "prod", "f", 7, 6, n=7)
    assert [e.id for e in await store.outbox_read(10, after=ids[-1])] == [later]


async def test_lease_is_exclusive_and_each_term_has_a_larger_fence(store: Store) -> None:
    # Held for 5 s while exclusivity is checked (a 300 ms term could lapse between these
    # round trips on a loaded machine and let "b" in); the renewal then shortens it to 300 ms.
    a = await store.acquire_lease("a", 5000)
    assert a is not None
    assert await store.acquire_lease("b", 300) is None
    assert await store.acquire_lease("a", 300) == a  # renewal keeps the term
    await asyncio.sleep(0.4)  # expired
    b = await store.acquire_lease("b", 5000)
    assert b is not None and b > a
    assert await store.acquire_lease("a", 5000) is None
    await store.release_lease("a")  # not the owner: no effect
    assert await store.acquire_lease("a", 5000) is None
    await store.release_lease("b")
    c = await store.acquire_lease("a", 5000)
    assert c is not None and c > b


async def test_tokens(store: Store) -> None:
    t1 = TokenRecord("id1", "ci", "1" * 64, ("read",), None, 5, "admin")
    t2 = TokenRecord("id2", "deploy", "2" * 64, ("write",), ("prod",), 6, "admin")
    await store.create_token(t1)
    await store.create_token(t2)
    assert await store.list_tokens() == [t1, t2]
    assert await store.find_token("2" * 64) == t2
    assert await store.find_token("3" * 64) is None
    assert await store.delete_token("id2") is True
    assert await store.delete_token("id2") is False
    assert await store.find_token("2" * 64) is None
    assert await store.list_tokens() == [t1]


def test_token_json_keeps_the_stored_field_names_and_reads_the_old_digest_name() -> None:
    # Existing Redis data holds these names (and the delete script reads ``sha256``).
    token = TokenRecord("id1", "ci", "1" * 64, ("read",), ("prod",), 5, "admin")
    assert token.to_json() == (
        b'{"id": "id1", "name": "ci", "sha256": "' + b"1" * 64 + b'", "scopes": ["read"],'
        b' "environments": ["prod"], "created_ms": 5, "created_by": "admin"}'
    )
    assert TokenRecord.from_json(token.to_json()) == token
    old = token.to_json().replace(b'"sha256"', b'"secret_sha256"')  # SQLite rows before
    assert TokenRecord.from_json(old) == token
