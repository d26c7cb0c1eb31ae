"""The change-request state machine and the review rules, transition by transition (pure)."""

from __future__ import annotations

import dataclasses

import pytest

from publisher.governance import requests as rules
from publisher.governance.model import Change, ChangeRequest, Identity, Policy, Review
from publisher.governance.reviews import add_review, parse_decision, review_status
from publisher.problems import ApiError

pytestmark = pytest.mark.unit

ALICE = Identity("alice", "t-alice")
BOB = Identity("bob", "t-bob")
CAROL = Identity("carol", "t-carol")
TWO = Policy(required_approvals=2)
ONE = Policy(required_approvals=1)
NONE = Policy()


def request(policy: Policy = TWO, *, execute_at: int | None = None) -> ChangeRequest:
    cr = ChangeRequest(
        id="cr-1",
        seq=1,
        env="prod",
        kind="flag",
        key="f1",
        base_version=3,
        change=Change("mergePatch", {"on": False}),
        description="",
        comment=None,
        execute_at_ms=execute_at,
        author=ALICE,
        created_ms=1,
        updated_ms=1,
        revision=1,
    )
    return rules.recompute(cr, policy, ())


def review(
    cr: ChangeRequest, who: Identity, decision: str = "approve", policy: Policy = TWO
) -> ChangeRequest:
    reviews = add_review(
        cr.reviews,
        author=cr.author,
        reviewer=who,
        decision=parse_decision(decision),
        comment=None,
        policy=policy,
        now_ms=2,
        what="it",
    )
    return rules.recompute(cr, policy, reviews)


def refused(status: int, type_: str, fn: object, *args: object, **kwargs: object) -> ApiError:
    with pytest.raises(ApiError) as info:
        fn(*args, **kwargs)  # type: ignore[operator]
    assert (info.value.status, info.value.type) == (status, type_), info.value.detail
    return info.value


# -- rule 1: create ---------------------------------------------------------------------------
def test_create_needs_reviews_where_approvals_are_required() -> None:
    cr = request(TWO)
    assert (cr.review_status, cr.status) == ("pending", "pending")


def test_create_is_approved_at_once_without_required_approvals() -> None:
    assert (request(NONE).review_status, request(NONE).status) == ("approved", "pending")


def test_create_with_execute_at_and_no_approvals_is_a_direct_schedule() -> None:
    cr = request(NONE, execute_at=5000)
    assert (cr.review_status, cr.status) == ("approved", "scheduled")


def test_create_with_execute_at_waits_for_approvals_before_it_is_scheduled() -> None:
    cr = request(TWO, execute_at=5000)
    assert cr.status == "pending"
    cr = review(review(cr, BOB), CAROL)
    assert (cr.review_status, cr.status) == ("approved", "scheduled")


# -- rule 2 / reviews -------------------------------------------------------------------------
def test_quorum_is_reached_by_distinct_reviewers() -> None:
    cr = review(request(TWO), BOB)
    assert (cr.review_status, cr.approvals) == ("pending", 1)
    cr = review(cr, CAROL)
    assert (cr.review_status, cr.approvals) == ("approved", 2)


def test_self_approval_is_refused_unless_the_policy_allows_it() -> None:
    cr = request(ONE)
    refused(403, "self-review", review, cr, ALICE, policy=ONE)
    # same name, another token: still the author
    refused(403, "self-review", review, cr, Identity("alice", "t-other"), policy=ONE)
    # same token id, another name
    refused(403, "self-review", review, cr, Identity("al", "t-alice"), policy=ONE)
    allowing = Policy(required_approvals=1, allow_self_approval=True)
    assert review(cr, ALICE, policy=allowing).review_status == "approved"


def test_the_author_never_declines_their_own_request() -> None:
    allowing = Policy(required_approvals=1, allow_self_approval=True)
    refused(403, "self-review", review, request(ONE), ALICE, "decline", policy=allowing)


def test_one_review_per_reviewer() -> None:
    cr = review(request(TWO), BOB)
    refused(409, "already-reviewed", review, cr, BOB)
    refused(409, "already-reviewed", review, cr, Identity("bob", "t-bob-2"), "decline")


def test_decline_closes_the_review_until_an_edit() -> None:
    cr = review(review(request(TWO), BOB), CAROL, "decline")
    assert (cr.review_status, cr.status) == ("declined", "pending")
    refused(409, "declined", review, cr, Identity("dave", "t-dave"))


def test_decline_overrides_approvals() -> None:
    assert review_status(
        (Review(BOB, "approve", None, 1), Review(CAROL, "decline", None, 2)), NONE
    ) == ("declined")


def test_decline_of_a_scheduled_request_unschedules_it() -> None:
    cr = review(request(ONE, execute_at=9), BOB, policy=ONE)
    assert cr.status == "scheduled"
    cr = review(cr, CAROL, "decline", policy=ONE)
    assert (cr.review_status, cr.status) == ("declined", "pending")


