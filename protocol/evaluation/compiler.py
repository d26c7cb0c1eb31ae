"""Compiling flags and segments (LaunchDarkly JSON) into objects that evaluate fast and exactly.

``compile_flag(obj)`` / ``compile_segment(obj)`` take one parsed item and never raise. The
result is built once per item version; evaluating it reads no JSON, parses nothing and
allocates nothing in the common case (results are pre-built, see result.py).

What is compiled (each rule is LaunchDarkly's; see docs/evaluation.md):

1. Shape. The item is read as LaunchDarkly's SDKs read it: absent or null fields take their
   defaults (``on: false``, no targets/rules/prerequisites, ``salt: ""``, a clause without
   ``attribute`` reads ``""``, without ``values`` ``[]``), unknown fields are ignored, and a
   field of the wrong JSON type makes the whole item *malformed*: a malformed flag always
   evaluates to ``ERROR/MALFORMED_FLAG``, a malformed segment makes every evaluation that
   consults it fail so. ``error`` says what is wrong (``rules[0].clauses[1].op: must be a
   string``).
2. Results. Every result the flag can give (the off value, each prerequisite failure, each
   target, each rule and fallthrough variation, each rollout bucket with and without
   ``inExperiment``) is built up front with its JSON. A variation index out of range gives
   ``ERROR/MALFORMED_FLAG`` where it is reached, as LaunchDarkly does.
3. Targets. ``targets`` and ``contextTargets`` become one dict per context kind from key to
   (position, result): the first matching target in LaunchDarkly's order wins. For a
   ``contextTargets`` entry of kind ``user`` the keys are those of the first ``targets``
   entry with the same variation (that is where LaunchDarkly keeps user keys).
4. Clauses become closures over a pre-built test (operators.py); attribute references are
   parsed once (attributes.py). ``segmentMatch`` looks segments up by key when evaluated, so
   a segment changed later is seen without recompiling the flags that use it.
5. Constant. A flag whose result cannot depend on the context (off; or on with no
   prerequisites, no targets, and a fixed fallthrough or a first rule without clauses with a
   fixed variation) has ``constant`` set: evaluating it returns that one result.

Evaluation order (``CompiledFlag.evaluate``): off → prerequisites (each must be on and give
its variation; a missing one fails; a cycle is ``MALFORMED_FLAG``) → targets → rules in
order (all clauses must match) → fallthrough. A segment matches if the context key is in
``included``/``includedContexts``, else not if in ``excluded``/``excludedContexts``, else if a
rule matches (all clauses, and the bucket is below ``weight`` when there is one); a segment
reached again while its own rules are evaluated is a cycle: ``MALFORMED_FLAG``. An
``unbounded`` (big) segment is evaluated as LaunchDarkly's SDKs do without a big-segment
store: only its rules, and the reason gets ``bigSegmentsStatus: NOT_CONFIGURED``.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Mapping
from typing import Any, Final

from protocol.evaluation.attributes import AttributeRef
from protocol.evaluation.bucketing import (
    bucket,
    digest_cut,
    flag_prefix,
    prefix_hasher,
    utf8,
)
from protocol.evaluation.context import DEFAULT_KIND, Context, SingleContext
from protocol.evaluation.operators import build_test
from protocol.evaluation.result import (
    ErrorKind,
    EvaluationResult,
    Reason,
    encode_json,
    make_result,
)

__all__ = [
    "CompiledFlag",
    "CompiledSegment",
    "Runner",
    "compile_flag",
    "compile_segment",
    "new_scope",
]

_OFF: Final = Reason("OFF")
_FALLTHROUGH: Final = Reason("FALLTHROUGH")
_TARGET_MATCH: Final = Reason("TARGET_MATCH")
_BIG_SEGMENTS_STATUS: Final = "NOT_CONFIGURED"
_NO_KEYS: Final[frozenset[str]] = frozenset()
_NO_TARGETS: Final[dict[str, dict[str, tuple[int, EvaluationResult]]]] = {}  # never mutated


class _Malformed(Exception):
    """Raised inside an evaluation that must end as ERROR/MALFORMED_FLAG."""


class _Invalid(Exception):
    """Raised while compiling an item whose JSON LaunchDarkly's SDKs would not read."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}" if path else reason)


class _Scope:
    """The mutable state of one top-level evaluation (only for flags that need one)."""

    __slots__ = (
        "big_segments",
        "flags",
        "prereq_chain",
        "prereqs_seen",
        "segment_chain",
        "segments",
    )

    def __init__(
        self, flags: Mapping[str, CompiledFlag], segments: Mapping[str, CompiledSegment]
    ) -> None:
        self.flags = flags
        self.segments = segments
        # Created on first use: most evaluations never check a prerequisite or a segment rule.
        self.prereq_chain: list[str] | None = None
        self.segment_chain: list[str] | None = None
        self.prereqs_seen = 0  # direct prerequisites of the top-level flag evaluated so far
        self.big_segments = False  # an unbounded segment was consulted


def new_scope(flags: Mapping[str, CompiledFlag], segments: Mapping[str, CompiledSegment]) -> _Scope:
    """A reusable evaluation scope over ``flags`` and ``segments`` (see ``evaluate_in``)."""
    return _Scope(flags, segments)


_NO_SCOPE: Final = _Scope({}, {})  # for flags without prerequisites or segment clauses

