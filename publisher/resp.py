"""A lean, pipelined Redis client for the few commands every write runs.

redis-py spends about 120 µs of CPU on a command here (its pool, retry wrapper, timeouts and
event hooks), against about 30 µs for the round trip itself (BENCHMARKS.md, "fifth look"). A
write at concurrency 1 runs three such commands: the group commit's script, the forwarder's
outbox read and its removal. ``RedisStore`` sends those three through this client and
everything else through redis-py.

Guarantees:

- **Order.** Commands go out on one connection in call order and replies are matched to calls
  in that order (Redis answers in order); concurrent callers are pipelined, without a pool or
  a lock.
- **A failure is whole.** When the connection fails or closes, or a reply takes longer than
  ``timeout``, the connection is closed and every call waiting on it raises
  ``RespUnavailable``: after a timeout nobody can tell which replies still belong to whom. The
  next call connects again. A command is never sent twice by this client: whether a failed
  call is retried is the caller's decision (the store's are idempotent).
- **Replies** are hiredis's: ``bytes``, ``int``, lists, ``None``. An error reply raises
  ``RespReplyError`` (e.g. NOSCRIPT) and leaves the connection usable.
- **Connection settings** come from the store's URL: ``redis://`` and ``unix://``, with
  username, password and database. TLS (``rediss://``) is not handled: ``RespClient.for_url``
  returns None and the store keeps redis-py for these commands too.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any, cast

import hiredis
from redis.connection import parse_url

__all__ = ["RespClient", "RespReplyError", "RespUnavailable"]

# hiredis's stub types the argument as a 1-tuple; it takes any tuple of str/bytes/int.
_pack = cast(Callable[[tuple[Any, ...]], bytes], hiredis.pack_command)
_parse_url = cast(Callable[[str], dict[str, Any]], parse_url)


class RespReplyError(Exception):
    """Redis answered the command with an error reply (the connection stays usable)."""


class RespUnavailable(ConnectionError):
    """The connection failed, closed or timed out; the command may or may not have run."""


class _Connection(asyncio.Protocol):
    """One connection: writes commands, resolves the waiting calls' futures in reply order."""

    def __init__(self) -> None:
        self._reader = hiredis.Reader(replyError=RespReplyError)
        self._waiting: deque[asyncio.Future[Any]] = deque()
        self._transport: asyncio.Transport | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def send(self, packed: bytes) -> asyncio.Future[Any]:
        if self.closed or self._transport is None:
            raise RespUnavailable("the Redis connection is closed")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.append(future)
        self._transport.write(packed)
        return future

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        while True:
            try:
                reply = self._reader.gets()
            except hiredis.ProtocolError as exc:
                self.close(f"Redis sent what is not RESP ({exc})")
                return
            if reply is False:
                return
            if not self._waiting:
                self.close("Redis sent a reply nobody asked for")
                return
            future = self._waiting.popleft()
            if future.done():  # its caller was cancelled: the reply is dropped, order kept
                continue
            if isinstance(reply, RespReplyError):
                future.set_exception(reply)
            else:
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(f"the Redis connection was lost ({type(exc).__name__ if exc else 'closed'})")

    def close(self, why: str) -> None:
        self._fail(why)
        if self._transport is not None:
            self._transport.close()

    def _fail(self, why: str) -> None:
        self.closed = True
        while self._waiting:
            future = self._waiting.popleft()
            if not future.done():
                future.set_exception(RespUnavailable(why))


class RespClient:
    """Commands on one lazily (re)connected connection (see the module docstring)."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 6379,
        path: str | None = None,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        connect_timeout: float = 2.0,
        timeout: float = 5.0,
    ) -> None:
        self._host, self._port, self._path = host, port, path
        self._db, self._username, self._password = db, username, password
        self._connect_timeout = connect_timeout
        self._timeout = timeout
        self._conn: _Connection | None = None
        self._connecting: asyncio.Task[_Connection] | None = None

    @classmethod
    def for_url(cls, url: str, *, connect_timeout: float, timeout: float) -> RespClient | None:
        """A client for a ``redis://`` or ``unix://`` URL; None for one it does not handle."""
        if not url.startswith(("redis://", "unix://")):
            return None
        kwargs = _parse_url(url)
        return cls(
            host=kwargs.get("host", "127.0.0.1"),
            port=int(kwargs.get("port", 6379)),
            path=kwargs.get("path"),
            db=int(kwargs.get("db", 0) or 0),
            username=kwargs.get("username"),
            password=kwargs.get("password"),
            connect_timeout=connect_timeout,
            timeout=timeout,
        )

    async def call(self, *args: str | bytes | memoryview | int | float) -> Any:
        """Send one command and return its reply (module docstring for the failures)."""
        conn = self._conn
        if conn is None or conn.closed:
            conn = await self._connect()
        future = conn.send(_pack(args))
        # A plain timer, not asyncio.timeout: ~25 µs less per call, and expiry fails every
        # call waiting on the connection anyway (module docstring).
        timer = asyncio.get_running_loop().call_later(self._timeout, self._expire, conn, future)
        try:
            return await future
        finally:
            timer.cancel()

    def _expire(self, conn: _Connection, future: asyncio.Future[Any]) -> None:
        if not future.done():
            conn.close(f"Redis did not answer within {self._timeout:g}s")

    async def script(
        self,
        sha: str,
        source: str | bytes | memoryview,
        keys: list[str],
        args: list[str | bytes | int],
    ) -> Any:
        """EVALSHA ``sha``, loading ``source`` first when Redis does not know it (NOSCRIPT).
        ``sha`` and ``source`` are a registered redis-py script's ``.sha`` and ``.script``."""
        try:
            return await self.call("EVALSHA", sha, len(keys), *keys, *args)
        except RespReplyError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        await self.call("SCRIPT", "LOAD", source)
        return await self.call("EVALSHA", sha, len(keys), *keys, *args)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        connecting, self._connecting = self._connecting, None
        if connecting is not None and not connecting.done():
            connecting.cancel()
        if conn is not None:
            conn.close("the client was closed")

    async def _connect(self) -> _Connection:
        # Callers arriving while a connection is being made share it.
        if self._connecting is None or self._connecting.done():
            self._connecting = asyncio.ensure_future(self._open())
            # every caller may have been cancelled by the time it fails: seen, not logged
            self._connecting.add_done_callback(_retrieve)
        try:
            return await asyncio.shield(self._connecting)
        except RespUnavailable:
            raise
        except (OSError, TimeoutError) as exc:
            raise RespUnavailable(f"cannot connect to Redis ({type(exc).__name__})") from exc

    async def _open(self) -> _Connection:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self._connect_timeout):
            if self._path is not None:
                _, conn = await loop.create_unix_connection(_Connection, self._path)
            else:
                _, conn = await loop.create_connection(_Connection, self._host, self._port)
            try:
                setup: list[asyncio.Future[Any]] = []
                if self._password is not None:
                    auth = (self._username, self._password) if self._username else (self._password,)
                    setup.append(conn.send(_pack(("AUTH", *auth))))
                if self._db:
                    setup.append(conn.send(_pack(("SELECT", self._db))))
                for reply in setup:
                    await reply
            except RespReplyError as exc:
                conn.close("setup refused")
                raise RespUnavailable(f"Redis refused the connection's setup: {exc}") from exc
            except BaseException:
                conn.close("setup failed")
                raise
            finally:
                for reply in setup:  # the ones after a failure fail too, unawaited
                    _retrieve(reply)
        self._conn = conn
        return conn


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a failed future's exception as seen (asyncio logs unseen ones at collection)."""
    if future.done() and not future.cancelled():
        future.exception()
