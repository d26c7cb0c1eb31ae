"""Flag triggers: an unguessable URL that turns one flag on or off, for incident tooling.

Rules, in the order a call of a trigger URL meets them:

1. The URL's last segment is the secret (``fst_trg_`` + 43 URL-safe characters, 256 random
   bits), shown once when the trigger is created. Only its SHA-256 digest is stored; a call
   hashes what it got, finds the trigger by digest and compares the digests with
   ``hmac.compare_digest``. No trigger has that digest (wrong, revoked or deleted) → 404, the
   same answer and the same work whatever the secret looks like.
2. A disabled trigger, or one still awaiting approval, → 403 saying so (the caller holds the
   secret, so there is nothing to hide from it).
3. At most ``trigger_rate_limit`` calls per ``trigger_rate_window`` seconds per trigger (every
   call counts, also those that change nothing) → 429 with ``Retry-After``.
4. Idempotent: a call that finds the flag already in the trigger's state writes nothing and
   answers ``"changed": false``. Otherwise it writes ``{"on": true|false}`` as a versioned,
   audited write whose actor is the trigger's id, in one atomic step with the trigger's fire
   count (a trigger disabled or deleted meanwhile does not fire).
5. Policy: a trigger is a pre-approved change. Created where approvals are required, it awaits
   the same reviews as a change request (``POST …/triggers/{id}/reviews``) unless its creator's
   token has ``bypass-approvals``; once approved it fires without further approval, also if
   the policy changes later. ``requireComment`` applies to its creation.
"""

from __future__ import annotations

import dataclasses
import hmac
import secrets
from collections.abc import Callable
from typing import Any, Final

from protocol.environment import hash_secret
from publisher.auth import Principal
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
    parse_text,
    require_object,
)
from publisher.governance.model import Trigger
from publisher.governance.reviews import add_review, parse_decision, review_status
from publisher.governance.store import RecordUpdate, SecretIndex, StaleRecord
from publisher.problems import ApiError
from publisher.store import VersionConflict

__all__ = ["SECRET_PREFIX", "TRIGGER_PATH", "Triggers"]

SECRET_PREFIX: Final = "fst_trg_"
TRIGGER_PATH: Final = "/api/v1/triggers/"
_CREATE_FIELDS: Final = frozenset({"action", "description"})
_UPDATE_FIELDS: Final = frozenset({"enabled", "description"})


def new_trigger_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