Matcher = Callable[[Context, _Scope], bool]
Runner = Callable[[Context], EvaluationResult]


# --- reading JSON ---------------------------------------------------------------------------


def _join(path: str, name: str | int) -> str:
    if isinstance(name, int):
        return f"{path}[{name}]"
    return f"{path}.{name}" if path else name


def _opt(
    obj: Mapping[str, Any], name: str, types: type | tuple[type, ...], path: str, what: str
) -> Any:
    value = obj.get(name)
    if value is None:
        return None
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise _Invalid(_join(path, name), f"must be {what}")
    if not isinstance(value, types):
        raise _Invalid(_join(path, name), f"must be {what}")
    return value


def _opt_bool(obj: Mapping[str, Any], name: str, path: str) -> bool:
    return _opt(obj, name, bool, path, "true or false") is True


def _opt_int(obj: Mapping[str, Any], name: str, path: str) -> int | None:
    value: int | None = _opt(obj, name, int, path, "an integer")
    return value


def _opt_str(obj: Mapping[str, Any], name: str, path: str) -> str | None:
    value: str | None = _opt(obj, name, str, path, "a string")
    return value


def _req_int(obj: Mapping[str, Any], name: str, path: str) -> int:
    value = _opt_int(obj, name, path)
    if value is None:
        raise _Invalid(_join(path, name), "is required")
    return value


def _req_str(obj: Mapping[str, Any], name: str, path: str) -> str:
    value = _opt_str(obj, name, path)
    if value is None:
        raise _Invalid(_join(path, name), "is required")
    return value


def _opt_list(obj: Mapping[str, Any], name: str, path: str) -> list[Any]:
    value: list[Any] | None = _opt(obj, name, list, path, "a list")
    return [] if value is None else value


def _objects(obj: Mapping[str, Any], name: str, path: str) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for i, item in enumerate(_opt_list(obj, name, path)):
        p = _join(_join(path, name), i)
        if not isinstance(item, dict):
            raise _Invalid(p, "must be an object")
        out.append((p, item))
    return out


def _strings(obj: Mapping[str, Any], name: str, path: str) -> list[str]:
    values = _opt_list(obj, name, path)
    for i, v in enumerate(values):
        if not isinstance(v, str):
            raise _Invalid(_join(_join(path, name), i), "must be a string")
    return values


# --- context lookups ------------------------------------------------------------------------


def _lookup(single: SingleContext, ref: AttributeRef) -> Any:
    """The value ``ref`` points at in ``single``; raises _Malformed for an invalid ref."""
    if ref.error is not None:
        raise _Malformed(ref.error)
    components = ref.components
    value = single.attributes.get(components[0])
    for name in components[1:]:
        if type(value) is not dict:
            return None
        value = value.get(name)
    return value


def _bucket_context(ctx: Context, kind: str, ref: AttributeRef | None, prefix: str) -> float:
    """LaunchDarkly's bucket of ``ctx``: -1.0 if it has no ``kind`` context."""
    single = ctx.by_kind.get(kind)
    if single is None:
        return -1.0
    value = single.key if ref is None else _lookup(single, ref)
    return 0.0 if value is None else bucket(prefix, value)


# --- clauses --------------------------------------------------------------------------------


def _compile_clause(clause: dict[str, Any], path: str, segment_keys: set[str]) -> Matcher:
    op = _opt_str(clause, "op", path) or ""
    values = _opt_list(clause, "values", path)
    negate = _opt_bool(clause, "negate", path)
    context_kind = _opt_str(clause, "contextKind", path)
    attribute = _opt_str(clause, "attribute", path) or ""
    if op == "segmentMatch":
        keys = tuple(v for v in values if isinstance(v, str))
        segment_keys.update(keys)
        return _segment_match(keys, negate)
    ref = AttributeRef.parse(attribute, context_kind)
    kind = context_kind or DEFAULT_KIND
    test = build_test(op, values)
    if ref.error is not None:

        def invalid(ctx: Context, scope: _Scope) -> bool:
            if ctx.by_kind.get(kind) is None:
                return False
            raise _Malformed(ref.error)

        return invalid
    if ref.is_kind:

        def kinds(ctx: Context, scope: _Scope) -> bool:
            for single in ctx.contexts:
                if test(single.kind):
                    return not negate
            return negate

        return kinds
    name, nested = ref.components[0], ref.components[1:]
    if not nested:

        def match_top_level(ctx: Context, scope: _Scope) -> bool:
            single = ctx.by_kind.get(kind)
            if single is None:
                return False
            value = single.attributes.get(name)
            if value is None:
                return False
            if type(value) is list:
                for element in value:
                    if test(element):
                        return not negate
                return negate
            return test(value) is not negate

        return match_top_level

    def match_nested(ctx: Context, scope: _Scope) -> bool:
        single = ctx.by_kind.get(kind)
        if single is None:
            return False
        value = single.attributes.get(name)
        for part in nested:
            value = value.get(part) if type(value) is dict else None
        if value is None:
            return False
        if type(value) is list:
            for element in value:
                if test(element):
                    return not negate
            return negate
        return test(value) is not negate

    return match_nested


def _segment_match(keys: tuple[str, ...], negate: bool) -> Matcher:
    def match(ctx: Context, scope: _Scope) -> bool:
        segments = scope.segments
        for key in keys:
            segment = segments.get(key)
            if segment is not None and segment.matches(ctx, scope):
                return not negate
        return negate

    return match


