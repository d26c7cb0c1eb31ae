"""The Redis ``GovernanceStore``, on the same connection and key prefix as the ``RedisStore``.

Layout (under the publisher's prefix ``{p}``)::

    {p}gov:{collection}:{env}      hash  record id -> record JSON
    {p}gov:rev:{collection}:{env}  hash  record id -> revision (so Lua never parses JSON);
                                         for the policy (id = env) the RedisStore's item
                                         writes read it too (``RedisStore._policies``)
    {p}gov:schedule                zset  "{seq:012d}|{collection}|{env}|{id}" -> due ms
    {p}gov:secrets                 hash  trigger secret sha256 -> "{env}|{trigger id}"
    {p}gov:seq                     int   creation counter
    {p}gov:rate:{bucket}:{window}  int   calls in a rate-limit window (expires with it)

``commit_write`` is ONE Lua script assembled from the ``RedisStore``'s own parts: the frame
of its single writes (``_WRITE_HEAD``: the idempotence check; ``_WRITE_TAIL``:
``append_records`` — outbox XADD, audit LPUSH — and the write-id marker) around its item
fragments (``check_item``: environment, policy revision, version compare-and-set;
``store_item``), with the governance parts in between: the lease holder and the record's
revision are checked before ``check_item``, the record's new state (record, revision,
schedule, secret index) is stored after ``store_item``. The item, its outbox record and its
audit entry are therefore checked and written by exactly the code a direct write runs, and a
change to those fragments is a change to this script. Redis runs it as one unit: a claim of a
due change and its write cannot be separated by a crash, a second publisher, or a failover (a
replica receives the script's effects as one transaction).
"""

from __future__ import annotations

from typing import Any, Final

from publisher.governance.store import (
    Collection,
    NotLeaseHolder,
    RecordUpdate,
    ScheduledRef,
    StaleRecord,
    check_one_environment,
    parse_member,
    schedule_member,
)
from publisher.redis_store import (
    _LUA_FRAGMENTS,
    _WRITE_HEAD,
    _WRITE_TAIL,
    RedisStore,
    _unavailable,
)
from publisher.store import ItemWrite

__all__ = ["RedisGovernanceStore"]

# - check_record(revisions, id, expected) -> nil, or the stored revision if it is not expected
# - store_record(records, revisions, schedule, secrets, id, value, revision, member, due,
#                secret_op, secret_hash, secret_value): the record, its revision, its place in
#                the schedule (due '' = none) and its secret index entry ('' | 'add' | 'del')
_LUA_RECORD: Final = """
local function check_record(revisions, id, expected)
  local rev = tonumber(redis.call('HGET', revisions, id) or '0')
  if rev ~= tonumber(expected) then return tostring(rev) end
  return nil
end

local function store_record(records, revisions, schedule, secrets, id, value, revision, member,
                            due, secret_op, secret_hash, secret_value)
  redis.call('HSET', records, id, value)
  redis.call('HSET', revisions, id, revision)
  if due == '' then redis.call('ZREM', schedule, member)
  else redis.call('ZADD', schedule, due, member) end
  if secret_op == 'add' then redis.call('HSET', secrets, secret_hash, secret_value)
  elseif secret_op == 'del' then redis.call('HDEL', secrets, secret_hash) end
end
"""

# KEYS: records, revisions, schedule, secrets, audit, write-id marker
# ARGV: id, expected revision, value, revision, member, due, secret op, hash, secret value,
#       audit entry ('' = none), audit max
_UPDATE: Final = (
    _LUA_RECORD
    + """
if redis.call('GET', KEYS[6]) then return {'ok'} end
local stale = check_record(KEYS[2], ARGV[1], ARGV[2])
if stale then return {'stale', stale} end
store_record(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1], ARGV[3], ARGV[4], ARGV[5], ARGV[6],
             ARGV[7], ARGV[8], ARGV[9])
if ARGV[10] ~= '' then
  redis.call('LPUSH', KEYS[5], ARGV[10])
  redis.call('LTRIM', KEYS[5], 0, tonumber(ARGV[11]) - 1)
end
redis.call('SET', KEYS[6], '1', 'PX', 600000)
return {'ok'}
"""
)

# KEYS: outbox, audit, write-id marker (the frame), envs, items, versions, policies,
#       records, revisions, schedule, secrets, lease
# ARGV: env, rkey, rvalue, now_ms, audit entry, audit max (the frame),
#       key, item, version, expected, policy revision ('' = not checked),
#       id, expected revision, value, revision, member, due, secret op, hash, secret value,
#       lease owner ('' = no lease check)
_COMMIT_WRITE: Final = (
    _WRITE_HEAD
    + _LUA_FRAGMENTS
    + _LUA_RECORD
    + """
if ARGV[21] ~= '' and redis.call('GET', KEYS[12]) ~= ARGV[21] then return {'notleader'} end
local stale = check_record(KEYS[9], ARGV[12], ARGV[13])
if stale then return {'stale', stale} end
local failure = check_item(KEYS[4], KEYS[6], ARGV[1], ARGV[7], tonumber(ARGV[9]),
                           tonumber(ARGV[10]), {}, KEYS[7], ARGV[11])
if failure then return {failure} end
store_item(KEYS[5], KEYS[6], ARGV[7], ARGV[8], ARGV[9])
store_record(KEYS[8], KEYS[9], KEYS[10], KEYS[11], ARGV[12], ARGV[14], ARGV[15], ARGV[16],
             ARGV[17], ARGV[18], ARGV[19], ARGV[20])
"""
    + _WRITE_TAIL
)

_TAKE_RATE: Final = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n
"""


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
        self, update: RecordUpdate, write: ItemWrite, *, now_ms: int, lease_owner: str | None
    ) -> str:
        check_one_environment(update, write)
        s, env = self._s, write.env
        result = await self._commit(
            keys=[
                *s._frame_keys(env),
                s._k("envs"),
                s._items(env, write.kind),
                s._k("versions", env, write.kind),
                s._policies(env),
                *self._record_keys(update.collection, env),
                s._k("forwarder", "lease"),
            ],
            args=[
                *s._frame_args(env, write.outbox, now_ms, write.audit),
                write.key,
                write.item,
                write.version,
                write.expected_version,
                "" if write.policy_revision is None else write.policy_revision,
                *self._record_args(update),
                lease_owner or "",
            ],
        )
        self._outcome(result)
        return RedisStore._outcome(result, env)

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
