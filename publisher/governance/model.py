"""The records of governance: policies, reviews, change requests, triggers, rollout plans.

Every record is a frozen dataclass with a ``revision`` (1 on creation, +1 on every stored
change; the stores compare-and-set on it) and a stable JSON form (``to_json``/``from_json``)
that the stores keep as opaque bytes. What the API shows is ``view()``: the same fields in
camelCase, without secrets.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from protocol.keys import ItemKind

__all__ = [
    "APPLY_STATES",
    "REVIEW_STATES",
    "ROLLOUT_STATES",
    "Change",
    "ChangeRequest",
    "Identity",
    "Policy",
    "Review",
    "RolloutPlan",
    "RolloutStep",
    "Trigger",
    "approvals",
    "dumps",
]

ReviewStatus = Literal["pending", "approved", "declined"]
ApplyStatus = Literal["pending", "scheduled", "applied", "failed", "cancelled"]
RolloutStatus = Literal["pending", "active", "paused", "completed", "reverted", "cancelled"]
Decision = Literal["approve", "decline"]
ChangeKind = Literal["mergePatch", "item", "delete"]

REVIEW_STATES: Final = ("pending", "approved", "declined")
APPLY_STATES: Final = ("pending", "scheduled", "applied", "failed", "cancelled")
ROLLOUT_STATES: Final = ("pending", "active", "paused", "completed", "reverted", "cancelled")
MAX_APPROVALS: Final = 5


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON, the encoding of every stored record and audit entry."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True, slots=True)
class Identity:
    """Who acts: the token's name (what the audit shows) and id (what self-approval compares).

    The bootstrap admin token has no id; it is ``"bootstrap-admin"`` here.
    """

    name: str
    id: str

    def is_same(self, other: Identity) -> bool:
        # Either matching is "the same person": two tokens may share a name, and a name is
        # what a reviewer sees, so neither may approve what the other wrote.
        return self.id == other.id or self.name == other.name

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "id": self.id}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Identity:
        return cls(name=d["name"], id=d["id"])


@dataclass(frozen=True, slots=True)
class Policy:
    """An environment's change policy (DESIGN.md §12); the default is no process at all."""

    required_approvals: int = 0
    allow_self_approval: bool = False
    require_comment: bool = False
    critical: bool = False
    revision: int = 0  # 0 = never stored (the default policy)

    @property
    def needs_comment(self) -> bool:
        """A critical environment asks for a comment on every change, like requireComment."""
        return self.require_comment or self.critical

    def view(self) -> dict[str, Any]:
        return {
            "requiredApprovals": self.required_approvals,
            "allowSelfApproval": self.allow_self_approval,
            "requireComment": self.require_comment,
            "critical": self.critical,
        }

    def to_json(self) -> bytes:
        return dumps({**self.view(), "revision": self.revision})

    @classmethod
    def from_json(cls, raw: bytes) -> Policy:
        d = json.loads(raw)
        return cls(
            required_approvals=d["requiredApprovals"],
            allow_self_approval=d["allowSelfApproval"],
            require_comment=d["requireComment"],
            critical=d["critical"],
            revision=d["revision"],
        )