def _compile_clauses(
    rule: dict[str, Any], path: str, segment_keys: set[str]
) -> tuple[Matcher, ...]:
    return tuple(_compile_clause(c, p, segment_keys) for p, c in _objects(rule, "clauses", path))


def _matches_all(matchers: tuple[Matcher, ...], ctx: Context, scope: _Scope) -> bool:
    # A loop, not all(<generator>): this is the hot path, and the loop is twice as fast.
    for matcher in matchers:  # noqa: SIM110
        if not matcher(ctx, scope):
            return False
    return True


# --- flags ----------------------------------------------------------------------------------


class _Rollout:
    """A percentage rollout: the bucket picks a pre-built result. ``pick(ctx)`` is a closure
    built once: by context key (the common case) one copy of the prefix's SHA-1 takes the
    key and its digest is compared, as bytes, with the buckets' boundaries
    (``bucketing.digest_cut``), no float; by ``bucketBy`` attribute, or with a negative
    weight, the general path (``bucketing.bucket``)."""

    __slots__ = (
        "by_key",
        "experiment",
        "kind",
        "pick",
        "prefix",
        "ref",
        "results",
        "sorted",
        "thresholds",
    )

    def __init__(
        self,
        kind: str,
        ref: AttributeRef | None,
        prefix: str,
        experiment: bool,
        thresholds: list[float],
        results: list[tuple[EvaluationResult, EvaluationResult]],
    ) -> None:
        self.kind = kind
        self.ref = ref
        self.prefix = prefix
        self.experiment = experiment
        self.thresholds = thresholds
        self.results = results  # per bucket: (result, result in the experiment)
        # No negative weight: thresholds ascend from >= 0, so a binary search finds the bucket.
        self.sorted = thresholds[0] >= 0 and thresholds == sorted(thresholds)
        self.by_key = self.sorted and ref is None
        self.pick: Callable[[Context], EvaluationResult] = (
            self._by_key() if self.by_key else self._pick
        )

    def _by_key(self) -> Callable[[Context], EvaluationResult]:
        kind = self.kind
        first = self.results[0][False]
        # The result per bucket index; past the last boundary (weights short of 100000) the
        # last bucket.
        chosen = [pair[self.experiment] for pair in self.results]
        chosen.append(chosen[-1])
        cuts = [digest_cut(t) for t in self.thresholds]
        copy = prefix_hasher(self.prefix).copy

        def pick(ctx: Context) -> EvaluationResult:
            single = ctx.by_kind.get(kind)
            if single is None:  # bucket -1: the first bucket, never in the experiment
                return first
            h = copy()
            try:
                h.update(single.key.encode())
            except UnicodeEncodeError:  # a lone surrogate (JSON "\ud800"): hashed anyway
                h.update(utf8(single.key))
            return chosen[bisect_right(cuts, h.digest())]

        return pick

    def _pick(self, ctx: Context) -> EvaluationResult:
        single = ctx.by_kind.get(self.kind)
        if single is None:
            # Without the rollout's context kind the bucket is -1 (so the first bucket when no
            # weight is negative), and never in the experiment.
            if self.sorted:
                return self.results[0][False]
            value, experiment = -1.0, False
        else:
            key = single.key if self.ref is None else _lookup(single, self.ref)
            value = bucket(self.prefix, key)
            experiment = self.experiment
        # The first bucket whose cumulative threshold is above the value; past the last one
        # (weights short of 100000) the last bucket.
        if self.sorted:
            i = bisect_right(self.thresholds, value)
        else:
            i = next((i for i, t in enumerate(self.thresholds) if value < t), -1)
        return self.results[i if i < len(self.results) else -1][experiment]


# A rule or fallthrough outcome: a fixed result, or a rollout.
_Outcome = tuple[EvaluationResult | None, _Rollout | None]


