"""The relay's evaluation service: every environment's flags, compiled, kept current by the state.

Rules (in the order a record meets them):

1. ``relay.state.State`` hands every applied flag or segment record to ``apply`` — during the
   bootstrap too — in offset order, right after it stored the raw item. Whatever is read
   through ``environment(env)`` is exactly the raw state: what server-side SDKs get and what
   evaluation answers never disagree.
2. Compile once per version, never per request, and not during the bootstrap. Until the state
   is ready, ``apply`` only files the record's JSON (the bytes the state holds anyway) under
   its item, replacing the version filed before: a version superseded within the bootstrap
   is never compiled, and readiness does not wait for compiling. Once ready (``ready()``) the
   filed items are compiled in the background, in slices of at most ``slice_seconds`` per
   event-loop callback so streams, requests and the consumer keep running. After that every
   change is compiled when applied (``protocol.evaluation``), the one item that changed.
3. Nothing ever reads a partly compiled environment: ``environment(env)`` first compiles what
   is still filed for ``env`` (synchronously), and request handlers call ``await
   compiled(env)`` before it, which does the same in slices (yielding to the loop between
   them) so the first request after readiness does not stall the relay. A change that
   arrives for an environment with items still filed is filed too (rule 4).
4. ``apply`` returns the flag keys the change affects (the flag, its prerequisite dependants,
   the flags using a segment through any nesting); the state puts them on the ``Change`` it
   hands to its listeners (``Change.affected_flags``), so a listener learns with each change
   which flags' results can have changed, without recomputing anything. A filed change
   returns an empty set: its environment was never read compiled (reading compiles it
   first, rule 3), so no listener holds a result of it that the change could alter.
5. A malformed item never breaks the relay: it is still stored and served raw to
   server-side SDKs (the state checks only key, version and that it is a JSON object); here
   it is compiled as malformed and evaluates to ``ERROR/MALFORMED_FLAG`` (a segment: every
   evaluation that consults it). It is counted (``malformed``) and logged when compiled, once
   per version, without the item's key (no flag keys in logs).
6. When the topic's epoch changes the state is rebuilt from the log: ``clear()`` drops every
   compiled environment and everything filed, and the next bootstrap files again.

Endpoints evaluate with ``state.evaluation.environment(env_key)`` (None for an environment
that has no flag or segment yet): see ``protocol.evaluation.CompiledEnvironment`` for
``evaluate``, ``evaluate_all``, ``all_flags_json``, ``evaluated_flag_json``, ``visible``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any, Final

from protocol.evaluation import CompiledEnvironment
from protocol.keys import ItemKind

__all__ = ["EvaluationService"]

log = logging.getLogger("flagstream.relay.evaluation")

# Compiling one item takes 20-80 µs: a slice compiles a few hundred, then yields (rule 2).
DEFAULT_SLICE_SECONDS: Final = 0.005

_Filed = dict[tuple[ItemKind, str], "bytes | None"]  # item -> its JSON (None: deleted)


class EvaluationService:
    """The compiled flags and segments of every environment of one relay (rules above)."""

    def __init__(self, on_pending: Callable[[int], None] | None = None) -> None:
        self._environments: dict[str, CompiledEnvironment] = {}
        self._filed: dict[str, _Filed] = {}  # env -> items not compiled yet (rule 2)
        self._filed_count = 0
        self._bootstrapping = True
        self._background: asyncio.Handle | None = None
        self._on_pending = on_pending  # told how many items are filed (a metrics gauge)
        self.slice_seconds = DEFAULT_SLICE_SECONDS
        self.malformed = 0  # items compiled as malformed since the start (or the last clear)
        self.compilations = 0  # items compiled since the start (or the last clear)

    # --- reading (rule 3) ------------------------------------------------------------------

    def environment(self, env: str) -> CompiledEnvironment | None:
        """The compiled environment ``env``, or None if it holds no flag or segment."""
        if env in self._filed:
            self._compile_filed(env, None)
        return self._environments.get(env)

    async def compiled(self, env: str) -> None:
        """Until nothing of ``env`` is left to compile, compiling it in slices (rule 3)."""
        while env in self._filed:
            self._compile_filed(env, self.slice_seconds)
            if env in self._filed:
                await asyncio.sleep(0)

    def environments(self) -> dict[str, CompiledEnvironment]:
        for env in list(self._filed):
            self._compile_filed(env, None)
        return dict(self._environments)

    @property
    def pending(self) -> int:
        """Items applied but not compiled yet (filed during the bootstrap, rule 2)."""
        return self._filed_count

    # --- changes (rules 1, 2, 4) -----------------------------------------------------------

    def apply(
        self, env: str, kind: ItemKind, key: str, item: Any | None, raw: bytes | None = None
    ) -> frozenset[str]:
        """Take ``item`` (parsed JSON, None for a deletion; ``raw`` its JSON bytes) as the new
        ``kind`` ``key`` of ``env``: compiled now, or filed while bootstrapping (rule 2).

        Returns the affected flag keys (rule 4). Never raises.
        """
        if raw is not None and (self._bootstrapping or env in self._filed):
            filed = self._filed.get(env)
            if filed is None:
                filed = self._filed[env] = {}
            ident = (kind, key)
            if ident not in filed:
                self._filed_count += 1
            filed[ident] = None if item is None else raw
            return frozenset()
        return self._compile(env, kind, key, item)

    def ready(self) -> None:
        """The bootstrap is complete: compile what was filed in the background (rule 2);
        every later change is compiled when applied."""
        self._bootstrapping = False
        self._schedule()
        self._report()

    def clear(self) -> None:
        self._environments.clear()
        self._filed.clear()
        self._filed_count = 0
        self._bootstrapping = True
        if self._background is not None:
            self._background.cancel()
            self._background = None
        self.malformed = 0
        self.compilations = 0
        self._report()

    # --- compiling ---------------------------------------------------------------------------

    def _compile(self, env: str, kind: ItemKind, key: str, item: Any | None) -> frozenset[str]:
        compiled = self._environments.get(env)
        if compiled is None:
            compiled = self._environments[env] = CompiledEnvironment()
        try:
            affected = compiled.apply(kind, key, item)
        except Exception:  # a bug must not stop the consumer: the raw item is still served
            log.exception("environment %s: compiling a %s failed", env, kind)
            return frozenset({key}) if kind == "flag" else frozenset()
        if item is not None:
            self.compilations += 1
            held = compiled.flags.get(key) if kind == "flag" else compiled.segments.get(key)
            error = held.error if held is not None else None
            if error is not None:
                self.malformed += 1
                log.warning("environment %s: a %s evaluates as malformed: %s", env, kind, error)
        return affected

    def _compile_filed(self, env: str, budget: float | None) -> None:
        """Compile items filed for ``env`` (all of them, or for about ``budget`` seconds)."""
        filed = self._filed[env]
        deadline = None if budget is None else time.perf_counter() + budget
        try:
            while filed:
                # popitem (last in, first out): O(1), where deleting from the front would
                # make each next(iter(filed)) skip every slot deleted before it.
                (kind, key), raw = filed.popitem()
                self._filed_count -= 1
                try:
                    item = None if raw is None else json.loads(raw)
                except (ValueError, RecursionError):  # the state stored valid JSON objects
                    item = None
                self._compile(env, kind, key, item)
                if deadline is not None and time.perf_counter() >= deadline:
                    break
        finally:
            if not filed:
                del self._filed[env]
            self._report()

    def _schedule(self) -> None:
        if self._background is not None or not self._filed or self._bootstrapping:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (tests, tools): compiled on first read (rule 3)
        self._background = loop.call_soon(self._background_slice)

    def _background_slice(self) -> None:
        self._background = None
        if self._filed and not self._bootstrapping:
            self._compile_filed(next(iter(self._filed)), self.slice_seconds)
            self._schedule()

    def _report(self) -> None:
        if self._on_pending is not None:
            self._on_pending(self._filed_count)
