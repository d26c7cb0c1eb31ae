"""What every governance operation shares: the stores, the policy, identities, input parsing,
audit entries and the governed item write.

Rules of the governed write (an applied change request, a trigger's fire, a rollout step or
revert), in the order it meets them:

1. It takes the item's turn on this instance (``Publisher.item_turn``: writes of one item
   take turns, keylocks rule 1) for the whole read-build-commit attempt.
2. It reads the item from the store (``Publisher.stored_item``), never from this instance's
   memory of its recent writes: a base-version check, a refusal and the "already in that
   state" of a trigger are always decided on the store's state.
3. It builds the item, its Kafka record and its audit entry with the builders of every write
   (``Publisher._prepare_body`` to validate, ``Publisher._envelope`` /
   ``store.outbox_record``, ``store.audit_entry`` with the stored JSON as ``before``), so it
   stores, publishes and audits exactly what the equivalent direct write would, plus the
   governance fields of its audit entry (``requestId``, ``appliedBy``, ``lateMs``, ...).
4. It commits with ``GovernanceStore.commit_write``: the record's new state and the item
   write in one atomic step, checked like a direct write (environment, the policy revision
   when the caller gives one, version compare-and-set).
5. It tells the publisher's read-your-own-writes memory what it committed (or, on a
   conflict, to forget the item).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from collections.abc import AsyncIterator, Callable, Mapping
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
from publisher.governance.store import GovernanceStore, RecordUpdate
from publisher.problems import ApiError
from publisher.recent import RecentItem
from publisher.service import Publisher, WriteResult, _comment
from publisher.store import ItemWrite, StoreError, audit_entry

__all__ = [
    "BYPASS_SCOPE",
    "MAX_ATTEMPTS",
    "Current",
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
class Current:
    """An item as the store holds it: the live item (None if absent or deleted), its
    version (0 = never existed) and its stored JSON (the ``before`` of an audit entry)."""

    live: dict[str, Any] | None
    version: int
    raw: bytes | None

    @classmethod
    def of(cls, state: RecentItem | None) -> Current:
        if state is None:
            return cls(None, 0, None)
        live = None if state.item.get("deleted") else state.item
        return cls(live, state.version, state.raw)


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
        """The audit entry of a governance step (a record's life, not an item write), shaped
        like a write's (``store.audit_entry``) with the records' views as before/after."""
        return audit_entry(
            actor=actor,
            action=action,
            kind=kind,
            key=key,
            version=version,
            before=None if before is None else dumps(before),
            after=None if after is None else dumps(after),
            comment=comment,
            now_ms=at_ms,
            request_id=request_id,
            extra=extra,
        )

    def record_event(
        self,
        kind: str,
        before: ChangeRequest | Trigger | RolloutPlan | None,
        after: ChangeRequest | Trigger | RolloutPlan,
        *,
        actor: str,
        action: str,
        comment: str | None,
        after_view: dict[str, Any] | None = None,
        **extra: Any,
    ) -> bytes:
        """``event`` for a step in a record's life: keyed and versioned by the record, at its
        update time, with its id as the request id; ``after_view`` replaces ``after.view()``."""
        return self.event(
            actor=actor,
            action=action,
            kind=kind,
            key=after.id,
            version=after.revision,
            before=None if before is None else before.view(),
            after=after.view() if after_view is None else after_view,
            comment=comment,
            at_ms=after.updated_ms,
            request_id=after.id,
            **extra,
        )

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
    @contextlib.asynccontextmanager
    async def turn(self, env: str, kind: ItemKind, key: str) -> AsyncIterator[None]:
        """Rule 1: hold the item's turn on this instance for one read-build-commit attempt."""
        async with self.publisher.item_turn(env, kind, key):
            yield

    async def current(self, env: str, kind: ItemKind, key: str) -> Current:
        """Rule 2: the item as the store holds it (never a remembered state)."""
        return Current.of(await self.publisher.stored_item(env, kind, key))

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
        current: Current,
        action: str,
        actor: str,
        comment: str | None,
        record: Callable[[int, int], RecordUpdate],
        lease_owner: str | None,
        request_id: str,
        audit_extra: Mapping[str, Any],
        policy_revision: int | None = None,
        now_ms_at: int | None = None,
    ) -> Written:
        """Rules 3-5: commit ``new_item`` over ``current`` with ``record(new_version, now)``.
        ``now_ms_at``: the write's time when the caller already read the clock for it (so
        that a lateness it derived from that reading and the applied time agree exactly).

        Raises VersionConflict (someone else wrote), PolicyChanged (``policy_revision`` is no
        longer the environment's), StaleRecord, NotLeaseHolder, UnknownEnvironment — nothing
        changed then — or ApiError 413 if the item is too large for one Kafka record.
        """
        now = now_ms() if now_ms_at is None else now_ms_at
        version = current.version
        item = dict(new_item)
        item["version"] = version + 1
        encoded = encode_item(item)
        deleted = bool(item.get("deleted"))
        outbox = self.publisher._envelope(
            kind, env, key, version + 1, actor, encoded, deleted=deleted, now_ms=now
        )
        audit = audit_entry(
            actor=actor,
            action=action,
            kind=kind,
            key=key,
            version=version + 1,
            before=None if current.live is None else current.raw,
            after=encoded,
            comment=comment,
            now_ms=now,
            request_id=request_id,
            extra=audit_extra,
        )
        update = record(version + 1, now)
        write = ItemWrite(
            env, kind, key, encoded, version + 1, version, outbox, audit, policy_revision
        )
        try:
            entry_id = await self.store.commit_write(
                update, write, now_ms=now, lease_owner=lease_owner
            )
        except StoreError:
            self.publisher.committed(env, kind, key, None)
            raise
        self.publisher.committed(env, kind, key, RecentItem(version + 1, encoded, item))
        return Written(
            WriteResult(item, entry_id, created=current.live is None, encoded=encoded),
            version + 1,
            update,
        )


_Record = TypeVar("_Record", ChangeRequest, Trigger, RolloutPlan)


def bump(record: _Record, at_ms: int) -> _Record:
    """``record`` as its next revision (any governance record dataclass)."""
    return dataclasses.replace(record, revision=record.revision + 1, updated_ms=at_ms)