class CompiledFlag:
    """One version of a flag, ready to evaluate (see the module docstring).

    Public, read-only attributes: ``key``, ``version``, ``on``, ``client_side`` (visible with
    a client-side id: ``clientSideAvailability.usingEnvironmentId``), ``mobile`` (visible with
    a mobile key: ``usingMobileKey``), ``prerequisite_keys``, ``segment_keys`` (used by
    ``segmentMatch`` clauses), ``constant`` (the result if it cannot depend on the context,
    else None) and ``error`` (why the item is malformed, else None).
    """

    __slots__ = (
        "_debug",
        "_failed",
        "_fallthrough",
        "_memo",
        "_needs_scope",
        "_prerequisites",
        "_rule_track_events",
        "_rules",
        "_target_order",
        "_targets",
        "_track_events",
        "_track_fallthrough",
        "_variation_json",
        "_variations",
        "client_side",
        "constant",
        "error",
        "key",
        "mobile",
        "on",
        "prerequisite_keys",
        "run",
        "segment_keys",
        "version",
    )

    def __init__(self, key: str, version: int) -> None:
        self.key = key
        self.version = version
        self.on = False
        self.client_side = False
        self.mobile = False
        self.prerequisite_keys: tuple[str, ...] = ()
        self.segment_keys: frozenset[str] = _NO_KEYS
        self.constant: EvaluationResult | None = None
        self.error: str | None = None
        self._variations: list[Any] = []
        self._variation_json: list[bytes] = []
        self._track_events = False
        self._track_fallthrough = False
        self._rule_track_events: list[bool] = []
        self._debug: int | float | None = None
        self._prerequisites: tuple[tuple[str, int], ...] = ()
        self._failed: tuple[EvaluationResult, ...] = ()
        # kind -> key -> result of the first target matching (a single-kind context), and
        # kind -> key -> (position, result) to find the first of several kinds' matches.
        self._targets: dict[str, dict[str, EvaluationResult]] | None = None
        self._target_order = _NO_TARGETS
        self._rules: tuple[
            tuple[tuple[Matcher, ...], EvaluationResult | None, _Rollout | None], ...
        ] = ()
        self._fallthrough: _Outcome = (None, None)
        self._needs_scope = False
        # For a flag without prerequisites or segment clauses: its whole evaluation as one
        # closure over locals (the hot path; no scope, no attribute lookups).
        self.run: Callable[[Context], EvaluationResult] | None = None
        self._memo: dict[Any, EvaluationResult] = {}

    # --- evaluating ---------------------------------------------------------------------

    def evaluate(
        self,
        ctx: Context,
        flags: Mapping[str, CompiledFlag],
        segments: Mapping[str, CompiledSegment],
    ) -> EvaluationResult:
        """This flag's result for ``ctx``; prerequisites and segments are looked up by key in
        ``flags`` and ``segments``. Never raises: malformed data gives an ERROR result."""
        return self.runner(flags, segments, _Scope(flags, segments))(ctx)

    def runner(
        self,
        flags: Mapping[str, CompiledFlag],
        segments: Mapping[str, CompiledSegment],
        scope: _Scope,
    ) -> Runner:
        """The fastest callable evaluating this flag in an environment: ``runner(ctx)`` is
        ``evaluate(ctx, flags, segments)``. ``scope`` (``new_scope(flags, segments)``) is
        reset and reused by every call: one evaluation at a time per scope."""
        constant = self.constant
        if constant is not None:
            return lambda _ctx: constant
        if self.run is not None:
            return self.run
        if not self._prerequisites:
            return _scoped_run(self, scope)
        evaluate = self._evaluate
        error = self._error
        with_big_segments_status = self._with_big_segments_status

        def run(ctx: Context) -> EvaluationResult:
            scope.prereq_chain = scope.segment_chain = None
            scope.prereqs_seen = 0
            scope.big_segments = False
            try:
                result = evaluate(ctx, scope)
            except _Malformed:
                return error("MALFORMED_FLAG", scope.prereqs_seen)
            except Exception:  # a bug or an exhausted recursion limit: as LaunchDarkly's client
                return error("EXCEPTION", scope.prereqs_seen)
            if scope.big_segments:
                return with_big_segments_status(result)
            return result

        return run

    def _nested(self, ctx: Context, scope: _Scope) -> EvaluationResult:
        """Evaluation as a prerequisite, inside another flag's evaluation."""
        if self.constant is not None:
            return self.constant
        return self._evaluate(ctx, scope)

    def _evaluate(self, ctx: Context, scope: _Scope) -> EvaluationResult:
        if self._prerequisites:
            failed = self._check_prerequisites(ctx, scope)
            if failed is not None:
                return failed
        targets = self._targets
        if targets is not None:
            contexts = ctx.contexts
            if len(contexts) == 1:
                by_key = targets.get(contexts[0].kind)
                hit = None if by_key is None else by_key.get(contexts[0].key)
            else:
                hit = self._multi_kind_target(ctx)
            if hit is not None:
                return hit
        for matchers, fixed, rollout in self._rules:
            for matcher in matchers:
                if not matcher(ctx, scope):
                    break
            else:
                return fixed if rollout is None else rollout.pick(ctx)  # type: ignore[return-value]
        fixed, rollout = self._fallthrough
        return fixed if rollout is None else rollout.pick(ctx)  # type: ignore[return-value]

    def _multi_kind_target(self, ctx: Context) -> EvaluationResult | None:
        """The target of a multi-kind context: of its kinds' matches, the first in order."""
        if not self._target_order:  # targets of one kind only: its match is the first
            assert self._targets is not None
            for single in ctx.contexts:
                by_kind = self._targets.get(single.kind)
                if by_kind is not None:
                    return by_kind.get(single.key)
            return None
        best: tuple[int, EvaluationResult] | None = None
        for single in ctx.contexts:
            by_key = self._target_order.get(single.kind)
            hit = None if by_key is None else by_key.get(single.key)
            if hit is not None and (best is None or hit[0] < best[0]):
                best = hit
        return None if best is None else best[1]

    def _check_prerequisites(self, ctx: Context, scope: _Scope) -> EvaluationResult | None:
        chain = scope.prereq_chain
        if chain is None:
            chain = scope.prereq_chain = []
        chain.append(self.key)
        top = len(chain) == 1
        try:
            for i, (key, variation) in enumerate(self._prerequisites):
                if key in chain:
                    raise _Malformed(f"prerequisite cycle through {key!r}")
                prerequisite = scope.flags.get(key)
                if top:
                    scope.prereqs_seen = i + 1
                if prerequisite is None:
                    return self._failed[i]
                result = prerequisite._nested(ctx, scope)
                if not prerequisite.on or result.variation != variation:
                    return self._failed[i]
            return None
        finally:
            chain.pop()

    # --- results ------------------------------------------------------------------------

    def _result(
        self, variation: int | None, reason: Reason, prerequisites: int
    ) -> EvaluationResult:
        memo_key = (variation, reason, prerequisites)
        found = self._memo.get(memo_key)
        if found is not None:
            return found
        if variation is not None and not 0 <= variation < len(self._variations):
            result = self._error("MALFORMED_FLAG", prerequisites)
        else:
            experiment = reason.in_experiment
            if reason.kind == "RULE_MATCH":
                index = reason.rule_index
                rules = self._rule_track_events
                experiment = experiment or (
                    index is not None and 0 <= index < len(rules) and rules[index]
                )
            elif reason.kind == "FALLTHROUGH":
                experiment = experiment or self._track_fallthrough
            result = make_result(
                self.key,
                None if variation is None else self._variations[variation],
                variation,
                reason,
                self.version,
                track_events=self._track_events or experiment,
                track_reason=experiment,
                debug_events_until_date=self._debug,
                prerequisites=self.prerequisite_keys[:prerequisites],
                value_json=None if variation is None else self._variation_json[variation],
            )
        self._memo[memo_key] = result
        return result

    def _error(self, kind: ErrorKind, prerequisites: int) -> EvaluationResult:
        memo_key = ("error", kind, prerequisites)
        found = self._memo.get(memo_key)
        if found is None:
            found = self._memo[memo_key] = make_result(
                self.key,
                None,
                None,
                Reason("ERROR", error_kind=kind),
                self.version,
                track_events=self._track_events,
                debug_events_until_date=self._debug,
                prerequisites=self.prerequisite_keys[:prerequisites],
            )
        return found

    def _with_big_segments_status(self, result: EvaluationResult) -> EvaluationResult:
        memo_key = ("big", id(result))
        found = self._memo.get(memo_key)
        if found is None:
            r = result.reason
            reason = Reason(
                r.kind,
                r.rule_index,
                r.rule_id,
                r.prerequisite_key,
                r.error_kind,
                r.in_experiment,
                _BIG_SEGMENTS_STATUS,
            )
            found = self._memo[memo_key] = make_result(
                self.key,
                result.value,
                result.variation,
                reason,
                self.version,
                track_events=result.track_events,
                track_reason=result.track_reason,
                debug_events_until_date=result.debug_events_until_date,
                prerequisites=result.prerequisites,
            )
        return found


