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

Deletes store a tombstone with a new version, so a later PUT continues the version sequence.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final

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
from publisher.mergepatch import apply_merge_patch
from publisher.problems import ApiError
from publisher.store import (
    EnvironmentExists,
    ItemKind,
    KafkaRecord,
    Store,
    TokenRecord,
    UnknownEnvironment,
    VersionConflict,
    outbox_record,
)

__all__ = ["IfMatch", "Publisher", "WriteResult", "env_view", "parse_if_match"]

_MAX_ATTEMPTS: Final = 8
_COMMENT_MAX: Final = 2000
_NAME_MAX: Final = 256
_MAX_EXPIRY_SECONDS: Final = 366 * 24 * 3600
_AUDIT_LIMIT_MAX: Final = 1000

# An If-Match header: None (absent), "*" (must exist), or a version (0 = must not exist).
IfMatch = int | str | None

_VALIDATORS: Final[dict[str, Callable[[object], dict[str, Any]]]] = {
    "flag": validate_flag,
    "segment": validate_segment,
}


# Governance hook (publisher.governance.policy): called before a direct flag/segment write
# with (env, principal, comment); raises ApiError to refuse it, or returns fields to add to
# the write's audit entry (e.g. a bypass of required approvals), or None.
WriteGuard = Callable[[str, Principal, "str | None"], Awaitable["dict[str, Any] | None"]]


@dataclass(frozen=True, slots=True)
class WriteResult:
    """A committed write: the body to answer with and the outbox entry to wait for."""

    body: dict[str, Any]
    entry_id: str
    created: bool


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


def _comment(header: str | None, body: dict[str, Any] | None) -> str | None:
    """The change comment: ``X-Change-Comment`` header, else a ``comment`` body field (popped)."""
    from_body = body.pop("comment", None) if body is not None else None
    value = header if header is not None else from_body
    if value is None:
        return None
    if not isinstance(value, str):
        raise ApiError(422, "comment: must be a string")
    if len(value) > _COMMENT_MAX:
        raise ApiError(422, f"comment: must be at most {_COMMENT_MAX} characters")
    return value


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

    def __init__(self, store: Store, *, max_record_bytes: int = 1_000_000) -> None:
        self.store = store
        self._max_record = max_record_bytes
        self.write_guard: WriteGuard | None = None  # set by publisher.governance

    async def _guard(
        self, env: str, actor: Principal, comment: str | None
    ) -> dict[str, Any] | None:
        return None if self.write_guard is None else await self.write_guard(env, actor, comment)

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

    @staticmethod
    def _audit(
        *,
        actor: str,
        action: str,
        kind: str,
        key: str,
        version: int,
        before: Any,
        after: Any,
        comment: str | None,
        now_ms: int,
        note: dict[str, Any] | None = None,
    ) -> bytes:
        return json.dumps(
            {
                "id": uuid.uuid4().hex,
                "timeMs": now_ms,
                "actor": actor,
                "action": action,
                "kind": kind,
                "key": key,
                "version": version,
                "comment": comment,
                "before": before,
                "after": after,
                **(note or {}),
            },
            separators=(",", ":"),
            ensure_ascii=False,
        ).encode()

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

    async def _current(
        self, env: str, kind: ItemKind, key: str
    ) -> tuple[dict[str, Any] | None, int]:
        raw = await self.store.get_item(env, kind, key)
        if raw is None:
            return None, 0
        item: dict[str, Any] = json.loads(raw)
        return item, int(item["version"])

    async def _commit_item(
        self,
        env: str,
        kind: ItemKind,
        key: str,
        build: Callable[[dict[str, Any] | None], dict[str, Any]],
        *,
        if_match: IfMatch,
        must_exist: bool,
        actor: str,
        comment: str | None,
        action: str,
        audit_note: dict[str, Any] | None = None,
    ) -> WriteResult:
        """Read-build-commit loop (see module docstring); ``build`` gets the live current item."""
        for _ in range(_MAX_ATTEMPTS):
            current, version = await self._current(env, kind, key)
            if current is None:
                # Only an absent item needs the environment checked here (for the right 404
                # before If-Match); the commit script checks it again atomically anyway.
                await self.require_environment(env)
            live = current if current is not None and not current.get("deleted") else None
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
            audit = self._audit(
                actor=actor,
                action=action,
                kind=kind,
                key=key,
                version=version + 1,
                before=live,
                after=new_item,
                comment=comment,
                now_ms=now,
                note=audit_note,
            )
            try:
                entry_id = await self.store.write_item(
                    env,
                    kind,
                    key,
                    encoded,
                    version=version + 1,
                    expected_version=version,
                    outbox=record,
                    audit=audit,
                    now_ms=now,
                )
            except UnknownEnvironment as exc:
                raise ApiError(404, f"environment {env!r} does not exist") from exc
            except VersionConflict as exc:
                if if_match is not None:
                    _check_if_match(if_match, exc.current, True)
                continue  # someone else committed first: rebuild on the new state
            return WriteResult(new_item, entry_id, created=live is None)
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
        note = await self._guard(env, actor, comment)
        item = self._prepare_body(kind, key, body)
        return await self._commit_item(
            env,
            kind,
            key,
            lambda _live: dict(item),
            if_match=if_match,
            must_exist=False,
            actor=actor.name,
            comment=comment,
            action="put",
            audit_note=note,
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
        note = await self._guard(env, actor, comment)
        patch.pop("version", None)
        if patch.get("deleted") is True:
            raise ApiError(422, f"deleted: use DELETE to delete a {kind}")
        if "key" in patch and patch["key"] != key:
            raise ApiError(422, "key: a patch cannot change an item's key")

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
            actor=actor.name,
            comment=comment,
            action="patch",
            audit_note=note,
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
        note = await self._guard(env, actor, comment)
        return await self._commit_item(
            env,
            kind,
            key,
            lambda _live: make_tombstone(key, 0),  # version set by _commit_item
            if_match=if_match,
            must_exist=True,
            actor=actor.name,
            comment=comment,
            action="delete",
            audit_note=note,
        )

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
        unknown = set(body) - {"key", "name"}
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
        try:
            entry_id = await self._commit_env(
                record, 0, actor.name, comment, "create-environment", None
            )
        except EnvironmentExists as exc:
            raise ApiError(409, f"environment {key!r} already exists") from exc
        view = env_view(record)
        body_out = {**view, "sdkKey": sdk_key, "mobileKey": mobile_key}
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
        audit = self._audit(
            actor=actor,
            action=action,
            kind="environment",
            key=record.key,
            version=record.version,
            before=None if before is None else env_view(before),
            after=env_view(record),
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
            record = EnvironmentRecord(
                key=current.key,
                name=current.name,
                version=current.version + 1,
                sdk_keys=tuple(kept),
                mobile_keys=current.mobile_keys,
                client_side_id=current.client_side_id,
            )
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
