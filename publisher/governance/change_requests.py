"""Change requests: create, list, edit, review, apply, cancel, and the scheduled apply.

The rules of the state machine are in ``governance.requests`` (and ``governance.reviews``);
this module parses input, reads the current state, and commits each step with its audit
entry. Every step is a compare-and-set on the request's revision, so two reviewers, an editor
and the scheduler acting at once never lose each other's step: the loser re-reads and decides
again on the new state (a bounded number of times).

A change is validated at creation exactly as the equivalent direct write would be (the same
404/422/413 answers), and again on the item as it is when it is applied.
"""

from __future__ import annotations

import contextlib
import dataclasses
from datetime import datetime
from typing import Any, Final

from protocol.keys import ItemKind
from protocol.model import encode_item, make_tombstone
from publisher.auth import Principal
from publisher.governance import requests as rules
from publisher.governance.core import (
    MAX_ATTEMPTS,
    GovernanceCore,
    Written,
    bump,
    identity,
    now_ms,
    only_fields,
    parse_comment,
    parse_key,
    parse_text,
    require_object,
)
from publisher.governance.model import (
    APPLY_STATES,
    REVIEW_STATES,
    Change,
    ChangeRequest,
    Policy,
)
from publisher.governance.reviews import add_review, parse_decision
from publisher.governance.store import RecordUpdate, StaleRecord
from publisher.mergepatch import apply_merge_patch
from publisher.problems import ApiError
from publisher.store import PolicyChanged, UnknownEnvironment, VersionConflict

__all__ = ["ChangeRequests"]

_CREATE_FIELDS: Final = frozenset({"resource", "baseVersion", "change", "description", "executeAt"})
_EDIT_FIELDS: Final = frozenset({"baseVersion", "change", "description", "executeAt"})
_REVIEW_FIELDS: Final = frozenset({"decision", "comment"})
_KINDS: Final[dict[str, ItemKind]] = {"flags": "flag", "segments": "segment"}
# executeAt: no further ahead than this, and no more than this far in the past (clock skew
# between the caller and the publisher).
_MAX_AHEAD_MS: Final = 366 * 24 * 3600 * 1000
_MAX_PAST_MS: Final = 60 * 1000


def _parse_resource(value: object) -> tuple[ItemKind, str]:
    if not isinstance(value, str) or "/" not in value:
        raise ApiError(
            422, 'resource: must be "flags/KEY" or "segments/KEY"', type_="invalid-field"
        )
    kinds, _, key = value.partition("/")
    if kinds not in _KINDS:
        raise ApiError(
            422, 'resource: must be "flags/KEY" or "segments/KEY"', type_="invalid-field"
        )
    return _KINDS[kinds], parse_key(key, "resource")


def _parse_base_version(value: object) -> int | None:
    if value is None:
        return None
    if type(value) is not int or not 0 <= value < 2**53:
        raise ApiError(
            422,
            "baseVersion: must be the item's current version (0 = must not exist yet), or null "
            "to apply on whatever version is current",
            type_="invalid-field",
        )
    return value


def _parse_change(value: object) -> Change:
    if not isinstance(value, dict):
        raise ApiError(
            422,
            'change: must be an object with exactly one of "mergePatch" (object), "item" '
            '(a full flag or segment) or "delete": true',
            type_="invalid-field",
        )
    forms = [name for name in ("mergePatch", "item", "delete") if name in value]
    if len(forms) != 1 or len(value) != 1:
        raise ApiError(
            422,
            'change: must have exactly one of "mergePatch", "item" or "delete", not '
            f"{sorted(value)[:5]}",
            type_="invalid-field",
        )
    form = forms[0]
    if form == "delete":
        if value["delete"] is not True:
            raise ApiError(422, "change.delete: must be true", type_="invalid-field")
        return Change("delete")
    body = value[form]
    if not isinstance(body, dict):
        raise ApiError(422, f"change.{form}: must be a JSON object", type_="invalid-field")
    body = dict(body)
    body.pop("version", None)  # versions are assigned by the publisher, as for direct writes
    return Change("mergePatch" if form == "mergePatch" else "item", body)