def _target_lookup(
    flag: CompiledFlag,
) -> tuple[str | None, dict[str, EvaluationResult] | None]:
    """``(kind, keys)`` when every target of ``flag`` is of one context kind: its match is
    then ``keys.get(ctx.by_kind[kind].key)``, for a multi-kind context too."""
    targets = flag._targets
    if targets is not None and len(targets) == 1:
        ((kind, keys),) = targets.items()
        return kind, keys
    return None, None


def _plain_run(flag: CompiledFlag) -> Callable[[Context], EvaluationResult]:
    """The evaluation of a flag without prerequisites or segment clauses: ``_evaluate``'s
    targets, rules and fallthrough steps over locals, without a scope. Keep in step with
    ``_scoped_run`` (the same steps with a scope)."""
    targets = flag._targets
    target_kind, target_keys = _target_lookup(flag)
    multi_kind_target = flag._multi_kind_target
    rules = flag._rules
    fixed_fallthrough, rollout_fallthrough = flag._fallthrough
    pick_fallthrough = None if rollout_fallthrough is None else rollout_fallthrough.pick
    error = flag._error
    if (
        targets is None
        and not rules
        and rollout_fallthrough is not None
        and rollout_fallthrough.by_key
    ):
        # A percentage rollout by key and nothing else: its pick is the whole evaluation
        # (and raises nothing, so there is no step to catch).
        return rollout_fallthrough.pick

    def run(ctx: Context) -> EvaluationResult:
        try:
            if target_keys is not None:
                single = ctx.by_kind.get(target_kind)  # type: ignore[arg-type]
                if single is not None:
                    hit = target_keys.get(single.key)
                    if hit is not None:
                        return hit
            elif targets is not None:
                hit = multi_kind_target(ctx)
                if hit is not None:
                    return hit
            for matchers, fixed, rollout in rules:
                for matcher in matchers:
                    if not matcher(ctx, _NO_SCOPE):
                        break
                else:
                    return fixed if rollout is None else rollout.pick(ctx)  # type: ignore[return-value]
            if pick_fallthrough is None:
                return fixed_fallthrough  # type: ignore[return-value]
            return pick_fallthrough(ctx)
        except _Malformed:
            return error("MALFORMED_FLAG", 0)
        except Exception:  # a bug: as LaunchDarkly's client, an EXCEPTION error
            return error("EXCEPTION", 0)

    return run


