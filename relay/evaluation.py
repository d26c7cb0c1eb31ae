"""The relay's evaluation service: every environment's flags, compiled, kept current by the state.

Rules (in the order a record meets them):

1. ``relay.state.State`` hands every applied flag or segment record to ``apply`` — during the
   bootstrap too — in offset order, right after it stored the raw item. So the compiled view
   of an environment is always exactly its raw state: what server-side SDKs get and what
   evaluation answers never disagree.
2. Compile per change, never per request: ``apply`` compiles the one item that changed
   (``protocol.evaluation``); requests only read ``environment(env)``.
3. A malformed item never breaks the relay: it is still stored and served raw to
   server-side SDKs (the state checks only key, version and that it is a JSON object); here
   it is compiled as malformed and evaluates to ``ERROR/MALFORMED_FLAG`` (a segment: every
   evaluation that consults it). It is counted (``malformed``) and logged once per change,
   without the item's key (no flag keys in logs).
4. ``apply`` returns the flag keys the change affects (the flag, its prerequisite dependants,
   the flags using a segment through any nesting); the state puts them on the ``Change`` it
   hands to its listeners (``Change.affected_flags``), so a listener learns with each change
   which flags' results can have changed, without recomputing anything.
5. When the topic's epoch changes the state is rebuilt from the log: ``clear()`` drops every
   compiled environment with it.

Endpoints evaluate with ``state.evaluation.environment(env_key)`` (None for an environment
that has no flag or segment yet): see ``protocol.evaluation.CompiledEnvironment`` for
``evaluate``, ``evaluate_all``, ``all_flags_json``, ``evaluated_flag_json``, ``visible``.
"""

from __future__ import annotations

import logging
from typing import Any

from protocol.evaluation import CompiledEnvironment
from protocol.keys import ItemKind

__all__ = ["EvaluationService"]

log = logging.getLogger("flagstream.relay.evaluation")


class EvaluationService:
    """The compiled flags and segments of every environment of one relay (rules above)."""

    def __init__(self) -> None:
        self._environments: dict[str, CompiledEnvironment] = {}
        self.malformed = 0  # items compiled as malformed since the start (or the last clear)

    def environment(self, env: str) -> CompiledEnvironment | None:
        """The compiled environment ``env``, or None if it holds no flag or segment."""
        return self._environments.get(env)

    def environments(self) -> dict[str, CompiledEnvironment]:
        return dict(self._environments)

    def apply(self, env: str, kind: ItemKind, key: str, item: Any | None) -> frozenset[str]:
        """Compile ``item`` (parsed JSON; None for a deletion) as ``kind`` ``key`` of ``env``.

        Returns the affected flag keys (rule 4). Never raises.
        """
        compiled = self._environments.get(env)
        if compiled is None:
            compiled = self._environments[env] = CompiledEnvironment()
        try:
            affected = compiled.apply(kind, key, item)
        except Exception:  # a bug must not stop the consumer: the raw item is still served
            log.exception("environment %s: compiling a %s failed", env, kind)
            return frozenset({key}) if kind == "flag" else frozenset()
        if item is not None:
            held = compiled.flags.get(key) if kind == "flag" else compiled.segments.get(key)
            error = held.error if held is not None else None
            if error is not None:
                self.malformed += 1
                log.warning("environment %s: a %s evaluates as malformed: %s", env, kind, error)
        return affected

    def clear(self) -> None:
        self._environments.clear()
        self.malformed = 0
