"""Evaluation contexts: parsing LaunchDarkly context JSON into an immutable ``Context``.

Accepted JSON (``parse_context`` takes parsed JSON, ``parse_context_json`` bytes or text,
``parse_context_base64`` the base64url form used in client-side URLs, padded or not):

- single kind: ``{"kind": "user", "key": "k", "name": "n", "anonymous": false, "any": ...,
  "_meta": {"privateAttributes": ["/a"]}}``;
- multi kind: ``{"kind": "multi", "user": {"key": ...}, "org": {"key": ...}}`` (one object per
  kind, without ``kind`` inside; a multi context of one kind *is* that single context);
- old user JSON (no ``kind``): ``{"key": "k", "name": ..., "email": ..., "anonymous": ...,
  "custom": {...}, "privateAttributeNames": [...]}``; the built-in user attributes
  (``ip, country, email, firstName, lastName, avatar, name``: strings) and ``custom``'s
  entries become attributes of a ``user`` context; other top-level fields are ignored, the
  key may be empty (it could be, for users).

Rules, checked in this order, each failing with a ``ContextError`` that names the field:
a context is a JSON object nested at most ``MAX_DEPTH`` levels; ``kind`` is a string of
``[A-Za-z0-9._-]``, not ``"kind"``, and ``"multi"`` only at the top; ``key`` is a non-empty
string; ``name`` is a string or null; ``anonymous`` is true or false; ``_meta`` is an object
and its ``privateAttributes`` a list of strings. An attribute whose value is null is absent.
Unknown attributes of any JSON type are kept.

``fully_qualified_key`` is LaunchDarkly's (secure-mode hashes are computed over it): the key
of a ``user`` context, ``kind:key`` otherwise, and for a multi context every ``kind:key``
sorted by kind and joined with ``:``, keys escaped (``%`` → ``%25``, ``:`` → ``%3A``).

``fingerprint`` is a stable digest of what evaluation reads (kinds, keys, attributes), equal
for contexts that are the same whatever their JSON layout (attribute order, old user vs.
``kind: user``, a one-kind ``multi``, null attributes, ``_meta``), so contexts with equal
fingerprints evaluate identically. It is conservative: the numbers ``1`` and ``1.0`` (which
evaluate alike) give different fingerprints, as does anything else that JSON spells apart.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from protocol.errors import ProtocolError

__all__ = [
    "DEFAULT_KIND",
    "MAX_DEPTH",
    "Context",
    "ContextError",
    "SingleContext",
    "parse_context",
    "parse_context_base64",
    "parse_context_json",
]

DEFAULT_KIND: Final = "user"
MAX_DEPTH: Final = 100  # nesting levels of attribute values; deeper is refused
_KIND_RE: Final = re.compile(r"[-A-Za-z0-9._]+")
_OLD_USER_STRINGS: Final = ("ip", "country", "email", "firstName", "lastName", "avatar", "name")
_BUILTINS: Final = frozenset({"kind", "key", "name", "anonymous", "_meta"})


class ContextError(ProtocolError):
    """Context JSON that cannot be evaluated; ``str()`` says what is wrong and where."""


@dataclass(frozen=True, slots=True)
class SingleContext:
    """One kind of a context. ``attributes`` holds every attribute evaluation can read,
    built-ins included: ``key``, ``kind``, ``anonymous`` (always a bool) and ``name`` if set."""

    kind: str
    key: str
    attributes: Mapping[str, Any]
    private_attributes: tuple[str, ...] = ()

    @property
    def name(self) -> str | None:
        name: str | None = self.attributes.get("name")
        return name

    @property
    def anonymous(self) -> bool:
        return bool(self.attributes["anonymous"])

    def to_json(self, *, with_kind: bool = True) -> dict[str, Any]:
        """LaunchDarkly's JSON form (``kind`` first, then ``key``, attributes, ``_meta``)."""
        out: dict[str, Any] = {"kind": self.kind} if with_kind else {}
        for name, value in self.attributes.items():
            if (name == "anonymous" and not value) or name == "kind":
                continue
            out[name] = value
        if self.private_attributes:
            out["_meta"] = {"privateAttributes": list(self.private_attributes)}
        return out