def _scoped_run(flag: CompiledFlag, scope: _Scope) -> Callable[[Context], EvaluationResult]:
    """``_plain_run`` for a flag with segment clauses and no prerequisites: the same steps,
    with ``scope`` (reset per call) for segment cycles and big segments."""
    targets = flag._targets
    target_kind, target_keys = _target_lookup(flag)
    multi_kind_target = flag._multi_kind_target
    rules = flag._rules
    fixed_fallthrough, rollout_fallthrough = flag._fallthrough
    pick_fallthrough = None if rollout_fallthrough is None else rollout_fallthrough.pick
    error = flag._error
    with_big_segments_status = flag._with_big_segments_status

    def run(ctx: Context) -> EvaluationResult:
        scope.segment_chain = None
        scope.big_segments = False
        result: EvaluationResult | None = None
        try:
            if target_keys is not None:
                single = ctx.by_kind.get(target_kind)  # type: ignore[arg-type]
                if single is not None:
                    result = target_keys.get(single.key)
            elif targets is not None:
                result = multi_kind_target(ctx)
            if result is None:
                for matchers, fixed, rollout in rules:
                    for matcher in matchers:
                        if not matcher(ctx, scope):
                            break
                    else:
                        result = fixed if rollout is None else rollout.pick(ctx)
                        break
                else:
                    result = (
                        fixed_fallthrough if pick_fallthrough is None else pick_fallthrough(ctx)
                    )
        except _Malformed:
            return error("MALFORMED_FLAG", 0)
        except Exception:  # a bug: as LaunchDarkly's client, an EXCEPTION error
            return error("EXCEPTION", 0)
        if scope.big_segments:
            return with_big_segments_status(result)  # type: ignore[arg-type]
        return result  # type: ignore[return-value]

    return run


def compile_flag(obj: object) -> CompiledFlag:
    """Compile one flag (never raises; a malformed one evaluates to MALFORMED_FLAG)."""
    key = obj.get("key") if isinstance(obj, dict) else None
    version = obj.get("version") if isinstance(obj, dict) else None
    flag = CompiledFlag(
        key if isinstance(key, str) else "",
        version if type(version) is int else 0,
    )
    try:
        if not isinstance(obj, dict):
            raise _Invalid("", "a flag must be a JSON object")
        _req_str(obj, "key", "")
        _req_int(obj, "version", "")
        _build_flag(flag, obj)
    except _Invalid as exc:
        _make_malformed(flag, obj, str(exc))
    except (ValueError, TypeError, RecursionError) as exc:  # e.g. a variation that is not JSON
        _make_malformed(flag, obj, f"cannot be encoded: {exc}")
    return flag


def _make_malformed(flag: CompiledFlag, obj: object, error: str) -> None:
    flag.error = error
    flag.on = False
    flag.prerequisite_keys = ()
    flag.segment_keys = _NO_KEYS
    flag._track_events = False
    flag._debug = None
    flag._memo = {}
    flag.run = None
    flag.constant = flag._error("MALFORMED_FLAG", 0)
    try:  # who may see the error: as the item says, if that much of it can be read
        _client_side_availability(flag, obj if isinstance(obj, dict) else {})
    except _Invalid:
        flag.client_side = flag.mobile = False


def _build_flag(flag: CompiledFlag, obj: dict[str, Any]) -> None:
    flag.on = _opt_bool(obj, "on", "")
    flag._variations = variations = _opt_list(obj, "variations", "")
    flag._variation_json = [encode_json(v) for v in variations]
    flag._track_events = _opt_bool(obj, "trackEvents", "")
    flag._track_fallthrough = _opt_bool(obj, "trackEventsFallthrough", "")
    flag._debug = _opt(obj, "debugEventsUntilDate", (int, float), "", "a number")
    salt = _opt_str(obj, "salt", "") or ""
    _client_side_availability(flag, obj)
    off_variation = _opt_int(obj, "offVariation", "")

    prerequisites = []
    for p, prereq in _objects(obj, "prerequisites", ""):
        prerequisites.append((_req_str(prereq, "key", p), _req_int(prereq, "variation", p)))
    flag._prerequisites = tuple(prerequisites)
    flag.prerequisite_keys = keys = tuple(k for k, _ in prerequisites)
    everything = len(keys)

    # Validate everything LaunchDarkly's SDKs read, even for an off flag.
    targets = _target_steps(obj)
    segment_keys: set[str] = set()
    rules_json = _objects(obj, "rules", "")
    track = []
    for p, rule in rules_json:
        _opt_str(rule, "id", p)
        track.append(_opt_bool(rule, "trackEvents", p))
    flag._rule_track_events = track
    compiled_rules = []
    for index, (p, rule) in enumerate(rules_json):
        matchers = _compile_clauses(rule, p, segment_keys)
        reason = Reason("RULE_MATCH", rule_index=index, rule_id=_opt_str(rule, "id", p))
        fixed, rollout = _outcome(flag, rule, p, reason, salt, everything)
        compiled_rules.append((matchers, fixed, rollout))
    fallthrough = _opt(obj, "fallthrough", dict, "", "an object") or {}
    flag._fallthrough = _outcome(flag, fallthrough, "fallthrough", _FALLTHROUGH, salt, everything)
    flag.segment_keys = frozenset(segment_keys) if segment_keys else _NO_KEYS

    flag._failed = tuple(
        _off_result(flag, off_variation, Reason("PREREQUISITE_FAILED", prerequisite_key=k), i + 1)
        for i, k in enumerate(keys)
    )
    target_index: dict[str, dict[str, tuple[int, EvaluationResult]]] = {}
    for position, (kind, values, variation) in enumerate(targets):
        result = flag._result(variation, _TARGET_MATCH, everything)
        by_key = target_index.setdefault(kind, {})
        for value in values:
            by_key.setdefault(value, (position, result))
    # Positions matter only to choose between the matches of a multi-kind context's kinds.
    flag._target_order = target_index if len(target_index) > 1 else _NO_TARGETS
    flag._targets = {
        kind: {key: hit[1] for key, hit in by_key.items()} for kind, by_key in target_index.items()
    } or None
    flag._rules = tuple(compiled_rules)
    flag._needs_scope = bool(prerequisites) or bool(segment_keys)

    if not flag.on:
        flag.constant = _off_result(flag, off_variation, _OFF, 0)
    elif not prerequisites and not target_index:
        first = compiled_rules[0] if compiled_rules else None
        if first is None and flag._fallthrough[1] is None:
            flag.constant = flag._fallthrough[0]
        elif first is not None and not first[0] and first[2] is None:
            flag.constant = first[1]
    if flag.constant is not None:
        # Nothing else is ever read (every entry point answers the constant first): keep
        # only what memory must hold, a relay may hold a million of these.
        flag._targets = None
        flag._target_order = _NO_TARGETS
        flag._rules = ()
        flag._fallthrough = (None, None)
        flag._failed = ()
        flag._memo = {}
        flag._variation_json = []
        flag._rule_track_events = []
    elif not flag._needs_scope:
        flag.run = _plain_run(flag)


