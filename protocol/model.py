"""Flags and segments in the LaunchDarkly JSON model: validation and normalization.

``validate_flag`` / ``validate_segment`` take parsed JSON (untrusted: whatever an operator
sent) and either raise ``ValidationError`` naming the exact path of the first bad field
(``rules[2].clauses[0].op``) or return a **normalized copy**.

What is accepted: everything LaunchDarkly's SDKs read and can evaluate without an error
(LaunchDarkly stores such data, and its SDK test harness uses it): an off flag without
``fallthrough``, rollout weights that do not add up to 100000 (the last bucket takes the
rest), an unknown clause operator (it never matches), clause values of any JSON type
(arrays and objects compare deeply with ``in``), a ``segmentMatch`` clause without
``attribute``, targets and rules without ``values`` / ``clauses`` (empty), empty strings
where LaunchDarkly reads "absent" (``bucketBy``, ``contextKind``), no variations at all.

What is refused (422), besides JSON of the wrong type or shape (what the SDKs would not
read): data that can only ever give an error where evaluation reaches it — a variation
index out of range, a rollout without buckets, a rule or a present ``fallthrough`` with
neither ``variation`` nor ``rollout``, a clause (other than ``segmentMatch``) without an
attribute, a flag that is its own prerequisite, a segment rule that matches its own segment.
A prerequisite or segment cycle across items is not detected here (single-item validation);
it evaluates to ``MALFORMED_FLAG`` and never breaks a relay.

Normalization:

- every field an SDK reads is present: absent optional fields are filled with the
  LaunchDarkly defaults (``on: false``, ``offVariation: null``, ``targets: []``, ``salt: ""``,
  ``deleted: false``, rule ``trackEvents: false``, clause ``negate: false``, ``values: []``,
  ...). ``clientSideAvailability`` absent is filled as LaunchDarkly reads its old schema:
  ``{usingMobileKey: true, usingEnvironmentId: <clientSide>}``. ``fallthrough`` is left out
  if it was. Filling the defaults changes no evaluation: they are what SDKs assume for a
  missing field.
- unknown extra fields are preserved unchanged, at every level (LaunchDarkly adds fields;
  SDKs that know them get them).
- ``version`` is checked if present (a positive integer <= 2**53-1) but never filled: the
  publisher assigns versions.
- the input is not modified; containers the validator understands are copied, opaque JSON
  values (variation values, clause values, extra fields) are shared with the input.

A **tombstone** is an item with ``deleted: true``: only ``key``, ``version`` and ``deleted``
are checked, everything else is kept as is (SDKs ignore the body of a deleted item).
``make_tombstone`` builds the canonical one.

Validation never raises anything but ValidationError, whatever the input: the whole value is
first checked, without recursion, to be JSON (dict with string keys, list, str without lone
surrogates, int, finite float, bool, None), then the structure is checked.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final

from protocol.errors import ValidationError
from protocol.jsoncodec import dumps_strict
from protocol.keys import validate_key

__all__ = [
    "CLAUSE_OPERATORS",
    "MAX_DEPTH",
    "MAX_VERSION",
    "ROLLOUT_TOTAL",
    "encode_item",
    "flag_references",
    "make_tombstone",
    "segment_references",
    "validate_flag",
    "validate_segment",
]

ROLLOUT_TOTAL: Final = 100_000
MAX_VERSION: Final = 2**53 - 1  # JSON numbers are doubles in JS SDKs
MAX_DEPTH: Final = 100  # nesting levels of any JSON value inside an item
CLAUSE_OPERATORS: Final = frozenset(
    {
        "in",
        "endsWith",
        "startsWith",
        "matches",
        "contains",
        "lessThan",
        "lessThanOrEqual",
        "greaterThan",
        "greaterThanOrEqual",
        "before",
        "after",
        "segmentMatch",
        "semVerEqual",
        "semVerLessThan",
        "semVerGreaterThan",
    }
)
_SAFE_INT: Final = 2**53 - 1  # JSON integers every SDK reads exactly


def encode_item(item: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON of a (validated) item, keys in their given order.

    Raises ValueError or TypeError if ``item`` is not JSON (never for validate_* output).
    """
    return dumps_strict(item)


def make_tombstone(key: str, version: int) -> dict[str, Any]:
    """The canonical deleted item: ``{"key": key, "version": version, "deleted": true}``."""
    return {"key": key, "version": version, "deleted": True}


