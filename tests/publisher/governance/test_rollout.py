"""What a rollout step writes into a flag, and the validation of a plan's steps (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from publisher.governance.model import Identity, RolloutPlan, RolloutStep, Trigger
from publisher.governance.rollout import parse_steps, read_target, step_target, with_target
from publisher.problems import ApiError

pytestmark = pytest.mark.unit


def flag(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "key": "f",
        "on": True,
        "variations": ["a", "b", "c"],
        "fallthrough": {"variation": 0},
        "offVariation": 0,
        "rules": [
            {"id": "r1", "clauses": [], "variation": 1},
            {"id": "r2", "clauses": [], "rollout": {"variations": [], "bucketBy": "org"}},
        ],
    }
    base.update(overrides)
    return base


def test_steps_parse() -> None:
    steps = parse_steps([{"percent": 1, "holdSeconds": 0}, {"percent": 12.5, "holdSeconds": 60}])
    assert steps == (RolloutStep(1, 0), RolloutStep(12.5, 60))


@pytest.mark.parametrize(
    ("steps", "fragment"),
    [
        (None, "steps: must be a list"),
        ([], "steps: must be a list"),
        ([{"percent": 10, "holdSeconds": 0}] * 21, "steps: must be a list"),
        (["x"], "steps[0]: must be an object"),
        ([{"percent": 10, "holdSeconds": 0, "x": 1}], "steps[0]: must be an object"),
        ([{"percent": "10", "holdSeconds": 0}], "steps[0].percent: must be a number"),
        ([{"percent": True, "holdSeconds": 0}], "steps[0].percent: must be a number"),
        ([{"percent": 0, "holdSeconds": 0}], "steps[0].percent: must be in (0, 100]"),
        ([{"percent": 100.5, "holdSeconds": 0}], "steps[0].percent: must be in (0, 100]"),
        ([{"percent": 1.0001, "holdSeconds": 0}], "at most 3 decimals"),
        (
            [{"percent": 50, "holdSeconds": 0}, {"percent": 50, "holdSeconds": 0}],
            "steps[1].percent: must be greater",
        ),
        ([{"percent": 10, "holdSeconds": -1}], "steps[0].holdSeconds"),
        ([{"percent": 10, "holdSeconds": 1.5}], "steps[0].holdSeconds"),
        ([{"percent": 10}], "steps[0].holdSeconds"),
    ],
)
def test_bad_steps(steps: object, fragment: str) -> None:
    with pytest.raises(ApiError) as info:
        parse_steps(steps)
    assert info.value.status == 422 and fragment in info.value.detail


def test_step_target_weights_and_kept_bucketing() -> None:
    assert step_target({"variation": 0}, 0, 1, 12.345) == {
        "rollout": {
            "variations": [{"variation": 0, "weight": 87655}, {"variation": 1, "weight": 12345}]
        }
    }
    before = {"rollout": {"variations": [], "bucketBy": "org", "contextKind": "user", "seed": 7}}
    rollout = step_target(before, 2, 1, 100)["rollout"]
    assert rollout["variations"] == [
        {"variation": 2, "weight": 0},
        {"variation": 1, "weight": 100000},
    ]
    assert (rollout["bucketBy"], rollout["contextKind"], rollout["seed"]) == ("org", "user", 7)


def test_targets_of_fallthrough_and_rules() -> None:
    f = flag()
    assert read_target(f, None) == {"variation": 0}
    assert read_target(f, "r1") == {"variation": 1}
    assert read_target(f, "r2") == {"rollout": {"variations": [], "bucketBy": "org"}}
    changed = with_target(f, "r1", {"rollout": {"variations": []}})
    assert changed["rules"][0] == {"id": "r1", "clauses": [], "rollout": {"variations": []}}
    assert f["rules"][0]["variation"] == 1  # the input is not modified
    assert with_target(f, None, {"variation": 2})["fallthrough"] == {"variation": 2}


def test_missing_rule_or_fallthrough() -> None:
    with pytest.raises(ApiError) as info:
        read_target(flag(), "nope")
    assert info.value.status == 409 and "no rule with id 'nope'" in info.value.detail
    with pytest.raises(ApiError):
        read_target(flag(fallthrough=None), None)


def test_records_round_trip() -> None:
    plan = RolloutPlan(
        id="rollout-3",
        seq=3,
        env="prod",
        flag="f",
        rule_id="r1",
        from_variation=0,
        to_variation=1,
        steps=(RolloutStep(10, 5), RolloutStep(100, 0)),
        author=Identity("a", "b"),
        comment="c",
        created_ms=1,
        updated_ms=2,
        revision=4,
        status="active",
        current_step=0,
        next_at_ms=9,
        flag_version=7,
        before={"variation": 0},
    )
    assert RolloutPlan.from_json(plan.to_json()) == plan
    trigger = Trigger(
        id="trigger-1",
        env="prod",
        flag="f",
        action="off",
        secret_sha256="0" * 64,
        description="d",
        enabled=False,
        author=Identity("a", "b"),
        created_ms=1,
        updated_ms=1,
        revision=1,
    )
    assert Trigger.from_json(trigger.to_json()) == trigger
    assert "secretSha256" not in trigger.view()