@dataclass(frozen=True, slots=True)
class Context:
    """A valid evaluation context: one or more ``SingleContext`` of distinct kinds."""

    contexts: tuple[SingleContext, ...]  # sorted by kind
    by_kind: Mapping[str, SingleContext]
    fully_qualified_key: str
    _fingerprint: list[str] = field(default_factory=list, compare=False, repr=False)

    @property
    def multiple(self) -> bool:
        return len(self.contexts) > 1

    @property
    def kind(self) -> str:
        """``"multi"`` for a multi-kind context, else its one kind."""
        return "multi" if len(self.contexts) > 1 else self.contexts[0].kind

    @property
    def key(self) -> str:
        """The key of a single-kind context; ``""`` for a multi-kind one."""
        return "" if len(self.contexts) > 1 else self.contexts[0].key

    def individual(self, kind: str) -> SingleContext | None:
        return self.by_kind.get(kind)

    def to_json(self) -> dict[str, Any]:
        """The context in LaunchDarkly's (new, kind-based) JSON form."""
        if len(self.contexts) == 1:
            return self.contexts[0].to_json()
        out: dict[str, Any] = {"kind": "multi"}
        for single in self.contexts:
            out[single.kind] = single.to_json(with_kind=False)
        return out

    @property
    def fingerprint(self) -> str:
        """32 hex digits; see the module docstring for what makes two fingerprints equal."""
        if not self._fingerprint:
            canonical = [
                [c.kind, c.key, sorted((k, v) for k, v in c.attributes.items() if k != "kind")]
                for c in self.contexts
            ]
            text = json.dumps(canonical, separators=(",", ":"), ensure_ascii=False)
            self._fingerprint.append(hashlib.blake2b(text.encode(), digest_size=16).hexdigest())
        return self._fingerprint[0]


def parse_context_base64(text: str) -> Context:
    """Parse base64url (padded or not) context JSON, as in ``/sdk/evalx/{id}/contexts/{ctx}``."""
    compact = text.strip()
    try:
        raw = base64.urlsafe_b64decode(compact + "=" * (-len(compact) % 4))
    except (binascii.Error, ValueError):
        raise ContextError("context is not valid base64url") from None
    return parse_context_json(raw)


