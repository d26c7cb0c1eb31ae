"""What the SQLite store adds to the shared Store contract (tests/publisher/test_store.py runs
that contract on it): everything survives a reopen, a previous process's lease does not."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from embedded_support import embedded

from protocol.environment import CredentialHash, EnvironmentRecord
from publisher.store import KafkaRecord, Store, TokenRecord


def _as_store(store: Store) -> Store:
    return store  # mypy checks that SQLiteStore satisfies the Protocol


async def test_reopen_keeps_state_audit_outbox_tokens_and_fences_grow(tmp_path: Path) -> None:
    path = tmp_path / "d"
    record = EnvironmentRecord("prod", "Prod", 1, (CredentialHash("a" * 64),), (), "c" * 24)
    token = TokenRecord("t1", "ci", "f" * 64, ("read",), ("prod",), 5, "admin")
    async with embedded(path) as backends:
        store = _as_store(backends.store)
        out = KafkaRecord("prod", b"prod/env/prod", b"v")
        await store.write_environment(
            record, expected_version=0, outbox=out, audit=b'{"a":1}', now_ms=1
        )
        entry = await store.write_item(
            "prod",
            "flag",
            "f",
            b'{"key":"f","version":1}',
            version=1,
            expected_version=0,
            outbox=KafkaRecord("prod", b"prod/flag/f", b"v1"),
            audit=b'{"a":2}',
            now_ms=2,
        )
        await store.create_token(token)
        fence = await store.acquire_lease("old-process", 60_000)
        assert fence is not None
    async with embedded(path) as backends:
        store = backends.store
        assert await store.get_environment("prod") == record
        assert await store.get_item("prod", "flag", "f") == b'{"key":"f","version":1}'
        assert await store.read_audit("prod", 10) == [b'{"a":2}', b'{"a":1}']
        assert await store.outbox_depth() == 2 and await store.outbox_contains(entry)
        assert await store.find_token("f" * 64) == token
        # The old process is gone (it held the directory's lock): its lease does not block.
        new_fence = await store.acquire_lease("new-process", 60_000)
        assert new_fence is not None and new_fence > fence


async def test_audit_keeps_the_newest_entries(tmp_path: Path) -> None:
    from flagstream.embedded import open_embedded

    backends = await open_embedded(tmp_path / "d", audit_max_entries=3)
    try:
        store = backends.store
        record = EnvironmentRecord("e", "E", 1, (), (), "c" * 24)
        await store.write_environment(
            record, expected_version=0, outbox=KafkaRecord("e", b"k", b"v"), audit=b"0", now_ms=1
        )
        for v in range(1, 6):
            await store.write_item(
                "e",
                "flag",
                "f",
                b"{}",
                version=v,
                expected_version=v - 1,
                outbox=KafkaRecord("e", b"k", b"v"),
                audit=b"%d" % v,
                now_ms=v,
            )
        assert await store.read_audit("e", 10) == [b"5", b"4", b"3"]
        assert await store.read_audit("e", 0) == []
    finally:
        await backends.close()


async def test_reads_token_rows_written_with_the_old_digest_name(tmp_path: Path) -> None:
    token = TokenRecord("t1", "ci", "f" * 64, ("read",), None, 5, "admin")
    old_row = json.dumps(
        {
            "id": "t1",
            "name": "ci",
            "secret_sha256": "f" * 64,
            "scopes": ["read"],
            "environments": None,
            "created_ms": 5,
            "created_by": "admin",
        }
    ).encode()

    def insert(tx: sqlite3.Connection) -> None:
        tx.execute(
            "INSERT INTO tokens (id, secret_sha256, created_ms, record) VALUES (?, ?, ?, ?)",
            ("t1", "f" * 64, 5, old_row),
        )

    async with embedded(tmp_path / "d") as backends:
        await backends.store.db.write(insert)
        assert await backends.store.find_token("f" * 64) == token
        assert await backends.store.list_tokens() == [token]
