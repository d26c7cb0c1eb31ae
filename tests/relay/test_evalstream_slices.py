"""Sliced evaluated rounds (relay/evalstream.py rules 6-7), without I/O: many context groups
stepped a slice at a time, a change applied mid-round, groups joining and leaving mid-round.
"""

from __future__ import annotations

import json
from typing import Any

from relay_support import flag

from protocol.evaluation import CompiledEnvironment, parse_context
from protocol.sse import SSEEvent, SSEParser
from relay.evalstream import EnvContexts, GroupEvents, GroupSpec
from relay.state import Change

GROUPS = 1000
VISIBLE = {"usingEnvironmentId": True, "usingMobileKey": True}


def gold_rule(key: str, version: int, variation: int) -> dict[str, Any]:
    """Fallthrough true; contexts with tier "gold" get ``variation`` (0 true, 1 false)."""
    return flag(
        key,
        version,
        clientSideAvailability=VISIBLE,
        rules=[
            {
                "id": "gold",
                "variation": variation,
                "clauses": [{"attribute": "tier", "op": "in", "values": ["gold"]}],
            }
        ],
    )


def spec(i: int) -> GroupSpec:
    tier = "gold" if i % 3 == 0 else "basic"
    return GroupSpec(parse_context({"kind": "user", "key": f"u{i}", "tier": tier}), "client", False)


def change(key: str, offset: int) -> Change:
    return Change(
        env="env",
        kind="flag",
        key=key,
        version=offset,
        deleted=False,
        item=b"{}",
        offset=offset,
        published_ms=0,
        position=f"e0:{offset}",
        affected_flags=frozenset({key}),
    )


def decoded(events: GroupEvents) -> list[tuple[str, str | None, dict[str, Any]]]:
    parser = SSEParser()
    return [
        (e.event, e.id, json.loads(e.data))
        for frame in events.frames
        for e in parser.feed(frame)
        if isinstance(e, SSEEvent)
    ]


def setup(groups: int = GROUPS) -> tuple[CompiledEnvironment, EnvContexts]:
    compiled = CompiledEnvironment.from_items({"f": gold_rule("f", 1, 0)})
    contexts = EnvContexts()
    for i in range(groups):
        contexts.join(spec(i), 10, compiled, 10)
    return compiled, contexts


def test_a_round_steps_through_every_group_once_in_order_by_budget() -> None:
    compiled, contexts = setup()
    compiled.apply("flag", "f", gold_rule("f", 2, 1))  # gold flips to false
    evaluating = contexts.start_round([change("f", 11)], compiled, 11, "e0")
    assert evaluating is not None
    keys = list(contexts.groups)
    seen: list[tuple[str, str | None, dict[str, Any]]] = []
    visited: list[Any] = []
    steps = 0
    while not evaluating.done:
        before = evaluating.remaining()
        events, spent = evaluating.step(50)
        steps += 1
        assert spent == 50 == before - evaluating.remaining()  # one evaluation per group
        visited += [e.group.key for e in events]
        for e in events:
            seen += decoded(e)
    assert steps == GROUPS // 50
    # Exactly the flipped (gold) groups, in the order the groups existed, one patch each.
    assert visited == [k for i, k in enumerate(keys) if i % 3 == 0]
    assert seen == [("patch", "e0:11", {"key": "f", **_result(False, 1, 12, 2)})] * len(visited)
    stats = evaluating.stats
    assert (stats.new_evaluations, stats.previous_evaluations) == (GROUPS, GROUPS)
    assert stats.suppressed == GROUPS - len(visited)


def _result(value: bool, variation: int, version: int, flag_version: int) -> dict[str, Any]:
    return {"value": value, "variation": variation, "version": version, "flagVersion": flag_version}


