"""The in-memory state, fed records directly (no I/O): idempotence, tombstones, poison,
positions, caches, credentials, readiness and catch-up waits."""

from __future__ import annotations

import asyncio
import json

import pytest
from relay_support import (
    RecordLog,
    env_envelope,
    flag,
    item_envelope,
    metric,
    new_state,
    segment,
)

from protocol.envelope import Envelope, encode_envelope
from protocol.keys import partition_for
from protocol.sse import SSEEvent, SSEParser
from relay.state import Change, SourceRecord, State, catchup_events

pytestmark = pytest.mark.unit

KEY = "sdk-11111111-2222-3333-4444-555555555555"


def feed(state: State, records: list[SourceRecord]) -> int:
    nxt: dict[int, int] = {}
    for r in records:
        nxt[r.partition] = r.offset + 1
    return state.apply_batch(records, nxt)


def parse(body: bytes) -> list[SSEEvent]:
    return [e for e in SSEParser().feed(body) if isinstance(e, SSEEvent)]


def test_applies_items_and_ignores_versions_not_greater() -> None:
    state, metrics = new_state()
    state.set_bootstrap_targets({0: 0, 1: 0, 2: 0})  # ready: changes are published
    log = RecordLog()
    changes: list[Change] = []
    state.listeners.append(changes.append)
    recs = [
        log.record(env_envelope("prod", [KEY])),
        log.record(item_envelope("prod", "flag", flag("f", 2))),
        log.record(item_envelope("prod", "flag", flag("f", 1, on=False))),  # older: ignored
        log.record(item_envelope("prod", "flag", flag("f", 2, on=False))),  # same: ignored
        log.record(item_envelope("prod", "flag", flag("f", 3, on=False))),
    ]
    assert feed(state, recs) == 3
    env = state.environments["prod"]
    held = env.items[("flag", "f")]
    assert (held.version, held.offset) == (3, 4)
    assert json.loads(held.item)["on"] is False
    assert [(c.version, c.offset) for c in changes] == [(2, 1), (3, 4)]
    assert changes[-1].position == "0123456789ab:4"
    assert metric(metrics, "flagstream_relay_records_ignored_total") == 2
    assert env.offset == 4


def test_tombstone_is_kept_and_blocks_resurrection() -> None:
    state, _ = new_state()
    log = RecordLog()
    feed(
        state,
        [
            log.record(item_envelope("prod", "flag", flag("f", 1))),
            log.record(item_envelope("prod", "flag", flag("f", 2, deleted=True))),
            log.record(item_envelope("prod", "flag", flag("f", 1))),  # replayed old update
        ],
    )
    held = state.environments["prod"].items[("flag", "f")]
    assert held.deleted and held.version == 2
    body = json.loads(state.environments["prod"].polling_body())
    assert body["flags"]["f"]["deleted"] is True


def test_poison_records_are_counted_and_skipped() -> None:
    state, metrics = new_state()
    log = RecordLog()
    good = item_envelope("prod", "flag", flag("good", 1))
    bad_json = Envelope("flag", "prod", "bad", 1, 0, "t", b"{not json")
    wrong_version = item_envelope("prod", "flag", flag("x", 1))
    wrong_version = Envelope("flag", "prod", "x", 5, 0, "t", wrong_version.item)
    recs = [
        log.record(good, value=b"\x00\x01garbage"),
        log.record(bad_json),
        log.record(wrong_version),
        log.record(Envelope("flag", "prod", "arr", 1, 0, "t", b"[1,2]")),
        log.record(Envelope("env", "prod", "prod", 1, 0, "t", b'{"key":"prod"}')),
        log.record(good),
    ]
    # A record whose key does not match its envelope.
    p = recs[-1].partition
    mismatched = SourceRecord(p, 100, b"prod/flag/other", encode_envelope(good))
    no_value = SourceRecord(p, 101, b"prod/flag/good", None)
    assert feed(state, [*recs, mismatched, no_value]) == 1
    assert metric(metrics, "flagstream_relay_records_skipped_total") == 7
    assert list(state.environments["prod"].items) == [("flag", "good")]


def test_record_on_the_wrong_partition_is_skipped() -> None:
    state, metrics = new_state(partitions=3)
    e = item_envelope("prod", "flag", flag("f", 1))
    wrong = (partition_for("prod", 3) + 1) % 3
    rec = SourceRecord(wrong, 0, b"prod/flag/f", encode_envelope(e))
    assert feed(state, [rec]) == 0
    assert metric(metrics, "flagstream_relay_records_skipped_total") == 1


def test_changes_after_an_offset_are_exactly_the_missed_items_in_order() -> None:
    state, _ = new_state(partitions=1)
    log = RecordLog(partitions=1)
    feed(
        state,
        [
            log.record(item_envelope("prod", "flag", flag("a", 1))),  # 0
            log.record(item_envelope("prod", "flag", flag("b", 1))),  # 1
            log.record(item_envelope("other", "flag", flag("z", 1))),  # 2 (other env)
            log.record(item_envelope("prod", "segment", segment("s", 1))),  # 3
            log.record(item_envelope("prod", "flag", flag("a", 2))),  # 4: a moves to the end
            log.record(item_envelope("prod", "flag", flag("b", 2, deleted=True))),  # 5
        ],
    )
    env = state.environments["prod"]
    assert [(i.key, i.offset) for i in env.changes_after(1)] == [("s", 3), ("a", 4), ("b", 5)]
    assert [(i.key, i.offset) for i in env.changes_after(4)] == [("b", 5)]
    assert env.changes_after(5) == []
    assert [i.key for i in env.changes_after(-1)] == ["s", "a", "b"]

    events = parse(catchup_events(env.changes_after(2), "all", "ep"))
    assert [(e.event, e.id) for e in events] == [
        ("patch", "ep:3"),
        ("patch", "ep:4"),
        ("delete", "ep:5"),
    ]
    assert json.loads(events[0].data)["path"] == "/segments/s"
    assert json.loads(events[2].data) == {"path": "/flags/b", "version": 2}
    legacy = parse(catchup_events(env.changes_after(2), "flags", "ep"))
    assert [json.loads(e.data)["path"] for e in legacy] == ["/a", "/b"]


