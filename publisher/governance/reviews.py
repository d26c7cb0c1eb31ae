"""Reviews: the approve/decline rules shared by change requests, triggers and rollout plans.

Rules, in the order a review meets them:

1. The decision is ``approve`` or ``decline``; anything else is a 422.
2. The author may not review their own proposal (same token id, or same token name) unless the
   environment's policy has ``allowSelfApproval``; a decline of one's own proposal is never a
   review (cancel it instead). Refused with 403.
3. One review per reviewer (same id or name): a second one is a 409.
4. Once declined, a proposal takes no more reviews (409) until its author edits it, which
   clears every review (approvals are revoked by any edit).
5. The review status is derived, never stored independently of the reviews: ``declined`` if any
   review declines, else ``approved`` once the approvals reach the policy's
   ``requiredApprovals`` (0 required: approved from the start), else ``pending``.
"""

from __future__ import annotations

from typing import Final

from publisher.governance.model import (
    Decision,
    Identity,
    Policy,
    Review,
    ReviewStatus,
    approvals,
)
from publisher.problems import ApiError

__all__ = ["DECISIONS", "add_review", "parse_decision", "review_status"]

DECISIONS: Final = ("approve", "decline")


def parse_decision(value: object) -> Decision:
    if value == "approve":
        return "approve"
    if value == "decline":
        return "decline"
    raise ApiError(422, 'decision: must be "approve" or "decline"', type_="invalid-review")


def review_status(reviews: tuple[Review, ...], policy: Policy) -> ReviewStatus:
    if any(r.decision == "decline" for r in reviews):
        return "declined"
    return "approved" if approvals(reviews) >= policy.required_approvals else "pending"


def add_review(
    reviews: tuple[Review, ...],
    *,
    author: Identity,
    reviewer: Identity,
    decision: Decision,
    comment: str | None,
    policy: Policy,
    now_ms: int,
    what: str,
) -> tuple[Review, ...]:
    """The reviews after ``reviewer``'s ``decision`` on ``what``, or ApiError (rules 2-4)."""
    if reviewer.is_same(author):
        if decision == "decline":
            raise ApiError(
                403,
                f"{reviewer.name!r} wrote {what} and cannot decline it; cancel it instead",
                type_="self-review",
            )
        if not policy.allow_self_approval:
            raise ApiError(
                403,
                f"{reviewer.name!r} wrote {what} and cannot approve it: this environment "
                "does not allow self-approval (allowSelfApproval is false); ask another reviewer",
                type_="self-review",
            )
    for r in reviews:
        if r.reviewer.is_same(reviewer):
            raise ApiError(
                409,
                f"{reviewer.name!r} already reviewed {what} ({r.decision}); one review each",
                type_="already-reviewed",
            )
    if any(r.decision == "decline" for r in reviews):
        raise ApiError(
            409,
            f"{what} was declined; its author must edit it (which clears the reviews) "
            "before it can be reviewed again",
            type_="declined",
        )
    return (*reviews, Review(reviewer, decision, comment, now_ms))
