"""What every governance operation shares: the stores, the policy, identities, input parsing,
audit entries and the governed item write.

The governed write (``GovernanceCore.write``) builds the item, its Kafka record and its audit
entry with the ``Publisher``'s own builders (``_current``, ``_prepare_body``, ``_envelope``,
``_audit``), so an applied change request, a trigger or a rollout step stores, publishes and
audits exactly what the equivalent direct write would, plus the governance fields of its
audit entry (``requestId``, ``appliedBy``, ``lateMs``, …). The commit is
``GovernanceStore.commit_write``: the record's new state and the item write in one step.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from protocol.errors import ValidationError
from protocol.keys import ItemKind, validate_key
from protocol.model import encode_item
from publisher.auth import Principal
from publisher.governance.metrics import GovernanceMetrics
from publisher.governance.model import (
    ChangeRequest,
    Identity,
    Policy,
    RolloutPlan,
    Trigger,
    dumps,
)
from publisher.governance.store import GovernanceStore, ItemWrite, RecordUpdate
from publisher.problems import ApiError
from publisher.service import Publisher, WriteResult, _comment

__all__ = [
    "BYPASS_SCOPE",
    "MAX_ATTEMPTS",
    "GovernanceCore",
    "Written",
    "bump",
    "identity",
    "now_ms",
    "only_fields",
    "parse_comment",
    "parse_key",
    "parse_text",
    "require_object",
]

BYPASS_SCOPE: Final = "bypass-approvals"
MAX_ATTEMPTS: Final = 8
TEXT_MAX: Final = 2000
BOOTSTRAP_ADMIN_ID: Final = "bootstrap-admin"


def now_ms() -> int:
    return int(time.time() * 1000)


def identity(p: Principal) -> Identity:
    return Identity(p.name, p.token_id or BOOTSTRAP_ADMIN_ID)


def require_object(body: Any, what: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ApiError(400, f"the request body must be a JSON object ({what})")
    return dict(body)


def only_fields(body: dict[str, Any], allowed: frozenset[str], what: str) -> None:
    unknown = set(body) - allowed
    if unknown:
        raise ApiError(
            422,
            f"{what}: unknown field(s) {sorted(unknown)[:10]}; allowed: {sorted(allowed)}",
            type_="unknown-field",
        )


def parse_text(value: object, name: str, *, limit: int = TEXT_MAX) -> str:
    if not isinstance(value, str):
        raise ApiError(422, f"{name}: must be a string")
    if len(value) > limit:
        raise ApiError(422, f"{name}: must be at most {limit} characters")
    return value


def parse_comment(header: str | None, body: dict[str, Any] | None) -> str | None:
    """The change comment: ``X-Change-Comment``, else a ``comment`` field (popped)."""
    return _comment(header, body)


def parse_key(value: str, what: str) -> str:
    try:
        return validate_key(value, path=what)
    except ValidationError as exc:
        raise ApiError(400, str(exc), type_="invalid-key") from exc


@dataclass(frozen=True, slots=True)
class Written:
    """A committed governed write: the stored item and the outbox entry to wait for."""

    result: WriteResult
    version: int
    record: RecordUpdate  # the governance record stored with it


class GovernanceCore:
    """Shared services of the governance operations (see the module docstring)."""

    def __init__(
        self,
        publisher: Publisher,
        store: GovernanceStore,
        metrics: GovernanceMetrics,
        *,
        audit_max_entries: int,
    ) -> None:
        self.publisher = publisher
        self.store = store
        self.metrics = metrics
        self.audit_max = audit_max_entries

    # -- policy --------------------------------------------------------------------------
    async def policy(self, env: str) -> Policy:
        raw = await self.store.get("policy", env, env)
        return Policy() if raw is None else Policy.from_json(raw)

    def require_comment(self, policy: Policy, comment: str | None, env: str, what: str) -> None:
        if policy.needs_comment and not (comment or "").strip():
            why = "is critical" if policy.critical else "requires a comment on every change"
            raise ApiError(
                400,
                f"environment {env!r} {why}: {what} needs a comment (X-Change-Comment header "
                'or a "comment" field)',
                type_="comment-required",
            )

    # -- audit entries -------------------------------------------------------------------
    def event(
        self,
        *,
        actor: str,
        action: str,
        kind: str,
        key: str,
        version: int,
        before: Any,
        after: Any,
        comment: str | None,
        at_ms: int,
        request_id: str | None,
        **extra: Any,
    ) -> bytes:
        """An audit entry shaped like a write's (``Publisher._audit``), plus governance fields."""
        entry = json.loads(
            Publisher._audit(
                actor=actor,
                action=action,
                kind=kind,
                key=key,
                version=version,
                before=before,
                after=after,
                comment=comment,
                now_ms=at_ms,
            )
        )
        entry["requestId"] = request_id
        entry.update(extra)
        return dumps(entry)

    async def read_audit(
        self, env: str, limit: int, *, request_id: str | None, actor: str | None
    ) -> list[dict[str, Any]]:
        """The newest ``limit`` entries matching every given filter, newest first."""
        out: list[dict[str, Any]] = []
        for raw in await self.publisher.store.read_audit(env, self.audit_max):
            entry = json.loads(raw)
            if request_id is not None and entry.get("requestId") != request_id:
                continue
            if actor is not None and entry.get("actor") != actor:
                continue
            out.append(entry)
            if len(out) >= limit:
                break
        return out

    # -- items -----------------------------------------------------------------------------
    async def current(
        self, env: str, kind: ItemKind, key: str
    ) -> tuple[dict[str, Any] | None, int]:
        """The live item (None if absent or deleted) and its stored version (0 = never)."""
        item, version = await self.publisher._current(env, kind, key)
        live = item if item is not None and not item.get("deleted") else None
        return live, version

    def validated(self, kind: ItemKind, key: str, item: Any) -> dict[str, Any]:
        """``item`` validated exactly as a PUT body (422 with the field on error)."""
        return self.publisher._prepare_body(kind, key, item)

    async def write(
        self,
        env: str,
        kind: ItemKind,
        key: str,
        new_item: dict[str, Any],
        *,
        live: dict[str, Any] | None,
        version: int,
        action: str,
        actor: str,
        comment: str | None,
        record: Callable[[int, int], RecordUpdate],
        lease_owner: str | None,
        audit_extra: dict[str, Any],
    ) -> Written:
        """Commit ``new_item`` over ``version`` with the record ``record(new_version, now)``.

        Raises VersionConflict (someone else wrote), StaleRecord, NotLeaseHolder — nothing
        changed then — or ApiError 413 if the item is too large for one Kafka record.
        """
        now = now_ms()
        item = dict(new_item)
        item["version"] = version + 1
        encoded = encode_item(item)
        deleted = bool(item.get("deleted"))
        outbox = self.publisher._envelope(
            kind, env, key, version + 1, actor, encoded, deleted=deleted, now_ms=now
        )
        audit = self.event(
            actor=actor,
            action=action,
            kind=kind,
            key=key,
            version=version + 1,
            before=live,
            after=item,
            comment=comment,
            at_ms=now,
            **audit_extra,
        )
        update = record(version + 1, now)
        entry_id = await self.store.commit_write(
            update,
            ItemWrite(env, kind, key, encoded, version + 1, version, outbox, audit, now),
            lease_owner=lease_owner,
        )
        return Written(WriteResult(item, entry_id, created=live is None), version + 1, update)


_Record = TypeVar("_Record", ChangeRequest, Trigger, RolloutPlan)


def bump(record: _Record, at_ms: int) -> _Record:
    """``record`` as its next revision (any governance record dataclass)."""
    return dataclasses.replace(record, revision=record.revision + 1, updated_ms=at_ms)
