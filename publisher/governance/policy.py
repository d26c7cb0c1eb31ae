"""Environment policy: reading and changing it, and the guard on every direct write.

Rules of the guard (``Policies.guard_direct_write``, the ``Publisher.write_guard``), run on
every direct write of a flag or segment — ``PUT``, ``PATCH``, ``DELETE`` and every bulk
request (``POST …/bulk``, so also ``flagstream admin apply`` and ``import``) — before
anything is written:

1. In an environment with ``requiredApprovals > 0`` a direct write is refused with 403
   naming the change-request route — unless the token has the ``bypass-approvals`` scope,
   and then the write's audit entry says ``"bypass": "approvals"`` (and the number required).
   A bulk request is refused as a whole; each of its audit entries carries the bypass.
2. Where ``requireComment`` (or ``critical``) is set, a write without a comment is a 400.
3. In a ``critical`` environment every write's audit entry carries ``"critical": true``.
4. **The decision holds where the write commits.** The guard returns the policy revision it
   decided under; the write carries it into its commit, and the store compares it with the
   environment's stored policy revision in the same atomic step as the item's version (the
   group-commit or bulk Lua script on Redis, one transaction on SQLite). If the policy
   changed in between, the write commits nothing, the guard decides again on the stored
   policy, and the write is rebuilt (or refused). So no direct write ever commits under a
   policy other than the current one, on any publisher, whatever the guard remembered.
5. **Remembered, but never trusted for a refusal.** To cost the write path no extra store
   round trip, the guard decides on the policy this process read last for the environment
   (kept without expiry, at most 10,000 environments). A remembered policy that would
   refuse the write is read again from the store first (a refusal is answered from the
   store's state only, like a 412); a remembered policy that would allow it is checked by
   rule 4 at commit. A policy changed through this process replaces the remembered one.

Change requests, reviews, triggers and rollouts always read the stored policy; an applied
change request carries the revision it was approved under into its commit (rule 4), so a
requirement raised meanwhile holds it back.

The policy itself changes with ``PATCH /api/v1/environments/{env}`` (a JSON merge patch of
the four fields; ``null`` restores a default), admin scope, audited with before and after
(the same request may change the environment's client-side settings: ``governance.http``).
It lives in the ``GovernanceStore`` as the record (``policy``, env, env), not in the
environment record that relays receive: relays have no use for it.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

from publisher.auth import Principal
from publisher.governance.core import (
    BYPASS_SCOPE,
    MAX_ATTEMPTS,
    GovernanceCore,
    now_ms,
    only_fields,
    parse_comment,
    require_object,
)
from publisher.governance.model import MAX_APPROVALS, Policy
from publisher.governance.store import RecordUpdate, StaleRecord
from publisher.problems import ApiError
from publisher.service import GuardNote

__all__ = ["POLICY_FIELDS", "Policies", "validate_policy_patch"]

_REMEMBERED_MAX: Final = 10_000

POLICY_FIELDS: Final = frozenset(
    {"requiredApprovals", "allowSelfApproval", "requireComment", "critical"}
)


def change_requests_path(env: str) -> str:
    return f"/api/v1/environments/{env}/change-requests"


def validate_policy_patch(patch: dict[str, Any]) -> None:
    """422 naming the field unless ``patch`` (policy fields only) is valid on any policy."""
    _merged(Policy(), patch)


def _merged(current: Policy, patch: dict[str, Any]) -> Policy:
    default = Policy()
    view = current.view()
    for name, value in patch.items():
        view[name] = default.view()[name] if value is None else value
    approvals = view["requiredApprovals"]
    if type(approvals) is not int or not 0 <= approvals <= MAX_APPROVALS:
        raise ApiError(
            422,
            f"requiredApprovals: must be an integer from 0 to {MAX_APPROVALS}",
            type_="invalid-policy",
        )
    for name in ("allowSelfApproval", "requireComment", "critical"):
        if not isinstance(view[name], bool):
            raise ApiError(422, f"{name}: must be true or false", type_="invalid-policy")
    return Policy(
        required_approvals=approvals,
        allow_self_approval=view["allowSelfApproval"],
        require_comment=view["requireComment"],
        critical=view["critical"],
        revision=current.revision + 1,
    )


class Policies:
    def __init__(self, core: GovernanceCore) -> None:
        self.core = core
        self._remembered: dict[str, Policy] = {}  # env -> the policy this process read last

    async def _read(self, env: str) -> Policy:
        """The stored policy, remembered for the guard (rule 5)."""
        policy = await self.core.policy(env)
        if len(self._remembered) >= _REMEMBERED_MAX:
            self._remembered.clear()  # environments come and go: keep it bounded
        self._remembered[env] = policy
        return policy

    async def get(self, env: str) -> Policy:
        return await self.core.policy(env)

    async def views(self, envs: list[str]) -> dict[str, dict[str, Any]]:
        """The policy fields of each of ``envs`` (fetched concurrently)."""
        policies = await asyncio.gather(*(self.core.policy(env) for env in envs))
        return {env: p.view() for env, p in zip(envs, policies, strict=True)}

    async def patch(
        self, env: str, body: Any, *, actor: Principal, comment_header: str | None
    ) -> Policy:
        await self.core.publisher.require_environment(env)
        patch = require_object(body, "a merge patch of the environment's policy fields")
        comment = parse_comment(comment_header, patch)
        only_fields(
            patch,
            POLICY_FIELDS,
            "PATCH of an environment changes only its policy (name and credentials have "
            "their own routes)",
        )
        for _ in range(MAX_ATTEMPTS):
            current = await self.core.policy(env)
            new = _merged(current, patch)
            if new.view() == current.view():
                return current  # nothing changes: no new revision, no audit entry
            now = now_ms()
            audit = self.core.event(
                actor=actor.name,
                action="update-policy",
                kind="environment",
                key=env,
                version=new.revision,
                before=current.view(),
                after=new.view(),
                comment=comment,
                at_ms=now,
                request_id=None,
            )
            try:
                await self.core.store.update(
                    RecordUpdate(
                        "policy", env, env, new.to_json(), current.revision, new.revision, 0
                    ),
                    audit=audit,
                )
            except StaleRecord:
                continue
            self._remembered[env] = new  # this publisher's guard sees the change at once
            return new
        raise ApiError(409, f"the policy of {env!r} is being changed concurrently; retry")

    async def guard_direct_write(
        self, env: str, principal: Principal, comment: str | None, fresh: bool
    ) -> GuardNote:
        """Rules 1-5: raise ApiError, or return the audit fields and the policy revision."""
        policy = None if fresh else self._remembered.get(env)
        if policy is not None and self._refusal(policy, env, principal, comment) is not None:
            policy = None  # rule 5: refuse only on the store's policy
        if policy is None:
            policy = await self._read(env)
            refusal = self._refusal(policy, env, principal, comment)
            if refusal is not None:
                raise refusal
        note: dict[str, Any] = {}
        if policy.required_approvals > 0:
            note["bypass"] = "approvals"
            note["requiredApprovals"] = policy.required_approvals
        if policy.critical:
            note["critical"] = True
        return GuardNote(note or None, policy.revision)

    def _refusal(
        self, policy: Policy, env: str, principal: Principal, comment: str | None
    ) -> ApiError | None:
        """Rules 1-2: why ``policy`` refuses the write, or None."""
        if policy.required_approvals > 0 and BYPASS_SCOPE not in principal.scopes:
            return ApiError(
                403,
                f"environment {env!r} requires {policy.required_approvals} approval(s) for "
                f"every change: propose it with POST {change_requests_path(env)} (or use a "
                f"token with the {BYPASS_SCOPE} scope; its writes are audited as bypasses)",
                type_="approval-required",
                extra={"changeRequests": change_requests_path(env)},
            )
        try:
            self.core.require_comment(policy, comment, env, "a direct write")
        except ApiError as exc:
            return exc
        return None
