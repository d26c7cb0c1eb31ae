"""Progressive rollouts: what each step of a plan writes into the flag (pure functions).

Rules, in the order a plan meets them:

1. A plan moves a flag's **target** — its fallthrough, or one rule named by its ``id`` — from
   ``fromVariation`` to ``toVariation`` in steps ``[{percent, holdSeconds}]`` (1..20 steps,
   percentages strictly increasing, 0 < percent <= 100, at most 3 decimals: LaunchDarkly's
   rollout weights are in thousandths of a percent).
2. The target as it was before the plan (``variation`` or ``rollout``) is kept in the plan:
   ``revert`` writes it back.
3. Step *i* writes the target as a rollout ``{fromVariation: 100000 - w, toVariation: w}``
   with ``w = round(percent * 1000)``, keeping the ``bucketBy``/``contextKind``/``seed`` the
   target's rollout had, so a context's bucket stays the same across steps (a context that got
   the new variation keeps it as the percentage grows).
4. The plan writes only over the version it wrote last: any other write of the flag in
   between (a person, a change request, a trigger) pauses the plan instead (it never
   overwrites a human); ``resume`` continues from the flag as it then is.
"""

from __future__ import annotations

import copy
from typing import Any, Final

from publisher.governance.model import RolloutStep
from publisher.problems import ApiError

__all__ = ["MAX_STEPS", "parse_steps", "read_target", "step_target", "with_target"]

MAX_STEPS: Final = 20
MAX_HOLD_SECONDS: Final = 30 * 24 * 3600
TOTAL_WEIGHT: Final = 100_000
_KEPT_ROLLOUT_FIELDS: Final = ("bucketBy", "contextKind", "seed")


def _bad(detail: str) -> ApiError:
    return ApiError(422, f"invalid rollout plan: {detail}", type_="invalid-rollout-plan")


def parse_steps(value: object) -> tuple[RolloutStep, ...]:
    """Rule 1."""
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_STEPS:
        raise _bad(f"steps: must be a list of 1..{MAX_STEPS} {{percent, holdSeconds}} objects")
    steps: list[RolloutStep] = []
    previous = 0.0
    for i, raw in enumerate(value):
        if not isinstance(raw, dict) or set(raw) - {"percent", "holdSeconds"}:
            raise _bad(f"steps[{i}]: must be an object with percent and holdSeconds only")
        percent = raw.get("percent")
        if isinstance(percent, bool) or not isinstance(percent, int | float):
            raise _bad(f"steps[{i}].percent: must be a number")
        if not 0 < percent <= 100 or round(percent * 1000) != percent * 1000:
            raise _bad(f"steps[{i}].percent: must be in (0, 100] with at most 3 decimals")
        if percent <= previous:
            raise _bad(f"steps[{i}].percent: must be greater than the previous step's")
        hold = raw.get("holdSeconds")
        if type(hold) is not int or not 0 <= hold <= MAX_HOLD_SECONDS:
            raise _bad(f"steps[{i}].holdSeconds: must be an integer 0..{MAX_HOLD_SECONDS}")
        steps.append(RolloutStep(percent, hold))
        previous = percent
    return tuple(steps)


def _target_holder(flag: dict[str, Any], rule_id: str | None) -> dict[str, Any]:
    if rule_id is None:
        holder = flag.get("fallthrough")
        if not isinstance(holder, dict):
            raise _bad("the flag has no fallthrough")
        return holder
    for rule in flag.get("rules") or []:
        if isinstance(rule, dict) and rule.get("id") == rule_id:
            return rule
    raise ApiError(
        409,
        f"flag {flag.get('key')!r} has no rule with id {rule_id!r} (any more)",
        type_="rule-not-found",
    )


def read_target(flag: dict[str, Any], rule_id: str | None) -> dict[str, Any]:
    """Rule 2: the target's ``variation`` or ``rollout`` (a copy)."""
    holder = _target_holder(flag, rule_id)
    return {k: copy.deepcopy(holder[k]) for k in ("variation", "rollout") if k in holder}


def with_target(
    flag: dict[str, Any], rule_id: str | None, target: dict[str, Any]
) -> dict[str, Any]:
    """A copy of ``flag`` whose target is ``target`` (a ``variation`` or a ``rollout``)."""
    out = copy.deepcopy(flag)
    holder = _target_holder(out, rule_id)
    holder.pop("variation", None)
    holder.pop("rollout", None)
    holder.update(copy.deepcopy(target))
    return out


def step_target(
    before: dict[str, Any], from_variation: int, to_variation: int, percent: float
) -> dict[str, Any]:
    """Rule 3: the target of a step at ``percent``."""
    weight = round(percent * 1000)
    rollout: dict[str, Any] = {
        "variations": [
            {"variation": from_variation, "weight": TOTAL_WEIGHT - weight},
            {"variation": to_variation, "weight": weight},
        ]
    }
    previous = before.get("rollout")
    if isinstance(previous, dict):
        for name in _KEPT_ROLLOUT_FIELDS:
            if previous.get(name) is not None:
                rollout[name] = previous[name]
    return {"rollout": rollout}
