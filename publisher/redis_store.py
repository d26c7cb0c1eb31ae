"""The Redis ``Store``: the publisher's system of record.

Layout (every key under the configured prefix, ``flagstream:`` by default)::

    {p}envs                    hash   env key -> EnvironmentRecord JSON (hashes only)
    {p}env_versions            hash   env key -> version
    {p}items:{env}:{kind}      hash   item key -> item JSON (tombstones included)
    {p}versions:{env}:{kind}   hash   item key -> version (so Lua never parses JSON)
    {p}audit:{env}             list   audit entry JSON, newest first, capped
    {p}outbox                  stream fields env, k (record key), v (envelope), t (commit ms)
    {p}tokens                  hash   token id -> TokenRecord JSON (secret hash only)
    {p}token_hashes            hash   secret sha256 -> token id
    {p}forwarder:lease         string owner id, with a TTL
    {p}forwarder:fence         int    fencing token, incremented on every new lease term
    {p}gov:rev:policy:{env}    hash   env key -> revision of the environment's governance
                                      policy (written by publisher.governance.redis_store;
                                      item writes that carry a policy revision check it)

Each write is ONE Lua script (check precondition, store state, XADD outbox, LPUSH audit), so
Redis applies all of it or none of it, and a replica or AOF replay sees it as one unit.
Writes are idempotent: each call carries a fresh write id, and the script records it (10 min
TTL) with the outbox id it produced. So the client may retry a command once on a connection
error (a pooled connection that went stale when Redis restarted) without ever applying a write
twice or turning its own success into a conflict.

The three commands every write runs (the group commit's ``write_items`` script, the
forwarder's outbox read and its removal) go through ``publisher.resp``, a lean pipelined
client, instead of redis-py, with the same one retry on a connection error; everything else
uses redis-py.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, ParamSpec, TypeVar, cast

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from protocol.environment import EnvironmentRecord
from publisher.resp import RespClient, RespReplyError, RespUnavailable
from publisher.store import (
    EnvironmentExists,
    ItemKind,
    ItemWrite,
    KafkaRecord,
    OutboxEntry,
    PolicyChanged,
    StoreUnavailable,
    TokenRecord,
    UnknownEnvironment,
    VersionConflict,
    WriteOutcome,
)

__all__ = ["RedisStore"]

_P = ParamSpec("_P")
_T = TypeVar("_T")

# The Lua of every write is built from named fragments, so that every script that writes an
# item (a single write, a group commit, a bulk request, and scripts of later features that
# must do "the same as a write") checks and appends exactly the same way:
#
# - _LUA_CHECK_ITEM   check_item(envs, versions, env, key, version, expected, pending,
#                     policies, policy) -> nil or a failure string: 'noenv' |
#                     'policy:<current policy revision>' | 'conflict:<current version>'.
#                     ``pending`` maps versions..'\n'..key to versions written earlier in the
#                     same script; ``policy`` is the policy revision the write was allowed
#                     under ('' = not checked), compared with field ``env`` of ``policies``.
# - _LUA_STORE_ITEM   store_item(items, versions, key, item, version)
# - _LUA_APPEND       append_records(outbox, audit, env, rkey, rvalue, now, entry, audit_max)
#                     -> the outbox id: XADD the Kafka record, LPUSH + LTRIM the audit entry.
_LUA_CHECK_ITEM = """
local function check_item(envs, versions, env, key, version, expected, pending, policies, policy)
  if redis.call('HEXISTS', envs, env) == 0 then return 'noenv' end
  if policy ~= '' then
    local rev = redis.call('HGET', policies, env) or '0'
    if rev ~= policy then return 'policy:' .. rev end
  end
  local cur = pending[versions .. '\\n' .. key]
  if cur == nil then cur = tonumber(redis.call('HGET', versions, key) or '0') end
  if cur ~= expected or version ~= cur + 1 then return 'conflict:' .. tostring(cur) end
  return nil
end
"""

_LUA_STORE_ITEM = """
local function store_item(items, versions, key, item, version)
  redis.call('HSET', items, key, item)
  redis.call('HSET', versions, key, version)
end
"""

_LUA_APPEND = """
local function append_records(outbox, audit, env, rkey, rvalue, now, entry, audit_max)
  local id = redis.call('XADD', outbox, '*', 'env', env, 'k', rkey, 'v', rvalue, 't', now)
  redis.call('LPUSH', audit, entry)
  redis.call('LTRIM', audit, 0, audit_max - 1)
  return id