def test_a_change_applied_mid_round_waits_for_the_next_round_and_final_state_is_right() -> None:
    compiled, contexts = setup()
    values = {key: True for key in contexts.groups}  # every put says true
    compiled.apply("flag", "f", gold_rule("f", 2, 1))
    first = contexts.start_round([change("f", 11)], compiled, 11, "e0")
    assert first is not None
    events, _ = first.step(100)
    # Mid-round: the flag turns off (false for everyone) before the round is over.
    compiled.apply("flag", "f", flag("f", 3, on=False, clientSideAvailability=VISIBLE))
    while not first.done:
        more, _ = first.step(100)
        events += more
    ids: dict[Any, list[str | None]] = {}
    for e in events:
        for kind, id_, data in decoded(e):
            assert (kind, id_, data["value"]) == ("patch", "e0:11", False)  # v2's result only
            values[e.group.key] = data["value"]
            ids.setdefault(e.group.key, []).append(id_)
    assert sum(1 for v in values.values() if not v) == len(range(0, GROUPS, 3))
    # The next round compares against the first round's snapshot: only basic contexts flip.
    second = contexts.start_round([change("f", 12)], compiled, 12, "e0")
    assert second is not None
    later, _ = second.step(1 << 30)
    assert second.done
    for e in later:
        for kind, id_, data in decoded(e):
            assert (kind, id_) == ("patch", "e0:12")
            values[e.group.key] = data["value"]
            ids.setdefault(e.group.key, []).append(id_)
    assert len(later) == GROUPS - len(range(0, GROUPS, 3))
    assert set(values.values()) == {False}  # every group ends at the final state
    assert all(len(set(i)) == len(i) == 1 for i in ids.values())  # no group got one twice


def test_groups_that_leave_mid_round_are_skipped_and_new_ones_are_not_in_it() -> None:
    compiled, contexts = setup()
    compiled.apply("flag", "f", gold_rule("f", 2, 1))
    evaluating = contexts.start_round([change("f", 11)], compiled, 11, "e0")
    assert evaluating is not None
    events, _ = evaluating.step(10)
    gone = contexts.groups[spec(GROUPS - 1).key]
    assert contexts.leave(gone)  # its only stream ended
    # A stream joins an existing, not yet visited group and a brand new group mid-round.
    joined, created = contexts.join(spec(GROUPS - 5), 11, compiled, 11)
    assert not created and joined.max_start == 11
    fresh, created = contexts.join(spec(GROUPS + 2), 11, compiled, 11)
    assert created
    while not evaluating.done:
        more, _ = evaluating.step(10)
        events += more
    by_group = {id(e.group): e for e in events}
    assert id(gone) not in by_group and id(fresh) not in by_group
    assert evaluating.stats.new_evaluations == GROUPS - 1
    # The joined group's newer stream gets the unsuppressed (late) events above its start,
    # which here is none: its put already had offset 11 (the hub filters by start offset).
    late = by_group[id(joined)]
    assert late.late_offsets == [11] and late.offsets == []  # u995 is basic: no flip
    assert contexts.baseline_offset == 11  # the baseline moved when the round started


def test_a_small_round_fits_in_one_step_and_an_empty_one_is_none() -> None:
    compiled, contexts = setup(groups=10)
    compiled.apply("flag", "f", gold_rule("f", 2, 1))
    evaluating = contexts.start_round([change("f", 11)], compiled, 11, "e0")
    assert evaluating is not None
    events, spent = evaluating.step(256)
    assert evaluating.done and spent == 10 and len(events) == 4  # u0, u3, u6, u9
    assert contexts.start_round([], compiled, 12, "e0") is None
    assert contexts.baseline_offset == 12


def test_a_step_always_makes_progress_even_over_budget() -> None:
    compiled = CompiledEnvironment.from_items({k: gold_rule(k, 1, 0) for k in ("a", "b", "c", "d")})
    contexts = EnvContexts()
    for i in range(5):
        contexts.join(spec(i), 10, compiled, 10)
    for k in ("a", "b", "c", "d"):
        compiled.apply("flag", k, gold_rule(k, 2, 1))
    evaluating = contexts.start_round(
        [change(k, 11 + n) for n, k in enumerate("abcd")], compiled, 14, "e0"
    )
    assert evaluating is not None
    steps = []
    while not evaluating.done:
        steps.append(evaluating.step(1)[1])  # a budget below one group's cost (4 flags)
    assert steps == [4] * 5