# --- generic checks -------------------------------------------------------------------------


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


# A path to a node, built lazily as a linked list (parent, step) and formatted only on error:
# formatting a path string for every node of every item would dominate validation time.
_Link = tuple["_Link", str | int] | None


def _format(link: _Link) -> str:
    steps: list[str | int] = []
    while link is not None:
        link, step = link
        steps.append(step)
    path = ""
    for step in reversed(steps):
        path = f"{path}[{step}]" if isinstance(step, int) else _join(path, step)
    return path


def _check_json(value: object) -> None:
    """Raise ValidationError unless ``value`` is plain JSON. Iterative: no recursion limit."""
    if _plainly_json(value):
        return
    _explain_json(value)


def _plainly_json(value: object) -> bool:
    """True if ``value`` is certainly what ``_explain_json`` accepts; False when unsure.

    The fast path of ``_check_json`` (every write validates its whole item): exact JSON types
    only, no paths kept, containers well within ``MAX_DEPTH``. Anything else (a subclass, a
    non-finite float, a lone surrogate, a deep value) is left to ``_explain_json``, which
    decides and names the path.
    """
    if type(value) is not dict and type(value) is not list:
        return False
    stack: list[tuple[Any, int]] = [(value, 0)]
    pop = stack.pop
    push = stack.append
    while stack:
        container, depth = pop()
        if depth >= MAX_DEPTH - 1:
            return False
        if type(container) is dict:
            for k in container:
                if type(k) is not str or not (k.isascii() or _encodes(k)):
                    return False
            children = container.values()
        else:
            children = container
        for v in children:
            t = type(v)
            if t is str:
                if not (v.isascii() or _encodes(v)):
                    return False
            elif t is dict or t is list:
                push((v, depth + 1))
            elif not (v is None or t is int or t is bool or (t is float and math.isfinite(v))):
                return False
    return True


def _encodes(s: str) -> bool:
    try:
        s.encode()
    except UnicodeEncodeError:
        return False
    return True


def _explain_json(value: object) -> None:
    """``_check_json``'s exact rules, keeping the path of every node for the error."""
    stack: list[tuple[object, _Link, int]] = [(value, None, 0)]
    while stack:
        v, link, depth = stack.pop()
        if v is None or isinstance(v, bool | int):
            continue
        if depth > MAX_DEPTH:
            # Deeper than any real flag; also keeps encode_item and SDK parsers (recursive)
            # far from their recursion limits.
            raise ValidationError(_format(link), f"nested deeper than {MAX_DEPTH} levels")
        if isinstance(v, str):
            if not v.isascii():
                _check_text(v, link)
        elif isinstance(v, float):
            if not math.isfinite(v):
                raise ValidationError(_format(link), "must be a finite number")
        elif isinstance(v, list):
            depth += 1
            stack.extend([(item, (link, i), depth) for i, item in enumerate(v)])
        elif isinstance(v, dict):
            depth += 1
            for k, item in v.items():
                if not isinstance(k, str):
                    raise ValidationError(_format(link), "object keys must be strings")
                if not k.isascii():
                    _check_text(k, link)
                stack.append((item, (link, k), depth))
        else:
            raise ValidationError(_format(link), f"is not a JSON value ({type(v).__name__})")


def _check_text(s: str, link: _Link) -> None:
    try:
        s.encode()
    except UnicodeEncodeError:
        raise ValidationError(_format(link), "contains an invalid Unicode surrogate") from None


