"""Evaluated streams (``/eval``, ``/meval``) grouped by context: what a change sends to whom.

The hub (``relay.hub``) owns the connections, rounds, writes, heartbeats, lifetimes and
drain; this module decides, for one environment's evaluated streams, which bytes each
*group* of streams gets in a round. Rules, in the order a change meets them:

1. Grouping. An evaluated stream joins the group of its (audience, reasons setting, context
   fingerprint): streams whose contexts have equal fingerprints evaluate identically
   (``protocol.evaluation.context``), so one group's streams all get the same bytes. A group
   lives while it has a stream; it holds the parsed context once.
2. Baseline. Each environment with evaluated streams keeps the compiled flags and segments as
   of its last round's start (shallow copies of two dicts: compiled items are immutable per
   version), so a round can tell whether a result changed without keeping any per-stream
   or per-group result.
3. A round takes the hub's coalesced changes of the environment (ordered by offset) and the
   union of their ``affected_flags``, each with the offset of the last change affecting it.
   Per affected flag and distinct context fingerprint: ONE evaluation of the new state, and,
   if the flag was visible before, one of the baseline to compare with (skipped cheaply
   when the flag was a constant). Results are compared as the client sees them, versions
   aside (``protocol.clientside.unversioned``): an unchanged result sends nothing (counted
   as a suppressed patch), so a rule change reaches only the contexts it flips.
4. Events: a changed result → ``patch`` (its JSON restamped with ``version`` = offset + 1,
   encoded ONCE per distinct result and offset, the same bytes object in every group that
   got that result); a flag deleted or no longer visible to the audience → ``delete``; each
   with ``id:`` = the position of its offset. A group's events are ordered by offset.
5. Streams that joined after the baseline (their ``put`` already reflects some of the round's
   changes, possibly a state the baseline never had) get every affected flag's event with
   an offset above their start, unsuppressed: the comparison of rule 3 is only valid for
   streams that hold the baseline.
6. Slices. A round (``EvalRound``) evaluates from its own snapshot of the current state and
   its own copy of the baseline, over the groups that existed when it started, in that
   order, a slice at a time (``step(budget)``: about ``budget`` evaluations), so the hub can
   write a slice's events and yield to the event loop between slices. A change applied
   while a round is in progress never leaks into it: it waits for the next round, which
   compares against this round's snapshot. A group whose streams all left is skipped; a
   group made during the round is not in it (its streams' ``put`` is at least as new as
   the snapshot, so the round holds nothing for them).
7. The baseline is the current state as soon as a round starts (every pending change was
   taken): the next round, or a group joining an emptied environment, starts from it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from protocol import clientside
from protocol.evaluation import CompiledEnvironment, CompiledFlag, CompiledSegment, Context
from protocol.evaluation import EvaluationResult as Result
from protocol.evaluation.compiler import Runner, new_scope
from protocol.evaluation.environment import SdkKind
from protocol.position import Position
from relay.clientview import visible
from relay.stream import Connection

if TYPE_CHECKING:
    from relay.state import Change

__all__ = [
    "ContextGroup",
    "EnvContexts",
    "EvalRound",
    "GroupEvents",
    "GroupKey",
    "GroupSpec",
    "RoundStats",
]

GroupKey = tuple[SdkKind, bool, str]  # audience, with reasons, context fingerprint


@dataclass(frozen=True, slots=True)
class GroupSpec:
    """What an evaluated stream asks for: its context, audience and reasons setting."""

    context: Context
    sdk: SdkKind
    with_reasons: bool

    @property
    def key(self) -> GroupKey:
        return (self.sdk, self.with_reasons, self.context.fingerprint)


class ContextGroup:
    """The evaluated streams of one environment that share a group key (rule 1)."""

    __slots__ = ("conns", "key", "max_start", "members", "spec")

    def __init__(self, spec: GroupSpec) -> None:
        self.spec = spec
        self.key = spec.key
        self.conns: dict[bool, set[Connection]] = {}  # active streams by chunked framing
        self.members = 0  # streams registered (active or still preparing)
        self.max_start = -1  # highest start offset of a stream that joined (rule 5)

    def streams(self) -> Iterator[Connection]:
        for conns in self.conns.values():
            yield from conns


@dataclass(slots=True)
class GroupEvents:
    """One round's events for one group: ``frames``/``offsets`` for the streams that hold
    the baseline, ``late_*`` (None if no stream needs them) for those that joined later."""

    group: ContextGroup
    baseline_offset: int  # streams that started above it joined after the baseline
    frames: list[bytes] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    late_frames: list[bytes] | None = None
    late_offsets: list[int] | None = None


@dataclass(slots=True)
class RoundStats:
    new_evaluations: int = 0
    previous_evaluations: int = 0
    suppressed: int = 0


class EnvContexts:
    """The evaluated-stream groups of one environment, with their baseline (rules 2, 7)."""

    __slots__ = ("baseline_flags", "baseline_offset", "baseline_segments", "groups")

    def __init__(self) -> None:
        self.groups: dict[GroupKey, ContextGroup] = {}
        self.baseline_flags: dict[str, CompiledFlag] = {}
        self.baseline_segments: dict[str, CompiledSegment] = {}
        self.baseline_offset = -1

    def empty(self) -> bool:
        return not self.groups

    def streams(self) -> Iterator[Connection]:
        for group in self.groups.values():
            yield from group.streams()

    def join(
        self, spec: GroupSpec, start_offset: int, compiled: CompiledEnvironment | None, offset: int
    ) -> tuple[ContextGroup, bool]:
        """Add a stream registered at ``start_offset``; returns its group and whether the
        group is new. The first group of the environment takes the baseline (rule 2)."""
        if not self.groups:
            self.set_baseline(compiled, offset)
        group = self.groups.get(spec.key)
        created = group is None
        if group is None:
            group = self.groups[spec.key] = ContextGroup(spec)
        group.members += 1
        if start_offset > group.max_start:
            group.max_start = start_offset
        return group, created

    def leave(self, group: ContextGroup) -> bool:
        """A stream of ``group`` ended; returns True if the group is gone."""
        group.members -= 1
        if group.members > 0:
            return False
        if self.groups.get(group.key) is group:
            del self.groups[group.key]
        return True

    def set_baseline(self, compiled: CompiledEnvironment | None, offset: int) -> None:
        if compiled is None:
            self.baseline_flags, self.baseline_segments = {}, {}
        else:
            self.baseline_flags = dict(compiled.flags)
            self.baseline_segments = dict(compiled.segments)
        self.baseline_offset = offset

    def start_round(
        self,
        changes: Sequence[Change],
        compiled: CompiledEnvironment | None,
        offset: int,
        epoch: str,
    ) -> EvalRound | None:
        """Rules 3-7 for ``changes`` (ordered by offset); ``offset`` is the environment's
        position after them. Returns the round to step through (None: nothing to evaluate).
        The baseline moves to the current state now (rule 7): the round keeps the previous
        one and a snapshot of the current one, so later changes never leak into it."""
        affected: dict[str, int] = {}
        for change in changes:
            for key in change.affected_flags:
                affected[key] = change.offset
        base_flags, base_segments = self.baseline_flags, self.baseline_segments
        base_offset = self.baseline_offset
        self.set_baseline(compiled, offset)
        if not affected or not self.groups:
            return None
        flags = self.baseline_flags  # the snapshot: set_baseline copies, never mutates it
        plan = sorted(
            ((off, key, flags.get(key), base_flags.get(key)) for key, off in affected.items()),
            key=_plan_order,
        )
        memo = _Round(flags, self.baseline_segments, base_flags, base_segments, epoch)
        return EvalRound(memo, plan, list(self.groups.values()), base_offset)


class EvalRound:
    """One round's evaluation of an environment's groups, in slices (rule 6).

    ``step(budget)`` evaluates the next groups, in the order they existed when the round
    started, until about ``budget`` evaluations are spent (at least one group), and returns
    their events. Every group is visited once; a group whose streams all left is skipped;
    groups made after the round started are not in it (their streams' ``put`` came from
    a state at least as new as the round's)."""

    __slots__ = ("_groups", "_index", "_memo", "_plan", "baseline_offset")

    def __init__(
        self, memo: _Round, plan: list[_Plan], groups: list[ContextGroup], baseline_offset: int
    ) -> None:
        self._memo = memo
        self._plan = plan
        self._groups = groups
        self._index = 0
        self.baseline_offset = baseline_offset

    @property
    def done(self) -> bool:
        return self._index >= len(self._groups)

    @property
    def stats(self) -> RoundStats:
        """Totals so far (all of the round's once ``done``)."""
        return self._memo.stats

    def remaining(self) -> int:
        """Groups not yet visited."""
        return len(self._groups) - self._index

    def step(self, budget: int) -> tuple[list[GroupEvents], int]:
        """Events of the next groups and the evaluation budget they used (see the class)."""
        groups, plan, memo = self._groups, self._plan, self._memo
        cost = max(1, len(plan))
        end = len(groups)
        index = self._index
        spent = 0
        out: list[GroupEvents] = []
        while index < end:
            group = groups[index]
            if group.members <= 0:
                index += 1
                continue  # every stream of it left during the round
            if spent and spent + cost > budget:
                break
            index += 1
            spent += cost
            events = memo.group_events(group, plan, self.baseline_offset)
            if events is not None:
                out.append(events)
        self._index = index
        return out, spent

    def run_all(self) -> tuple[list[GroupEvents], RoundStats]:
        """The whole round at once (a small round, or a test)."""
        events, _ = self.step(1 << 62)
        return events, self.stats


_Plan = tuple[int, str, CompiledFlag | None, CompiledFlag | None]


def _plan_order(entry: _Plan) -> tuple[int, str]:
    return entry[0], entry[1]


class _Round:
    """The shared memo of one round: evaluations per (flag, fingerprint), encodings per
    (result, reasons, offset), deletes per (flag, offset)."""

    __slots__ = (
        "_base_runs",
        "_base_scope",
        "_deletes",
        "_encoded",
        "_evaluations",
        "_new_runs",
        "_new_scope",
        "_unversioned",
        "base_flags",
        "base_segments",
        "epoch",
        "flags",
        "segments",
        "stats",
    )

    def __init__(
        self,
        flags: dict[str, CompiledFlag],
        segments: dict[str, CompiledSegment],
        base_flags: dict[str, CompiledFlag],
        base_segments: dict[str, CompiledSegment],
        epoch: str,
    ) -> None:
        self.flags, self.segments = flags, segments
        self.base_flags, self.base_segments = base_flags, base_segments
        # Both states' own reusable scopes and runners, made once per round: the compiled
        # environment moves on while a sliced round runs (rule 6), its snapshot does not.
        self._new_scope = new_scope(flags, segments)
        self._new_runs: dict[str, Runner] = {}
        self._base_scope = new_scope(base_flags, base_segments)
        self._base_runs: dict[str, Runner] = {}
        self.epoch = epoch
        self.stats = RoundStats()
        self._evaluations: dict[tuple[str, str], tuple[Result | None, Result]] = {}
        self._encoded: dict[tuple[int, bool, int], bytes] = {}
        self._deletes: dict[tuple[str, int], bytes] = {}
        self._unversioned: dict[tuple[int, bool], bytes] = {}

    def _evaluate(
        self, key: str, context: Context, new: CompiledFlag, old: CompiledFlag | None
    ) -> tuple[Result | None, Result]:
        memo_key = (key, context.fingerprint)
        found = self._evaluations.get(memo_key)
        if found is None:
            stats = self.stats
            run_new = self._new_runs.get(key)
            if run_new is None:
                run_new = self._new_runs[key] = new.runner(
                    self.flags, self.segments, self._new_scope
                )
            new_result = run_new(context)
            stats.new_evaluations += 1
            old_result = None
            if old is not None:
                if old.constant is None:
                    stats.previous_evaluations += 1
                run = self._base_runs.get(key)
                if run is None:
                    run = self._base_runs[key] = old.runner(
                        self.base_flags, self.base_segments, self._base_scope
                    )
                old_result = run(context)
            found = self._evaluations[memo_key] = (old_result, new_result)
        return found

    def _seen_as(self, result: Result, with_reasons: bool) -> bytes:
        memo_key = (id(result), with_reasons)
        found = self._unversioned.get(memo_key)
        if found is None:
            found = self._unversioned[memo_key] = clientside.unversioned(
                result.fragment(with_reasons), result.version
            )
        return found

    def _patch(self, result: Result, with_reasons: bool, offset: int) -> bytes:
        memo_key = (id(result), with_reasons, offset)
        found = self._encoded.get(memo_key)
        if found is None:
            data = clientside.restamp(result.patch(with_reasons), result.version, offset + 1)
            found = clientside.patch_event(data, str(Position(self.epoch, offset)))
            self._encoded[memo_key] = found
        return found

    def _delete(self, key: str, offset: int) -> bytes:
        found = self._deletes.get((key, offset))
        if found is None:
            pos = str(Position(self.epoch, offset))
            found = self._deletes[(key, offset)] = clientside.delete_event(key, offset + 1, pos)
        return found

    def group_events(
        self, group: ContextGroup, plan: Iterable[_Plan], baseline_offset: int
    ) -> GroupEvents | None:
        spec = group.spec
        sdk, with_reasons, context = spec.sdk, spec.with_reasons, spec.context
        need_late = group.max_start > baseline_offset
        out = GroupEvents(group, baseline_offset)
        if need_late:
            out.late_frames, out.late_offsets = [], []
        for offset, key, new, old in plan:
            was_visible = old is not None and visible(old, sdk)
            if new is None or not visible(new, sdk):
                if was_visible or need_late:
                    frame = self._delete(key, offset)
                    if was_visible:
                        out.frames.append(frame)
                        out.offsets.append(offset)
                    if out.late_frames is not None and out.late_offsets is not None:
                        out.late_frames.append(frame)
                        out.late_offsets.append(offset)
                continue
            old_result, new_result = self._evaluate(key, context, new, old if was_visible else None)
            frame = self._patch(new_result, with_reasons, offset)
            seen_as = self._seen_as
            if (
                was_visible
                and old_result is not None
                and seen_as(old_result, with_reasons) == seen_as(new_result, with_reasons)
            ):
                self.stats.suppressed += 1
            else:
                out.frames.append(frame)
                out.offsets.append(offset)
            if out.late_frames is not None and out.late_offsets is not None:
                out.late_frames.append(frame)
                out.late_offsets.append(offset)
        if not out.frames and not out.late_frames:
            return None
        return out