def test_bad_decision() -> None:
    refused(422, "invalid-review", parse_decision, "yes")


@pytest.mark.parametrize("status", ["applied", "failed", "cancelled"])
def test_no_review_once_closed(status: str) -> None:
    cr = dataclasses.replace(request(TWO), status=status)  # type: ignore[arg-type]
    refused(409, "request-closed", rules.check_reviewable, cr)


@pytest.mark.parametrize("status", ["pending", "scheduled"])
def test_review_while_open(status: str) -> None:
    rules.check_reviewable(dataclasses.replace(request(TWO), status=status))  # type: ignore[arg-type]


# -- rule 3: edit -----------------------------------------------------------------------------
def test_edit_by_the_author_revokes_approvals() -> None:
    cr = review(review(request(TWO), BOB), CAROL)
    rules.check_edit(cr, ALICE)
    edited = rules.recompute(cr, TWO, ())
    assert (edited.review_status, edited.approvals, edited.reviews) == ("pending", 0, ())


def test_edit_after_a_decline_reopens_review() -> None:
    cr = review(request(ONE), BOB, "decline", policy=ONE)
    rules.check_edit(cr, ALICE)
    assert rules.recompute(cr, ONE, ()).review_status == "pending"


def test_only_the_author_edits() -> None:
    refused(403, "not-author", rules.check_edit, request(), BOB)


@pytest.mark.parametrize("status", ["pending", "scheduled", "failed"])
def test_edit_allowed_while_not_final(status: str) -> None:
    rules.check_edit(dataclasses.replace(request(), status=status), ALICE)  # type: ignore[arg-type]


@pytest.mark.parametrize("status", ["applied", "cancelled"])
def test_edit_refused_when_final(status: str) -> None:
    cr = dataclasses.replace(request(), status=status)  # type: ignore[arg-type]
    refused(409, "request-closed", rules.check_edit, cr, ALICE)


# -- rule 4: apply ----------------------------------------------------------------------------
def test_apply_before_quorum_is_refused() -> None:
    cr = review(request(TWO), BOB)
    error = refused(409, "approvals-missing", rules.check_apply, cr, TWO)
    assert "1 approval(s)" in error.detail and "requires 2" in error.detail


def test_apply_after_decline_is_refused() -> None:
    cr = review(review(request(TWO), BOB), CAROL, "decline")
    refused(409, "request-declined", rules.check_apply, cr, TWO)


def test_apply_with_quorum() -> None:
    rules.check_apply(review(review(request(TWO), BOB), CAROL), TWO)
    rules.check_apply(request(NONE), NONE)


def test_apply_of_a_scheduled_request_by_hand_is_allowed() -> None:
    rules.check_apply(request(NONE, execute_at=10), NONE)


def test_a_raised_requirement_holds_back_an_approved_request() -> None:
    cr = review(request(ONE), BOB, policy=ONE)
    refused(409, "approvals-missing", rules.check_apply, cr, TWO)


@pytest.mark.parametrize(
    ("status", "type_"),
    [("applied", "request-closed"), ("cancelled", "request-closed"), ("failed", "request-failed")],
)
def test_apply_refused_when_not_open(status: str, type_: str) -> None:
    cr = dataclasses.replace(request(NONE), status=status)  # type: ignore[arg-type]
    refused(409, type_, rules.check_apply, cr, NONE)


# -- rules 5-7 --------------------------------------------------------------------------------
def test_outcomes() -> None:
    cr = request(NONE)
    applied = rules.mark_applied(cr, version=4, now_ms=10, by="bob", late_ms=None)
    assert (applied.status, applied.applied_version, applied.applied_by) == ("applied", 4, "bob")
    failed = rules.mark_failed(cr, {"reason": "conflict", "currentVersion": 5})
    assert failed.status == "failed" and failed.failure == {
        "reason": "conflict",
        "currentVersion": 5,
    }
    assert rules.mark_cancelled(cr).status == "cancelled"


def test_cancel_by_author_or_admin_while_not_final() -> None:
    cr = request()
    rules.check_cancel(cr, ALICE, is_admin=False)
    rules.check_cancel(cr, BOB, is_admin=True)
    refused(403, "not-author", rules.check_cancel, cr, BOB, is_admin=False)
    for status in ("applied", "cancelled"):
        closed = dataclasses.replace(cr, status=status)  # type: ignore[arg-type]
        refused(409, "request-closed", rules.check_cancel, closed, ALICE, is_admin=False)


def test_json_round_trip() -> None:
    cr = review(request(TWO, execute_at=77), BOB)
    assert ChangeRequest.from_json(cr.to_json()) == cr
