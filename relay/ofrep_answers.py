"""OFREP answers of every environment, encoded once per distinct result.

Rules (in the order a request meets them):

1. Evaluation is the relay's compiled environment (``state.evaluation``), never re-done
   here: each flag through the environment's runner (its reusable evaluation scope); this
   module only turns results into OFREP JSON (``protocol.ofrep``).
2. Each flag version gives a small set of distinct results, always the same objects
   (``protocol.evaluation.result``); each one's OFREP JSON is encoded the first time it is
   answered and kept with that flag version. A new version of a flag drops what was kept for
   the old one; nothing else is dropped on a change.
3. What OFREP needs besides the result (variation names, which rules are rollouts:
   ``protocol.ofrep.FlagInfo``) is read from the flag's raw JSON once per flag version.
4. Bulk answers: per environment position and audience (``server``, ``mobile``,
   ``client``), the flags that cannot depend on the context are joined into one blob once;
   a request evaluates only the others. Rebuilt lazily after the environment changed.
5. Memory: per flag version at most ``MAX_RESULTS_PER_FLAG`` encoded results are kept
   (a safety bound; a flag gives far fewer), so no request pattern can grow it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Final

from protocol.evaluation import CompiledFlag, Context, EvaluationResult, SdkKind
from protocol.evaluation.compiler import Runner
from protocol.ofrep import FlagInfo, encode_evaluation, flag_info
from relay.state import State

__all__ = ["OfrepAnswers"]

MAX_RESULTS_PER_FLAG: Final = 64


class _Encoded:
    """What is kept for one flag version: its info and its encoded results by identity."""

    __slots__ = ("bodies", "flag", "info", "results")

    def __init__(self, flag: CompiledFlag, info: FlagInfo) -> None:
        self.flag = flag
        self.info = info
        # id(result) -> (result, status, json). The result is held, so while it is kept no
        # other live object has its id: a hit by id is that very result.
        self.results: dict[int, tuple[EvaluationResult, int, bytes]] = {}
        # id(result) -> json, the same entries: what a bulk answer needs, one lookup each.
        self.bodies: dict[int, bytes] = {}


class _View:
    """The flags one audience sees at one position: a constant blob and the rest (each
    with its runner)."""

    __slots__ = ("constant", "dynamic", "offset")

    def __init__(
        self,
        offset: int,
        constant: bytes,
        dynamic: list[tuple[Runner, Callable[[int], bytes | None], _Encoded]],
    ) -> None:
        self.offset = offset
        self.constant = constant
        self.dynamic = dynamic


class OfrepAnswers:
    """OFREP JSON for one relay's environments (rules above). One per event loop."""

    def __init__(self, state: State) -> None:
        self._state = state
        self._encoded: dict[str, dict[str, _Encoded]] = {}  # env -> flag key -> kept
        self._views: dict[tuple[str, SdkKind], _View] = {}

    def clear(self) -> None:
        """Forget everything (the state was rebuilt for a new topic epoch)."""
        self._encoded.clear()
        self._views.clear()

    def single(
        self, env: str, key: str, context: Context, audience: SdkKind
    ) -> tuple[int, bytes] | None:
        """``(status, json)`` of flag ``key``; None if ``audience`` cannot see such a flag."""
        compiled = self._state.evaluation.environment(env)
        if compiled is None or not compiled.visible(key, audience):
            return None
        flag = compiled.flags[key]
        result = compiled.evaluate(key, context)
        encoded = self._encode(env, flag, result)
        return encoded[1], encoded[2]

    def bulk(self, env: str, context: Context, audience: SdkKind) -> list[bytes]:
        """The encoded answers of every flag ``audience`` sees, for ``context``."""
        compiled = self._state.evaluation.environment(env)
        if compiled is None:
            return []
        view = self._view(env, audience)
        parts: list[bytes] = []
        append = parts.append
        # _encode inlined, with each flag's ``bodies.get`` bound once per view (the dicts are
        # cleared, never replaced): this loop is the per-request cost.
        for run, body_of, kept in view.dynamic:
            result = run(context)
            body = body_of(id(result))
            if body is None:
                body = _encode_into(kept, result)[2]
            append(body)
        if view.constant:
            parts.append(view.constant)
        return parts

    # --- caches -------------------------------------------------------------------------

    def _view(self, env: str, audience: SdkKind) -> _View:
        environment = self._state.environments[env]
        view = self._views.get((env, audience))
        if view is not None and view.offset == environment.offset:
            return view
        compiled = self._state.evaluation.environment(env)
        assert compiled is not None
        constant: list[bytes] = []
        dynamic: list[tuple[Runner, Callable[[int], bytes | None], _Encoded]] = []
        for flag in compiled.flags.values():
            if not compiled.visible(flag.key, audience):
                continue
            if flag.constant is not None:
                constant.append(self._encode(env, flag, flag.constant)[2])
            else:
                run = compiled.runner(flag.key)
                assert run is not None  # every flag of the environment has one
                kept = self._kept(env, flag)
                dynamic.append((run, kept.bodies.get, kept))
        self._prune(env, compiled.flags)
        view = self._views[(env, audience)] = _View(
            environment.offset, b",".join(constant), dynamic
        )
        return view

    def _kept(self, env: str, flag: CompiledFlag) -> _Encoded:
        """What is kept for this version of ``flag`` (rule 2)."""
        kept_by_key = self._encoded.get(env)
        if kept_by_key is None:
            kept_by_key = self._encoded[env] = {}
        kept = kept_by_key.get(flag.key)
        if kept is None or kept.flag is not flag:
            kept = kept_by_key[flag.key] = _Encoded(flag, self._info(env, flag))
        return kept

    def _encode(
        self, env: str, flag: CompiledFlag, result: EvaluationResult
    ) -> tuple[EvaluationResult, int, bytes]:
        kept = self._kept(env, flag)
        hit = kept.results.get(id(result))
        if hit is not None:  # the very same result (see _Encoded)
            return hit
        return _encode_into(kept, result)

    def _info(self, env: str, flag: CompiledFlag) -> FlagInfo:
        environment = self._state.environments.get(env)
        item = environment.items.get(("flag", flag.key)) if environment is not None else None
        if item is None or item.version != flag.version:
            return FlagInfo()
        try:
            parsed: Any = json.loads(item.item)
        except ValueError:  # the state stores only JSON objects; kept total anyway
            return FlagInfo()
        return flag_info(parsed)

    def _prune(self, env: str, flags: dict[str, CompiledFlag]) -> None:
        """Drop what was kept for flag versions that are gone (deleted or replaced)."""
        kept_by_key = self._encoded.get(env)
        if kept_by_key:
            for key in [k for k, kept in kept_by_key.items() if flags.get(k) is not kept.flag]:
                del kept_by_key[key]


def _encode_into(kept: _Encoded, result: EvaluationResult) -> tuple[EvaluationResult, int, bytes]:
    """Encode ``result`` and keep it with its flag version (rules 2 and 5)."""
    status, body = encode_evaluation(result, kept.info)
    if len(kept.results) >= MAX_RESULTS_PER_FLAG:
        kept.results.clear()
        kept.bodies.clear()
    entry = kept.results[id(result)] = (result, status, body)
    kept.bodies[id(result)] = body
    return entry