class Triggers:
    def __init__(self, core: GovernanceCore, *, rate_limit: int, rate_window_s: float) -> None:
        self.core = core
        self.rate_limit = rate_limit
        self.rate_window_ms = max(1, int(rate_window_s * 1000))

    async def _flag_exists(self, env: str, flag: str) -> None:
        await self.core.publisher.require_environment(env)
        parse_key(flag, "key")
        if (await self.core.current(env, "flag", flag)).live is None:
            raise ApiError(404, f"flag {flag!r} not found in {env!r}")

    async def get(self, env: str, flag: str, trigger_id: str) -> Trigger:
        await self.core.publisher.require_environment(env)
        raw = await self.core.store.get("trigger", env, trigger_id)
        trigger = None if raw is None else Trigger.from_json(raw)
        if trigger is None or trigger.flag != flag or trigger.deleted:
            raise ApiError(404, f"no trigger {trigger_id[:64]!r} on flag {flag!r} in {env!r}")
        return trigger

    async def list_triggers(self, env: str, flag: str) -> list[Trigger]:
        await self.core.publisher.require_environment(env)
        parse_key(flag, "key")
        out = [Trigger.from_json(raw) for raw in await self.core.store.list_records("trigger", env)]
        return sorted(
            (t for t in out if t.flag == flag and not t.deleted), key=lambda t: t.created_ms
        )

    def _record(self, t: Trigger, expected: int, secret: SecretIndex | None = None) -> RecordUpdate:
        return RecordUpdate(
            "trigger", t.env, t.id, t.to_json(), expected, t.revision, 0, None, secret
        )

    def _audit(
        self,
        before: Trigger | None,
        after: Trigger,
        *,
        actor: str,
        action: str,
        comment: str | None,
        **extra: Any,
    ) -> bytes:
        return self.core.record_event(
            "trigger",
            before,
            after,
            actor=actor,
            action=action,
            comment=comment,
            flag=after.flag,
            **extra,
        )

    # -- management (token holders) ------------------------------------------------------
    async def create(
        self, env: str, flag: str, body: Any, *, actor: Principal, comment_header: str | None
    ) -> tuple[Trigger, str]:
        """The new trigger and its secret (shown once)."""
        await self._flag_exists(env, flag)
        body = require_object(body, '{"action": "on" | "off", "description": ...}')
        comment = parse_comment(comment_header, body)
        only_fields(body, _CREATE_FIELDS, "trigger")
        action = body.get("action")
        if action not in ("on", "off"):
            raise ApiError(422, 'action: must be "on" or "off"', type_="invalid-field")
        description = parse_text(body.get("description", ""), "description", limit=500)
        policy = await self.core.policy(env)
        self.core.require_comment(policy, comment, env, "creating a trigger")
        bypass = policy.required_approvals > 0 and BYPASS_SCOPE in actor.scopes
        secret = new_trigger_secret()
        now = now_ms()
        trigger = Trigger(
            id="trigger-" + secrets.token_hex(6),
            env=env,
            flag=flag,
            action=action,
            secret_sha256=hash_secret(secret),
            description=description,
            enabled=True,
            author=identity(actor),
            created_ms=now,
            updated_ms=now,
            revision=1,
            review_status="approved" if bypass else review_status((), policy),
        )
        extra = {"bypass": "approvals"} if bypass else {}
        await self.core.store.update(
            self._record(trigger, 0, SecretIndex(trigger.secret_sha256, add=True)),
            audit=self._audit(
                None, trigger, actor=actor.name, action="create-trigger", comment=comment, **extra
            ),
        )
        return trigger, secret

    async def _change(
        self,
        env: str,
        flag: str,
        trigger_id: str,
        change: Callable[[Trigger], Trigger],
        *,
        actor: str,
        action: str,
        comment: str | None,
        secret_removed: bool = False,
        **extra: Any,
    ) -> Trigger:
        for _ in range(MAX_ATTEMPTS):
            before = await self.get(env, flag, trigger_id)
            after = change(before)
            if after == before:
                return before
            after = bump(after, now_ms())
            secret = SecretIndex(before.secret_sha256, add=False) if secret_removed else None
            try:
                await self.core.store.update(
                    self._record(after, before.revision, secret),
                    audit=self._audit(
                        before, after, actor=actor, action=action, comment=comment, **extra
                    ),
                )
            except StaleRecord:
                continue
            return after
        raise ApiError(409, f"trigger {trigger_id!r} is being changed concurrently; retry")

    async def update(
        self,
        env: str,
        flag: str,
        trigger_id: str,
        body: Any,
        *,
        actor: Principal,
        comment_header: str | None,
    ) -> Trigger:
        body = require_object(body, '{"enabled": true | false, "description": ...}')
        comment = parse_comment(comment_header, body)
        only_fields(body, _UPDATE_FIELDS, "trigger update")
        if not body:
            raise ApiError(422, "nothing to change: send enabled and/or description")
        enabled = body.get("enabled")
        if "enabled" in body and not isinstance(enabled, bool):
            raise ApiError(422, "enabled: must be true or false", type_="invalid-field")
        description = (
            parse_text(body["description"], "description", limit=500)
            if "description" in body
            else None
        )

        def change(t: Trigger) -> Trigger:
            return dataclasses.replace(
                t,
                enabled=t.enabled if enabled is None else enabled,
                description=t.description if description is None else description,
            )

        return await self._change(
            env,
            flag,
            trigger_id,
            change,
            actor=actor.name,
            action="update-trigger",
            comment=comment,
        )

    async def delete(
        self, env: str, flag: str, trigger_id: str, *, actor: Principal, comment_header: str | None
    ) -> Trigger:
        """Revoke: the URL answers 404 from now on; the record stays for the audit trail."""
        comment = parse_comment(comment_header, None)
        return await self._change(
            env,
            flag,
            trigger_id,
            lambda t: dataclasses.replace(t, enabled=False, deleted=True),
            actor=actor.name,
            action="delete-trigger",
            comment=comment,
            secret_removed=True,
        )

    async def review(
        self, env: str, flag: str, trigger_id: str, body: Any, *, actor: Principal
    ) -> Trigger:
        body = require_object(body, '{"decision": "approve" | "decline", "comment": ...}')
        only_fields(body, frozenset({"decision", "comment"}), "review")
        decision = parse_decision(body.get("decision"))
        comment = None if body.get("comment") is None else parse_text(body["comment"], "comment")
        policy = await self.core.policy(env)

        def change(t: Trigger) -> Trigger:
            reviews = add_review(
                t.reviews,
                author=t.author,
                reviewer=identity(actor),
                decision=decision,
                comment=comment,
                policy=policy,
                now_ms=now_ms(),
                what=f"trigger {t.id}",
            )
            return dataclasses.replace(
                t, reviews=reviews, review_status=review_status(reviews, policy)
            )

        return await self._change(
            env,
            flag,
            trigger_id,
            change,
            actor=actor.name,
            action="review-trigger",
            comment=comment,
            decision=decision,
        )

    # -- the call of a trigger URL (no token: the secret is the credential) ----------------
    async def fire(self, secret: str) -> tuple[Trigger, Written | None]:
        """Rules 1-4; the trigger and its write (None when the flag already was in its state)."""
        digest = hash_secret(secret)
        found = await self.core.store.find_secret(digest)
        trigger = None
        if found is not None:
            raw = await self.core.store.get("trigger", found[0], found[1])
            trigger = None if raw is None else Trigger.from_json(raw)
        if (
            trigger is None
            or not hmac.compare_digest(trigger.secret_sha256.encode(), digest.encode())
            or trigger.deleted
        ):
            self.core.metrics.trigger_calls.labels("not-found").inc()
            raise ApiError(
                404,
                "no trigger has this URL (mistyped, or the trigger was deleted)",
                type_="unknown-trigger",
            )
        if trigger.review_status != "approved" or not trigger.enabled:
            self.core.metrics.trigger_calls.labels("refused").inc()
            why = (
                "is disabled"
                if trigger.review_status == "approved"
                else (f"awaits approval (review status {trigger.review_status})")
            )
            raise ApiError(403, f"trigger {trigger.id} {why}", type_="trigger-refused")
        now = now_ms()
        wait_ms = await self.core.store.take_rate(
            f"trigger:{trigger.id}", self.rate_limit, self.rate_window_ms, now
        )
        if wait_ms > 0:
            self.core.metrics.trigger_calls.labels("rate-limited").inc()
            seconds = max(1, -(-wait_ms // 1000))
            raise ApiError(
                429,
                f"trigger {trigger.id} was called more than {self.rate_limit} times in "
                f"{self.rate_window_ms // 1000} s; retry in {seconds} s",
                type_="rate-limited",
                headers={"Retry-After": str(seconds)},
            )
        return await self._fire(trigger)

    async def _fire(self, trigger: Trigger) -> tuple[Trigger, Written | None]:
        target = trigger.action == "on"
        for _ in range(MAX_ATTEMPTS):
            async with self.core.turn(trigger.env, "flag", trigger.flag):
                cur = await self.core.current(trigger.env, "flag", trigger.flag)
                live = cur.live
                if live is None:
                    self.core.metrics.trigger_calls.labels("refused").inc()
                    raise ApiError(
                        409,
                        f"flag {trigger.flag!r} of trigger {trigger.id} no longer exists",
                        type_="flag-deleted",
                    )
                if bool(live.get("on")) == target:
                    self.core.metrics.trigger_calls.labels("unchanged").inc()
                    return trigger, None
                new_item = self.core.validated("flag", trigger.flag, {**live, "on": target})

                def record(_version: int, at: int, t: Trigger = trigger) -> RecordUpdate:
                    fired = dataclasses.replace(t, fired_count=t.fired_count + 1, last_fired_ms=at)
                    return self._record(bump(fired, at), t.revision)

                try:
                    written = await self.core.write(
                        trigger.env,
                        "flag",
                        trigger.flag,
                        new_item,
                        current=cur,
                        action="patch",
                        actor=trigger.id,
                        comment=trigger.description or None,
                        record=record,
                        lease_owner=None,
                        request_id=trigger.id,
                        audit_extra={"trigger": trigger.action},
                    )
                except VersionConflict:
                    continue
                except StaleRecord:
                    # changed meanwhile (fired, disabled, deleted): decide again on its new state
                    raw = await self.core.store.get("trigger", trigger.env, trigger.id)
                    trigger = Trigger.from_json(raw) if raw is not None else trigger
                    if trigger.deleted or not trigger.enabled:
                        self.core.metrics.trigger_calls.labels("refused").inc()
                        raise ApiError(
                            403,
                            f"trigger {trigger.id} was disabled meanwhile",
                            type_="trigger-refused",
                        ) from None
                    continue
                self.core.metrics.trigger_calls.labels("changed").inc()
                return Trigger.from_json(written.record.value), written
        raise ApiError(409, f"flag {trigger.flag!r} is being changed concurrently; retry")