def parse_context_json(data: bytes | str) -> Context:
    """Parse context JSON text; invalid JSON (or NaN/Infinity) is a ContextError too."""
    try:
        obj = json.loads(data, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise ContextError("context is not valid JSON") from None
    return parse_context(obj)


def _reject_constant(name: str) -> None:
    raise ValueError(name)


def parse_context(obj: object) -> Context:
    """Build a Context from parsed JSON; raises ContextError naming the first problem."""
    if not isinstance(obj, dict):
        raise ContextError("context must be a JSON object")
    _check_depth(obj)
    if "kind" not in obj:
        single = _old_user(obj)
        return _single(single)
    kind = obj["kind"]
    if not isinstance(kind, str):
        raise ContextError('context "kind" must be a string')
    if kind != "multi":
        return _single(_parse_single(obj, kind, ""))
    singles: list[SingleContext] = []
    for name, value in obj.items():
        if name == "kind":
            continue
        if not isinstance(value, dict):
            raise ContextError(f'multi-kind context: "{name}" must be an object')
        if "kind" in value:
            raise ContextError(f'multi-kind context: "{name}" must not contain "kind"')
        singles.append(_parse_single(value, name, f"{name}."))
    if not singles:
        raise ContextError("multi-kind context must contain at least one kind")
    if len(singles) == 1:
        return _single(singles[0])
    singles.sort(key=lambda c: c.kind)
    fq = ":".join(f"{c.kind}:{_escape(c.key)}" for c in singles)
    return Context(tuple(singles), {c.kind: c for c in singles}, fq)


def _single(single: SingleContext) -> Context:
    fq = single.key if single.kind == DEFAULT_KIND else f"{single.kind}:{_escape(single.key)}"
    return Context((single,), {single.kind: single}, fq)


def _escape(key: str) -> str:
    return key.replace("%", "%25").replace(":", "%3A")


def _check_kind(kind: str, where: str) -> None:
    if kind == "":
        raise ContextError(f"{where}context kind must not be empty")
    if kind == "kind":
        raise ContextError(f'{where}"kind" is not a valid context kind')
    if kind == "multi":
        raise ContextError(f'{where}"multi" is only valid as the top-level kind')
    if _KIND_RE.fullmatch(kind) is None:
        raise ContextError(
            f"{where}context kind {kind!r} may only contain letters, digits, '.', '_' and '-'"
        )


def _parse_single(obj: dict[str, Any], kind: str, where: str) -> SingleContext:
    _check_kind(kind, where)
    key = obj.get("key")
    if not isinstance(key, str):
        raise ContextError(f'{where}context "key" must be a string (and is required)')
    if key == "":
        raise ContextError(f'{where}context "key" must not be empty')
    attributes: dict[str, Any] = {"kind": kind, "key": key, "anonymous": False}
    private: tuple[str, ...] = ()
    for name, value in obj.items():
        if name in _BUILTINS:
            if name == "name":
                if value is not None and not isinstance(value, str):
                    raise ContextError(f'{where}context "name" must be a string')
                if value is not None:
                    attributes["name"] = value
            elif name == "anonymous":
                if not isinstance(value, bool):
                    raise ContextError(f'{where}context "anonymous" must be true or false')
                attributes["anonymous"] = value
            elif name == "_meta":
                private = _private_attributes(value, where)
            continue
        if name == "":
            raise ContextError(f"{where}context attribute names must not be empty")
        if value is not None:
            attributes[name] = value
    return SingleContext(kind, key, attributes, private)


def _private_attributes(meta: object, where: str) -> tuple[str, ...]:
    if meta is None:
        return ()
    if not isinstance(meta, dict):
        raise ContextError(f'{where}context "_meta" must be an object')
    names = meta.get("privateAttributes")
    if names is None:
        return ()
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ContextError(f'{where}"_meta.privateAttributes" must be a list of strings')
    return tuple(names)


def _old_user(obj: dict[str, Any]) -> SingleContext:
    key = obj.get("key")
    if not isinstance(key, str):
        raise ContextError('user "key" must be a string (and is required)')
    attributes: dict[str, Any] = {"kind": DEFAULT_KIND, "key": key, "anonymous": False}
    for name in _OLD_USER_STRINGS:
        value = obj.get(name)
        if value is not None and not isinstance(value, str):
            raise ContextError(f'user "{name}" must be a string')
    anonymous = obj.get("anonymous")
    if anonymous is not None and not isinstance(anonymous, bool):
        raise ContextError('user "anonymous" must be true or false')
    custom = obj.get("custom")
    if custom is not None and not isinstance(custom, dict):
        raise ContextError('user "custom" must be an object')
    private = obj.get("privateAttributeNames")
    if private is not None and (
        not isinstance(private, list) or not all(isinstance(n, str) for n in private)
    ):
        raise ContextError('user "privateAttributeNames" must be a list of strings')
    for name, value in (custom or {}).items():
        if value is not None and name not in _BUILTINS and name != "":
            attributes[name] = value
    for name in _OLD_USER_STRINGS:
        if obj.get(name) is not None:
            attributes[name] = obj[name]
    attributes["anonymous"] = bool(anonymous)
    return SingleContext(DEFAULT_KIND, key, attributes, tuple(private or ()))


def _check_depth(obj: dict[str, Any]) -> None:
    """Refuse values nested deeper than MAX_DEPTH (iteratively: no recursion limit)."""
    # Only containers are pushed (a context is mostly scalars, which need no check).
    stack: list[tuple[dict[str, Any] | list[Any], int]] = [(obj, 0)]
    while stack:
        container, depth = stack.pop()
        if depth >= MAX_DEPTH:
            raise ContextError(f"context is nested deeper than {MAX_DEPTH} levels")
        values = container.values() if isinstance(container, dict) else container
        stack.extend((v, depth + 1) for v in values if isinstance(v, (dict, list)))