end
"""

_LUA_FRAGMENTS = _LUA_CHECK_ITEM + _LUA_STORE_ITEM + _LUA_APPEND

# The single writes share one frame: the same first three KEYS and six ARGV, an idempotence
# check first (a retried call whose first attempt landed returns that attempt's outbox id).
# KEYS: outbox, audit, write-id marker, <write's own keys...>
# ARGV: env, rkey, rvalue, now_ms, audit, audit_max, <write's own args...>
_WRITE_HEAD = """
local done = redis.call('GET', KEYS[3])
if done then return {'ok', done} end
"""

_WRITE_TAIL = """
local id = append_records(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5],
                          tonumber(ARGV[6]))
redis.call('SET', KEYS[3], id, 'PX', 600000)
return {'ok', id}
"""

_WRITE_ITEM = (
    _WRITE_HEAD
    + _LUA_FRAGMENTS
    + """
-- own KEYS: envs, items, versions; own ARGV: key, item, version, expected
local failure = check_item(KEYS[4], KEYS[6], ARGV[1], ARGV[7], tonumber(ARGV[9]),
                           tonumber(ARGV[10]), {}, '', '')
if failure then return {failure} end
store_item(KEYS[5], KEYS[6], ARGV[7], ARGV[8], ARGV[9])
"""
    + _WRITE_TAIL
)

_WRITE_ENV = (
    _WRITE_HEAD
    + _LUA_FRAGMENTS
    + """
-- own KEYS: envs, env_versions; own ARGV: record, version, expected
local expected = tonumber(ARGV[9])
if expected == 0 and redis.call('HEXISTS', KEYS[4], ARGV[1]) == 1 then return {'exists'} end
local cur = tonumber(redis.call('HGET', KEYS[5], ARGV[1]) or '0')
if cur ~= expected or tonumber(ARGV[8]) ~= cur + 1 then return {'conflict:' .. tostring(cur)} end
redis.call('HSET', KEYS[4], ARGV[1], ARGV[7])
redis.call('HSET', KEYS[5], ARGV[1], ARGV[8])
"""
    + _WRITE_TAIL
)

# Many item writes in one script (group commit: atomic=0; bulk: atomic=1), see
# Store.write_items. Returns one string per write: its outbox id, 'noenv' or 'conflict:<n>'
# ('' for a write not applied because another write of an atomic call failed).
# KEYS: outbox, write-id marker, envs, then per write: items, versions, audit, policies
# ARGV: now_ms, audit_max, atomic (0|1), n, then per write:
#       env, key, item, version, expected, rkey, rvalue, audit entry, policy revision ('')
_WRITE_ITEMS = (
    _LUA_FRAGMENTS
    + """
local done = redis.call('GET', KEYS[2])
if done then return cjson.decode(done) end
local now, audit_max = ARGV[1], tonumber(ARGV[2])
local atomic, n = ARGV[3] == '1', tonumber(ARGV[4])
local pending, fails, failed = {}, {}, false
for i = 1, n do
  local k, a = 3 + 4 * (i - 1), 4 + 9 * (i - 1)
  local version = tonumber(ARGV[a + 4])
  local failure = check_item(KEYS[3], KEYS[k + 2], ARGV[a + 1], ARGV[a + 2], version,
                             tonumber(ARGV[a + 5]), pending, KEYS[k + 4], ARGV[a + 9])
  if failure then
    fails[i], failed = failure, true
  else
    pending[KEYS[k + 2] .. '\\n' .. ARGV[a + 2]] = version
  end
end
local out = {}
if atomic and failed then
  for i = 1, n do out[i] = fails[i] or '' end
  return out
end
for i = 1, n do
  if fails[i] then
    out[i] = fails[i]
  else
    local k, a = 3 + 4 * (i - 1), 4 + 9 * (i - 1)
    store_item(KEYS[k + 1], KEYS[k + 2], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4])
    out[i] = append_records(KEYS[1], KEYS[k + 3], ARGV[a + 1], ARGV[a + 6], ARGV[a + 7], now,
                            ARGV[a + 8], audit_max)
  end
end
redis.call('SET', KEYS[2], cjson.encode(out), 'PX', 600000)
return out
"""
)

_ACQUIRE_LEASE = """
-- KEYS: lease, fence; ARGV: owner, ttl_ms. Returns the term's fence, or -1 if taken.
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return tonumber(redis.call('GET', KEYS[2]) or '0')
end
if cur then return -1 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return redis.call('INCR', KEYS[2])
"""

_RELEASE_LEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
"""