def _client_side_availability(flag: CompiledFlag, obj: dict[str, Any]) -> None:
    availability = _opt(obj, "clientSideAvailability", dict, "", "an object")
    if availability is None:
        # Data from before clientSideAvailability: every flag was visible to mobile SDKs.
        flag.client_side = _opt_bool(obj, "clientSide", "")
        flag.mobile = True
    else:
        flag.client_side = _opt_bool(availability, "usingEnvironmentId", "clientSideAvailability")
        flag.mobile = _opt_bool(availability, "usingMobileKey", "clientSideAvailability")


def _off_result(
    flag: CompiledFlag, off_variation: int | None, reason: Reason, prerequisites: int
) -> EvaluationResult:
    return flag._result(off_variation, reason, prerequisites)


def _target_steps(obj: dict[str, Any]) -> list[tuple[str, list[str], int]]:
    """(kind, keys, variation) in LaunchDarkly's matching order (module rule 3)."""
    user_targets = []
    for p, target in _objects(obj, "targets", ""):
        user_targets.append((_strings(target, "values", p), _req_int(target, "variation", p)))
        _opt_str(target, "contextKind", p)
    context_targets = []
    for p, target in _objects(obj, "contextTargets", ""):
        kind = _opt_str(target, "contextKind", p) or DEFAULT_KIND
        context_targets.append(
            (kind, _strings(target, "values", p), _req_int(target, "variation", p))
        )
    if not context_targets:
        return [(DEFAULT_KIND, values, variation) for values, variation in user_targets]
    steps = []
    for kind, values, variation in context_targets:
        if kind != DEFAULT_KIND:
            steps.append((kind, values, variation))
            continue
        for user_values, user_variation in user_targets:
            if user_variation == variation:
                steps.append((DEFAULT_KIND, user_values, variation))
                break
    return steps


def _outcome(
    flag: CompiledFlag,
    obj: dict[str, Any],
    path: str,
    reason: Reason,
    salt: str,
    prerequisites: int,
) -> _Outcome:
    """A rule's or the fallthrough's variation or rollout (a variation wins if both)."""
    variation = _opt_int(obj, "variation", path)
    rollout = _opt(obj, "rollout", dict, path, "an object")
    rollout_parts = _rollout_parts(rollout, _join(path, "rollout")) if rollout is not None else None
    if variation is not None:
        return flag._result(variation, reason, prerequisites), None
    if rollout_parts is None or not rollout_parts[0]:
        return flag._error("MALFORMED_FLAG", prerequisites), None
    buckets, kind, ref, seed, experiment = rollout_parts
    thresholds = []
    results = []
    total = 0.0
    for variation_index, weight, untracked in buckets:
        total += weight / 100000.0
        thresholds.append(total)
        experiment_reason = Reason(
            reason.kind, reason.rule_index, reason.rule_id, in_experiment=not untracked
        )
        results.append(
            (
                flag._result(variation_index, reason, prerequisites),
                flag._result(variation_index, experiment_reason, prerequisites),
            )
        )
    prefix = flag_prefix(flag.key, salt, seed)
    return None, _Rollout(
        kind, None if experiment else ref, prefix, experiment, thresholds, results
    )


def _rollout_parts(
    rollout: dict[str, Any], path: str
) -> tuple[list[tuple[int, int, bool]], str, AttributeRef | None, int | None, bool]:
    buckets = []
    for p, wv in _objects(rollout, "variations", path):
        buckets.append(
            (_req_int(wv, "variation", p), _req_int(wv, "weight", p), _opt_bool(wv, "untracked", p))
        )
    context_kind = _opt_str(rollout, "contextKind", path)
    bucket_by = _opt_str(rollout, "bucketBy", path)
    ref = AttributeRef.parse(bucket_by, context_kind) if bucket_by else None
    seed = _opt_int(rollout, "seed", path)
    experiment = _opt_str(rollout, "kind", path) == "experiment"
    return buckets, context_kind or DEFAULT_KIND, ref, seed, experiment


# --- segments -------------------------------------------------------------------------------


class _SegmentRule:
    __slots__ = ("kind", "matchers", "prefix", "ref", "weight")

    def __init__(
        self,
        matchers: tuple[Matcher, ...],
        weight: int | None,
        kind: str,
        ref: AttributeRef | None,
        prefix: str,
    ) -> None:
        self.matchers = matchers
        self.weight = None if weight is None else weight / 100000.0
        self.kind = kind
        self.ref = ref
        self.prefix = prefix


