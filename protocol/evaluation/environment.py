"""A compiled environment: every flag and segment of one environment, evaluated for contexts.

``CompiledEnvironment`` is fed item changes (``apply``) and answers evaluations. Guarantees:

1. Compile per change, never per request: ``apply`` compiles the one item that changed
   (compiler.py) and nothing else; evaluations only read. Flags look their prerequisites and
   segments up by key when evaluated, so a change of one item never recompiles another.
2. ``apply`` never raises on bad data: a malformed item is kept compiled as malformed (a flag
   evaluates to ``ERROR/MALFORMED_FLAG``, a segment fails the evaluations that consult it). A
   prerequisite or segment cycle formed across changes is found while evaluating (cycle →
   ``MALFORMED_FLAG``), so no order of changes can break the environment.
3. ``apply`` returns the *affected* flag keys: the flags whose result for some context can
   differ after the change. For a flag, itself and every flag that has it as a prerequisite,
   transitively; for a segment, every flag whose rules use it directly or through nested
   segments, and their prerequisite dependants, transitively. The dependency index is kept
   per change from the compiled items' references.
4. Results are pre-built objects (result.py): an evaluation allocates nothing in the common
   case. ``evaluate`` never raises: an unknown or deleted flag gives ``ERROR/FLAG_NOT_FOUND``.
5. All flags for a context (``evaluate_all``, ``all_flags_json``) evaluate only the flags
   that can depend on the context. The constant flags of each audience (``SdkKind``:
   ``server`` = all flags, ``client`` = ``clientSideAvailability.usingEnvironmentId``,
   ``mobile`` = ``usingMobileKey``) are joined into one JSON blob per audience and reasons
   setting, built once after a change, and spliced into every answer as bytes.

Not thread-safe: one owner applies changes and evaluates, one evaluation at a time (the
relay's event loop); evaluations share one scratch scope (prerequisite and segment chains).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final, Literal

from protocol.evaluation.compiler import (
    CompiledFlag,
    CompiledSegment,
    Runner,
    compile_flag,
    compile_segment,
    new_scope,
)
from protocol.evaluation.context import Context
from protocol.evaluation.result import ErrorKind, EvaluationResult, Reason, make_result

__all__ = ["SDK_KINDS", "CompiledEnvironment", "SdkKind", "error_result"]

SdkKind = Literal["server", "client", "mobile"]
SDK_KINDS: Final[tuple[SdkKind, ...]] = ("server", "client", "mobile")
ItemKind = Literal["flag", "segment"]


def error_result(key: str, kind: ErrorKind) -> EvaluationResult:
    """A result for a flag that could not be evaluated at all (e.g. ``USER_NOT_SPECIFIED``
    when the context did not parse, ``FLAG_NOT_FOUND``): no value, no version."""
    return make_result(key, None, None, Reason("ERROR", error_kind=kind), None)


class _View:
    """The flags one audience sees: constants pre-encoded, the rest to evaluate."""

    __slots__ = ("blobs", "constants", "dynamic")

    def __init__(self, flags: Iterable[CompiledFlag], runs: Mapping[str, Runner]) -> None:
        self.constants: dict[str, EvaluationResult] = {}
        self.dynamic: list[tuple[str, Runner]] = []
        for flag in flags:
            if flag.constant is not None:
                self.constants[flag.key] = flag.constant
            else:
                self.dynamic.append((flag.key, runs[flag.key]))
        results = self.constants.values()
        self.blobs = (
            b",".join(r.fragment(False) for r in results),
            b",".join(r.fragment(True) for r in results),
        )


def _visible(flag: CompiledFlag, sdk: SdkKind) -> bool:
    if sdk == "client":
        return flag.client_side
    if sdk == "mobile":
        return flag.mobile
    return True


class CompiledEnvironment:
    """The compiled flags and segments of one environment (see the module docstring)."""

    def __init__(self) -> None:
        self.flags: dict[str, CompiledFlag] = {}
        self.segments: dict[str, CompiledSegment] = {}
        # Reverse references: key -> keys of the items that reference it.
        self._prerequisite_of: dict[str, set[str]] = {}
        self._used_by_flags: dict[str, set[str]] = {}
        self._used_by_segments: dict[str, set[str]] = {}
        self._views: dict[SdkKind, _View] = {}
        # One scope reused by every evaluation of flags with prerequisites or segments:
        # evaluations here are one at a time (module docstring), and building one costs more
        # than the rest of a simple segment check.
        self._scope = new_scope(self.flags, self.segments)
        # key -> the flag's runner (CompiledFlag.runner): one lookup and one call per flag.
        self._runs: dict[str, Runner] = {}

    @classmethod
    def from_items(
        cls,
        flags: Mapping[str, Any] | Iterable[Any],
        segments: Mapping[str, Any] | Iterable[Any] = (),
    ) -> CompiledEnvironment:
        """An environment holding ``flags`` and ``segments`` (maps key -> item, or items)."""
        env = cls()
        for kind, items in (("segment", segments), ("flag", flags)):
            pairs = (
                items.items() if isinstance(items, Mapping) else ((_key_of(i), i) for i in items)
            )
            for key, item in pairs:
                deleted = isinstance(item, dict) and item.get("deleted") is True
                env.apply(kind, key, None if deleted else item)  # type: ignore[arg-type]
        return env

    # --- changes ------------------------------------------------------------------------

    def apply(self, kind: ItemKind, key: str, item: object | None) -> frozenset[str]:
        """Compile ``item`` as the new ``kind`` ``key`` (None: the item was deleted).

        Returns the flag keys the change affects (module rule 3). Never raises.
        """
        if isinstance(item, dict) and item.get("key") != key:
            item = {**item, "key": key}  # the key it is stored under is its key
        if kind == "flag":
            old_flag = self.flags.pop(key, None)
            self._runs.pop(key, None)
            if old_flag is not None:
                self._unlink_flag(old_flag)
            if item is not None:
                flag = compile_flag(item)
                self.flags[key] = flag
                self._runs[key] = flag.runner(self.flags, self.segments, self._scope)
                self._link_flag(key, flag)
            self._views.clear()
        else:
            old_segment = self.segments.pop(key, None)
            if old_segment is not None:
                for used in old_segment.segment_keys:
                    _remove(self._used_by_segments, used, key)
            if item is not None:
                segment = compile_segment(item)
                self.segments[key] = segment
                for used in segment.segment_keys:
                    self._used_by_segments.setdefault(used, set()).add(key)
        return self.affected_flags(kind, key)

    def _link_flag(self, key: str, flag: CompiledFlag) -> None:
        for prerequisite in flag.prerequisite_keys:
            self._prerequisite_of.setdefault(prerequisite, set()).add(key)
        for segment in flag.segment_keys:
            self._used_by_flags.setdefault(segment, set()).add(key)

    def _unlink_flag(self, flag: CompiledFlag) -> None:
        for prerequisite in flag.prerequisite_keys:
            _remove(self._prerequisite_of, prerequisite, flag.key)
        for segment in flag.segment_keys:
            _remove(self._used_by_flags, segment, flag.key)

    def affected_flags(self, kind: ItemKind, key: str) -> frozenset[str]:
        """Flag keys whose result can change when ``kind`` ``key`` changes (rule 3)."""
        if kind == "flag":
            pending = [key]
        else:
            segments = {key}
            stack = [key]
            while stack:
                for user in self._used_by_segments.get(stack.pop(), ()):
                    if user not in segments:
                        segments.add(user)
                        stack.append(user)
            pending = [f for s in segments for f in self._used_by_flags.get(s, ())]
        affected: set[str] = set()
        while pending:
            flag = pending.pop()
            if flag not in affected:
                affected.add(flag)
                pending.extend(self._prerequisite_of.get(flag, ()))
        return frozenset(affected)

    # --- evaluating ---------------------------------------------------------------------

    def evaluate(self, key: str, context: Context) -> EvaluationResult:
        """Flag ``key`` for ``context``; ``ERROR/FLAG_NOT_FOUND`` if there is no such flag."""
        run = self._runs.get(key)
        if run is None:
            return error_result(key, "FLAG_NOT_FOUND")
        return run(context)

    def runner(self, key: str) -> Runner | None:
        """The fastest callable evaluating flag ``key`` (None if there is no such flag):
        ``runner(ctx)`` is ``evaluate(key, ctx)`` without the lookup, over this
        environment's reusable scope. Valid until flag ``key`` changes; one evaluation at a
        time (module docstring)."""
        return self._runs.get(key)

    def visible(self, key: str, sdk: SdkKind) -> bool:
        """True if flag ``key`` exists and ``sdk`` may see it (``clientSideAvailability``)."""
        flag = self.flags.get(key)
        return flag is not None and _visible(flag, sdk)

    def evaluate_all(
        self, context: Context, sdk: SdkKind = "server"
    ) -> dict[str, EvaluationResult]:
        """Every flag ``sdk`` may see, evaluated for ``context``."""
        view = self._view(sdk)
        out = dict(view.constants)
        for key, run in view.dynamic:
            out[key] = run(context)
        return out

    def all_flags_json(
        self, context: Context, sdk: SdkKind = "server", *, with_reasons: bool = False
    ) -> bytes:
        """The client-side (``evalx``) JSON object of every flag ``sdk`` may see:
        ``{"key": {"value": ..., "variation": ..., "version": ..., ...}, ...}`` (result.py)."""
        view = self._view(sdk)
        parts = [run(context).fragment(with_reasons) for _, run in view.dynamic]
        blob = view.blobs[with_reasons]
        if blob:
            parts.append(blob)
        return b"{" + b",".join(parts) + b"}"

    def evaluated_flag_json(
        self, key: str, context: Context, *, with_reasons: bool = False
    ) -> bytes | None:
        """One evaluated flag with its key (an evaluated stream's ``patch`` data), or None if
        there is no such flag."""
        run = self._runs.get(key)
        if run is None:
            return None
        return run(context).patch(with_reasons)

    def _view(self, sdk: SdkKind) -> _View:
        view = self._views.get(sdk)
        if view is None:
            visible = (f for f in self.flags.values() if _visible(f, sdk))
            view = self._views[sdk] = _View(visible, self._runs)
        return view


def _remove(index: dict[str, set[str]], key: str, user: str) -> None:
    users = index.get(key)
    if users is not None:
        users.discard(user)
        if not users:
            del index[key]


def _key_of(item: Any) -> str:
    key = item.get("key") if isinstance(item, dict) else None
    return key if isinstance(key, str) else ""