def _parse_execute_at(value: object, now: int) -> int | None:
    if value is None:
        return None
    at: int
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise ApiError(
                422,
                "executeAt: must be epoch milliseconds or an RFC 3339 time such as "
                "2030-01-31T09:00:00Z",
                type_="invalid-field",
            ) from exc
        if parsed.tzinfo is None:
            raise ApiError(
                422, "executeAt: an RFC 3339 time needs a zone (Z or +01:00)", type_="invalid-field"
            )
        at = int(parsed.timestamp() * 1000)
    elif type(value) is int:
        at = value
    else:
        raise ApiError(
            422, "executeAt: must be epoch milliseconds or an RFC 3339 time", type_="invalid-field"
        )
    if at < now - _MAX_PAST_MS:
        raise ApiError(422, "executeAt: is in the past", type_="invalid-field")
    if at > now + _MAX_AHEAD_MS:
        raise ApiError(422, "executeAt: is more than a year ahead", type_="invalid-field")
    return at


class ChangeRequests:
    def __init__(self, core: GovernanceCore) -> None:
        self.core = core

    # -- reading ---------------------------------------------------------------------------
    async def get(self, env: str, request_id: str) -> ChangeRequest:
        await self.core.publisher.require_environment(env)
        raw = await self.core.store.get("change-request", env, request_id)
        if raw is None:
            raise ApiError(404, f"no change request {request_id[:64]!r} in {env!r}")
        return ChangeRequest.from_json(raw)

    async def list_requests(self, env: str, filters: dict[str, str]) -> list[ChangeRequest]:
        """Newest first; ``status``, ``reviewStatus``, ``resource``, ``author`` filters."""
        await self.core.publisher.require_environment(env)
        only_fields(
            dict(filters), frozenset({"status", "reviewStatus", "resource", "author"}), "query"
        )
        allowed = {"status": APPLY_STATES, "reviewStatus": REVIEW_STATES}
        for name, states in allowed.items():
            if name in filters and filters[name] not in states:
                raise ApiError(400, f"{name} must be one of {', '.join(states)}")
        out = []
        for raw in await self.core.store.list_records("change-request", env):
            cr = ChangeRequest.from_json(raw)
            view = {
                "status": cr.status,
                "reviewStatus": cr.review_status,
                "resource": cr.resource,
                "author": cr.author.name,
            }
            if all(view[k] == v for k, v in filters.items()):
                out.append(cr)
        return sorted(out, key=lambda c: c.seq, reverse=True)

    # -- validation as a direct write ------------------------------------------------------
    def _build(
        self, env: str, kind: ItemKind, key: str, change: Change, live: dict[str, Any] | None
    ) -> dict[str, Any]:
        """The item ``change`` makes of ``live``, validated like the direct write (4xx)."""
        if change.kind == "item":
            return self.core.validated(kind, key, change.value)
        if live is None:
            raise ApiError(
                404,
                f"{kind} {key!r} not found in {env!r}: a {change.kind} change needs an "
                f'existing {kind} (use an "item" change to create one)',
            )
        if change.kind == "delete":
            return make_tombstone(key, 0)
        patch = dict(change.value or {})
        if patch.get("deleted") is True:
            raise ApiError(422, f'deleted: use a "delete" change to delete a {kind}')
        if "key" in patch and patch["key"] != key:
            raise ApiError(422, "key: a patch cannot change an item's key")
        return self.core.validated(kind, key, apply_merge_patch(live, patch))

    async def _validate_change(
        self, env: str, kind: ItemKind, key: str, base: int | None, change: Change
    ) -> None:
        cur = await self.core.current(env, kind, key)
        live, version = cur.live, cur.version
        if base is not None and base != version:
            raise ApiError(
                409,
                f"baseVersion is {base} but {kind} {key!r} is at version {version}; "
                "propose the change on the current version",
                type_="stale-version",
                extra={"currentVersion": version},
            )
        item = self._build(env, kind, key, change, live)
        item["version"] = version + 1
        # the same size check as a write: too large for one Kafka record is a 413 now
        self.core.publisher._envelope(
            kind, env, key, version + 1, "check", encode_item(item), now_ms=now_ms()
        )

    # -- storing ---------------------------------------------------------------------------
    @staticmethod
    def _record(cr: ChangeRequest, expected: int) -> RecordUpdate:
        return RecordUpdate(
            "change-request",
            cr.env,
            cr.id,
            cr.to_json(),
            expected,
            cr.revision,
            cr.seq,
            schedule_at_ms=cr.execute_at_ms if cr.status == "scheduled" else None,
        )

    async def _save(
        self,
        before: ChangeRequest | None,
        after: ChangeRequest,
        *,
        actor: str,
        action: str,
        comment: str | None,
        policy: Policy,
        **extra: Any,
    ) -> None:
        audit = self.core.record_event(
            "change-request",
            before,
            after,
            actor=actor,
            action=action,
            comment=comment,
            after_view=after.view(policy.required_approvals),
            resource=after.resource,
            **extra,
        )
        expected = 0 if before is None else before.revision
        await self.core.store.update(self._record(after, expected), audit=audit)

    # -- create / edit ---------------------------------------------------------------------
    async def create(
        self, env: str, body: Any, *, actor: Principal, comment_header: str | None
    ) -> tuple[ChangeRequest, Policy]:
        await self.core.publisher.require_environment(env)
        body = require_object(
            body, "{resource, baseVersion, change, description, comment, executeAt}"
        )
        comment = parse_comment(comment_header, body)
        only_fields(body, _CREATE_FIELDS, "change request")
        if "resource" not in body or "change" not in body:
            raise ApiError(422, "a change request needs resource and change", type_="invalid-field")
        kind, key = _parse_resource(body["resource"])
        base = _parse_base_version(body.get("baseVersion"))
        change = _parse_change(body["change"])
        description = parse_text(body.get("description", ""), "description")
        now = now_ms()
        execute_at = _parse_execute_at(body.get("executeAt"), now)
        policy = await self.core.policy(env)
        self.core.require_comment(policy, comment, env, "a change request")
        await self._validate_change(env, kind, key, base, change)
        seq = await self.core.store.next_seq()
        cr = ChangeRequest(
            id=f"cr-{seq}",
            seq=seq,
            env=env,
            kind=kind,
            key=key,
            base_version=base,
            change=change,
            description=description,
            comment=comment,
            execute_at_ms=execute_at,
            author=identity(actor),
            created_ms=now,
            updated_ms=now,
            revision=1,
        )
        cr = rules.recompute(cr, policy, ())
        await self._save(
            None,
            cr,
            actor=actor.name,
            action="create-change-request",
            comment=comment,
            policy=policy,
        )
        return cr, policy

    async def edit(
        self, env: str, request_id: str, body: Any, *, actor: Principal, comment_header: str | None
    ) -> tuple[ChangeRequest, Policy]:
        body = require_object(
            body, "the fields to change: baseVersion, change, description, executeAt"
        )
        comment = parse_comment(comment_header, body)
        only_fields(body, _EDIT_FIELDS, "change request edit")
        for _ in range(MAX_ATTEMPTS):
            cr = await self.get(env, request_id)
            rules.check_edit(cr, identity(actor))
            now = now_ms()
            policy = await self.core.policy(env)
            self.core.require_comment(policy, comment, env, "an edit of a change request")
            base = (
                _parse_base_version(body["baseVersion"])
                if "baseVersion" in body
                else cr.base_version
            )
            change = _parse_change(body["change"]) if "change" in body else cr.change
            description = (
                parse_text(body["description"], "description")
                if "description" in body
                else cr.description
            )
            execute_at = (
                _parse_execute_at(body["executeAt"], now)
                if "executeAt" in body
                else cr.execute_at_ms
            )
            await self._validate_change(env, cr.kind, cr.key, base, change)
            edited = dataclasses.replace(
                cr,
                base_version=base,
                change=change,
                description=description,
                execute_at_ms=execute_at,
                comment=comment if comment is not None else cr.comment,
                failure=None,
            )
            # Rule 3: an edit revokes every review.
            after = bump(rules.recompute(edited, policy, ()), now)
            try:
                await self._save(
                    cr,
                    after,
                    actor=actor.name,
                    action="edit-change-request",
                    comment=comment,
                    policy=policy,
                    revokedReviews=len(cr.reviews),
                )
            except StaleRecord:
                continue
            return after, policy
        raise ApiError(409, f"change request {request_id!r} is being changed concurrently; retry")

    # -- review / cancel -------------------------------------------------------------------
    async def review(
        self, env: str, request_id: str, body: Any, *, actor: Principal
    ) -> tuple[ChangeRequest, Policy]:
        body = require_object(body, '{"decision": "approve" | "decline", "comment": ...}')
        only_fields(body, _REVIEW_FIELDS, "review")
        decision = parse_decision(body.get("decision"))
        comment = None if body.get("comment") is None else parse_text(body["comment"], "comment")
        reviewer = identity(actor)
        for _ in range(MAX_ATTEMPTS):
            cr = await self.get(env, request_id)
            rules.check_reviewable(cr)
            policy = await self.core.policy(env)
            now = now_ms()
            reviews = add_review(
                cr.reviews,
                author=cr.author,
                reviewer=reviewer,
                decision=decision,
                comment=comment,
                policy=policy,
                now_ms=now,
                what=f"change request {cr.id}",
            )
            after = bump(rules.recompute(cr, policy, reviews), now)
            try:
                await self._save(
                    cr,
                    after,
                    actor=actor.name,
                    action="review-change-request",
                    comment=comment,
                    policy=policy,
                    decision=decision,
                )
            except StaleRecord:
                continue
            return after, policy
        raise ApiError(409, f"change request {request_id!r} is being changed concurrently; retry")

    async def cancel(
        self, env: str, request_id: str, body: Any, *, actor: Principal, comment_header: str | None
    ) -> tuple[ChangeRequest, Policy]:
        body = {} if body is None else require_object(body, '{"comment": ...}')
        comment = parse_comment(comment_header, body)
        only_fields(body, frozenset(), "cancel")
        for _ in range(MAX_ATTEMPTS):
            cr = await self.get(env, request_id)
            rules.check_cancel(cr, identity(actor), is_admin="admin" in actor.scopes)
            policy = await self.core.policy(env)
            now = now_ms()
            after = bump(rules.mark_cancelled(cr), now)
            try:
                await self._save(
                    cr,
                    after,
                    actor=actor.name,
                    action="cancel-change-request",
                    comment=comment,
                    policy=policy,
                )
            except StaleRecord:
                continue
            return after, policy
        raise ApiError(409, f"change request {request_id!r} is being changed concurrently; retry")

    # -- apply -----------------------------------------------------------------------------
    async def apply(
        self, env: str, request_id: str, *, actor: Principal
    ) -> tuple[ChangeRequest, Policy, Written]:
        """Rule 4-5 by hand: the applied request and its write, or ApiError 409."""
        for _ in range(MAX_ATTEMPTS):
            cr = await self.get(env, request_id)
            policy = await self.core.policy(env)
            rules.check_apply(cr, policy)
            try:
                after, written = await self._apply(
                    cr,
                    policy,
                    actor=actor.name,
                    applied_by=actor.name,
                    lease_owner=None,
                    scheduled=False,
                )
            except (StaleRecord, PolicyChanged):
                continue  # reviewed, edited, applied or the policy changed meanwhile: decide again
            if written is None:
                failure = after.failure or {}
                raise ApiError(
                    409,
                    f"change request {cr.id} failed: {failure.get('detail')}",
                    type_="request-failed",
                    extra={
                        "currentVersion": failure.get("currentVersion"),
                        "changeRequest": after.view(policy.required_approvals),
                    },
                )
            return after, policy, written
        raise ApiError(409, f"change request {request_id!r} is being changed concurrently; retry")

    async def _apply(
        self,
        cr: ChangeRequest,
        policy: Policy,
        *,
        actor: str,
        applied_by: str,
        lease_owner: str | None,
        scheduled: bool,
    ) -> tuple[ChangeRequest, Written | None]:
        """Rule 5: apply ``cr`` (written) or mark it failed (None), in the item's turn and on
        the store's state of the item. StaleRecord if the request changed meanwhile;
        PolicyChanged if ``policy`` (which ``check_apply`` passed it under) is no longer the
        environment's: the write carries its revision, checked in the commit's atomic step."""
        for _ in range(MAX_ATTEMPTS):
            async with self.core.turn(cr.env, cr.kind, cr.key):
                cur = await self.core.current(cr.env, cr.kind, cr.key)
                if cr.base_version is not None and cur.version != cr.base_version:
                    return await self._fail(cr, "conflict", cur.version, applied_by), None
                now = now_ms()
                late = max(0, now - cr.execute_at_ms) if scheduled and cr.execute_at_ms else None
                try:
                    new_item = self._build(cr.env, cr.kind, cr.key, cr.change, cur.live)

                    def record(new_version: int, at: int, late: int | None = late) -> RecordUpdate:
                        applied = rules.mark_applied(
                            cr, version=new_version, now_ms=at, by=applied_by, late_ms=late
                        )
                        return self._record(bump(applied, at), cr.revision)

                    written = await self.core.write(
                        cr.env,
                        cr.kind,
                        cr.key,
                        new_item,
                        current=cur,
                        action={"mergePatch": "patch", "item": "put", "delete": "delete"}[
                            cr.change.kind
                        ],
                        actor=actor,
                        comment=cr.comment,
                        record=record,
                        lease_owner=lease_owner,
                        request_id=cr.id,
                        audit_extra={
                            "author": cr.author.name,
                            "approvedBy": [
                                r.reviewer.name for r in cr.reviews if r.decision == "approve"
                            ],
                            "appliedBy": applied_by,
                            "lateMs": late,
                        },
                        policy_revision=policy.revision,
                        now_ms_at=now,  # appliedAt - executeAt == lateMs, exactly
                    )
                except ApiError as exc:  # the change no longer validates on the current item
                    return await self._fail(
                        cr, "invalid", cur.version, applied_by, exc.detail
                    ), None
                except VersionConflict as exc:
                    if cr.base_version is not None:
                        return await self._fail(cr, "conflict", exc.current, applied_by), None
                    continue  # written meanwhile: rebuild on the new state
                except UnknownEnvironment as exc:
                    raise ApiError(404, f"environment {cr.env!r} does not exist") from exc
                return ChangeRequest.from_json(written.record.value), written
        raise ApiError(409, f"{cr.resource} is being changed concurrently; retry")

    async def _fail(
        self, cr: ChangeRequest, reason: str, current: int, by: str, detail: str | None = None
    ) -> ChangeRequest:
        if detail is None:
            detail = f"baseVersion is {cr.base_version} but {cr.resource} is at version {current}"
        now = now_ms()
        failure = {"reason": reason, "detail": detail, "currentVersion": current}
        after = bump(rules.mark_failed(cr, failure), now)
        policy = await self.core.policy(cr.env)
        await self._save(
            cr,
            after,
            actor=by,
            action="fail-change-request",
            comment=None,
            policy=policy,
            failure=failure,
        )
        return after

    # -- the scheduler's part --------------------------------------------------------------
    async def run_scheduled(self, env: str, request_id: str, *, owner: str) -> str:
        """Apply a due request if it still is one; what happened (for metrics and logs).

        Raises NotLeaseHolder (stop: another publisher leads now) or StoreUnavailable.
        """
        for _ in range(MAX_ATTEMPTS):
            raw = await self.core.store.get("change-request", env, request_id)
            if raw is None:
                return "gone"
            cr = ChangeRequest.from_json(raw)
            if cr.status != "scheduled":
                return "not-scheduled"
            policy = await self.core.policy(env)
            try:
                rules.check_apply(cr, policy)
            except ApiError as exc:
                # Approved under an older policy that now wants more approvals: back to review.
                now = now_ms()
                after = bump(rules.recompute(cr, policy, cr.reviews), now)
                with contextlib.suppress(StaleRecord):  # changed meanwhile: decided next round
                    await self._save(
                        cr,
                        after,
                        actor="scheduler",
                        action="unschedule-change-request",
                        comment=exc.detail,
                        policy=policy,
                    )
                return "held"
            try:
                after, written = await self._apply(
                    cr,
                    policy,
                    actor=cr.author.name,
                    applied_by="scheduler",
                    lease_owner=owner,
                    scheduled=True,
                )
            except StaleRecord:
                return "changed"
            except PolicyChanged:
                continue  # the policy changed after check_apply: decide again on the new one
            if written is None:
                self.core.metrics.scheduled.labels("failed").inc()
                return "failed"
            self.core.metrics.scheduled.labels("change-request").inc()
            self.core.metrics.lateness.observe((after.late_ms or 0) / 1000)
            return "applied"
        return "busy"