@dataclass(frozen=True, slots=True)
class Review:
    reviewer: Identity
    decision: Decision
    comment: str | None
    at_ms: int

    def view(self) -> dict[str, Any]:
        return {
            "reviewer": self.reviewer.name,
            "decision": self.decision,
            "comment": self.comment,
            "at": self.at_ms,
        }

    def to_dict(self) -> dict[str, Any]:
        return {**self.view(), "reviewer": self.reviewer.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Review:
        return cls(Identity.from_dict(d["reviewer"]), d["decision"], d["comment"], d["at"])


def _reviews_from(raw: list[dict[str, Any]]) -> tuple[Review, ...]:
    return tuple(Review.from_dict(r) for r in raw)


def approvals(reviews: tuple[Review, ...]) -> int:
    """How many of ``reviews`` approve."""
    return sum(1 for r in reviews if r.decision == "approve")


def _stored(
    view: dict[str, Any], author: Identity, reviews: tuple[Review, ...], **extra: Any
) -> bytes:
    """A reviewed record's stored JSON: its view with the full author and reviews (the view
    shows names only), then ``extra``."""
    view.update(extra, author=author.to_dict(), reviews=[r.to_dict() for r in reviews])
    return dumps(view)


@dataclass(frozen=True, slots=True)
class Change:
    """What a change request does to its resource: exactly one of the three forms."""

    kind: ChangeKind
    value: dict[str, Any] | None = None  # the merge patch or the full item; None for delete

    def view(self) -> dict[str, Any]:
        if self.kind == "delete":
            return {"delete": True}
        return {self.kind: self.value}

    @classmethod
    def from_view(cls, d: dict[str, Any]) -> Change:
        if d.get("delete") is True:
            return cls("delete")
        if "mergePatch" in d:
            return cls("mergePatch", d["mergePatch"])
        return cls("item", d["item"])


@dataclass(frozen=True, slots=True)
class ChangeRequest:
    """A proposed change of one flag or segment, its reviews and where it is in its life."""

    id: str
    seq: int  # store-assigned creation order: same-time scheduled changes apply in this order
    env: str
    kind: ItemKind
    key: str
    base_version: int | None  # None: applies on whatever version is current
    change: Change
    description: str
    comment: str | None
    execute_at_ms: int | None
    author: Identity
    created_ms: int
    updated_ms: int
    revision: int
    reviews: tuple[Review, ...] = ()
    review_status: ReviewStatus = "pending"
    status: ApplyStatus = "pending"
    failure: dict[str, Any] | None = None
    applied_version: int | None = None
    applied_ms: int | None = None
    applied_by: str | None = None
    late_ms: int | None = None

    @property
    def resource(self) -> str:
        return f"{self.kind}s/{self.key}"

    @property
    def approvals(self) -> int:
        return approvals(self.reviews)

    def view(self, required_approvals: int | None = None) -> dict[str, Any]:
        out = {
            "id": self.id,
            "environment": self.env,
            "resource": self.resource,
            "baseVersion": self.base_version,
            "change": self.change.view(),
            "description": self.description,
            "comment": self.comment,
            "executeAt": self.execute_at_ms,
            "author": self.author.name,
            "createdAt": self.created_ms,
            "updatedAt": self.updated_ms,
            "revision": self.revision,
            "reviewStatus": self.review_status,
            "status": self.status,
            "approvals": self.approvals,
            "reviews": [r.view() for r in self.reviews],
            "failure": self.failure,
            "appliedVersion": self.applied_version,
            "appliedAt": self.applied_ms,
            "appliedBy": self.applied_by,
            "lateMs": self.late_ms,
        }
        if required_approvals is not None:
            out["requiredApprovals"] = required_approvals
        return out

    def to_json(self) -> bytes:
        return _stored(self.view(), self.author, self.reviews, seq=self.seq)

    @classmethod
    def from_json(cls, raw: bytes) -> ChangeRequest:
        d = json.loads(raw)
        kinds, _, key = d["resource"].partition("/")
        return cls(
            id=d["id"],
            seq=d["seq"],
            env=d["environment"],
            kind="flag" if kinds == "flags" else "segment",
            key=key,
            base_version=d["baseVersion"],
            change=Change.from_view(d["change"]),
            description=d["description"],
            comment=d["comment"],
            execute_at_ms=d["executeAt"],
            author=Identity.from_dict(d["author"]),
            created_ms=d["createdAt"],
            updated_ms=d["updatedAt"],
            revision=d["revision"],
            reviews=_reviews_from(d["reviews"]),
            review_status=d["reviewStatus"],
            status=d["status"],
            failure=d["failure"],
            applied_version=d["appliedVersion"],
            applied_ms=d["appliedAt"],
            applied_by=d["appliedBy"],
            late_ms=d["lateMs"],
        )


@dataclass(frozen=True, slots=True)
class Trigger:
    """An unguessable URL that turns one flag on or off (incident tooling, no token needed)."""

    id: str
    env: str
    flag: str
    action: Literal["on", "off"]
    secret_sha256: str  # the URL's secret is never stored
    description: str
    enabled: bool
    author: Identity
    created_ms: int
    updated_ms: int
    revision: int
    reviews: tuple[Review, ...] = ()
    review_status: ReviewStatus = "approved"
    fired_count: int = 0  # fires that changed the flag
    last_fired_ms: int | None = None
    deleted: bool = False  # revoked: kept for the audit trail, its secret unindexed

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "environment": self.env,
            "flag": self.flag,
            "action": self.action,
            "description": self.description,
            "enabled": self.enabled,
            "author": self.author.name,
            "createdAt": self.created_ms,
            "updatedAt": self.updated_ms,
            "revision": self.revision,
            "reviewStatus": self.review_status,
            "approvals": approvals(self.reviews),
            "reviews": [r.view() for r in self.reviews],
            "firedCount": self.fired_count,
            "lastFiredAt": self.last_fired_ms,
            "deleted": self.deleted,
        }

    def to_json(self) -> bytes:
        return _stored(self.view(), self.author, self.reviews, secretSha256=self.secret_sha256)

    @classmethod
    def from_json(cls, raw: bytes) -> Trigger:
        d = json.loads(raw)
        return cls(
            id=d["id"],
            env=d["environment"],
            flag=d["flag"],
            action=d["action"],
            secret_sha256=d["secretSha256"],
            description=d["description"],
            enabled=d["enabled"],
            author=Identity.from_dict(d["author"]),
            created_ms=d["createdAt"],
            updated_ms=d["updatedAt"],
            revision=d["revision"],
            reviews=_reviews_from(d["reviews"]),
            review_status=d["reviewStatus"],
            fired_count=d["firedCount"],
            last_fired_ms=d["lastFiredAt"],
            deleted=d["deleted"],
        )


