"""The publisher's operations, independent of HTTP: validate, version, commit to the store.

Rules of a write (flags, segments, environments):

1. Validate everything first (key, body, model); invalid input raises ``ApiError`` 4xx and
   touches nothing.
2. Read the current version *v* (0 = never existed), check ``If-Match`` against it, build the
   new state with version *v+1*, its Kafka envelope (item JSON encoded once, here) and its
   audit entry.
3. Commit with ``expected_version=v``: one atomic store step that also appends the outbox
   and audit entries. If another writer committed in between, the step fails and changes
   nothing: with ``If-Match`` that is a 412; without, the write is rebuilt on the new state
   and retried (a bounded number of times).

How the hot path avoids work without weakening any of that:

- Writes of one item on this instance take turns (``keylocks``), so they do not race each
  other into conflicts; writes of different items run concurrently.
- The current state is taken from what this instance committed last (``recent``) when it
  has it, else read from the store; the compare-and-set in step 3 still decides, and a 412
  or 404 is only answered from the store's state.
- Item writes are committed through ``groupcommit``: writes that arrive together share one
  store call (one Lua script), each with its own compare-and-set and its own outcome.
- The item is encoded to JSON once; the stored value, the Kafka envelope, the audit entry
  and the HTTP answer all reuse those bytes.

Governance (``publisher.governance.policy``) hooks in as ``write_guard``: every direct write
of a flag or segment (PUT, PATCH, DELETE, and every operation of a bulk request) is first
shown to the guard, which refuses it (403 where approvals are required, 400 where a comment
is) or returns a ``GuardNote``: the fields it adds to the write's audit entry and the policy
revision it decided under. The write carries that revision into its commit, where the store
checks it in the same atomic step as the version (``PolicyChanged`` otherwise): the guard may
decide on a remembered policy, but a write never commits under a policy that changed since.
On ``PolicyChanged`` the guard decides again on the store's policy and the write is rebuilt.

Deletes store a tombstone with a new version, so a later PUT continues the version sequence.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from protocol import jsoncodec
from protocol.environment import (
    CredentialHash,
    EnvironmentRecord,
    hash_secret,
    new_client_side_id,
    new_mobile_key,
    new_sdk_key,
)
from protocol.errors import ValidationError
from protocol.keys import Kind, validate_key
from protocol.model import encode_item, make_tombstone, validate_flag, validate_segment
from publisher.auth import SCOPES, Principal, new_token_secret, token_sha256
from publisher.bulk import BulkOperation, OperationError, bulk_error, parse_bulk
from publisher.client_settings import (
    CLIENT_SETTINGS_FIELDS,
    apply_client_settings,
    client_settings_view,
)
from publisher.groupcommit import GroupCommitter
from publisher.keylocks import KeyLocks
from publisher.mergepatch import apply_merge_patch
from publisher.problems import ApiError
from publisher.recent import RecentItem, RecentItems
from publisher.store import (
    EnvironmentExists,
    ItemKind,
    ItemWrite,
    KafkaRecord,
    PolicyChanged,
    Store,
    TokenRecord,
    UnknownEnvironment,
    VersionConflict,
    audit_entry,
    outbox_record,
)

__all__ = [
    "BulkResult",
    "GuardNote",
    "IfMatch",
    "Publisher",
    "WriteGuard",
    "WriteResult",
    "env_view",
    "parse_if_match",
]

_MAX_ATTEMPTS: Final = 8
_COMMENT_MAX: Final = 2000
_NAME_MAX: Final = 256
_MAX_EXPIRY_SECONDS: Final = 366 * 24 * 3600
_AUDIT_LIMIT_MAX: Final = 1000

_Ident = tuple[str, ItemKind, str]  # (env, kind, key)

# An If-Match header: None (absent), "*" (must exist), or a version (0 = must not exist).
IfMatch = int | str | None

_VALIDATORS: Final[dict[str, Callable[[object], dict[str, Any]]]] = {
    "flag": validate_flag,
    "segment": validate_segment,
}


@dataclass(frozen=True, slots=True)
class GuardNote:
    """What the write guard allowed a direct write under (see the module docstring).

    ``audit``: fields added to the write's audit entry (e.g. a bypass of required approvals);
    ``policy_revision``: the policy revision the store checks at commit (None: unchecked).
    """

    audit: Mapping[str, Any] | None = None
    policy_revision: int | None = None


_UNGUARDED: Final = GuardNote()

# The governance hook: ``guard(env, principal, comment, fresh)`` raises ApiError to refuse a
# direct write of a flag or segment, or returns its GuardNote. ``fresh``: decide on the
# store's policy, not a remembered one (after a PolicyChanged).
WriteGuard = Callable[[str, Principal, "str | None", bool], Awaitable[GuardNote]]


@dataclass(frozen=True, slots=True)
class WriteResult:
    """A committed write: the body to answer with and the outbox entry to wait for.

    ``encoded`` is ``body`` as JSON when the caller already has it (the stored item), so the
    answer need not encode it again.
    """

    body: dict[str, Any]
    entry_id: str
    created: bool
    encoded: bytes | None = None


@dataclass(frozen=True, slots=True)
class BulkResult:
    """A bulk request's answer body, and the last outbox entry to wait for (None: nothing
    was written, e.g. a dry run or only unchanged items)."""

    body: dict[str, Any]
    last_entry_id: str | None


@dataclass(frozen=True, slots=True)
class _Planned:
    """A bulk operation checked against the current state: what to write (``item`` None =
    unchanged, nothing to write) and the result line to report."""

    op: BulkOperation
    result: dict[str, Any]
    item: dict[str, Any] | None = None
    encoded: bytes = b""
    version: int = 0  # the new version
    before: bytes | None = None  # the live item's stored JSON (for the audit entry)


_BULK_POINT_READS = 32  # up to this many operations read their items one by one


def parse_if_match(header: str | None) -> IfMatch:
    """``If-Match: 3`` / ``"3"`` / ``W/"3"`` → 3; ``*`` → "*"; absent → None; else 400."""
    if header is None:
        return None
    value = header.strip()
    if value == "*":
        return "*"
    if value.startswith("W/"):
        value = value[2:]
    value = value.strip('"')
    if not value.isascii() or not value.isdigit() or len(value) > 16:
        raise ApiError(400, 'If-Match must be an item version (e.g. If-Match: 3 or "3") or *')
    return int(value)


def _if_match_holds(if_match: IfMatch, current: int, exists: bool) -> bool:
    if if_match is None:
        return True
    if if_match == "*":
        return exists
    return if_match == current


def _check_if_match(if_match: IfMatch, current: int, exists: bool) -> None:
    if if_match is None:
        return
    if if_match == "*":
        if not exists:
            raise ApiError(412, "If-Match: * but the item does not exist", type_="stale-version")
        return
    if if_match != current:
        raise ApiError(
            412,
            f"If-Match: {if_match} but the current version is {current}; "
            "read the item again and retry with its version",
            type_="stale-version",
            extra={"currentVersion": current},
        )


def _check_patch(kind: str, key: str, patch: dict[str, Any]) -> None:
    """A merge patch may not set the version, delete the item or change its key."""
    patch.pop("version", None)
    if patch.get("deleted") is True:
        raise ApiError(422, f"deleted: use DELETE to delete a {kind}")
    if "key" in patch and patch["key"] != key:
        raise ApiError(422, "key: a patch cannot change an item's key")


def _stale_error(op: BulkOperation, current: int) -> OperationError:
    return OperationError(
        op.index,
        412,
        f"ifMatch {op.if_match} but the current version is {current}",
        op.op,
        op.kind,
        op.key,
        current_version=current,
    )


def _comment(header: str | None, body: dict[str, Any] | None) -> str | None:
    """The change comment: ``X-Change-Comment`` header, else a ``comment`` body field (popped).

    A body field is checked even when the header wins: a malformed field is never ignored.
    """
    from_body = body.pop("comment", None) if body is not None else None
    for value in (from_body, header):
        if value is None:
            continue
        if not isinstance(value, str):
            raise ApiError(422, "comment: must be a string")
        if len(value) > _COMMENT_MAX:
            raise ApiError(422, f"comment: must be at most {_COMMENT_MAX} characters")
    return header if header is not None else from_body


def _validation(kind: str, exc: ValidationError) -> ApiError:
    return ApiError(422, f"invalid {kind}: {exc}", type_="invalid-" + kind)


def _url_key(key: str, what: str) -> str:
    try:
        return validate_key(key, path=what)
    except ValidationError as exc:
        raise ApiError(400, str(exc), type_="invalid-key") from exc


def _now_ms() -> int:
    return int(time.time() * 1000)


def env_view(record: EnvironmentRecord) -> dict[str, Any]:
    """What the API shows of an environment: no secrets, credential hashes shortened to ids."""

    def creds(cs: tuple[CredentialHash, ...]) -> list[dict[str, Any]]:
        return [{"id": c.sha256[:12], "expiresMs": c.expires_ms} for c in cs]

    return {
        "key": record.key,
        "name": record.name,
        "version": record.version,
        "clientSideId": record.client_side_id,
        "sdkKeys": creds(record.sdk_keys),
        "mobileKeys": creds(record.mobile_keys),
        **client_settings_view(record),
    }


def token_view(t: TokenRecord) -> dict[str, Any]:
    return {
        "id": t.id,
        "name": t.name,
        "scopes": list(t.scopes),
        "environments": "*" if t.environments is None else list(t.environments),
        "createdMs": t.created_ms,
        "createdBy": t.created_by,
    }


class Publisher:
    """Every API operation as a method; HTTP handlers only parse requests and shape responses."""

    def __init__(
        self,
        store: Store,
        *,
        max_record_bytes: int = 1_000_000,
        group_commit_max: int = 256,
        recent_items: int = 10_000,
    ) -> None:
        self.store = store
        self._max_record = max_record_bytes
        self.committer = GroupCommitter(store, max_writes=group_commit_max)
        self._recent = RecentItems(recent_items)
        self._locks = KeyLocks()
        self.write_guard: WriteGuard | None = None  # set by publisher.governance

    async def _guard(
        self, env: str, actor: Principal, comment: str | None, *, fresh: bool = False
    ) -> GuardNote:
        if self.write_guard is None:
            return _UNGUARDED
        return await self.write_guard(env, actor, comment, fresh)

    # -- helpers -------------------------------------------------------------------------
    def _envelope(
        self,
        kind: Kind,
        env: str,
        key: str,
        version: int,
        actor: str,
        item: bytes,
        *,
        deleted: bool = False,
        now_ms: int,
    ) -> KafkaRecord:
        record = outbox_record(kind, env, key, version, actor, item, deleted=deleted, now_ms=now_ms)
        if len(record.value) > self._max_record:
            raise ApiError(
                413,
                f"the {kind} is too large for one Kafka record ({len(record.value)} bytes "
                f"encoded, limit {self._max_record}); split it or raise the broker's "
                "message.max.bytes and FLAGSTREAM_PUBLISHER_MAX_RECORD_BYTES",
            )
        return record

    async def require_environment(self, env: str) -> EnvironmentRecord:
        _url_key(env, "environment")
        record = await self.store.get_environment(env)
        if record is None:
            raise ApiError(
                404,
                f"environment {env!r} does not exist; create it with POST /api/v1/environments",
                type_="unknown-environment",
            )
        return record

    # -- items ---------------------------------------------------------------------------
    async def get_item(self, env: str, kind: ItemKind, key: str) -> dict[str, Any]:
        await self.require_environment(env)
        _url_key(key, "key")
        raw = await self.store.get_item(env, kind, key)
        item = None if raw is None else json.loads(raw)
        if item is None or item.get("deleted"):
            suffix = f" (deleted at version {item['version']})" if item is not None else ""
            raise ApiError(404, f"{kind} {key!r} not found in {env!r}{suffix}")
        return dict(item)

    async def list_items(
        self, env: str, kind: ItemKind, *, include_deleted: bool = False
    ) -> list[dict[str, Any]]:
        await self.require_environment(env)
        items = [json.loads(raw) for raw in (await self.store.list_items(env, kind)).values()]
        return [i for i in items if include_deleted or not i.get("deleted")]

    async def _stored(self, ident: _Ident) -> RecentItem | None:
        """The store's current state of an item; None if it never existed."""
        env, kind, key = ident
        raw = await self.store.get_item(env, kind, key)
        if raw is None:
            return None
        item: dict[str, Any] = json.loads(raw)
        return RecentItem(int(item["version"]), raw, item)

    async def _commit_item(
        self,
        env: str,
        kind: ItemKind,
        key: str,
        build: Callable[[dict[str, Any] | None], dict[str, Any]],
        *,
        if_match: IfMatch,
        must_exist: bool,
        actor: Principal,
        comment: str | None,
        action: str,
        guard: GuardNote,
    ) -> WriteResult:
        """Read-build-commit loop (see module docstring); ``build`` gets the live current item."""
        ident: _Ident = (env, kind, key)
        await self._locks.acquire(ident)
        try:
            return await self._commit_item_locked(
                ident, build, if_match, must_exist, actor, comment, action, guard
            )
        finally:
            self._locks.release(ident)

    async def _commit_item_locked(
        self,
        ident: _Ident,
        build: Callable[[dict[str, Any] | None], dict[str, Any]],
        if_match: IfMatch,
        must_exist: bool,
        principal: Principal,
        comment: str | None,
        action: str,
        guard: GuardNote,
    ) -> WriteResult:
        env, kind, key = ident
        actor = principal.name
        remembered = True
        for _ in range(_MAX_ATTEMPTS):
            current = self._recent.get(ident) if remembered else None
            from_store, remembered = current is None, False
            if current is None:
                current = await self._stored(ident)
            if current is None:
                # Only an absent item needs the environment checked here (for the right 404
                # before If-Match); the commit script checks it again atomically anyway.
                await self.require_environment(env)
            version = 0 if current is None else current.version
            live = current.item if current is not None and not current.item.get("deleted") else None
            if not from_store and (
                not _if_match_holds(if_match, version, live is not None)
                or (must_exist and live is None)
            ):
                self._recent.forget(ident)
                continue  # a refusal is answered from the store's state only: read it
            _check_if_match(if_match, version, live is not None)
            if must_exist and live is None:
                raise ApiError(404, f"{kind} {key!r} not found in {env!r}")
            new_item = build(live)
            new_item["version"] = version + 1
            deleted = bool(new_item.get("deleted"))
            encoded = encode_item(new_item)
            now = _now_ms()
            record = self._envelope(
                kind, env, key, version + 1, actor, encoded, deleted=deleted, now_ms=now
            )
            audit = audit_entry(
                actor=actor,
                action=action,
                kind=kind,
                key=key,
                version=version + 1,
                before=None if current is None or live is None else current.raw,
                after=encoded,
                comment=comment,
                now_ms=now,
                extra=guard.audit,
            )
            outcome = await self.committer.commit(
                ItemWrite(
                    env,
                    kind,
                    key,
                    encoded,
                    version + 1,
                    version,
                    record,
                    audit,
                    guard.policy_revision,
                )
            )
            if isinstance(outcome, UnknownEnvironment):
                self._recent.forget(ident)
                raise ApiError(404, f"environment {env!r} does not exist")
            if isinstance(outcome, PolicyChanged):
                # decided under an older policy: decide again on the store's (may refuse)
                guard = await self._guard(env, principal, comment, fresh=True)
                continue
            if isinstance(outcome, VersionConflict):
                self._recent.forget(ident)
                if if_match is not None:
                    _check_if_match(if_match, outcome.current, True)
                continue  # someone else committed first: rebuild on the new state
            self._recent.put(ident, RecentItem(version + 1, encoded, new_item))
            return WriteResult(new_item, outcome, created=live is None, encoded=encoded)
        raise ApiError(409, f"{kind} {key!r} is being changed concurrently; retry")

    def _prepare_body(self, kind: ItemKind, key: str, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise ApiError(400, f"the request body must be a JSON object (a {kind})")
        obj = dict(body)
        obj.pop("version", None)  # versions are assigned by the publisher
        if obj.get("deleted") is True:
            raise ApiError(422, f"deleted: use DELETE to delete a {kind}")
        if "key" in obj and obj["key"] != key:
            raise ApiError(
                422, f"key: the body's key {str(obj['key'])[:300]!r} differs from the URL's {key!r}"
            )
        obj["key"] = key
        try:
            item = _VALIDATORS[kind](obj)
        except ValidationError as exc:
            raise _validation(kind, exc) from exc
        item.pop("version", None)
        return item

    def _prepare_patch(
        self, kind: ItemKind, key: str, live: dict[str, Any], patch: dict[str, Any]
    ) -> dict[str, Any]:
        _check_patch(kind, key, patch)
        return self._prepare_body(kind, key, apply_merge_patch(live, patch))

    async def put_item(
        self,
        env: str,
        kind: ItemKind,
        key: str,
        body: Any,
        *,
        if_match: IfMatch,
        actor: Principal,
        comment_header: str | None,
    ) -> WriteResult:
        _url_key(env, "environment")
        _url_key(key, "key")
        comment = _comment(comment_header, body if isinstance(body, dict) else None)
        guard = await self._guard(env, actor, comment)
        item = self._prepare_body(kind, key, body)
        return await self._commit_item(
            env,
            kind,
            key,
            lambda _live: dict(item),
            if_match=if_match,
            must_exist=False,
            actor=actor,
            comment=comment,
            action="put",
            guard=guard,
        )

    async def patch_item(
        self,
        env: str,
        kind: ItemKind,
        key: str,
        patch: Any,
        *,
        if_match: IfMatch,
        actor: Principal,
        comment_header: str | None,
    ) -> WriteResult:
        _url_key(env, "environment")
        _url_key(key, "key")
        if not isinstance(patch, dict):
            raise ApiError(400, "the request body must be a JSON merge patch object (RFC 7386)")
        patch = dict(patch)
        comment = _comment(comment_header, patch)
        guard = await self._guard(env, actor, comment)
        _check_patch(kind, key, patch)

        def build(live: dict[str, Any] | None) -> dict[str, Any]:
            assert live is not None
            return self._prepare_body(kind, key, apply_merge_patch(live, patch))

        return await self._commit_item(
            env,
            kind,
            key,
            build,
            if_match=if_match,
            must_exist=True,
            actor=actor,
            comment=comment,
            action="patch",
            guard=guard,
        )

    async def delete_item(
        self,
        env: str,
        kind: ItemKind,
        key: str,
        *,
        if_match: IfMatch,
        actor: Principal,
        comment_header: str | None,
    ) -> WriteResult:
        _url_key(env, "environment")
        _url_key(key, "key")
        comment = _comment(comment_header, None)
        guard = await self._guard(env, actor, comment)
        return await self._commit_item(
            env,
            kind,
            key,
            lambda _live: make_tombstone(key, 0),  # version set by _commit_item
            if_match=if_match,
            must_exist=True,
            actor=actor,
            comment=comment,
            action="delete",
            guard=guard,
        )

    # -- bulk ----------------------------------------------------------------------------
    async def bulk(
        self,
        env: str,
        body: Any,
        *,
        actor: Principal,
        comment_header: str | None,
        dry_run: bool = False,
    ) -> BulkResult:
        """Apply a bulk request atomically (rules in ``publisher.bulk``)."""
        _url_key(env, "environment")
        ops, shape_errors, body_comment, skip_unchanged = parse_bulk(body)
        comment = _comment(comment_header, {"comment": body_comment})
        await self.require_environment(env)
        guard = await self._guard(env, actor, comment)  # once for all its operations
        request_id = uuid.uuid4().hex
        total = len(ops) + len(shape_errors)
        for _ in range(_MAX_ATTEMPTS):
            current = await self._bulk_current(env, ops)
            now = _now_ms()
            planned: list[_Planned] = []
            errors = list(shape_errors)
            for op in ops:
                plan = self._plan(env, op, current.get((op.kind, op.key)), skip_unchanged)
                if isinstance(plan, OperationError):
                    errors.append(plan)
                else:
                    planned.append(plan)
            if errors:
                errors.sort(key=lambda e: e.index)
                raise bulk_error(errors, total)
            to_write = [p for p in planned if p.item is not None]
            writes = [
                self._bulk_write(env, p, actor.name, comment, request_id, now, guard)
                for p in to_write
            ]
            if dry_run or not writes:
                return BulkResult(self._bulk_body(request_id, planned, dry_run), None)
            outcomes = await self.store.write_items(writes, atomic=True, now_ms=now)
            failures = [
                (w, o)
                for w, o in zip(writes, outcomes, strict=True)
                if o != "" and not isinstance(o, str)
            ]
            if not failures:
                for p in to_write:
                    assert p.item is not None
                    self._recent.put(
                        (env, p.op.kind, p.op.key), RecentItem(p.version, p.encoded, p.item)
                    )
                last = outcomes[-1]
                assert isinstance(last, str)
                return BulkResult(self._bulk_body(request_id, planned, False), last)
            if any(isinstance(o, UnknownEnvironment) for _, o in failures):
                raise ApiError(404, f"environment {env!r} does not exist")
            if any(isinstance(o, PolicyChanged) for _, o in failures):
                guard = await self._guard(env, actor, comment, fresh=True)  # may refuse
                continue
            by_key = {(p.op.kind, p.op.key): p.op for p in planned}
            stale = []
            for w, o in failures:
                assert isinstance(o, VersionConflict)
                self._recent.forget((env, w.kind, w.key))
                op = by_key[(w.kind, w.key)]
                if op.if_match is not None and not _if_match_holds(
                    op.if_match, o.current, o.current > 0
                ):
                    stale.append(_stale_error(op, o.current))
            if stale:
                raise bulk_error(stale, total)
            # Another writer changed an item without If-Match in between: rebuild them all.
        raise ApiError(409, f"items of {env!r} are being changed concurrently; retry")

    async def _bulk_current(
        self, env: str, ops: list[BulkOperation]
    ) -> dict[tuple[str, str], RecentItem | None]:
        """The stored state of every item the operations touch (never the remembered one:
        refusals are answered from the store's state)."""
        out: dict[tuple[str, str], RecentItem | None] = {}
        if len(ops) <= _BULK_POINT_READS:
            for op in ops:
                out[(op.kind, op.key)] = await self._stored((env, op.kind, op.key))
            return out
        for kind in sorted({op.kind for op in ops}):
            keys = list(dict.fromkeys(op.key for op in ops if op.kind == kind))
            for key, raw in zip(keys, await self.store.get_items(env, kind, keys), strict=True):
                if raw is None:
                    out[(kind, key)] = None
                else:
                    item = jsoncodec.loads(raw)
                    out[(kind, key)] = RecentItem(int(item["version"]), raw, item)
        return out

    def _plan(
        self, env: str, op: BulkOperation, current: RecentItem | None, skip_unchanged: bool
    ) -> _Planned | OperationError:
        """Validate one operation against the item's current state (rule 2 of bulk)."""
        version = 0 if current is None else current.version
        live = current.item if current is not None and not current.item.get("deleted") else None

        def error(status: int, detail: str) -> OperationError:
            return OperationError(op.index, status, detail, op.op, op.kind, op.key)

        try:
            if op.op == "put":
                item = self._prepare_body(op.kind, op.key, op.value)
            elif op.op == "patch":
                if live is None:
                    return error(404, f"{op.kind} {op.key!r} not found in {env!r}")
                item = self._prepare_patch(op.kind, op.key, live, dict(op.value))
            else:
                if live is None:
                    return error(404, f"{op.kind} {op.key!r} not found in {env!r}")
                item = make_tombstone(op.key, 0)
        except ApiError as exc:
            return error(exc.status, exc.detail)
        if not _if_match_holds(op.if_match, version, live is not None):
            return _stale_error(op, version)
        result: dict[str, Any] = {"index": op.index, "op": op.op, "kind": op.kind, "key": op.key}
        if (
            skip_unchanged
            and op.op == "put"
            and live is not None
            and {k: v for k, v in live.items() if k != "version"} == item
        ):
            result.update(version=version, unchanged=True)
            return _Planned(op, result)
        item["version"] = version + 1
        encoded = encode_item(item)
        try:  # the record's size limit, checked now so that it is reported with the rest
            self._envelope(op.kind, env, op.key, version + 1, "", encoded, now_ms=0)
        except ApiError as exc:
            return error(exc.status, exc.detail)
        result.update(version=version + 1, created=live is None)
        before = None if current is None or live is None else current.raw
        return _Planned(op, result, item, encoded, version + 1, before)

    def _bulk_write(
        self,
        env: str,
        planned: _Planned,
        actor: str,
        comment: str | None,
        request_id: str,
        now: int,
        guard: GuardNote,
    ) -> ItemWrite:
        op, version = planned.op, planned.version
        record = self._envelope(
            op.kind,
            env,
            op.key,
            version,
            actor,
            planned.encoded,
            deleted=op.op == "delete",
            now_ms=now,
        )
        audit = audit_entry(
            actor=actor,
            action=op.op,
            kind=op.kind,
            key=op.key,
            version=version,
            before=planned.before,
            after=planned.encoded,
            comment=comment,
            now_ms=now,
            request_id=request_id,
            extra=guard.audit,
        )
        return ItemWrite(
            env,
            op.kind,
            op.key,
            planned.encoded,
            version,
            version - 1,
            record,
            audit,
            guard.policy_revision,
        )

    @staticmethod
    def _bulk_body(request_id: str, planned: list[_Planned], dry_run: bool) -> dict[str, Any]:
        results = [p.result for p in planned]
        unchanged = sum(1 for r in results if r.get("unchanged"))
        return {
            "requestId": request_id,
            "dryRun": dry_run,
            "written": 0 if dry_run else len(results) - unchanged,
            "unchanged": unchanged,
            "results": results,
        }

    # -- audit ---------------------------------------------------------------------------
    async def audit(self, env: str, limit: int) -> list[dict[str, Any]]:
        await self.require_environment(env)
        if not 1 <= limit <= _AUDIT_LIMIT_MAX:
            raise ApiError(400, f"limit must be between 1 and {_AUDIT_LIMIT_MAX}")
        return [json.loads(raw) for raw in await self.store.read_audit(env, limit)]

    # -- environments --------------------------------------------------------------------
    async def create_environment(
        self, body: Any, *, actor: Principal, comment_header: str | None
    ) -> WriteResult:
        if not isinstance(body, dict):
            raise ApiError(400, 'the request body must be a JSON object {"key": ..., "name": ...}')
        body = dict(body)
        comment = _comment(comment_header, body)
        try:
            key = validate_key(body.get("key"), path="key")
        except ValidationError as exc:
            raise ApiError(422, f"invalid environment: {exc}") from exc
        name = body.get("name", key)
        if not isinstance(name, str) or not 1 <= len(name) <= _NAME_MAX:
            raise ApiError(
                422, f"invalid environment: name: must be a string of 1..{_NAME_MAX} characters"
            )
        unknown = set(body) - {"key", "name"} - CLIENT_SETTINGS_FIELDS
        if unknown:
            raise ApiError(422, f"invalid environment: unknown field(s) {sorted(unknown)}")
        sdk_key, mobile_key, client_side_id = new_sdk_key(), new_mobile_key(), new_client_side_id()
        record = EnvironmentRecord(
            key=key,
            name=name,
            version=1,
            sdk_keys=(CredentialHash(hash_secret(sdk_key), None),),
            mobile_keys=(CredentialHash(hash_secret(mobile_key), None),),
            client_side_id=client_side_id,
        )
        record, secret = apply_client_settings(record, body)
        try:
            entry_id = await self._commit_env(
                record, 0, actor.name, comment, "create-environment", None
            )
        except EnvironmentExists as exc:
            raise ApiError(409, f"environment {key!r} already exists") from exc
        view = env_view(record)
        body_out = {**view, "sdkKey": sdk_key, "mobileKey": mobile_key}
        if secret is not None:
            body_out["secureModeSecret"] = secret  # shown once, like the keys
        return WriteResult(body_out, entry_id, created=True)

    async def _commit_env(
        self,
        record: EnvironmentRecord,
        expected: int,
        actor: str,
        comment: str | None,
        action: str,
        before: EnvironmentRecord | None,
    ) -> str:
        now = _now_ms()
        outbox = self._envelope(
            "env", record.key, record.key, record.version, actor, record.to_json(), now_ms=now
        )
        audit = audit_entry(
            actor=actor,
            action=action,
            kind="environment",
            key=record.key,
            version=record.version,
            before=None if before is None else jsoncodec.dumps(env_view(before)),
            after=jsoncodec.dumps(env_view(record)),
            comment=comment,
            now_ms=now,
        )
        return await self.store.write_environment(
            record, expected_version=expected, outbox=outbox, audit=audit, now_ms=now
        )

    async def rotate_sdk_key(
        self, env: str, body: Any, *, actor: Principal, comment_header: str | None
    ) -> WriteResult:
        _url_key(env, "environment")
        if body is None:
            body = {}
        if not isinstance(body, dict):
            raise ApiError(400, 'the request body must be a JSON object {"expireOldInSeconds": N}')
        body = dict(body)
        comment = _comment(comment_header, body)
        expire = body.get("expireOldInSeconds", 0)
        if type(expire) is not int or not 0 <= expire <= _MAX_EXPIRY_SECONDS:
            raise ApiError(
                422,
                f"expireOldInSeconds: must be an integer between 0 and {_MAX_EXPIRY_SECONDS}",
            )
        for _ in range(_MAX_ATTEMPTS):
            current = await self.require_environment(env)
            now = _now_ms()
            expires_at = now + expire * 1000
            kept: list[CredentialHash] = []
            if expire > 0:
                for cred in current.sdk_keys:
                    if not cred.valid_at(now):
                        continue  # already expired: drop it
                    until = (
                        expires_at if cred.expires_ms is None else min(cred.expires_ms, expires_at)
                    )
                    kept.append(CredentialHash(cred.sha256, until))
            sdk_key = new_sdk_key()
            kept.append(CredentialHash(hash_secret(sdk_key), None))
            # replace(): every other field (client settings included) stays as it is.
            record = dataclasses.replace(current, version=current.version + 1, sdk_keys=tuple(kept))
            try:
                entry_id = await self._commit_env(
                    record, current.version, actor.name, comment, "rotate-sdk-key", current
                )
            except VersionConflict:
                continue
            body_out = {**env_view(record), "sdkKey": sdk_key, "oldKeysExpireMs": expires_at}
            return WriteResult(body_out, entry_id, created=False)
        raise ApiError(409, f"environment {env!r} is being changed concurrently; retry")

    # -- tokens --------------------------------------------------------------------------
    async def create_token(self, body: Any, *, actor: Principal) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise ApiError(
                400, 'the request body must be a JSON object {"name", "scopes", "environments"}'
            )
        name = body.get("name")
        if not isinstance(name, str) or not 1 <= len(name) <= 100 or not name.isprintable():
            raise ApiError(422, "name: must be a printable string of 1..100 characters")
        scopes = body.get("scopes", ["read"])
        if isinstance(scopes, str):
            scopes = [scopes]
        if (
            not isinstance(scopes, list)
            or not scopes
            or not all(isinstance(s, str) and s in SCOPES for s in scopes)
        ):
            raise ApiError(422, f"scopes: must be a non-empty list of {', '.join(SCOPES)}")
        envs = body.get("environments", "*")
        environments: tuple[str, ...] | None
        if envs == "*":
            environments = None
        elif isinstance(envs, list) and envs:
            try:
                environments = tuple(
                    validate_key(e, path=f"environments[{i}]") for i, e in enumerate(envs)
                )
            except ValidationError as exc:
                raise ApiError(422, str(exc)) from exc
        else:
            raise ApiError(422, 'environments: must be "*" or a non-empty list of environment keys')
        if "admin" in scopes and environments is not None:
            raise ApiError(422, 'environments: an admin token is valid for all environments ("*")')
        unknown = set(body) - {"name", "scopes", "environments"}
        if unknown:
            raise ApiError(422, f"unknown field(s) {sorted(unknown)}")
        secret = new_token_secret()
        token = TokenRecord(
            id=uuid.uuid4().hex[:16],
            name=name,
            secret_sha256=token_sha256(secret),
            scopes=tuple(dict.fromkeys(scopes)),
            environments=environments,
            created_ms=_now_ms(),
            created_by=actor.name,
        )
        await self.store.create_token(token)
        return {**token_view(token), "token": secret}

    async def list_tokens(self) -> list[dict[str, Any]]:
        return [token_view(t) for t in await self.store.list_tokens()]

    async def delete_token(self, token_id: str) -> None:
        if not await self.store.delete_token(token_id):
            raise ApiError(404, f"no token with id {token_id[:64]!r}")

    # -- client-side settings (publisher/client_settings.py) -----------------------------
    async def update_client_settings(
        self, env: str, body: Any, *, actor: Principal, comment_header: str | None
    ) -> WriteResult | None:
        """Apply ``CLIENT_SETTINGS_FIELDS`` of ``body`` to ``env``: a new, audited version of
        the environment record (relays get it through the log). None: nothing changed."""
        _url_key(env, "environment")
        if not isinstance(body, dict):
            raise ApiError(400, "the request body must be a JSON object of settings")
        body = dict(body)
        comment = _comment(comment_header, body)
        unknown = set(body) - CLIENT_SETTINGS_FIELDS
        if unknown:
            raise ApiError(
                422,
                f"invalid environment: unknown field(s) {sorted(unknown)}; client settings are "
                f"{sorted(CLIENT_SETTINGS_FIELDS)}",
            )
        for _ in range(_MAX_ATTEMPTS):
            current = await self.require_environment(env)
            updated, secret = apply_client_settings(current, body)
            if updated == current:
                return None
            record = dataclasses.replace(updated, version=current.version + 1)
            try:
                entry_id = await self._commit_env(
                    record, current.version, actor.name, comment, "update-client-settings", current
                )
            except VersionConflict:
                continue
            body_out = env_view(record)
            if secret is not None:
                body_out["secureModeSecret"] = secret
            return WriteResult(body_out, entry_id, created=False)
        raise ApiError(409, f"environment {env!r} is being changed concurrently; retry")

    # -- governed writes (publisher.governance.core) -----------------------------------
    # Governance commits its writes itself (one atomic step with its record), but on this
    # instance's terms: in the item's turn, on the store's state, and telling the
    # read-your-own-writes memory what it committed.
    async def stored_item(self, env: str, kind: ItemKind, key: str) -> RecentItem | None:
        """The store's current state of an item, never a remembered one (None: never
        existed): what a governed write checks its base version against and builds on."""
        return await self._stored((env, kind, key))

    @contextlib.asynccontextmanager
    async def item_turn(self, env: str, kind: ItemKind, key: str) -> AsyncIterator[None]:
        """This instance's turn to write the item (``keylocks`` rule 1)."""
        ident: _Ident = (env, kind, key)
        await self._locks.acquire(ident)
        try:
            yield
        finally:
            self._locks.release(ident)

    def committed(self, env: str, kind: ItemKind, key: str, state: RecentItem | None) -> None:
        """What a governed write committed (None: it failed; forget what is remembered)."""
        if state is None:
            self._recent.forget((env, kind, key))
        else:
            self._recent.put((env, kind, key), state)
