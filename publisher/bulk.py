"""Bulk writes: up to 1,000 operations on the flags and segments of one environment, applied
atomically (``POST /api/v1/environments/{env}/bulk``).

Rules, in the order a request meets them:

1. **Shape.** The body is ``{"operations": [...], "comment"?, "skipUnchanged"?}`` with 1 to
   ``MAX_OPERATIONS`` operations ``{"op": "put"|"patch"|"delete", "kind": "flag"|"segment",
   "key", "value"?, "ifMatch"?}``: ``value`` is the full item (put) or a JSON merge patch
   (patch), absent for delete; ``ifMatch`` is what the ``If-Match`` header would be (a
   version, ``"3"``, ``"*"``). One operation per item: a key may not appear twice.
   Then the environment's governance policy guards the request as a whole, like any direct
   write (``publisher.governance.policy``): 403 where approvals are required (unless
   ``bypass-approvals``), 400 where a comment is; its audit fields go on every entry, and its
   policy revision is checked again in the commit of rule 4.
2. **Everything is validated first**, every operation, and *all* problems are reported, each
   with the operation's index: an invalid operation or item (422), a malformed ``ifMatch``
   (400), an item too large for one Kafka record (413), then, against the current state, a
   stale ``ifMatch`` (412, with ``currentVersion``) or a patch/delete of an item that does not
   exist (404). If anything is wrong, nothing is written.
3. **Unchanged items.** With ``skipUnchanged: true`` a put whose item equals the stored one
   (ignoring ``version``) writes nothing and is reported ``"unchanged": true``; this makes a
   re-run of the same file (``flagstream admin apply``/``import``) write nothing.
4. **All or nothing.** The writes are committed with ONE ``Store.write_items(atomic=True)``
   step: either every item, its outbox record and its audit entry are stored, or none. If
   another writer changed one of the items in between, an operation with ``ifMatch`` fails
   with 412 (nothing written); the others are rebuilt on the new state and the whole request
   is tried again.
5. **Audit.** One audit entry per item, each carrying the request's ``requestId``.
6. **Acknowledgement.** Like a single write: 200 once Kafka acknowledged every record (the
   records are one contiguous run of the outbox, forwarded in order), else 202 (committed,
   delivery pending).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

from protocol.errors import ValidationError
from protocol.keys import validate_key
from publisher.problems import ApiError

__all__ = [
    "MAX_OPERATIONS",
    "BulkOperation",
    "OperationError",
    "bulk_error",
    "parse_bulk",
    "parse_if_match_value",
]

MAX_OPERATIONS: Final = 1000
_KINDS: Final = {"flag": "flag", "segment": "segment", "flags": "flag", "segments": "segment"}
_OPS: Final = ("put", "patch", "delete")

Op = Literal["put", "patch", "delete"]


@dataclass(frozen=True, slots=True)
class BulkOperation:
    """One validated-in-shape operation of a bulk request."""

    index: int
    op: Op
    kind: Literal["flag", "segment"]
    key: str
    value: Any  # put: the item; patch: the merge patch; delete: None
    if_match: int | str | None


@dataclass(frozen=True, slots=True)
class OperationError:
    """Why one operation cannot be applied (reported with all the others)."""

    index: int
    status: int
    detail: str
    op: Any = None
    kind: Any = None
    key: Any = None
    current_version: int | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "index": self.index,
            "op": self.op,
            "kind": self.kind,
            "key": self.key,
            "status": self.status,
            "detail": self.detail,
        }
        if self.current_version is not None:
            out["currentVersion"] = self.current_version
        return out


def bulk_error(errors: list[OperationError], total: int) -> ApiError:
    """The one problem answer for a refused bulk request (rule 2): every error listed.

    Its status: 422 if any operation is invalid in itself, else 412 if any ``ifMatch`` is
    stale, else 404 (an item to patch or delete does not exist).
    """
    statuses = {e.status for e in errors}
    if statuses & {400, 413, 422}:
        status = 422
    elif 412 in statuses:
        status = 412
    else:
        status = 404
    first = errors[0]
    return ApiError(
        status,
        f"{len(errors)} of {total} operation(s) cannot be applied, so nothing was written; "
        f"first: operations[{first.index}]: {first.detail}",
        type_="bulk-rejected",
        extra={"errors": [e.to_json() for e in errors]},
    )


def parse_if_match_value(value: Any) -> int | str | None:
    """An operation's ``ifMatch``: a version (int or digit string, optionally quoted), ``*``."""
    if value is None:
        return None
    if type(value) is int and 0 <= value < 10**16:
        return value
    if isinstance(value, str):
        text = value.strip()
        if text == "*":
            return "*"
        text = text.removeprefix("W/").strip('"')
        if text.isascii() and text.isdigit() and len(text) <= 16:
            return int(text)
    raise ValueError("ifMatch must be a version (e.g. 3) or *")


