"""Progressive rollout plans: create, review, pause, resume, revert, stop, and the scheduler's
step. What a step writes is in ``governance.rollout``; the plan's life:

1. **Created** ``active`` (scheduled at ``startAt`` or now) — or ``pending`` where the policy
   requires approvals and the creator's token lacks ``bypass-approvals``: it then awaits
   reviews like a change request and becomes ``active`` when approved. At activation the plan
   records the target as it is (for revert) and the flag's version (the version it writes
   over). One unfinished plan per flag (409 otherwise).
2. **Step**: the scheduler (on the lease holder) writes the next step when it is due, as a
   versioned, audited write in one atomic step with the plan's progress; the last step
   completes the plan (its ``holdSeconds`` is not waited for).
3. **A write by anyone else pauses it**: before each step the flag's version must be the one
   the plan wrote last; if not, the plan pauses with the reason and writes nothing.
4. ``pause`` (active → paused), ``resume`` (paused → active, continuing from the flag's current
   version, next step now), ``revert`` (active, paused or completed → reverted: the target is
   written back as it was before the plan), ``DELETE`` (→ cancelled, the flag stays as it is).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any, Final

from publisher.auth import Principal
from publisher.governance.change_requests import _parse_execute_at
from publisher.governance.core import (
    BYPASS_SCOPE,
    MAX_ATTEMPTS,
    GovernanceCore,
    Written,
    bump,
    identity,
    now_ms,
    only_fields,
    parse_comment,
    parse_key,
    require_object,
)
from publisher.governance.model import RolloutPlan
from publisher.governance.reviews import add_review, parse_decision, review_status
from publisher.governance.rollout import parse_steps, read_target, step_target, with_target
from publisher.governance.store import RecordUpdate, StaleRecord
from publisher.problems import ApiError
from publisher.store import VersionConflict

__all__ = ["Rollouts"]

_CREATE_FIELDS: Final = frozenset({"steps", "fromVariation", "toVariation", "target", "startAt"})
UNFINISHED: Final = frozenset({"pending", "active", "paused"})


def _parse_target(value: object) -> str | None:
    if value is None or value == "fallthrough":
        return None
    rule = value.get("rule") if isinstance(value, dict) and set(value) == {"rule"} else None
    if isinstance(rule, str) and rule:
        return rule
    raise ApiError(
        422,
        'target: must be "fallthrough" or {"rule": "<rule id>"}',
        type_="invalid-rollout-plan",
    )


def _variation(value: object, name: str, count: int) -> int:
    if type(value) is not int or not 0 <= value < count:
        raise ApiError(
            422,
            f"{name}: must be a variation index from 0 to {count - 1}",
            type_="invalid-rollout-plan",
        )
    return value


class Rollouts:
    def __init__(self, core: GovernanceCore) -> None:
        self.core = core

    # -- reading ---------------------------------------------------------------------------
    async def list_plans(self, env: str) -> list[RolloutPlan]:
        """Newest first."""
        await self.core.publisher.require_environment(env)
        plans = [
            RolloutPlan.from_json(r) for r in await self.core.store.list_records("rollout", env)
        ]
        return sorted(plans, key=lambda p: p.seq, reverse=True)

    async def latest(self, env: str, flag: str) -> RolloutPlan:
        parse_key(flag, "key")
        for plan in await self.list_plans(env):
            if plan.flag == flag:
                return plan
        raise ApiError(404, f"flag {flag!r} in {env!r} has no rollout plan")

    # -- storing ---------------------------------------------------------------------------
    @staticmethod
    def _record(plan: RolloutPlan, expected: int) -> RecordUpdate:
        at = plan.next_at_ms if plan.status == "active" else None
        return RecordUpdate(
            "rollout", plan.env, plan.id, plan.to_json(), expected, plan.revision, plan.seq, at
        )

    async def _save(
        self,
        before: RolloutPlan | None,
        after: RolloutPlan,
        *,
        actor: str,
        action: str,
        comment: str | None,
        **extra: Any,
    ) -> None:
        audit = self.core.record_event(
            "rollout-plan",
            before,
            after,
            actor=actor,
            action=action,
            comment=comment,
            flag=after.flag,
            **extra,
        )
        expected = 0 if before is None else before.revision
        await self.core.store.update(self._record(after, expected), audit=audit)

    async def _activate(self, plan: RolloutPlan, now: int) -> RolloutPlan:
        cur = await self.core.current(plan.env, "flag", plan.flag)
        live, version = cur.live, cur.version
        if live is None:
            raise ApiError(404, f"flag {plan.flag!r} not found in {plan.env!r}")
        return dataclasses.replace(
            plan,
            status="active",
            before=read_target(live, plan.rule_id),
            flag_version=version,
            next_at_ms=max(plan.next_at_ms or now, now),
        )

    # -- create / review -------------------------------------------------------------------
    async def create(
        self, env: str, flag: str, body: Any, *, actor: Principal, comment_header: str | None
    ) -> RolloutPlan:
        await self.core.publisher.require_environment(env)
        parse_key(flag, "key")
        body = require_object(body, "{steps, toVariation, fromVariation, target, startAt}")
        comment = parse_comment(comment_header, body)
        only_fields(body, _CREATE_FIELDS, "rollout plan")
        steps = parse_steps(body.get("steps"))
        rule_id = _parse_target(body.get("target"))
        now = now_ms()
        start_at = _parse_execute_at(body.get("startAt"), now)
        live = (await self.core.current(env, "flag", flag)).live
        if live is None:
            raise ApiError(404, f"flag {flag!r} not found in {env!r}")
        for plan in await self.list_plans(env):
            if plan.flag == flag and plan.status in UNFINISHED:
                raise ApiError(
                    409,
                    f"flag {flag!r} already has an unfinished rollout plan {plan.id} "
                    f"({plan.status}); stop it (DELETE) or let it complete first",
                    type_="plan-exists",
                )
        count = len(live.get("variations") or [])
        to_variation = _variation(body.get("toVariation"), "toVariation", count)
        current = read_target(live, rule_id)
        if "fromVariation" in body:
            from_variation = _variation(body["fromVariation"], "fromVariation", count)
        elif "variation" in current:
            from_variation = current["variation"]
        else:
            raise ApiError(
                422,
                "fromVariation: required, as the target is a rollout, not one variation",
                type_="invalid-rollout-plan",
            )
        if from_variation == to_variation:
            raise ApiError(
                422, "toVariation: must differ from fromVariation", type_="invalid-rollout-plan"
            )
        # Every step must make a valid flag (checked on the current flag, like a write).
        for step in steps:
            self.core.validated(
                "flag",
                flag,
                with_target(
                    live, rule_id, step_target(current, from_variation, to_variation, step.percent)
                ),
            )
        policy = await self.core.policy(env)
        self.core.require_comment(policy, comment, env, "a rollout plan")
        bypass = policy.required_approvals > 0 and BYPASS_SCOPE in actor.scopes
        approved = bypass or policy.required_approvals == 0
        plan = RolloutPlan(
            id="",
            seq=0,
            env=env,
            flag=flag,
            rule_id=rule_id,
            from_variation=from_variation,
            to_variation=to_variation,
            steps=steps,
            author=identity(actor),
            comment=comment,
            created_ms=now,
            updated_ms=now,
            revision=1,
            review_status="approved" if approved else "pending",
            next_at_ms=start_at,
        )
        if approved:
            plan = await self._activate(plan, now)
        # the id is drawn last, so a request refused above leaves the sequence as it was
        seq = await self.core.store.next_seq()
        plan = dataclasses.replace(plan, id=f"rollout-{seq}", seq=seq)
        extra = {"bypass": "approvals"} if bypass else {}
        await self._save(
            None, plan, actor=actor.name, action="create-rollout-plan", comment=comment, **extra
        )
        return plan

    async def _transition(
        self,
        env: str,
        flag: str,
        change: Callable[[RolloutPlan], Awaitable[RolloutPlan]],
        *,
        actor: str,
        action: str,
        comment: str | None,
        **extra: Any,
    ) -> RolloutPlan:
        for _ in range(MAX_ATTEMPTS):
            before = await self.latest(env, flag)
            after = bump(await change(before), now_ms())
            try:
                await self._save(
                    before, after, actor=actor, action=action, comment=comment, **extra
                )
            except StaleRecord:
                continue
            return after
        raise ApiError(409, f"the rollout plan of {flag!r} is being changed concurrently; retry")

    @staticmethod
    def _require(plan: RolloutPlan, states: frozenset[str], verb: str) -> None:
        if plan.status not in states:
            raise ApiError(
                409,
                f"rollout plan {plan.id} is {plan.status}; only a plan that is "
                f"{' or '.join(sorted(states))} can be {verb}",
                type_="plan-state",
            )

    async def review(self, env: str, flag: str, body: Any, *, actor: Principal) -> RolloutPlan:
        body = require_object(body, '{"decision": "approve" | "decline", "comment": ...}')
        only_fields(body, frozenset({"decision", "comment"}), "review")
        decision = parse_decision(body.get("decision"))
        comment = body.get("comment")
        if comment is not None and not isinstance(comment, str):
            raise ApiError(422, "comment: must be a string")
        policy = await self.core.policy(env)

        async def change(plan: RolloutPlan) -> RolloutPlan:
            self._require(plan, frozenset({"pending"}), "reviewed")
            now = now_ms()
            reviews = add_review(
                plan.reviews,
                author=plan.author,
                reviewer=identity(actor),
                decision=decision,
                comment=comment,
                policy=policy,
                now_ms=now,
                what=f"rollout plan {plan.id}",
            )
            status = review_status(reviews, policy)
            after = dataclasses.replace(plan, reviews=reviews, review_status=status)
            if status == "approved":
                return await self._activate(after, now)
            if status == "declined":
                return dataclasses.replace(after, status="cancelled")
            return after

        return await self._transition(
            env,
            flag,
            change,
            actor=actor.name,
            action="review-rollout-plan",
            comment=comment,
            decision=decision,
        )

    # -- pause / resume / stop / revert ----------------------------------------------------
    async def pause(
        self, env: str, flag: str, *, actor: Principal, comment: str | None
    ) -> RolloutPlan:
        async def change(plan: RolloutPlan) -> RolloutPlan:
            self._require(plan, frozenset({"active"}), "paused")
            return dataclasses.replace(
                plan, status="paused", paused_reason=f"paused by {actor.name}"
            )

        return await self._transition(
            env, flag, change, actor=actor.name, action="pause-rollout-plan", comment=comment
        )

    async def resume(
        self, env: str, flag: str, *, actor: Principal, comment: str | None
    ) -> RolloutPlan:
        async def change(plan: RolloutPlan) -> RolloutPlan:
            self._require(plan, frozenset({"paused"}), "resumed")
            cur = await self.core.current(env, "flag", flag)
            if cur.live is None:
                raise ApiError(409, f"flag {flag!r} was deleted; the plan cannot resume")
            return dataclasses.replace(
                plan,
                status="active",
                flag_version=cur.version,
                next_at_ms=now_ms(),
                paused_reason=None,
            )

        return await self._transition(
            env, flag, change, actor=actor.name, action="resume-rollout-plan", comment=comment
        )

    async def stop(
        self, env: str, flag: str, *, actor: Principal, comment: str | None
    ) -> RolloutPlan:
        async def change(plan: RolloutPlan) -> RolloutPlan:
            self._require(plan, UNFINISHED, "stopped")
            return dataclasses.replace(plan, status="cancelled")

        return await self._transition(
            env, flag, change, actor=actor.name, action="stop-rollout-plan", comment=comment
        )

    async def revert(
        self, env: str, flag: str, *, actor: Principal, comment: str | None
    ) -> tuple[RolloutPlan, Written | None]:
        """Write the target back as it was before the plan (no write if it already is)."""
        for _ in range(MAX_ATTEMPTS):
            plan = await self.latest(env, flag)
            self._require(plan, frozenset({"active", "paused", "completed"}), "reverted")
            async with self.core.turn(env, "flag", flag):
                cur = await self.core.current(env, "flag", flag)
                live = cur.live
                if live is None:
                    raise ApiError(409, f"flag {flag!r} was deleted; there is nothing to revert")
                now = now_ms()
                reverted = dataclasses.replace(plan, status="reverted", paused_reason=None)
                if read_target(live, plan.rule_id) == plan.before:
                    try:
                        after = bump(reverted, now)
                        await self._save(
                            plan,
                            after,
                            actor=actor.name,
                            action="revert-rollout-plan",
                            comment=comment,
                        )
                    except StaleRecord:
                        continue
                    return after, None
                new_item = self.core.validated(
                    "flag", flag, with_target(live, plan.rule_id, plan.before)
                )

                def record(
                    new_version: int, at: int, reverted: RolloutPlan = reverted
                ) -> RecordUpdate:
                    stored = bump(dataclasses.replace(reverted, flag_version=new_version), at)
                    return self._record(stored, reverted.revision)

                try:
                    written = await self.core.write(
                        env,
                        "flag",
                        flag,
                        new_item,
                        current=cur,
                        action="patch",
                        actor=actor.name,
                        comment=comment,
                        record=record,
                        lease_owner=None,
                        request_id=plan.id,
                        audit_extra={"rollout": "revert"},
                    )
                except (VersionConflict, StaleRecord):
                    continue
                return RolloutPlan.from_json(written.record.value), written
        raise ApiError(409, f"flag {flag!r} is being changed concurrently; retry")

    # -- the scheduler's part --------------------------------------------------------------
    async def _auto_pause(self, plan: RolloutPlan, reason: str) -> str:
        after = bump(dataclasses.replace(plan, status="paused", paused_reason=reason), now_ms())
        try:
            await self._save(
                plan, after, actor="scheduler", action="pause-rollout-plan", comment=reason
            )
        except StaleRecord:
            return "changed"
        return "paused"

    async def advance(self, env: str, plan_id: str, *, owner: str) -> str:
        """Write the plan's next step if it is due and the flag is as the plan left it."""
        raw = await self.core.store.get("rollout", env, plan_id)
        if raw is None:
            return "gone"
        plan = RolloutPlan.from_json(raw)
        if plan.status != "active":
            return "not-active"
        for _ in range(MAX_ATTEMPTS):
            async with self.core.turn(env, "flag", plan.flag):
                outcome = await self._step(plan, owner)
            if outcome is not None:
                return outcome
        return "busy"

    async def _step(self, plan: RolloutPlan, owner: str) -> str | None:
        """One attempt at the plan's next step, in the flag's turn; None: try again."""
        cur = await self.core.current(plan.env, "flag", plan.flag)
        live, version = cur.live, cur.version
        if live is None:
            return await self._auto_pause(plan, f"flag {plan.flag!r} was deleted")
        if version != plan.flag_version:
            return await self._auto_pause(
                plan,
                f"flag {plan.flag!r} was changed by another writer (version {version}; "
                f"the plan wrote version {plan.flag_version}); resume to continue from it",
            )
        index = plan.current_step + 1
        step = plan.steps[index]
        last = index == len(plan.steps) - 1
        try:
            target = step_target(plan.before, plan.from_variation, plan.to_variation, step.percent)
            new_item = self.core.validated(
                "flag", plan.flag, with_target(live, plan.rule_id, target)
            )
        except ApiError as exc:
            return await self._auto_pause(plan, f"step {index} cannot be written: {exc.detail}")

        def record(new_version: int, at: int) -> RecordUpdate:
            hold = step.hold_seconds * 1000
            advanced = dataclasses.replace(
                plan,
                current_step=index,
                flag_version=new_version,
                status="completed" if last else "active",
                next_at_ms=None if last else at + hold,
            )
            return self._record(bump(advanced, at), plan.revision)

        try:
            await self.core.write(
                plan.env,
                "flag",
                plan.flag,
                new_item,
                current=cur,
                action="patch",
                actor=plan.author.name,
                comment=plan.comment,
                record=record,
                lease_owner=owner,
                request_id=plan.id,
                audit_extra={
                    "rolloutStep": index,
                    "percent": step.percent,
                    "appliedBy": "scheduler",
                },
            )
        except VersionConflict:
            return None  # written meanwhile: the next attempt pauses the plan
        except StaleRecord:
            return "changed"
        self.core.metrics.scheduled.labels("rollout-step").inc()
        return "completed" if last else "advanced"