def test_put_and_polling_bodies_are_cached_until_the_next_change() -> None:
    state, _ = new_state()
    log = RecordLog()
    feed(state, [log.record(item_envelope("prod", "flag", flag("a", 1)))])
    env = state.environments["prod"]
    pos = str(state.position(env))
    put1 = env.put_event("all", pos)
    assert env.put_event("all", pos) is put1
    poll1 = env.polling_body()
    assert env.polling_body() is poll1
    (ev,) = parse(put1)
    assert ev.event == "put" and ev.id == pos
    assert json.loads(ev.data)["data"]["flags"]["a"]["version"] == 1

    feed(state, [log.record(item_envelope("prod", "flag", flag("a", 2)))])
    pos2 = str(state.position(env))
    assert pos2 != pos
    put2 = env.put_event("all", pos2)
    assert json.loads(parse(put2)[0].data)["data"]["flags"]["a"]["version"] == 2
    assert json.loads(env.polling_body())["flags"]["a"]["version"] == 2
    legacy = parse(env.put_event("flags", pos2))[0]
    assert json.loads(legacy.data)["a"]["version"] == 2


def test_credentials_follow_env_records_and_expiry() -> None:
    state, _ = new_state()
    log = RecordLog()
    old, new = KEY, "sdk-new"
    feed(state, [log.record(env_envelope("prod", [old]))])
    assert state.credentials.resolve(old) == "prod"
    assert state.credentials.resolve("sdk-unknown") is None
    # Rotation: the old key stays valid until its expiry.
    feed(state, [log.record(env_envelope("prod", [new, (old, 5_000)], version=2))])
    assert state.credentials.resolve(new) == "prod"
    assert state.credentials.resolve(old, now_ms=4_999) == "prod"
    assert state.credentials.resolve(old, now_ms=5_000) is None
    # An older env record cannot bring a removed key back.
    feed(state, [log.record(env_envelope("prod", [old], version=1))])
    assert state.credentials.resolve(old, now_ms=6_000) is None
    # Deleting the environment revokes every key.
    feed(state, [log.record(env_envelope("prod", [new], version=3, deleted=True))])
    assert state.credentials.resolve(new) is None


def test_ready_only_when_every_partition_reached_its_watermark() -> None:
    state, metrics = new_state(partitions=2)
    state.set_bootstrap_targets({0: 2, 1: 0})
    assert not state.ready
    state.apply_batch([], {0: 1})
    assert not state.ready and metric(metrics, "flagstream_relay_ready") == 0
    state.apply_batch([], {0: 2})
    assert state.ready and metric(metrics, "flagstream_relay_ready") == 1
    # Later watermarks never make a ready relay unready.
    state.set_bootstrap_targets({0: 10, 1: 10})
    assert state.ready


def test_epoch_change_rebuilds_the_state() -> None:
    state, _ = new_state()
    log = RecordLog()
    feed(state, [log.record(item_envelope("prod", "flag", flag("a", 1)))])
    state.set_bootstrap_targets({0: 0, 1: 0, 2: 0})
    assert state.ready
    assert state.set_layout("0123456789ab", 3) is True
    assert state.set_layout("ffffffffffff", 3) is False
    assert state.environments == {} and not state.ready and state.epoch == "ffffffffffff"


async def test_wait_consumed_wakes_when_the_partition_reaches_the_offset() -> None:
    state, _ = new_state(partitions=1)
    assert await state.wait_consumed(0, -1, 0.01)
    assert not await state.wait_consumed(0, 3, 0.01)
    waiter = asyncio.ensure_future(state.wait_consumed(0, 3, 5))
    await asyncio.sleep(0)
    state.apply_batch([], {0: 3})
    await asyncio.sleep(0)
    assert not waiter.done()
    state.apply_batch([], {0: 4})
    assert await waiter


def test_a_failing_listener_does_not_stop_applying() -> None:
    state, _ = new_state()
    state.set_bootstrap_targets({})
    log = RecordLog()
    calls: list[Change] = []

    def broken(change: Change) -> None:
        calls.append(change)
        raise RuntimeError("boom")

    state.listeners.append(broken)
    assert (
        feed(
            state,
            [
                log.record(item_envelope("prod", "flag", flag("a", 1))),
                log.record(item_envelope("prod", "flag", flag("b", 1))),
            ],
        )
        == 2
    )
    assert len(calls) == 2


def test_nothing_is_published_during_the_bootstrap() -> None:
    state, _ = new_state(partitions=1)
    log = RecordLog(partitions=1)
    changes: list[Change] = []
    state.listeners.append(changes.append)
    state.set_bootstrap_targets({0: 2})
    feed(state, [log.record(item_envelope("prod", "flag", flag("a", 1)))])
    assert changes == [] and not state.ready
    feed(state, [log.record(item_envelope("prod", "flag", flag("a", 2)))])
    assert state.ready
    feed(state, [log.record(item_envelope("prod", "flag", flag("a", 3)))])
    assert [c.version for c in changes] == [3]