def parse_bulk(body: Any) -> tuple[list[BulkOperation], list[OperationError], str | None, bool]:
    """Operations, shape errors, the comment and ``skipUnchanged`` of a bulk body (rule 1).

    Raises ``ApiError`` 400/422 when the body itself is not a bulk request.
    """
    if not isinstance(body, dict):
        raise ApiError(400, 'the request body must be a JSON object {"operations": [...]}')
    unknown = set(body) - {"operations", "comment", "skipUnchanged"}
    if unknown:
        raise ApiError(422, f"unknown field(s) {sorted(unknown)}; expected operations, comment")
    raw_ops = body.get("operations")
    if not isinstance(raw_ops, list) or not 1 <= len(raw_ops) <= MAX_OPERATIONS:
        raise ApiError(
            422,
            f"operations: must be a list of 1..{MAX_OPERATIONS} operations; split larger "
            "changes into several requests",
        )
    comment = body.get("comment")
    if comment is not None and (not isinstance(comment, str) or len(comment) > 2000):
        raise ApiError(422, "comment: must be a string of at most 2000 characters")
    skip = body.get("skipUnchanged", False)
    if not isinstance(skip, bool):
        raise ApiError(422, "skipUnchanged: must be true or false")
    ops: list[BulkOperation] = []
    errors: list[OperationError] = []
    seen: dict[tuple[str, str], int] = {}
    for index, raw in enumerate(raw_ops):
        parsed = _parse_operation(index, raw)
        if isinstance(parsed, OperationError):
            errors.append(parsed)
            continue
        ident = (parsed.kind, parsed.key)
        if ident in seen:
            errors.append(
                _error(
                    index,
                    422,
                    f"{parsed.kind} {parsed.key!r} is already changed by operations"
                    f"[{seen[ident]}]; one operation per item",
                    raw,
                )
            )
            continue
        seen[ident] = index
        ops.append(parsed)
    return ops, errors, comment, skip


def _error(index: int, status: int, detail: str, raw: Any) -> OperationError:
    fields = raw if isinstance(raw, dict) else {}

    def short(value: Any) -> Any:
        return value[:300] if isinstance(value, str) else None

    return OperationError(
        index,
        status,
        detail,
        op=short(fields.get("op")),
        kind=short(fields.get("kind")),
        key=short(fields.get("key")),
    )


def _parse_operation(index: int, raw: Any) -> BulkOperation | OperationError:
    if not isinstance(raw, dict):
        return _error(index, 422, "must be an object {op, kind, key, value?, ifMatch?}", raw)
    unknown = set(raw) - {"op", "kind", "key", "value", "ifMatch"}
    if unknown:
        return _error(index, 422, f"unknown field(s) {sorted(unknown)}", raw)
    op = raw.get("op")
    if op not in _OPS:
        return _error(index, 422, "op: must be put, patch or delete", raw)
    raw_kind = raw.get("kind")
    kind = _KINDS.get(raw_kind) if isinstance(raw_kind, str) else None
    if kind is None:
        return _error(index, 422, "kind: must be flag or segment", raw)
    try:
        key = validate_key(raw.get("key"), path="key")
    except ValidationError as exc:
        return _error(index, 422, str(exc), raw)
    try:
        if_match = parse_if_match_value(raw.get("ifMatch"))
    except ValueError as exc:
        return _error(index, 400, str(exc), raw)
    value = raw.get("value")
    if op == "delete":
        if value is not None:
            return _error(index, 422, "value: a delete takes no value", raw)
    elif not isinstance(value, dict):
        what = "the full item" if op == "put" else "a JSON merge patch object"
        return _error(index, 422, f"value: must be {what}", raw)
    return BulkOperation(index, op, kind, key, value, if_match)  # type: ignore[arg-type]
