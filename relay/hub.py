"""The connection hub: every open SSE stream of this process, and the fan-out to them.

Rules (in the order a change meets them):

1. ``publish(change)`` never blocks and never writes. It files the change as *pending* under
   ``(env, kind, key)``; a later version replaces a pending earlier one (coalescing, counted
   in ``coalesced_updates_total``). The final version of an item is never dropped: a change
   is only ever replaced by a later one of the same item. A change of an environment with no
   stream is dropped at once: every later stream starts from a snapshot that holds it.
2. A *round* starts one loop tick after the first pending change (so a burst of records read
   in one fetch becomes one round), or, while a round is writing, right after it ends. A
   round takes every pending change of every environment that has listeners, orders them by
   offset, and encodes them ONCE per stream kind the environment has (``/all`` patch/delete
   events, legacy ``/flags`` events for flags only, one OFREP ``refetchEvaluation`` notice
   for the whole round on ``ofrep`` streams) into one batch, framed once per framing
   (HTTP/1.1 chunk, or raw). The same bytes object is written to every stream of that kind: one
   ``send()`` straight to the socket when nothing is queued on its transport (what the
   kernel floor costs), else ``transport.write()`` so queued bytes keep their order. No
   per-connection encoding, task or await.
3. Changes already in a stream's initial payload are never re-sent: a stream registered at
   ``start_offset`` gets only the suffix of a batch with offsets greater than it (the rare
   case of a stream that registered while the batch was pending).
4. Rounds write in slices (``slice_writes`` writes per loop tick) so the loop keeps
   accepting connections and consuming records during a fan-out to very many streams.
5. A stream whose unsent bytes (``transport.get_write_buffer_size()``) exceed
   ``max_buffer_bytes`` (plus the size of its own initial payload) after a write is aborted
   at once (reason ``evicted``); its unsent bytes are freed. The SDK resumes with
   ``Last-Event-ID``. So a client that never reads costs at most that bound.
6. One timer per hub (not per stream) sends heartbeats to environments that had no write for
   ``heartbeat_interval``, closes streams whose lifetime (``max_connection_lifetime``, minus
   up to ``lifetime_jitter`` of it at random) is over, and stops when the hub is empty. A peer
   that vanished without a word is dropped by the kernel (``TCP_USER_TIMEOUT``, at least
   30 s, since heartbeats keep data unacknowledged) and released via ``connection_lost``.
7. ``drain(window)``: no new streams (``can_accept()`` is False), then every open stream is
   closed, spread evenly over the window, each with a clean end of body so its SDK
   reconnects (elsewhere) at once.
8. Client streams (``relay.clientside``) are streams like the others for rules 1-7 (the same
   ``max_connections``, 503, coalescing, slices, eviction, heartbeats, lifetime and drain).
   ``ping`` streams are one more stream kind: a round encodes one ``ping`` for them.
   ``eval`` streams belong to a context group (``relay.evalstream``): a round asks each
   environment's groups for their events (one evaluation per affected flag per distinct
   context, one encoding per distinct result) and writes each group's batch, framed once
   per framing, to every stream of the group exactly as rule 2 writes a stream kind's batch.
   Evaluation is sliced like writing (rule 4): at most ``slice_evaluations`` evaluations
   (groups x affected flags, at least one group) per loop tick; each slice's writes are
   queued before the next slice, and the round's other work (the next round included)
   waits behind it, so a stream's events keep their order and the next round compares
   against this one's state (``relay.evalstream`` rules 6-7). A round that fits in one
   slice is evaluated and written in the tick that starts it, as before: no task, no sleep.
   A stream still preparing when its group is evaluated queues that group's events; one
   that registers later already holds the round's state (rule 3 filters it).
   Adding a stream kind means: a branch in ``_encode`` (same bytes for every stream of the
   kind), or a group provider like ``relay.evalstream`` (bytes per group).

Close reasons (``connections_closed_total{reason}``): ``client`` (peer went away),
``evicted`` (rule 5), ``lifetime`` (rule 6), ``drain`` (rule 7), ``reset`` (topic re-created),
``settings`` (an environment's client-side settings changed: its client streams reconnect
under the new ones, ``close_client_streams``).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import os
import random
import socket
import time
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from aiohttp import hdrs, web

from protocol import ld, ofrep
from protocol.clientside import PING_EVENT
from relay.evalstream import EnvContexts, EvalRound, GroupEvents, GroupSpec
from relay.state import item_event
from relay.stream import CHUNKED_EOF, Connection, StreamKind, StreamProtocol, frame

if TYPE_CHECKING:
    from protocol.evaluation import CompiledEnvironment
    from relay.config import RelaySettings
    from relay.metrics import RelayMetrics
    from relay.state import Change

# For evaluated streams: env key -> (compiled environment, its position offset, epoch).
EnvSource = Callable[[str], "tuple[CompiledEnvironment | None, int, str]"]

__all__ = ["Hub", "worker_identity"]

# Writes per loop tick before a round yields to other callbacks (accepts, consumer).
DEFAULT_SLICE_WRITES = 4096
# Evaluations (context groups x affected flags) per loop tick before an evaluated round
# yields (rule 8): a few milliseconds of evaluation and encoding.
DEFAULT_SLICE_EVALUATIONS = 256

# Offsets are >= 0; a heartbeat "offset" above any real one is never filtered (rule 3).
_NO_OFFSET = 1 << 62

_STREAM_HEADERS = {
    hdrs.CONTENT_TYPE: "text/event-stream; charset=utf-8",
    hdrs.CACHE_CONTROL: "no-cache, no-store",
    # Proxies (nginx) must not buffer an event stream.
    "X-Accel-Buffering": "no",
}

CloseReason = Literal["client", "evicted", "lifetime", "drain", "reset", "settings"]
_CLOSE_REASONS: tuple[CloseReason, ...] = (
    "client",
    "evicted",
    "lifetime",
    "drain",
    "reset",
    "settings",
)


def worker_identity() -> dict[str, int]:
    """Which process this is: its pid and its worker index (``relay.server`` sets it)."""
    return {"pid": os.getpid(), "worker": int(os.environ.get("FLAGSTREAM_WORKER_INDEX", "0"))}


class _Batch:
    """Encoded events of one round for one stream kind, ordered by offset."""

    __slots__ = ("_framed", "_suffixes", "events", "first_offset", "frames", "offsets")

    def __init__(self, frames: list[bytes], offsets: list[int], *, events: bool = True) -> None:
        self.frames = frames
        self.offsets = offsets
        self.first_offset = offsets[0]
        self.events = events  # False for heartbeats (not counted as events)
        body = b"".join(frames)
        self._framed = {True: frame(body, True), False: frame(body, False)}
        self._suffixes: dict[tuple[int, bool], bytes] = {}

    def whole(self, chunked: bool) -> bytes:
        return self._framed[chunked]

    def suffix_index(self, start_offset: int) -> int:
        """Index of the first frame a stream registered at ``start_offset`` has not seen."""
        return bisect_right(self.offsets, start_offset)

    def suffix(self, index: int, chunked: bool) -> bytes:
        cached = self._suffixes.get((index, chunked))
        if cached is None:
            cached = frame(b"".join(self.frames[index:]), chunked)
            self._suffixes[(index, chunked)] = cached
        return cached


_HEARTBEAT = _Batch([ld.heartbeat()], [_NO_OFFSET], events=False)


@dataclass(slots=True)
class _Job:
    """One batch to write to one list of streams; ``index`` is how far it got."""

    batch: _Batch
    chunked: bool
    conns: list[Connection]
    index: int = 0
    events: int = 0
    bytes: int = 0
    done: list[Change] | None = None  # changes whose last write this job is (delay metric)


@dataclass(slots=True)
class _EvalJob:
    """An evaluated round of one environment still being evaluated (rule 8): each slice's
    write jobs run before its next slice."""

    env: _EnvStreams
    round: EvalRound
    changes: list[Change]  # the round's changes (metrics)
    wrote: bool = False  # a slice queued a write job (the last one gets ``done``)


@dataclass(slots=True)
class _EnvStreams:
    """The streams of one environment, by (stream kind, chunked framing)."""

    groups: dict[tuple[StreamKind, bool], set[Connection]] = field(default_factory=dict)
    preparing: set[Connection] = field(default_factory=set)
    last_write: float = 0.0  # loop time of the last round or heartbeat written here
    # Evaluated streams by context group (relay.evalstream); None while there is none.
    contexts: EnvContexts | None = None

    def empty(self) -> bool:
        return (
            not self.preparing
            and not any(self.groups.values())
            and (self.contexts is None or self.contexts.empty())
        )


class Hub:
    """All SSE streams of one relay process. See the module docstring for the rules."""

    def __init__(self, settings: RelaySettings, metrics: RelayMetrics) -> None:
        self._metrics = metrics
        self._max_connections = settings.max_connections
        self._max_buffer = settings.max_buffer_bytes
        self._heartbeat_interval = settings.heartbeat_interval
        self._lifetime = settings.max_connection_lifetime
        self._jitter = settings.lifetime_jitter
        self._retry_after = str(settings.retry_after)
        self.slice_writes = DEFAULT_SLICE_WRITES
        self.slice_evaluations = DEFAULT_SLICE_EVALUATIONS
        # Detached streams: serve_stream returns once the stream is set up and aiohttp forgets
        # the connection (see relay.stream). relay.server turns this on; the default keeps
        # the CONTRACTS.md behaviour (serve_stream returns when the stream has ended).
        self.detach = False
        # A peer that stops acknowledging (vanished without FIN/RST) is dropped by the kernel
        # after this long; heartbeats keep data in flight so the timer always runs.
        self._user_timeout_ms = int(1000 * max(30.0, 3 * self._heartbeat_interval))

        self._envs: dict[str, _EnvStreams] = {}
        self._count = 0
        self._draining = False
        self._pending: dict[str, dict[tuple[str, str], Change]] = {}
        self._jobs: deque[_Job | _EvalJob] = deque()
        self._flush_handle: asyncio.Handle | None = None
        self._run_handle: asyncio.Handle | None = None
        self._tick_handle: asyncio.TimerHandle | None = None
        self._next_heartbeat = 0.0
        self._lifetimes: list[tuple[float, int, Connection]] = []
        self._seq = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle_waiters: list[asyncio.Future[None]] = []
        # Set by relay.clientside when it registers its routes (evaluated streams need it).
        self.env_source: EnvSource | None = None
        self._contexts = 0  # context groups of evaluated streams, all environments

        m = metrics
        self._m_closed = {r: m.connections_closed_total.labels(reason=r) for r in _CLOSE_REASONS}

    # --- public interface (CONTRACTS.md) -------------------------------------------------

    @property
    def metrics(self) -> RelayMetrics:
        return self._metrics

    @property
    def draining(self) -> bool:
        """True once ``drain()`` started: no new streams; ``/readyz`` should answer 503."""
        return self._draining

    def can_accept(self) -> bool:
        """False when full (``max_connections``) or draining."""
        return not self._draining and self._count < self._max_connections

    def connection_count(self) -> int:
        return self._count

    def stats(self) -> dict[str, Any]:
        """For ``/status``: stream counts, fan-out state and which process answered."""
        by_kind: dict[str, int] = {"all": 0, "flags": 0, "ping": 0, "eval": 0, "ofrep": 0}
        for env in self._envs.values():
            for (kind, _), conns in env.groups.items():
                by_kind[kind] = by_kind.get(kind, 0) + len(conns)
            if env.contexts is not None:
                by_kind["eval"] += sum(1 for _ in env.contexts.streams())
        return {
            **worker_identity(),
            "connections": self._count,
            "max_connections": self._max_connections,
            "streams": by_kind,
            "evaluatedContexts": self._contexts,
            "environments_streaming": len(self._envs),
            "pending_changes": sum(len(p) for p in self._pending.values()),
            "writing": bool(self._jobs),
            "draining": self._draining,
        }

    async def serve_stream(
        self,
        request: web.Request,
        *,
        env: str,
        stream: StreamKind,
        initial: bytes,
        start_offset: int,
        headers: Mapping[str, str] | None = None,
        group: GroupSpec | None = None,
        gauge: Any = None,
    ) -> web.StreamResponse:
        """Answer ``request`` with an SSE stream; return only when the stream has ended.

        Registration happens before the first ``await``, so a change published between the
        caller's snapshot and the response headers is queued for this stream, never lost.
        With ``detach`` on, this returns as soon as the stream is set up: the stream lives
        on in the hub (see ``relay.stream``) and aiohttp writes nothing more to it.
        A call while full or draining answers 503 with ``Retry-After``.
        ``headers`` are added to the response (CORS); an ``eval`` stream names its ``group``
        (rule 8); ``gauge`` (a metrics gauge child) counts the stream while it is open.
        """
        if not self.can_accept():
            return web.Response(
                status=503,
                headers={**(headers or {}), hdrs.RETRY_AFTER: self._retry_after},
                content_type="application/problem+json",
                text='{"title":"Service Unavailable","status":503,'
                '"detail":"this relay holds no more streams; retry shortly"}',
            )
        loop = self._loop = asyncio.get_running_loop()
        detach = self.detach
        conn = Connection(env, stream, start_offset, None if detach else loop.create_future())
        self._register(conn, group, gauge)

        resp = web.StreamResponse(
            status=200, headers=_STREAM_HEADERS if not headers else {**_STREAM_HEADERS, **headers}
        )
        resp.force_close()  # a stream's connection is never reused for another request
        handed_over = False
        try:
            try:
                await resp.prepare(request)
            except ConnectionResetError:
                return resp  # the client left before its answer began: nothing to log
            transport = request.transport
            if conn.closed:
                return resp
            if transport is None or transport.is_closing():
                self._close(conn, "client")
                return resp
            chunked = resp.headers.get(hdrs.TRANSFER_ENCODING, "").lower() == "chunked"
            self._activate(conn, transport, chunked, initial)
            if detach:
                # aiohttp believes the peer left: it writes nothing more and frees the
                # request; the transport is the hub's until the stream ends.
                handed_over = True
                return resp
            assert conn.done is not None
            await conn.done
        finally:
            if not handed_over:
                # Ended, cancelled (server shutdown, handler cancellation) or failed.
                self._close(conn, "client")
        return resp

    def publish(self, change: Change) -> None:
        """File an applied change for the next round (rule 1). Never blocks."""
        if change.env not in self._envs:
            # No stream of this environment exists, and any later one starts from a
            # snapshot that already holds this change: nothing to send, ever.
            return
        pending = self._pending.get(change.env)
        if pending is None:
            pending = self._pending[change.env] = {}
        key = (change.kind, change.key)
        if key in pending:
            self._metrics.coalesced_updates_total.inc()
        pending[key] = change
        if not self._jobs and self._flush_handle is None:
            loop = self._loop
            if loop is None:
                try:
                    loop = self._loop = asyncio.get_running_loop()
                except RuntimeError:
                    return  # no loop yet, so no stream yet: the next publish schedules
            self._flush_handle = loop.call_soon(self._flush)

    async def wait_idle(self) -> None:
        """Until every published change was written (no pending change, no round running)."""
        if self._idle():
            return
        waiter = asyncio.get_running_loop().create_future()
        self._idle_waiters.append(waiter)
        await waiter

    def _idle(self) -> bool:
        return not self._jobs and not self._pending and self._flush_handle is None

    def _notify_idle(self) -> None:
        if self._idle_waiters and self._idle():
            waiters, self._idle_waiters = self._idle_waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    async def drain(self, window_seconds: float) -> None:
        """Stop accepting streams and close the open ones spread evenly over the window."""
        self._draining = True
        loop = asyncio.get_running_loop()
        conns = [c for env in self._envs.values() for c in _all_streams(env)]
        total = len(conns)
        start = loop.time()
        closed = 0
        while closed < total:
            elapsed = loop.time() - start
            due = (
                total
                if window_seconds <= 0
                else min(total, int(elapsed / window_seconds * total) + 1)
            )
            while closed < due:
                self._close(conns[closed], "drain")
                closed += 1
            if closed < total:
                next_at = start + window_seconds * closed / total
                await asyncio.sleep(max(0.005, next_at - loop.time()))
        # Streams that registered in a race with the flag (none expected) go too.
        for c in [c for env in self._envs.values() for c in _all_streams(env)]:
            self._close(c, "drain")

    def close_all(self) -> None:
        """Close every open stream now (reason ``reset``): the topic was recreated, so the
        positions those SDKs hold mean nothing; they reconnect and get a full put."""
        for c in [c for env in self._envs.values() for c in _all_streams(env)]:
            self._close(c, "reset")

    def close_client_streams(self, env_key: str) -> int:
        """Close the client (``eval`` and ``ping``) streams of ``env_key`` (reason
        ``settings``), each with a clean end of body: their SDKs reconnect at once and are
        admitted under the environment's new settings. Returns how many were closed."""
        env = self._envs.get(env_key)
        if env is None:
            return 0
        conns = [c for c in _all_streams(env) if c.kind in ("eval", "ping")]
        for c in conns:
            self._close(c, "settings")
        return len(conns)

    # --- registration --------------------------------------------------------------------

    def _register(
        self, conn: Connection, group: GroupSpec | None = None, gauge: Any = None
    ) -> None:
        env = self._envs.get(conn.env)
        if env is None:
            env = self._envs[conn.env] = _EnvStreams()
        env.preparing.add(conn)
        self._count += 1
        self._metrics.connections.inc()
        self._metrics.connections_opened_total.inc()
        if gauge is not None:
            conn.gauge = gauge
            gauge.inc()
        if conn.kind == "eval":
            assert group is not None and self.env_source is not None
            if env.contexts is None:
                env.contexts = EnvContexts()
            compiled, offset, _ = self.env_source(conn.env)
            conn.group, created = env.contexts.join(group, conn.start_offset, compiled, offset)
            if created:
                self._contexts += 1
                self._metrics.client_stream_contexts.set(self._contexts)

    def _activate(
        self, conn: Connection, transport: asyncio.Transport, chunked: bool, initial: bytes
    ) -> None:
        """Take the transport over and write the initial payload plus anything queued."""
        conn.transport = transport
        conn.chunked = chunked
        conn.limit = self._max_buffer + len(initial)
        inner = transport.get_protocol()
        transport.set_protocol(StreamProtocol(self, conn, None if self.detach else inner))
        if self.detach:
            # aiohttp's own connection_lost: it drops the connection from its server's set,
            # cancels its timers and frees its parser. Its transport reference goes first,
            # so it neither closes the transport nor writes anything more to it.
            if hasattr(inner, "transport"):
                inner.transport = None
            inner.connection_lost(None)
        conn.fd = _stream_socket_setup(transport, self._user_timeout_ms)
        queued = conn.pending or ()
        conn.pending = None
        env = self._envs[conn.env]
        env.preparing.discard(conn)
        group = self._group_set(env, conn, chunked)
        if group is None:
            group = env.groups[(conn.kind, chunked)] = set()
        group.add(conn)
        data = frame(initial + b"".join(queued), chunked)
        if data:
            transport.write(data)
            self._metrics.bytes_sent_total.inc(len(data))
        loop = self._loop
        assert loop is not None
        if self._lifetime is not None:
            deadline = loop.time() + self._lifetime * (1.0 - self._jitter * random.random())
            self._seq += 1
            heapq.heappush(self._lifetimes, (deadline, self._seq, conn))
        self._ensure_ticker(loop)
        if transport.get_write_buffer_size() > conn.limit:
            self._close(conn, "evicted")

    @staticmethod
    def _group_set(env: _EnvStreams, conn: Connection, chunked: bool) -> set[Connection] | None:
        """The set an active stream lives in: its context group's or its kind's."""
        if conn.group is not None:
            conns = conn.group.conns.get(chunked)
            if conns is None:
                conns = conn.group.conns[chunked] = set()
            return conns
        return env.groups.get((conn.kind, chunked))

    def _on_connection_lost(self, conn: Connection) -> None:
        self._close(conn, "client")

    def _close(self, conn: Connection, reason: CloseReason) -> None:
        if conn.closed:
            return
        conn.closed = True
        env = self._envs.get(conn.env)
        if env is not None:
            if conn.transport is None:
                env.preparing.discard(conn)
            else:
                group = self._group_set(env, conn, conn.chunked)
                if group is not None:
                    group.discard(conn)
            if (
                conn.group is not None
                and env.contexts is not None
                and env.contexts.leave(conn.group)
            ):
                self._contexts -= 1
                self._metrics.client_stream_contexts.set(self._contexts)
            if env.empty():
                del self._envs[conn.env]
        self._count -= 1
        self._metrics.connections.dec()
        self._m_closed[reason].inc()
        if conn.gauge is not None:
            conn.gauge.dec()
        transport = conn.transport
        conn.transport = None
        conn.pending = None
        if transport is not None and not transport.is_closing():
            if reason in ("evicted", "client") or transport.get_write_buffer_size() > 0:
                # Behind already: free its unsent bytes now; the SDK resumes by position.
                transport.abort()
            else:
                if conn.chunked:
                    transport.write(CHUNKED_EOF)
                transport.close()
        if conn.done is not None and not conn.done.done():
            conn.done.set_result(reason)

    # --- rounds --------------------------------------------------------------------------

    def _flush(self) -> None:
        """Start a round with every pending change (rule 2)."""
        self._flush_handle = None
        if self._jobs:
            return  # the running round starts the next one when it ends
        if not self._pending:
            self._notify_idle()
            return
        pending, self._pending = self._pending, {}
        loop = self._loop
        assert loop is not None
        now = loop.time()
        for env_key, changes in pending.items():
            env = self._envs.get(env_key)
            if env is None:
                continue  # nobody listens: nothing to encode
            ordered = sorted(changes.values(), key=_offset)
            # Encode only for the stream kinds this environment has.
            kinds = {kind for (kind, _), conns in env.groups.items() if conns}
            kinds.update(conn.kind for conn in env.preparing if conn.kind != "eval")
            batches = {kind: _encode(ordered, kind) for kind in kinds}
            for conn in env.preparing:
                if conn.group is None:
                    _queue_pending(conn, batches.get(conn.kind))
            last: _Job | None = None
            for (kind, chunked), conns in env.groups.items():
                batch = batches.get(kind)
                if batch is not None and conns:
                    last = _Job(batch, chunked, list(conns))
                    self._jobs.append(last)
            evaluating = self._evaluated_round(env_key, env, ordered)
            if evaluating is not None:
                # Its slices run in _run, in this round's place (rule 8).
                evaluating.wrote = last is not None
                self._jobs.append(evaluating)
                env.last_write = now
            elif last is not None:
                last.done = ordered
                env.last_write = now
        if self._jobs:
            self._run()
        else:
            self._notify_idle()

    def _evaluated_round(
        self, env_key: str, env: _EnvStreams, ordered: list[Change]
    ) -> _EvalJob | None:
        """Rule 8: start the evaluated round of ``env``'s context groups (None: nothing)."""
        contexts = env.contexts
        if contexts is None or contexts.empty() or self.env_source is None:
            return None
        compiled, offset, epoch = self.env_source(env_key)
        evaluating = contexts.start_round(ordered, compiled, offset, epoch)
        if evaluating is None:
            self._metrics.client_stream_evaluations_per_change.observe(0.0)
            return None
        return _EvalJob(env, evaluating, ordered)

    def _evaluate_slice(self, job: _EvalJob, budget: int) -> tuple[list[_Job], int]:
        """One slice of an evaluated round: its groups' write jobs (in order) and the
        evaluation budget it used. Streams still preparing queue their events instead."""
        results, spent = job.round.step(budget)
        out: list[_Job] = []
        by_group: dict[int, _Batch] = {}
        for events in results:
            batch = _Batch(events.frames, events.offsets) if events.frames else None
            late = None
            if events.late_frames and events.late_offsets:
                late = _Batch(events.late_frames, events.late_offsets)
            # A stream still preparing joined after the baseline: the late events if any.
            queued = late if late is not None else batch
            if queued is not None:
                by_group[id(events.group)] = queued
            for chunked, conns in events.group.conns.items():
                if not conns:
                    continue
                if late is None:
                    targets = {batch: list(conns)} if batch is not None else {}
                else:
                    targets = _split_late(conns, events, batch, late)
                for target_batch, target_conns in targets.items():
                    out.append(_Job(target_batch, chunked, target_conns))
        if by_group:
            for conn in job.env.preparing:
                if conn.group is not None:
                    _queue_pending(conn, by_group.get(id(conn.group)))
        if out:
            job.wrote = True
        if job.round.done:
            self._evaluated_round_done(job, out)
        return out, spent

    def _evaluated_round_done(self, job: _EvalJob, last_slice: list[_Job]) -> None:
        stats = job.round.stats
        m = self._metrics
        if stats.new_evaluations:
            m.client_stream_evaluations_total.labels(state="new").inc(stats.new_evaluations)
        if stats.previous_evaluations:
            m.client_stream_evaluations_total.labels(state="previous").inc(
                stats.previous_evaluations
            )
        m.client_stream_evaluations_per_change.observe(stats.new_evaluations / len(job.changes))
        if stats.suppressed:
            m.client_patches_suppressed_total.inc(stats.suppressed)
        if last_slice:
            last_slice[-1].done = job.changes
        elif job.wrote:
            self._observe_delay(job.changes)  # the round's last write is already out

    def _run(self) -> None:
        """Write one slice of the current round; reschedule while work remains."""
        self._run_handle = None
        budget = self.slice_writes
        evaluations = self.slice_evaluations
        jobs = self._jobs
        while jobs and budget > 0:
            job = jobs[0]
            if isinstance(job, _EvalJob):
                if evaluations <= 0:
                    break  # this tick's evaluations are spent: yield (rule 8)
                jobs.popleft()
                written, spent = self._evaluate_slice(job, evaluations)
                evaluations -= spent
                if not job.round.done:
                    jobs.appendleft(job)
                jobs.extendleft(reversed(written))  # this slice's writes first
                continue
            budget -= self._write(job, budget)
            if job.index < len(job.conns):
                break
            jobs.popleft()
            self._finish(job)
        if jobs:
            loop = self._loop
            assert loop is not None
            self._run_handle = loop.call_soon(self._run)
        elif self._pending and self._flush_handle is None:
            self._flush()
        else:
            self._notify_idle()

    def _write(self, job: _Job, budget: int) -> int:
        """Write ``job``'s batch to up to ``budget`` streams; return how many were visited."""
        conns = job.conns
        start = job.index
        end = min(len(conns), start + budget)
        batch = job.batch
        chunked = job.chunked
        whole = batch.whole(chunked)
        first = batch.first_offset
        nframes = len(batch.frames)
        writes = 0
        extra_events = 0
        extra_bytes = 0
        send = os.write
        for c in conns[start:end]:
            if c.closed:
                continue
            if c.start_offset >= first:
                index = batch.suffix_index(c.start_offset)
                if index >= nframes:
                    continue
                data = batch.suffix(index, chunked)
                extra_events += nframes - index
                extra_bytes += len(data)
            else:
                data = whole
                writes += 1
            t = c.transport
            assert t is not None
            if t.get_write_buffer_size() or t.is_closing() or c.fd < 0:
                # Bytes already queued (keep their order) or closing: through the transport.
                self._write_buffered(c, t, data)
                continue
            # Nothing queued: one send() straight to the socket, as the kernel floor does.
            # is_closing() above guarantees the descriptor is still this stream's.
            try:
                sent = send(c.fd, data)
            except BlockingIOError:
                sent = 0
            except OSError:
                self._close(c, "client")
                continue
            if sent < len(data):
                self._write_buffered(c, t, data[sent:])
        job.index = end
        if batch.events:
            job.events += writes * nframes + extra_events
        job.bytes += writes * len(whole) + extra_bytes
        return end - start

    def _write_buffered(self, c: Connection, t: asyncio.Transport, data: bytes) -> None:
        if t.is_closing():
            self._close(c, "client")
            return
        t.write(data)
        if t.get_write_buffer_size() > c.limit:
            self._close(c, "evicted")

    def _finish(self, job: _Job) -> None:
        m = self._metrics
        if job.events:
            m.events_sent_total.inc(job.events)
        if job.bytes:
            m.bytes_sent_total.inc(job.bytes)
        if job.done:
            self._observe_delay(job.done)

    def _observe_delay(self, changes: list[Change]) -> None:
        now_ms = time.time() * 1000.0
        observe = self._metrics.fanout_delay_seconds.observe
        for change in changes:
            observe(max(0.0, (now_ms - change.published_ms) / 1000.0))

    # --- timer: heartbeats and lifetimes (rule 6) ----------------------------------------

    def _tick_interval(self) -> float:
        return max(0.01, min(1.0, self._heartbeat_interval / 2))

    def _ensure_ticker(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._tick_handle is None:
            if self._next_heartbeat == 0.0:
                self._next_heartbeat = loop.time() + self._heartbeat_interval
            self._tick_handle = loop.call_later(self._tick_interval(), self._tick)

    def _tick(self) -> None:
        self._tick_handle = None
        loop = self._loop
        assert loop is not None
        now = loop.time()
        heap = self._lifetimes
        while heap and heap[0][0] <= now:
            conn = heapq.heappop(heap)[2]
            self._close(conn, "lifetime")
        if len(heap) > 64 and len(heap) > 2 * self._count:
            # Closed streams linger in the heap until their deadline; drop them in bulk.
            self._lifetimes = heap = [e for e in heap if not e[2].closed]
            heapq.heapify(heap)
        if now >= self._next_heartbeat:
            self._next_heartbeat = now + self._heartbeat_interval
            self._heartbeat(now)
        if self._count or heap:
            self._tick_handle = loop.call_later(self._tick_interval(), self._tick)
        else:
            self._next_heartbeat = 0.0

    def _heartbeat(self, now: float) -> None:
        # An environment written to within the interval needs no keep-alive.
        quiet_since = now - self._heartbeat_interval * 0.5
        added = False
        for env in self._envs.values():
            if env.last_write > quiet_since:
                continue
            env.last_write = now
            for (_, chunked), conns in env.groups.items():
                if conns:
                    self._jobs.append(_Job(_HEARTBEAT, chunked, list(conns)))
                    added = True
            if env.contexts is not None:
                by_framing: dict[bool, list[Connection]] = {}
                for group in env.contexts.groups.values():
                    for chunked, conns in group.conns.items():
                        by_framing.setdefault(chunked, []).extend(conns)
                for chunked, conns_list in by_framing.items():
                    if conns_list:
                        self._jobs.append(_Job(_HEARTBEAT, chunked, conns_list))
                        added = True
        if added and self._run_handle is None:
            self._run()


def _stream_socket_setup(transport: asyncio.Transport, user_timeout_ms: int) -> int:
    """Set the stream's TCP_USER_TIMEOUT; return its descriptor (-1: write via transport)."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return -1
    if hasattr(socket, "TCP_USER_TIMEOUT"):
        with contextlib.suppress(OSError, AttributeError, ValueError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, user_timeout_ms)
    if transport.get_extra_info("ssl_object") is not None:
        return -1  # TLS: bytes must go through the transport's encryption
    try:
        return int(sock.fileno())
    except (OSError, AttributeError, ValueError):
        return -1


def _offset(change: Change) -> int:
    return change.offset


def _all_streams(env: _EnvStreams) -> Iterable[Connection]:
    yield from env.preparing
    for conns in env.groups.values():
        yield from conns
    if env.contexts is not None:
        yield from env.contexts.streams()


def _encode(changes: list[Change], stream: StreamKind) -> _Batch | None:
    """One round's events of ``changes`` for ``stream`` (None: nothing for that kind).

    ``eval`` streams are not encoded here: their bytes differ per context group (rule 8)."""
    if stream == "ping":
        # One ping per round tells a client to re-poll, whatever changed.
        return _Batch([PING_EVENT], [changes[-1].offset])
    if stream == "ofrep":
        # One notice for the whole round (coalesced), at the round's last position.
        last = changes[-1]
        return _Batch([ofrep.notice_event(last.position)], [last.offset])
    if stream == "flags":
        changes = [c for c in changes if c.kind == "flag"]
        if not changes:
            return None
    return _Batch([item_event(c, stream, c.position) for c in changes], [c.offset for c in changes])


def _queue_pending(conn: Connection, batch: _Batch | None) -> None:
    """Queue (unframed) the part of ``batch`` a still-preparing stream has not seen."""
    if batch is not None and conn.pending is not None:
        index = batch.suffix_index(conn.start_offset)
        if index < len(batch.frames):
            conn.pending.append(batch.suffix(index, False))


def _split_late(
    conns: set[Connection], events: GroupEvents, batch: _Batch | None, late: _Batch
) -> dict[_Batch, list[Connection]]:
    """Streams of a group that hold the baseline get ``batch``; those that joined after it
    get ``late`` (relay.evalstream rule 5)."""
    held: list[Connection] = []
    newer: list[Connection] = []
    for c in conns:
        (newer if c.start_offset > events.baseline_offset else held).append(c)
    out: dict[_Batch, list[Connection]] = {}
    if batch is not None and held:
        out[batch] = held
    if newer:
        out[late] = newer
    return out