class CompiledSegment:
    """One version of a segment. Public, read-only: ``key``, ``version``, ``segment_keys``
    (segments its rules use), ``error`` (why the item is malformed, else None)."""

    __slots__ = (
        "_excluded",
        "_generation",
        "_included",
        "_rules",
        "_unbounded",
        "_unbounded_kind",
        "error",
        "key",
        "segment_keys",
        "version",
    )

    def __init__(self, key: str, version: int) -> None:
        self.key = key
        self.version = version
        self.error: str | None = None
        self.segment_keys: frozenset[str] = _NO_KEYS
        self._included: dict[str, frozenset[str]] = {}
        self._excluded: dict[str, frozenset[str]] = {}
        self._rules: tuple[_SegmentRule, ...] = ()
        self._unbounded = False
        self._unbounded_kind = DEFAULT_KIND
        self._generation: int | None = None

    def matches(self, ctx: Context, scope: _Scope) -> bool:
        chain = scope.segment_chain
        if chain is not None and self.key in chain:
            raise _Malformed(f"segment cycle through {self.key!r}")
        if self.error is not None:
            raise _Malformed(self.error)
        if self._unbounded:
            # A big segment without a big-segment store: only its rules count (module doc).
            if self._generation is None:
                scope.big_segments = True
                return False
            if ctx.by_kind.get(self._unbounded_kind) is None:
                return False
            scope.big_segments = True
            return bool(self._rules) and self._match_rules(ctx, scope)
        contexts = ctx.contexts
        if len(contexts) == 1:  # _in_lists inlined for the common single-kind context
            single = contexts[0]
            keys = self._included.get(single.kind)
            if keys is not None and single.key in keys:
                return True
            keys = self._excluded.get(single.kind)
            if keys is not None and single.key in keys:
                return False
        else:
            if _in_lists(self._included, ctx):
                return True
            if _in_lists(self._excluded, ctx):
                return False
        return bool(self._rules) and self._match_rules(ctx, scope)

    def _match_rules(self, ctx: Context, scope: _Scope) -> bool:
        chain = scope.segment_chain
        if chain is None:
            chain = scope.segment_chain = []
        chain.append(self.key)
        try:
            for rule in self._rules:
                if not _matches_all(rule.matchers, ctx, scope):
                    continue
                if rule.weight is None:
                    return True
                if _bucket_context(ctx, rule.kind, rule.ref, rule.prefix) < rule.weight:
                    return True
            return False
        finally:
            chain.pop()


def _in_lists(lists: Mapping[str, frozenset[str]], ctx: Context) -> bool:
    for single in ctx.contexts:
        keys = lists.get(single.kind)
        if keys is not None and single.key in keys:
            return True
    return False


def compile_segment(obj: object) -> CompiledSegment:
    """Compile one segment (never raises; a malformed one fails the evaluations using it)."""
    key = obj.get("key") if isinstance(obj, dict) else None
    version = obj.get("version") if isinstance(obj, dict) else None
    segment = CompiledSegment(
        key if isinstance(key, str) else "", version if type(version) is int else 0
    )
    try:
        if not isinstance(obj, dict):
            raise _Invalid("", "a segment must be a JSON object")
        _req_str(obj, "key", "")
        _req_int(obj, "version", "")
        _build_segment(segment, obj)
    except _Invalid as exc:
        segment.error = str(exc)
        segment.segment_keys = _NO_KEYS
    return segment


def _build_segment(segment: CompiledSegment, obj: dict[str, Any]) -> None:
    salt = _opt_str(obj, "salt", "") or ""
    segment._included = _lists(obj, "included", "includedContexts")
    segment._excluded = _lists(obj, "excluded", "excludedContexts")
    segment_keys: set[str] = set()
    rules = []
    for p, rule in _objects(obj, "rules", ""):
        matchers = _compile_clauses(rule, p, segment_keys)
        kind = _opt_str(rule, "rolloutContextKind", p)
        bucket_by = _opt_str(rule, "bucketBy", p)
        ref = AttributeRef.parse(bucket_by, kind) if bucket_by else None
        weight = _opt_int(rule, "weight", p)
        rules.append(
            _SegmentRule(
                matchers, weight, kind or DEFAULT_KIND, ref, flag_prefix(segment.key, salt, None)
            )
        )
    segment._rules = tuple(rules)
    segment.segment_keys = frozenset(segment_keys) if segment_keys else _NO_KEYS
    segment._unbounded = _opt_bool(obj, "unbounded", "")
    segment._unbounded_kind = _opt_str(obj, "unboundedContextKind", "") or DEFAULT_KIND
    segment._generation = _opt_int(obj, "generation", "")


def _lists(obj: dict[str, Any], user_name: str, contexts_name: str) -> dict[str, frozenset[str]]:
    by_kind: dict[str, set[str]] = {}
    users = _strings(obj, user_name, "")
    if users:
        by_kind[DEFAULT_KIND] = set(users)
    for p, target in _objects(obj, contexts_name, ""):
        kind = _opt_str(target, "contextKind", p) or DEFAULT_KIND
        by_kind.setdefault(kind, set()).update(_strings(target, "values", p))
    return {kind: frozenset(keys) for kind, keys in by_kind.items() if keys}
