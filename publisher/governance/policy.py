"""Environment policy: reading and changing it, and the guard on every direct write.

Rules of the guard (``Policies.guard_direct_write``), run by ``Publisher.put_item``,
``patch_item`` and ``delete_item`` before anything is written:

1. In an environment with ``requiredApprovals > 0`` a direct write of a flag or segment is
   refused with 403 naming the change-request route — unless the token has the
   ``bypass-approvals`` scope, and then the write's audit entry says ``"bypass": "approvals"``.
2. Where ``requireComment`` (or ``critical``) is set, a write without a comment is a 400.
3. In a ``critical`` environment every write's audit entry carries ``"critical": true``.
4. The guard reads the policy from a per-process cache that is at most
   ``policy_cache_seconds`` old (1 s by default; 0 reads the store on every write): a direct
   write costs no extra store round trip, and a policy change reaches every publisher's
   guard within that time (at once on the publisher that made it). Change requests,
   reviews, triggers and rollouts always read the stored policy.

The policy itself changes with ``PATCH /api/v1/environments/{env}`` (a JSON merge patch of
the four fields; ``null`` restores a default), admin scope, audited with before and after.
It lives in the ``GovernanceStore`` (collection ``policy``), not in the environment record
that relays receive: relays have no use for it.
"""

from __future__ import annotations

import asyncio
import time
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

__all__ = ["POLICY_FIELDS", "Policies"]

POLICY_FIELDS: Final = frozenset(
    {"requiredApprovals", "allowSelfApproval", "requireComment", "critical"}
)


def change_requests_path(env: str) -> str:
    return f"/api/v1/environments/{env}/change-requests"


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
    def __init__(self, core: GovernanceCore, *, cache_seconds: float = 1.0) -> None:
        self.core = core
        self._cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, Policy]] = {}  # env -> (read at, policy)

    async def _cached(self, env: str) -> Policy:
        """Rule 4: the policy, at most ``cache_seconds`` old."""
        now = time.monotonic()
        hit = self._cache.get(env)
        if hit is not None and now - hit[0] < self._cache_seconds:
            return hit[1]
        policy = await self.core.policy(env)
        if self._cache_seconds > 0:
            if len(self._cache) > 10_000:  # environments come and go: keep it bounded
                self._cache.clear()
            self._cache[env] = (now, policy)
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
            self._cache.pop(env, None)  # this publisher's guard sees the change at once
            return new
        raise ApiError(409, f"the policy of {env!r} is being changed concurrently; retry")

    async def guard_direct_write(
        self, env: str, principal: Principal, comment: str | None
    ) -> dict[str, Any] | None:
        """Rules 1-4: raise ApiError, or return the fields to add to the write's audit entry."""
        policy = await self._cached(env)
        note: dict[str, Any] = {}
        if policy.required_approvals > 0:
            if BYPASS_SCOPE not in principal.scopes:
                raise ApiError(
                    403,
                    f"environment {env!r} requires {policy.required_approvals} approval(s) for "
                    f"every change: propose it with POST {change_requests_path(env)} (or use a "
                    f"token with the {BYPASS_SCOPE} scope; its writes are audited as bypasses)",
                    type_="approval-required",
                    extra={"changeRequests": change_requests_path(env)},
                )
            note["bypass"] = "approvals"
            note["requiredApprovals"] = policy.required_approvals
        self.core.require_comment(policy, comment, env, "a direct write")
        if policy.critical:
            note["critical"] = True
        return note or None
