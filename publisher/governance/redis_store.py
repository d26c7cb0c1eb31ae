"""The Redis ``GovernanceStore``, on the same connection and key prefix as the ``RedisStore``.

Layout (under the publisher's prefix ``{p}``)::

    {p}gov:{collection}:{env}      hash  record id -> record JSON
    {p}gov:rev:{collection}:{env}  hash  record id -> revision (so Lua never parses JSON)
    {p}gov:schedule                zset  "{seq:012d}|{collection}|{env}|{id}" -> due ms
    {p}gov:secrets                 hash  trigger secret sha256 -> "{env}|{trigger id}"
    {p}gov:seq                     int   creation counter
    {p}gov:rate:{bucket}:{window}  int   calls in a rate-limit window (expires with it)

``commit_write`` is ONE Lua script assembled from the ``RedisStore``'s own write script: its
idempotence head, its item body (environment check, version compare-and-set, item) and its
tail (outbox XADD, audit LPUSH), with the governance check (lease holder, record revision)
before the body and the record's new state (record, revision, schedule, secret index) before
the tail. The item, the outbox entry and the audit entry are therefore produced by exactly the
code a direct write runs (``_item_write_call`` builds its KEYS/ARGV with the ``RedisStore``'s
helpers), and a change to that script is a change to this one. Redis runs the script as one
unit: a claim of a due change and its write cannot be separated by a crash, a second
publisher, or a failover (a replica receives the script's effects as one transaction).
"""

from __future__ import annotations

from typing import Any, Final

from publisher.governance.store import (
    Collection,
    ItemWrite,
    NotLeaseHolder,
    RecordUpdate,
    ScheduledRef,
    StaleRecord,
    parse_member,
    schedule_member,
)
from publisher.redis_store import (
    _WRITE_HEAD,
    _WRITE_ITEM,
    _WRITE_TAIL,
    RedisStore,
    _unavailable,
)

__all__ = ["RedisGovernanceStore"]

# The item part of the RedisStore's write script, between its shared head and tail.
if not (_WRITE_ITEM.startswith(_WRITE_HEAD) and _WRITE_ITEM.endswith(_WRITE_TAIL)):
    raise ImportError("publisher.redis_store's item script is no longer HEAD + body + TAIL")
_ITEM_BODY: Final = _WRITE_ITEM[len(_WRITE_HEAD) : len(_WRITE_ITEM) - len(_WRITE_TAIL)]
# How many KEYS and ARGV the RedisStore's item write uses; the governance ones follow.
_ITEM_KEYS: Final = 6
_ITEM_ARGS: Final = 10


def _record_check(k: int, a: int) -> str:
    """Lua: return {'stale', rev} unless the record's revision is the expected one.

    Record KEYS from k+1: records, revisions, schedule, secrets.
    Record ARGV from a+1: id, expected revision, value, new revision, schedule member,
    due ms ('' = unscheduled), secret op ('' | 'add' | 'del'), secret sha256, secret value.
    """
    return f"""
local rev = tonumber(redis.call('HGET', KEYS[{k + 2}], ARGV[{a + 1}]) or '0')
if rev ~= tonumber(ARGV[{a + 2}]) then return {{'stale', tostring(rev)}} end
"""


def _record_store(k: int, a: int) -> str:
    """Lua: store the record, its revision, its schedule entry and its secret index entry."""
    return f"""
redis.call('HSET', KEYS[{k + 1}], ARGV[{a + 1}], ARGV[{a + 3}])
redis.call('HSET', KEYS[{k + 2}], ARGV[{a + 1}], ARGV[{a + 4}])
if ARGV[{a + 6}] == '' then redis.call('ZREM', KEYS[{k + 3}], ARGV[{a + 5}])
else redis.call('ZADD', KEYS[{k + 3}], ARGV[{a + 6}], ARGV[{a + 5}]) end
if ARGV[{a + 7}] == 'add' then redis.call('HSET', KEYS[{k + 4}], ARGV[{a + 8}], ARGV[{a + 9}])
elseif ARGV[{a + 7}] == 'del' then redis.call('HDEL', KEYS[{k + 4}], ARGV[{a + 8}]) end
"""


_RECORD_KEYS: Final = 4
_RECORD_ARGS: Final = 9

# KEYS: <record keys>, audit, write-id marker; ARGV: <record args>, audit entry ('' = none),
# audit max.
_UPDATE: Final = (
    """
local done = redis.call('GET', KEYS[6])
if done then return {'ok'} end
"""
    + _record_check(0, 0)
    + _record_store(0, 0)
    + """
if ARGV[10] ~= '' then
  redis.call('LPUSH', KEYS[5], ARGV[10])
  redis.call('LTRIM', KEYS[5], 0, tonumber(ARGV[11]) - 1)
end
redis.call('SET', KEYS[6], '1', 'PX', 600000)
return {'ok'}
"""
)