_OUTBOX_REMOVE = """
-- KEYS: lease, fence, outbox; ARGV: owner, fence, ids... Fenced: a deposed owner removes nothing.
if redis.call('GET', KEYS[1]) ~= ARGV[1] or redis.call('GET', KEYS[2]) ~= ARGV[2] then
  return -1
end
return redis.call('XDEL', KEYS[3], unpack(ARGV, 3))
"""

_DELETE_TOKEN = """
-- KEYS: tokens, token_hashes; ARGV: id. Returns 1 if the token existed, else 0.
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], cjson.decode(raw)['sha256'])
return 1
"""

_FIND_TOKEN = """
-- KEYS: token_hashes, tokens; ARGV: secret hash. Returns the token's JSON, or nil.
local id = redis.call('HGET', KEYS[1], ARGV[1])
if not id then return false end
return redis.call('HGET', KEYS[2], id)
"""


def _unavailable(
    fn: Callable[_P, Coroutine[Any, Any, _T]],
) -> Callable[_P, Coroutine[Any, Any, _T]]:
    """Turn every Redis connectivity error into StoreUnavailable with a readable detail."""

    async def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return await fn(*args, **kwargs)
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise StoreUnavailable(f"Redis is unreachable ({type(exc).__name__})") from exc
        except (RedisError, RespReplyError) as exc:
            # e.g. LOADING (restarting), READONLY (failover), MISCONF (disk full): all transient
            # for the caller, who gets a 503 and retries.
            raise StoreUnavailable(f"Redis refused the command: {str(exc)[:200]}") from exc

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


