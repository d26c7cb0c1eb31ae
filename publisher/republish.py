"""Republishing the store's whole state into a topic the publisher has just (re)created.

A new topic is empty: relays that rebuild from it would lose every environment and item (and
reject valid SDK keys). So whenever the record log creates the topic, the forwarder appends
the current state to the outbox; it is then forwarded like any write.

Rules:

- **Through the outbox, after what is already queued.** Entries are appended at the outbox's
  tail, so per environment they reach Kafka after every earlier pending record.
- **Per environment in order:** the environment record first, then its flags and segments,
  tombstones included, each at its current version.
- **Nothing twice that is already queued.** A key whose current version already waits in the
  outbox (e.g. the writes made before the topic was first created) is not appended again.
- **The last record of every key is its current version.** Reading the state and appending
  it are two steps, so a write can commit in between; its own outbox entry may then precede
  our older copy. After appending, the state is read again and every key whose version moved
  since is appended once more, until nothing moved (a write committed after our last append
  of a key is queued after it, so it is last).
"""

from __future__ import annotations

import json
import logging
import time

from protocol.envelope import decode_envelope
from protocol.errors import EnvelopeError
from protocol.keys import ITEM_KINDS, Kind
from publisher.store import KafkaRecord, Store, outbox_record

__all__ = ["republish_state"]

_log = logging.getLogger("flagstream.publisher.republish")

ACTOR = "publisher:republish"
_MAX_ROUNDS = 10

_QUEUED_SCAN_MAX = 200_000  # above this, republish everything rather than scan the outbox

_Ident = tuple[str, str, str]  # (env, kind, key)


def _record(
    kind: Kind, env: str, key: str, version: int, item: bytes, deleted: bool, now_ms: int
) -> KafkaRecord:
    return outbox_record(kind, env, key, version, ACTOR, item, deleted=deleted, now_ms=now_ms)


async def _state(store: Store, now_ms: int) -> list[tuple[_Ident, int, KafkaRecord]]:
    """Every environment record and item, per environment in order: (ident, version, record)."""
    out: list[tuple[_Ident, int, KafkaRecord]] = []
    for env in await store.list_environments():
        record = _record("env", env.key, env.key, env.version, env.to_json(), False, now_ms)
        out.append(((env.key, "env", env.key), env.version, record))
        for kind in ITEM_KINDS:
            for key, raw in (await store.list_items(env.key, kind)).items():
                item = json.loads(raw)
                version = int(item["version"])
                record = _record(
                    kind, env.key, key, version, raw, bool(item.get("deleted")), now_ms
                )
                out.append(((env.key, kind, key), version, record))
    return out


async def _queued(store: Store) -> dict[_Ident, int]:
    """The newest version of every key already waiting in the outbox (empty if it is huge)."""
    depth = await store.outbox_depth()
    if depth == 0 or depth > _QUEUED_SCAN_MAX:
        return {}
    queued: dict[_Ident, int] = {}
    for entry in await store.outbox_read(depth):
        try:
            e = decode_envelope(entry.record.value)
        except EnvelopeError:
            continue
        ident = (e.env, e.kind, e.key)
        queued[ident] = max(queued.get(ident, 0), e.version)
    return queued


async def republish_state(store: Store) -> int:
    """Append the store's current state to the outbox (see the module rules); records queued."""
    now_ms = int(time.time() * 1000)
    # State first, then the outbox: a write committed in between is then either not in the
    # state read, or already seen queued (no needless copy of a key created meanwhile).
    state = await _state(store, now_ms)
    queued = await _queued(store)
    appended: dict[_Ident, int] = {}
    batch: list[KafkaRecord] = []
    for ident, version, record in state:
        if queued.get(ident) == version:
            continue  # the outbox already ends this key with its current version
        appended[ident] = version
        batch.append(record)
    total = 0
    for _ in range(_MAX_ROUNDS):
        if not batch:
            break
        await store.outbox_append(batch, now_ms=now_ms)
        total += len(batch)
        batch = []
        for ident, version, record in await _state(store, now_ms):
            if ident in appended and appended[ident] != version:
                appended[ident] = version
                batch.append(record)
    _log.log(
        logging.WARNING if total else logging.INFO,
        "republished the current state into the new topic: %d record(s) of %d environment(s)",
        total,
        len({ident[0] for ident in appended}),
    )
    return total