# KEYS: <item write keys>, <record keys>, lease; ARGV: <item write args>, <record args>,
# lease owner ('' = no lease check).
_LEASE_KEY: Final = _ITEM_KEYS + _RECORD_KEYS + 1
_LEASE_ARG: Final = _ITEM_ARGS + _RECORD_ARGS + 1
_COMMIT_WRITE: Final = (
    _WRITE_HEAD
    + f"""
if ARGV[{_LEASE_ARG}] ~= '' and redis.call('GET', KEYS[{_LEASE_KEY}]) ~= ARGV[{_LEASE_ARG}] then
  return {{'notleader'}}
end
"""
    + _record_check(_ITEM_KEYS, _ITEM_ARGS)
    + _ITEM_BODY
    + _record_store(_ITEM_KEYS, _ITEM_ARGS)
    + _WRITE_TAIL
)

_TAKE_RATE: Final = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n
"""


def _item_write_call(store: RedisStore, w: ItemWrite) -> tuple[list[Any], list[Any]]:
    """KEYS and ARGV of ``store.write_item(...)`` for ``w``, built by the store's own helpers."""
    keys = [
        *store._frame_keys(w.env),
        store._k("envs"),
        store._items(w.env, w.kind),
        store._k("versions", w.env, w.kind),
    ]
    args = [
        *store._frame_args(w.env, w.outbox, w.now_ms, w.audit),
        w.key,
        w.item,
        w.version,
        w.expected_version,
    ]
    if len(keys) != _ITEM_KEYS or len(args) != _ITEM_ARGS:
        raise RuntimeError("RedisStore.write_item's KEYS/ARGV changed; update _ITEM_KEYS/ARGS")
    return keys, args


class RedisGovernanceStore:
    """A ``GovernanceStore`` on the ``RedisStore``'s Redis (see ``governance.store``)."""

    def __init__(self, store: RedisStore) -> None:
        self._s = store
        self._r: Any = store._r
        self._update = self._r.register_script(_UPDATE)
        self._commit = self._r.register_script(_COMMIT_WRITE)
        self._rate = self._r.register_script(_TAKE_RATE)

    def _k(self, *parts: str) -> str:
        return self._s._k("gov", *parts)

    def _record_keys(self, collection: str, env: str) -> list[str]:
        return [
            self._k(collection, env),
            self._k("rev", collection, env),
            self._k("schedule"),
            self._k("secrets"),
        ]

    @staticmethod
    def _record_args(u: RecordUpdate) -> list[Any]:
        member = schedule_member(u.collection, u.env, u.id, u.seq)
        secret_op, secret_hash = "", ""
        if u.secret is not None:
            secret_op, secret_hash = ("add" if u.secret.add else "del"), u.secret.sha256
        return [
            u.id,
            u.expected_revision,
            u.value,
            u.revision,
            member,
            "" if u.schedule_at_ms is None else u.schedule_at_ms,
            secret_op,
            secret_hash,
            f"{u.env}|{u.id}",
        ]

    @_unavailable
    async def get(self, collection: Collection, env: str, record_id: str) -> bytes | None:
        raw: bytes | None = await self._r.hget(self._k(collection, env), record_id)
        return raw

    @_unavailable
    async def list_records(self, collection: Collection, env: str) -> list[bytes]:
        raw: dict[bytes, bytes] = await self._r.hgetall(self._k(collection, env))
        return list(raw.values())

    @_unavailable
    async def next_seq(self) -> int:
        return int(await self._r.incr(self._k("seq")))

    @_unavailable
    async def update(self, update: RecordUpdate, *, audit: bytes | None) -> None:
        result = await self._update(
            keys=[
                *self._record_keys(update.collection, update.env),
                self._s._audit(update.env),
                self._s._write_marker(),
            ],
            args=[*self._record_args(update), audit or "", self._s._audit_max],
        )
        self._outcome(result)

    @_unavailable
    async def commit_write(
        self, update: RecordUpdate, write: ItemWrite, *, lease_owner: str | None
    ) -> str:
        if update.env != write.env:
            raise ValueError("a record and the item it writes belong to one environment")
        item_keys, item_args = _item_write_call(self._s, write)
        result = await self._commit(
            keys=[
                *item_keys,
                *self._record_keys(update.collection, update.env),
                self._s._k("forwarder", "lease"),
            ],
            args=[*item_args, *self._record_args(update), lease_owner or ""],
        )
        self._outcome(result)
        return RedisStore._outcome(result, write.env)

    @staticmethod
    def _outcome(result: Any) -> None:
        status = result[0].decode()
        if status == "stale":
            raise StaleRecord(int(result[1]))
        if status == "notleader":
            raise NotLeaseHolder("the forwarder lease is held by another publisher")

    @_unavailable
    async def due(self, now_ms: int, limit: int) -> list[ScheduledRef]:
        rows = await self._r.zrangebyscore(
            self._k("schedule"), "-inf", now_ms, start=0, num=limit, withscores=True
        )
        return [parse_member(m.decode(), int(score)) for m, score in rows]

    @_unavailable
    async def find_secret(self, sha256: str) -> tuple[str, str] | None:
        raw = await self._r.hget(self._k("secrets"), sha256)
        if raw is None:
            return None
        env, _, record_id = raw.decode().partition("|")
        return env, record_id

    @_unavailable
    async def take_rate(self, bucket: str, limit: int, window_ms: int, now_ms: int) -> int:
        start = now_ms - now_ms % window_ms
        n = int(await self._rate(keys=[self._k("rate", bucket, str(start))], args=[window_ms]))
        return 0 if n <= limit else start + window_ms - now_ms