def _object(value: object, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValidationError(path, "must be an object")
    return dict(value)


def _list(value: object, path: str) -> list[Any]:
    if not isinstance(value, list):
        raise ValidationError(path, "must be a list")
    return value


def _int(value: object, path: str, lo: int, hi: int) -> int:
    if type(value) is not int:
        raise ValidationError(path, "must be an integer")
    if not lo <= value <= hi:
        raise ValidationError(path, f"must be between {lo} and {hi}")
    return value


def _variation(value: object, path: str, n: int) -> int:
    if type(value) is not int:
        raise ValidationError(path, "must be an integer variation index")
    if not 0 <= value < n:
        if n == 0:
            raise ValidationError(path, f"variation index {value}, but the flag has no variations")
        raise ValidationError(path, f"variation index {value} out of range (0..{n - 1})")
    return value


def _string(value: object, path: str) -> str:
    if not isinstance(value, str):
        raise ValidationError(path, "must be a string")
    return value


def _strings(value: object, path: str) -> list[str]:
    items = _list(value, path)
    for i, s in enumerate(items):
        _string(s, f"{path}[{i}]")
    return list(items)


def _default(obj: dict[str, Any], name: str, default: object) -> object:
    value = obj.get(name)
    if value is None:
        obj[name] = value = default
    return value


def _bool_field(obj: dict[str, Any], name: str, path: str, default: bool = False) -> None:
    value = obj.get(name)
    if value is None:
        obj[name] = default
    elif value is not True and value is not False:  # bool has no subclasses
        raise ValidationError(_join(path, name), "must be true or false")


def _root(obj: object) -> dict[str, Any]:
    _check_json(obj)
    item = _object(obj, "")
    validate_key(item.get("key"), path="key")
    version = item.get("version")
    if "version" in item:
        _int(version, "version", 1, MAX_VERSION)
    _bool_field(item, "deleted", "")
    return item


# --- flags ----------------------------------------------------------------------------------


def validate_flag(obj: object) -> dict[str, Any]:
    """Validate a flag; return a normalized copy (see module docstring)."""
    flag = _root(obj)
    if flag["deleted"]:
        return flag
    key: str = flag["key"]
    variations = _list(_default(flag, "variations", []), "variations")
    n = len(variations)
    flag["variations"] = list(variations)
    _bool_field(flag, "on", "")
    if flag.get("fallthrough") is not None:  # left out: fine for an off flag (module doc)
        flag["fallthrough"] = _variation_or_rollout(flag["fallthrough"], "fallthrough", n)
    if flag.get("offVariation") is not None:
        _variation(flag["offVariation"], "offVariation", n)
    flag["offVariation"] = flag.get("offVariation")
    for name in ("targets", "contextTargets"):
        flag[name] = [
            _target(t, f"{name}[{i}]", n)
            for i, t in enumerate(_list(_default(flag, name, []), name))
        ]
    flag["rules"] = [
        _flag_rule(r, f"rules[{i}]", n)
        for i, r in enumerate(_list(_default(flag, "rules", []), "rules"))
    ]
    flag["prerequisites"] = [
        _prerequisite(p, f"prerequisites[{i}]", key)
        for i, p in enumerate(_list(_default(flag, "prerequisites", []), "prerequisites"))
    ]
    _string(_default(flag, "salt", ""), "salt")
    _bool_field(flag, "trackEvents", "")
    _bool_field(flag, "trackEventsFallthrough", "")
    if flag.get("clientSideAvailability") is None:
        # LaunchDarkly's old schema: mobile SDKs saw every flag, JS ones those with clientSide.
        if flag.get("clientSide") is not None and not isinstance(flag["clientSide"], bool):
            raise ValidationError("clientSide", "must be true or false")
        flag["clientSideAvailability"] = {
            "usingMobileKey": True,
            "usingEnvironmentId": flag.get("clientSide") is True,
        }
    csa = _object(flag["clientSideAvailability"], "clientSideAvailability")
    _bool_field(csa, "usingMobileKey", "clientSideAvailability")
    _bool_field(csa, "usingEnvironmentId", "clientSideAvailability")
    flag["clientSideAvailability"] = csa
    _sdk_read_extras(flag)
    return flag


def _sdk_read_extras(flag: dict[str, Any]) -> None:
    """Optional fields SDKs read and reject with an error when mistyped (checked, not filled)."""
    if flag.get("debugEventsUntilDate") is not None:
        _int(flag["debugEventsUntilDate"], "debugEventsUntilDate", 0, MAX_VERSION)
    if flag.get("samplingRatio") is not None:
        _int(flag["samplingRatio"], "samplingRatio", 0, MAX_VERSION)
    if flag.get("excludeFromSummaries") is not None and not isinstance(
        flag["excludeFromSummaries"], bool
    ):
        raise ValidationError("excludeFromSummaries", "must be true or false")
    if flag.get("migration") is not None:
        migration = _object(flag["migration"], "migration")
        if migration.get("checkRatio") is not None:
            _int(migration["checkRatio"], "migration.checkRatio", 0, MAX_VERSION)
        flag["migration"] = migration


def _variation_or_rollout(value: object, path: str, n: int) -> dict[str, Any]:
    obj = _object(value, path)
    _vor_fields(obj, path, n)
    return obj


def _vor_fields(obj: dict[str, Any], path: str, n: int) -> None:
    """A fallthrough or rule: a ``variation``, a ``rollout``, or both (the variation wins, as
    in LaunchDarkly's SDKs); null = absent. Neither can only ever evaluate to an error."""
    has_variation = obj.get("variation") is not None
    has_rollout = obj.get("rollout") is not None
    if has_variation:
        _variation(obj["variation"], _join(path, "variation"), n)
    if has_rollout:
        obj["rollout"] = _rollout(obj["rollout"], _join(path, "rollout"), n)
    if not has_variation and not has_rollout:
        raise ValidationError(path, "must have a variation or a rollout")


def _rollout(value: object, path: str, n: int) -> dict[str, Any]:
    rollout = _object(value, path)
    vpath = _join(path, "variations")
    weighted = _list(rollout.get("variations"), vpath)
    if not weighted:
        raise ValidationError(vpath, "must not be empty")
    copies = []
    for i, wv in enumerate(weighted):
        # Paths are formatted only for an error: this runs for every bucket of every write.
        if not isinstance(wv, dict):
            raise ValidationError(f"{vpath}[{i}]", "must be an object")
        entry = dict(wv)
        variation = entry.get("variation")
        if type(variation) is not int or not 0 <= variation < n:
            _variation(variation, f"{vpath}[{i}].variation", n)  # raises
        # Weights need not add up to ROLLOUT_TOTAL: past the last bucket is the last bucket.
        weight = entry.get("weight")
        if type(weight) is not int or not -_SAFE_INT <= weight <= _SAFE_INT:
            _int(weight, f"{vpath}[{i}].weight", -_SAFE_INT, _SAFE_INT)  # raises
        untracked = entry.get("untracked")
        if untracked is not None and untracked is not True and untracked is not False:
            raise ValidationError(f"{vpath}[{i}].untracked", "must be true or false")
        copies.append(entry)
    rollout["variations"] = copies
    # Any other kind than "experiment" is a plain rollout; "" bucketBy/contextKind = absent.
    for name in ("kind", "bucketBy", "contextKind"):
        if rollout.get(name) is not None:
            _string(rollout[name], _join(path, name))
    if rollout.get("seed") is not None:
        _int(rollout["seed"], _join(path, "seed"), -(2**63), 2**63 - 1)
    return rollout


def _target(value: object, path: str, n: int) -> dict[str, Any]:
    target = _object(value, path)
    # A contextTargets entry of kind user keeps its keys in `targets`: no values of its own.
    target["values"] = _strings(_default(target, "values", []), _join(path, "values"))
    _variation(target.get("variation"), _join(path, "variation"), n)
    if target.get("contextKind") is not None:
        _string(target["contextKind"], _join(path, "contextKind"))
    return target


def _flag_rule(value: object, path: str, n: int) -> dict[str, Any]:
    rule = _object(value, path)
    _rule_common(rule, path, self_segment=None)
    _vor_fields(rule, path, n)
    _bool_field(rule, "trackEvents", path)
    return rule


def _rule_common(rule: dict[str, Any], path: str, self_segment: str | None) -> None:
    if rule.get("id") is not None:
        _string(rule["id"], _join(path, "id"))
    cpath = _join(path, "clauses")
    rule["clauses"] = [
        _clause(c, cpath, i, self_segment)
        for i, c in enumerate(_list(_default(rule, "clauses", []), cpath))
    ]


def _clause(value: object, cpath: str, index: int, self_segment: str | None) -> dict[str, Any]:
    """Clause ``index`` of ``cpath``; its path is formatted only for an error (hot path)."""
    if not isinstance(value, dict):
        raise ValidationError(f"{cpath}[{index}]", "must be an object")
    clause = dict(value)
    op = clause.get("op")
    if not isinstance(op, str):
        raise ValidationError(f"{cpath}[{index}].op", "must be an operator name (a string)")
    # An operator LaunchDarkly's SDKs do not know never matches: accepted, as they do.
    attribute = clause.get("attribute")
    if op == "segmentMatch" and attribute is None:
        clause["attribute"] = attribute = ""
    if not isinstance(attribute, str):
        raise ValidationError(f"{cpath}[{index}].attribute", "must be a string")
    if not attribute and op != "segmentMatch":
        raise ValidationError(f"{cpath}[{index}].attribute", "must not be empty")
    values = clause.get("values")
    if values is None:
        values = []
    elif not isinstance(values, list):
        raise ValidationError(f"{cpath}[{index}].values", "must be a list")
    # Any JSON value: `in` compares arrays and objects deeply; other operators skip them.
    if op == "segmentMatch" and self_segment is not None and self_segment in values:
        i = values.index(self_segment)
        raise ValidationError(f"{cpath}[{index}].values[{i}]", "a segment cannot match itself")
    clause["values"] = list(values)
    negate = clause.get("negate")
    if negate is None:
        clause["negate"] = False
    elif negate is not True and negate is not False:
        raise ValidationError(f"{cpath}[{index}].negate", "must be true or false")
    kind = clause.get("contextKind")
    if kind is not None and not isinstance(kind, str):
        raise ValidationError(f"{cpath}[{index}].contextKind", "must be a string")
    return clause


def _prerequisite(value: object, path: str, flag_key: str) -> dict[str, Any]:
    prereq = _object(value, path)
    key = validate_key(prereq.get("key"), path=_join(path, "key"))
    if key == flag_key:
        raise ValidationError(_join(path, "key"), "a flag cannot be its own prerequisite")
    _int(prereq.get("variation"), _join(path, "variation"), 0, MAX_VERSION)
    return prereq


# --- segments -------------------------------------------------------------------------------


def validate_segment(obj: object) -> dict[str, Any]:
    """Validate a segment; return a normalized copy (see module docstring)."""
    segment = _root(obj)
    if segment["deleted"]:
        return segment
    key: str = segment["key"]
    for name in ("included", "excluded"):
        segment[name] = _strings(_default(segment, name, []), name)
    for name in ("includedContexts", "excludedContexts"):
        segment[name] = [
            _segment_target(t, f"{name}[{i}]")
            for i, t in enumerate(_list(_default(segment, name, []), name))
        ]
    segment["rules"] = [
        _segment_rule(r, f"rules[{i}]", key)
        for i, r in enumerate(_list(_default(segment, "rules", []), "rules"))
    ]
    _string(_default(segment, "salt", ""), "salt")
    if segment.get("unbounded") is not None and not isinstance(segment["unbounded"], bool):
        raise ValidationError("unbounded", "must be true or false")
    if segment.get("unboundedContextKind") is not None:
        _string(segment["unboundedContextKind"], "unboundedContextKind")
    if segment.get("generation") is not None:
        _int(segment["generation"], "generation", 0, MAX_VERSION)
    return segment


def _segment_target(value: object, path: str) -> dict[str, Any]:
    target = _object(value, path)
    if target.get("contextKind") is not None:  # absent or "": user
        _string(target["contextKind"], _join(path, "contextKind"))
    target["values"] = _strings(_default(target, "values", []), _join(path, "values"))
    return target


def _segment_rule(value: object, path: str, segment_key: str) -> dict[str, Any]:
    rule = _object(value, path)
    _rule_common(rule, path, self_segment=segment_key)
    if rule.get("weight") is not None:
        _int(rule["weight"], _join(path, "weight"), -_SAFE_INT, _SAFE_INT)
    for name in ("bucketBy", "rolloutContextKind"):
        if rule.get(name) is not None:
            _string(rule[name], _join(path, name))
    return rule


# --- references -----------------------------------------------------------------------------


def flag_references(flag: Mapping[str, Any]) -> tuple[frozenset[str], frozenset[str]]:
    """``(prerequisite flag keys, segment keys used by segmentMatch)`` of a validated flag.

    For the publisher's cross-item checks (a referenced item should exist; prerequisite
    cycles), which single-item validation cannot do. Tombstones reference nothing.
    """
    if flag.get("deleted"):
        return frozenset(), frozenset()
    prereqs = frozenset(p["key"] for p in flag.get("prerequisites", ()))
    return prereqs, _segment_matches(flag.get("rules", ()))


def segment_references(segment: Mapping[str, Any]) -> frozenset[str]:
    """Segment keys used by segmentMatch clauses of a validated segment's rules."""
    if segment.get("deleted"):
        return frozenset()
    return _segment_matches(segment.get("rules", ()))


def _segment_matches(rules: Any) -> frozenset[str]:
    return frozenset(
        value
        for rule in rules
        for clause in rule["clauses"]
        if clause["op"] == "segmentMatch"
        for value in clause["values"]
        if isinstance(value, str)
    )
