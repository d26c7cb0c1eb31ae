"""The change-request state machine: pure functions from a request to its next state.

A request has two states: its **review status** (``pending | approved | declined``, see
``reviews``) and its **apply status** (``pending | scheduled | applied | failed |
cancelled``). Rules, in the order a request meets them:

1. **Create.** Review status from the policy (approved at once when it requires no approval);
   apply status ``scheduled`` when it has ``executeAt`` and is approved, else ``pending``.
2. **Review** while ``pending`` or ``scheduled`` (not after applied, failed or cancelled: 409).
   An approval that reaches the quorum of a request with ``executeAt`` schedules it; a decline
   of a scheduled request unschedules it.
3. **Edit** by its author only (403 for others), while ``pending``, ``scheduled`` or
   ``failed``: every review is cleared (approvals are revoked), the failure forgotten, and the
   statuses recomputed as at creation.
4. **Apply** (by hand, or by the scheduler when ``executeAt`` is due) only while ``pending`` or
   ``scheduled``, with review status ``approved`` and at least as many approvals as the policy
   requires *now* (a raised requirement holds back requests approved under the old one).
   Refused with 409 and the reason otherwise: before quorum, after a decline, already applied,
   cancelled, failed.
5. **Outcome** of an apply, in the same atomic step as the write: ``applied`` (with the new
   version, time, who, and for a scheduled change how late it ran) — or, when the item's version
   is no longer ``baseVersion`` or the change no longer validates on the current item,
   ``failed`` with the reason and the current version, and no write.
6. **Cancel** by its author or an admin while ``pending``, ``scheduled`` or ``failed``.
7. ``applied`` and ``cancelled`` are final; ``failed`` is left only by an edit or a cancel.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Final

from publisher.governance.model import ChangeRequest, Identity, Policy, Review
from publisher.governance.reviews import review_status
from publisher.problems import ApiError

__all__ = [
    "APPLYABLE",
    "check_apply",
    "check_cancel",
    "check_edit",
    "check_reviewable",
    "mark_applied",
    "mark_cancelled",
    "mark_failed",
    "recompute",
]

OPEN: Final = frozenset({"pending", "scheduled"})
APPLYABLE: Final = OPEN
EDITABLE: Final = frozenset({"pending", "scheduled", "failed"})


def _what(cr: ChangeRequest) -> str:
    return f"change request {cr.id}"


def recompute(cr: ChangeRequest, policy: Policy, reviews: tuple[Review, ...]) -> ChangeRequest:
    """Rules 1-3: the request with ``reviews`` and the statuses they and the policy imply."""
    status = review_status(reviews, policy)
    scheduled = status == "approved" and cr.execute_at_ms is not None
    return dataclasses.replace(
        cr, reviews=reviews, review_status=status, status="scheduled" if scheduled else "pending"
    )


def check_reviewable(cr: ChangeRequest) -> None:
    """Rule 2."""
    if cr.status not in OPEN:
        raise ApiError(
            409, f"{_what(cr)} is {cr.status} and takes no more reviews", type_="request-closed"
        )


def check_edit(cr: ChangeRequest, editor: Identity) -> None:
    """Rule 3."""
    if not editor.is_same(cr.author):
        raise ApiError(
            403,
            f"only its author {cr.author.name!r} may edit {_what(cr)}; decline it or propose "
            "another change request",
            type_="not-author",
        )
    if cr.status not in EDITABLE:
        raise ApiError(
            409, f"{_what(cr)} is {cr.status} and cannot be edited", type_="request-closed"
        )


def check_apply(cr: ChangeRequest, policy: Policy) -> None:
    """Rule 4: raise ApiError 409 naming why ``cr`` cannot be applied now."""
    if cr.status == "applied":
        raise ApiError(
            409,
            f"{_what(cr)} was already applied (version {cr.applied_version})",
            type_="request-closed",
        )
    if cr.status == "cancelled":
        raise ApiError(409, f"{_what(cr)} was cancelled", type_="request-closed")
    if cr.status == "failed":
        reason = (cr.failure or {}).get("detail", "")
        raise ApiError(
            409,
            f"{_what(cr)} failed ({reason}); edit it (e.g. a new baseVersion) to try again",
            type_="request-failed",
        )
    if cr.review_status == "declined":
        raise ApiError(
            409, f"{_what(cr)} was declined and cannot be applied", type_="request-declined"
        )
    if cr.review_status != "approved" or cr.approvals < policy.required_approvals:
        raise ApiError(
            409,
            f"{_what(cr)} has {cr.approvals} approval(s); the environment requires "
            f"{policy.required_approvals}",
            type_="approvals-missing",
        )


def check_cancel(cr: ChangeRequest, who: Identity, *, is_admin: bool) -> None:
    """Rule 6."""
    if not (is_admin or who.is_same(cr.author)):
        raise ApiError(
            403,
            f"only its author {cr.author.name!r} or an admin may cancel {_what(cr)}",
            type_="not-author",
        )
    if cr.status not in EDITABLE:
        raise ApiError(
            409, f"{_what(cr)} is {cr.status} and cannot be cancelled", type_="request-closed"
        )


def mark_applied(
    cr: ChangeRequest, *, version: int, now_ms: int, by: str, late_ms: int | None
) -> ChangeRequest:
    """Rule 5 (the caller stores it as the next revision)."""
    return dataclasses.replace(
        cr,
        status="applied",
        applied_version=version,
        applied_ms=now_ms,
        applied_by=by,
        late_ms=late_ms,
    )


def mark_failed(cr: ChangeRequest, failure: dict[str, Any]) -> ChangeRequest:
    """Rule 5."""
    return dataclasses.replace(cr, status="failed", failure=failure)


def mark_cancelled(cr: ChangeRequest) -> ChangeRequest:
    """Rule 6."""
    return dataclasses.replace(cr, status="cancelled")