@dataclass(frozen=True, slots=True)
class RolloutStep:
    percent: float  # share of the target variation, 0 < percent <= 100, 3 decimals at most
    hold_seconds: int

    def view(self) -> dict[str, Any]:
        return {"percent": self.percent, "holdSeconds": self.hold_seconds}


@dataclass(frozen=True, slots=True)
class RolloutPlan:
    """Steps from one variation to another on a flag's fallthrough (or one rule)."""

    id: str
    seq: int
    env: str
    flag: str
    rule_id: str | None  # None: the fallthrough
    from_variation: int
    to_variation: int
    steps: tuple[RolloutStep, ...]
    author: Identity
    comment: str | None
    created_ms: int
    updated_ms: int
    revision: int
    status: RolloutStatus = "pending"
    reviews: tuple[Review, ...] = ()
    review_status: ReviewStatus = "approved"
    current_step: int = -1  # index of the last step written; -1 before the first
    next_at_ms: int | None = None  # when the scheduler writes the next step (active plans)
    flag_version: int | None = None  # the version the plan last wrote (or saw, on resume)
    before: dict[str, Any] = field(default_factory=dict)  # the target before the plan
    paused_reason: str | None = None

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "environment": self.env,
            "flag": self.flag,
            "target": "fallthrough" if self.rule_id is None else {"rule": self.rule_id},
            "fromVariation": self.from_variation,
            "toVariation": self.to_variation,
            "steps": [s.view() for s in self.steps],
            "author": self.author.name,
            "comment": self.comment,
            "createdAt": self.created_ms,
            "updatedAt": self.updated_ms,
            "revision": self.revision,
            "status": self.status,
            "reviewStatus": self.review_status,
            "approvals": approvals(self.reviews),
            "reviews": [r.view() for r in self.reviews],
            "currentStep": self.current_step,
            "currentPercent": (
                self.steps[self.current_step].percent if self.current_step >= 0 else 0
            ),
            "nextStepAt": self.next_at_ms,
            "flagVersion": self.flag_version,
            "before": self.before,
            "pausedReason": self.paused_reason,
        }

    def to_json(self) -> bytes:
        return _stored(self.view(), self.author, self.reviews, seq=self.seq)

    @classmethod
    def from_json(cls, raw: bytes) -> RolloutPlan:
        d = json.loads(raw)
        target = d["target"]
        return cls(
            id=d["id"],
            seq=d["seq"],
            env=d["environment"],
            flag=d["flag"],
            rule_id=None if target == "fallthrough" else target["rule"],
            from_variation=d["fromVariation"],
            to_variation=d["toVariation"],
            steps=tuple(RolloutStep(s["percent"], s["holdSeconds"]) for s in d["steps"]),
            author=Identity.from_dict(d["author"]),
            comment=d["comment"],
            created_ms=d["createdAt"],
            updated_ms=d["updatedAt"],
            revision=d["revision"],
            status=d["status"],
            reviews=_reviews_from(d["reviews"]),
            review_status=d["reviewStatus"],
            current_step=d["currentStep"],
            next_at_ms=d["nextStepAt"],
            flag_version=d["flagVersion"],
            before=d["before"],
            paused_reason=d["pausedReason"],
        )