async def _retried(send: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    """``send()``, once more on a connection error: redis-py's one retry (a connection gone
    stale when Redis restarted); the commands sent this way are idempotent."""
    try:
        return await send()
    except RespUnavailable:
        return await send()


def _failure(status: str, env: str) -> VersionConflict | UnknownEnvironment | PolicyChanged | None:
    """The failure a script reported for one write ('noenv', 'policy:<n>', 'conflict:<n>'),
    else None."""
    if status == "noenv":
        return UnknownEnvironment(env)
    if status.startswith("conflict:"):
        return VersionConflict(int(status[9:]))
    if status.startswith("policy:"):
        return PolicyChanged(int(status[7:]))
    return None


class RedisStore:
    """A ``publisher.store.Store`` on Redis (see that module for the guarantees)."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "flagstream:",
        audit_max_entries: int = 10_000,
        connect_timeout: float = 2.0,
        command_timeout: float = 5.0,
        lean_hot_path: bool = True,
    ) -> None:
        """``lean_hot_path=False`` keeps redis-py for every command, as for a TLS URL."""
        self._p = prefix
        self._audit_max = audit_max_entries
        # Any: redis-py's stubs type every reply as bytes | str | None whatever the command.
        self._r: Any = aioredis.Redis.from_url(
            url,
            socket_connect_timeout=connect_timeout,
            socket_timeout=command_timeout,
            retry=Retry(NoBackoff(), 1),
            health_check_interval=10,
        )
        self._write_item = self._r.register_script(_WRITE_ITEM)
        self._write_env = self._r.register_script(_WRITE_ENV)
        self._write_items = self._r.register_script(_WRITE_ITEMS)
        # The hot path's commands (module docstring); None: redis-py for them too.
        self._hot_client = (
            RespClient.for_url(url, connect_timeout=connect_timeout, timeout=command_timeout)
            if lean_hot_path
            else None
        )
        self._acquire = self._r.register_script(_ACQUIRE_LEASE)
        self._release = self._r.register_script(_RELEASE_LEASE)
        self._remove = self._r.register_script(_OUTBOX_REMOVE)
        self._delete_token = self._r.register_script(_DELETE_TOKEN)
        self._find_token = self._r.register_script(_FIND_TOKEN)

    # key names
    def _k(self, *parts: str) -> str:
        return self._p + ":".join(parts)

    @_unavailable
    async def ping(self) -> None:
        await self._r.ping()

    async def close(self) -> None:
        if self._hot_client is not None:
            await self._hot_client.close()
        await self._r.aclose()

    async def _hot_script(self, script: Any, keys: list[str], args: list[str | bytes | int]) -> Any:
        """A registered redis-py script, sent on the lean client when there is one."""
        client = self._hot_client
        if client is None:
            return await script(keys=keys, args=args)
        return await _retried(lambda: client.script(script.sha, script.script, keys, args))

    # -- environments ------------------------------------------------------------------
    @_unavailable
    async def get_environment(self, env: str) -> EnvironmentRecord | None:
        raw = await self._r.hget(self._k("envs"), env)
        return None if raw is None else EnvironmentRecord.from_json(raw)

    @_unavailable
    async def list_environments(self) -> list[EnvironmentRecord]:
        raw = await self._r.hgetall(self._k("envs"))
        return [EnvironmentRecord.from_json(raw[k]) for k in sorted(raw)]

    @_unavailable
    async def write_environment(
        self,
        record: EnvironmentRecord,
        *,
        expected_version: int,
        outbox: KafkaRecord,
        audit: bytes,
        now_ms: int,
    ) -> str:
        result = await self._write_env(
            keys=[*self._frame_keys(record.key), self._k("envs"), self._k("env_versions")],
            args=[
                *self._frame_args(record.key, outbox, now_ms, audit),
                record.to_json(),
                record.version,
                expected_version,
            ],
        )
        return self._outcome(result, record.key)

    # -- the frame both write scripts share (see _WRITE_HEAD) ---------------------------
    def _frame_keys(self, env: str) -> list[str]:
        """outbox, the environment's audit list, a fresh write-id marker."""
        return [self._k("outbox"), self._audit(env), self._write_marker()]

    def _write_marker(self) -> str:
        return self._k("write", uuid.uuid4().hex)

    def _frame_args(
        self, env: str, outbox: KafkaRecord, now_ms: int, audit: bytes
    ) -> list[str | bytes | int]:
        return [env, outbox.key, outbox.value, now_ms, audit, self._audit_max]

    # -- items -------------------------------------------------------------------------

    def _items(self, env: str, kind: str) -> str:
        return self._k("items", env, kind)

    def _audit(self, env: str) -> str:
        return self._k("audit", env)

    def _policies(self, env: str) -> str:
        """The hash holding ``env``'s governance policy revision (field ``env``)."""
        return self._k("gov", "rev", "policy", env)

    @_unavailable
    async def get_item(self, env: str, kind: ItemKind, key: str) -> bytes | None:
        return cast("bytes | None", await self._r.hget(self._items(env, kind), key))

    @_unavailable
    async def get_items(self, env: str, kind: ItemKind, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        return cast("list[bytes | None]", await self._r.hmget(self._items(env, kind), keys))

    @_unavailable
    async def list_items(self, env: str, kind: ItemKind) -> dict[str, bytes]:
        raw: dict[bytes, bytes] = await self._r.hgetall(self._items(env, kind))
        return {k.decode(): raw[k] for k in sorted(raw)}

    @_unavailable
    async def write_item(
        self,
        env: str,
        kind: ItemKind,
        key: str,
        item: bytes,
        *,
        version: int,
        expected_version: int,
        outbox: KafkaRecord,
        audit: bytes,
        now_ms: int,
    ) -> str:
        result = await self._write_item(
            keys=[
                *self._frame_keys(env),
                self._k("envs"),
                self._items(env, kind),
                self._k("versions", env, kind),
            ],
            args=[
                *self._frame_args(env, outbox, now_ms, audit),
                key,
                item,
                version,
                expected_version,
            ],
        )
        return self._outcome(result, env)

    @staticmethod
    def _outcome(result: Any, env: str) -> str:
        status = result[0].decode()
        if status == "ok":
            return cast(str, result[1].decode())
        if status == "exists":
            raise EnvironmentExists(env)
        failure = _failure(status, env)
        if failure is None:  # pragma: no cover - the scripts answer nothing else
            raise RuntimeError(f"unexpected script result {status!r}")
        raise failure

    @_unavailable
    async def write_items(
        self, writes: Sequence[ItemWrite], *, atomic: bool, now_ms: int
    ) -> list[WriteOutcome]:
        if not writes:
            return []
        keys: list[str] = [self._k("outbox"), self._write_marker(), self._k("envs")]
        args: list[str | bytes | int] = [now_ms, self._audit_max, int(atomic), len(writes)]
        for w in writes:
            keys += [
                self._items(w.env, w.kind),
                self._k("versions", w.env, w.kind),
                self._audit(w.env),
                self._policies(w.env),
            ]
            args += [
                w.env,
                w.key,
                w.item,
                w.version,
                w.expected_version,
                w.outbox.key,
                w.outbox.value,
                w.audit,
                "" if w.policy_revision is None else w.policy_revision,
            ]
        raw = await self._hot_script(self._write_items, keys, args)
        outcomes: list[WriteOutcome] = []
        for w, value in zip(writes, raw, strict=True):
            text = value.decode() if isinstance(value, bytes) else str(value)
            failure = _failure(text, w.env)
            outcomes.append(text if failure is None else failure)
        return outcomes

    # -- audit -------------------------------------------------------------------------
    @_unavailable
    async def read_audit(self, env: str, limit: int) -> list[bytes]:
        if limit <= 0:
            return []
        return cast("list[bytes]", await self._r.lrange(self._audit(env), 0, limit - 1))

    # -- outbox ------------------------------------------------------------------------
    @_unavailable
    async def outbox_read(self, count: int, *, after: str | None = None) -> list[OutboxEntry]:
        start = "-" if after is None else "(" + after  # "(": exclusive
        client = self._hot_client
        if client is None:
            rows = await self._r.xrange(self._k("outbox"), start, "+", count=count)
        else:
            # RESP: [[id, [field, value, ...]], ...]; redis-py's reply is [(id, {field: value})]
            raw = await _retried(
                lambda: client.call("XRANGE", self._k("outbox"), start, "+", "COUNT", count)
            )
            rows = [(raw_id, dict(zip(flat[::2], flat[1::2], strict=True))) for raw_id, flat in raw]
        return [
            OutboxEntry(
                id=raw_id.decode(),
                record=KafkaRecord(
                    env=fields[b"env"].decode(), key=fields[b"k"], value=fields[b"v"]
                ),
                enqueued_ms=int(fields[b"t"]),
            )
            for raw_id, fields in rows
        ]

    @_unavailable
    async def outbox_remove(self, ids: list[str], *, owner: str, fence: int) -> int:
        if not ids:
            return 0
        keys = [self._k("forwarder", "lease"), self._k("forwarder", "fence"), self._k("outbox")]
        args: list[str | bytes | int] = [owner, fence, *ids]
        n = await self._hot_script(self._remove, keys, args)
        return max(int(n), 0)

    @_unavailable
    async def outbox_depth(self) -> int:
        return int(await self._r.xlen(self._k("outbox")))

    @_unavailable
    async def outbox_append(self, records: Sequence[KafkaRecord], *, now_ms: int) -> list[str]:
        if not records:
            return []
        async with self._r.pipeline(transaction=True) as pipe:  # MULTI/EXEC: all or nothing
            for record in records:
                pipe.xadd(
                    self._k("outbox"),
                    {"env": record.env, "k": record.key, "v": record.value, "t": now_ms},
                )
            ids = await pipe.execute()
        return [i.decode() if isinstance(i, bytes) else str(i) for i in ids]

    @_unavailable
    async def outbox_contains(self, entry_id: str) -> bool:
        return bool(await self._r.xrange(self._k("outbox"), entry_id, entry_id, count=1))

    # -- lease -------------------------------------------------------------------------
    @_unavailable
    async def acquire_lease(self, owner: str, ttl_ms: int) -> int | None:
        fence = int(
            await self._acquire(
                keys=[self._k("forwarder", "lease"), self._k("forwarder", "fence")],
                args=[owner, ttl_ms],
            )
        )
        return None if fence < 0 else fence

    @_unavailable
    async def release_lease(self, owner: str) -> None:
        await self._release(keys=[self._k("forwarder", "lease")], args=[owner])

    # -- tokens ------------------------------------------------------------------------
    @_unavailable
    async def create_token(self, token: TokenRecord) -> None:
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.hset(self._k("tokens"), token.id, token.to_json())
            pipe.hset(self._k("token_hashes"), token.secret_sha256, token.id)
            await pipe.execute()

    @_unavailable
    async def list_tokens(self) -> list[TokenRecord]:
        raw = await self._r.hgetall(self._k("tokens"))
        return sorted(
            (TokenRecord.from_json(v) for v in raw.values()), key=lambda t: (t.created_ms, t.id)
        )

    @_unavailable
    async def delete_token(self, token_id: str) -> bool:
        n = await self._delete_token(
            keys=[self._k("tokens"), self._k("token_hashes")], args=[token_id]
        )
        return int(n) == 1

    @_unavailable
    async def find_token(self, secret_sha256: str) -> TokenRecord | None:
        raw = await self._find_token(
            keys=[self._k("token_hashes"), self._k("tokens")], args=[secret_sha256]
        )
        return None if raw is None else TokenRecord.from_json(raw)

    # -- test/ops helpers ----------------------------------------------------------------
    @_unavailable
    async def delete_all(self) -> None:
        """Remove every key under the prefix (tests and teardown only)."""
        async for key in self._r.scan_iter(match=self._p + "*", count=500):
            await self._r.delete(key)
