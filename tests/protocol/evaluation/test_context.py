"""Context JSON: single, multi and old user contexts, errors, keys and fingerprints."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from protocol.evaluation.context import (
    MAX_DEPTH,
    ContextError,
    parse_context,
    parse_context_base64,
    parse_context_json,
)

pytestmark = pytest.mark.unit


def test_single_kind() -> None:
    ctx = parse_context({"kind": "org", "key": "o1", "name": "Org", "size": 3, "gone": None})
    assert (ctx.kind, ctx.key, ctx.multiple) == ("org", "o1", False)
    single = ctx.contexts[0]
    assert single.name == "Org" and not single.anonymous
    assert dict(single.attributes) == {
        "kind": "org",
        "key": "o1",
        "anonymous": False,
        "name": "Org",
        "size": 3,
    }
    assert ctx.individual("org") is single and ctx.individual("user") is None
    assert ctx.fully_qualified_key == "org:o1"
    assert ctx.to_json() == {"kind": "org", "key": "o1", "name": "Org", "size": 3}


def test_user_and_meta() -> None:
    ctx = parse_context(
        {
            "kind": "user",
            "key": "u:1%",
            "anonymous": True,
            "name": None,
            "_meta": {"privateAttributes": ["/a"]},
        }
    )
    single = ctx.contexts[0]
    assert single.anonymous and single.name is None
    assert single.private_attributes == ("/a",)
    assert ctx.fully_qualified_key == "u:1%"  # a user's key is not escaped
    assert ctx.to_json() == {
        "kind": "user",
        "key": "u:1%",
        "anonymous": True,
        "_meta": {"privateAttributes": ["/a"]},
    }
    assert (
        parse_context({"kind": "user", "key": "k", "_meta": None}).contexts[0].private_attributes
        == ()
    )
    assert (
        parse_context({"kind": "user", "key": "k", "_meta": {}}).contexts[0].private_attributes
        == ()
    )


def test_multi_kind() -> None:
    ctx = parse_context(
        {"kind": "multi", "user": {"key": "u"}, "org": {"key": "a:b%c", "tier": "gold"}}
    )
    assert ctx.multiple and ctx.kind == "multi" and ctx.key == ""
    assert [c.kind for c in ctx.contexts] == ["org", "user"]
    assert ctx.fully_qualified_key == "org:a%3Ab%25c:user:u"
    assert ctx.to_json() == {
        "kind": "multi",
        "org": {"key": "a:b%c", "tier": "gold"},
        "user": {"key": "u"},
    }


def test_multi_of_one_kind_is_that_context() -> None:
    one = parse_context({"kind": "multi", "org": {"key": "o"}})
    assert not one.multiple and one.kind == "org"
    assert one.fingerprint == parse_context({"kind": "org", "key": "o"}).fingerprint


def test_old_user() -> None:
    ctx = parse_context(
        {
            "key": "",
            "name": "N",
            "email": "e@x",
            "anonymous": True,
            "ignored": 1,
            "custom": {"tier": "gold", "kind": "nope", "": 1, "none": None},
            "privateAttributeNames": ["email"],
        }
    )
    single = ctx.contexts[0]
    assert (ctx.kind, ctx.key) == ("user", "")
    assert dict(single.attributes) == {
        "kind": "user",
        "key": "",
        "anonymous": True,
        "tier": "gold",
        "name": "N",
        "email": "e@x",
    }
    assert single.private_attributes == ("email",)
    old = {"key": "u", "email": "e@x", "custom": {"tier": "gold"}, "anonymous": False}
    new = {"kind": "user", "key": "u", "tier": "gold", "email": "e@x"}
    assert parse_context(old).fingerprint == parse_context(new).fingerprint
    assert (
        parse_context({"key": "k", "custom": None, "anonymous": None}).contexts[0].anonymous
        is False
    )


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ([], "context must be a JSON object"),
        ({"kind": 1, "key": "k"}, '"kind" must be a string'),
        ({"kind": "", "key": "k"}, "kind must not be empty"),
        ({"kind": "kind", "key": "k"}, '"kind" is not a valid context kind'),
        ({"kind": "a b", "key": "k"}, "may only contain letters"),
        ({"kind": "user"}, '"key" must be a string'),
        ({"kind": "user", "key": 5}, '"key" must be a string'),
        ({"kind": "user", "key": ""}, '"key" must not be empty'),
        ({"kind": "user", "key": "k", "name": 5}, '"name" must be a string'),
        ({"kind": "user", "key": "k", "anonymous": "yes"}, '"anonymous" must be true or false'),
        ({"kind": "user", "key": "k", "_meta": []}, '"_meta" must be an object'),
        ({"kind": "user", "key": "k", "_meta": {"privateAttributes": "a"}}, "privateAttributes"),
        ({"kind": "user", "key": "k", "_meta": {"privateAttributes": [1]}}, "privateAttributes"),
        ({"kind": "user", "key": "k", "": 1}, "attribute names must not be empty"),
        ({"kind": "multi"}, "at least one kind"),
        ({"kind": "multi", "org": "o"}, '"org" must be an object'),
        ({"kind": "multi", "org": {"kind": "org", "key": "o"}}, 'must not contain "kind"'),
        ({"kind": "multi", "multi": {"key": "o"}}, '"multi" is only valid'),
        ({"kind": "multi", "org": {"key": ""}}, 'org.context "key" must not be empty'),
        ({"name": "no key"}, 'user "key" must be a string'),
        ({"key": "k", "email": 5}, 'user "email" must be a string'),
        ({"key": "k", "anonymous": 1}, 'user "anonymous" must be true or false'),
        ({"key": "k", "custom": []}, 'user "custom" must be an object'),
        ({"key": "k", "privateAttributeNames": "a"}, "privateAttributeNames"),
    ],
)
def test_errors_name_the_problem(obj: Any, message: str) -> None:
    with pytest.raises(ContextError, match=message.replace("(", r"\(")):
        parse_context(obj)


def test_depth_limit() -> None:
    deep: Any = "x"
    for _ in range(MAX_DEPTH):
        deep = [deep]
    parse_context({"kind": "user", "key": "k", "a": deep[0]})
    with pytest.raises(ContextError, match="nested deeper"):
        parse_context({"kind": "user", "key": "k", "a": deep})
    deep_obj: Any = {}
    for _ in range(MAX_DEPTH):
        deep_obj = {"a": deep_obj}
    with pytest.raises(ContextError, match="nested deeper"):
        parse_context({"kind": "user", "key": "k", "a": deep_obj})


def test_json_and_base64_forms() -> None:
    text = json.dumps({"kind": "user", "key": "ü/?"})
    assert parse_context_json(text).key == "ü/?"
    assert parse_context_json(text.encode()).key == "ü/?"
    padded = base64.urlsafe_b64encode(text.encode()).decode()
    assert parse_context_base64(padded).key == "ü/?"
    assert parse_context_base64(padded.rstrip("=")).key == "ü/?"
    for bad, message in [
        ("{", "not valid JSON"),
        ('{"kind": "user", "key": "k", "n": NaN}', "not valid JSON"),
        ("[" * 100_000, "not valid JSON"),
    ]:
        with pytest.raises(ContextError, match=message):
            parse_context_json(bad)
    with pytest.raises(ContextError, match="not valid base64url"):
        parse_context_base64("a")
    with pytest.raises(ContextError, match="not valid JSON"):
        parse_context_base64(base64.urlsafe_b64encode(b"\xff\xfe").decode())


def test_fingerprint_is_layout_independent() -> None:
    a = parse_context(
        {"kind": "multi", "user": {"key": "u", "a": 1, "b": [1, 2]}, "org": {"key": "o"}}
    )
    b = parse_context(
        {
            "org": {"key": "o", "_meta": {"privateAttributes": ["x"]}},
            "kind": "multi",
            "user": {"b": [1, 2], "key": "u", "a": 1, "c": None, "anonymous": False},
        }
    )
    assert a.fingerprint == b.fingerprint
    assert len(a.fingerprint) == 32
    assert a.fingerprint == a.fingerprint  # cached
    different = [
        {"kind": "multi", "user": {"key": "u", "a": 2, "b": [1, 2]}, "org": {"key": "o"}},
        {"kind": "multi", "user": {"key": "u", "a": 1.0, "b": [1, 2]}, "org": {"key": "o"}},
        {"kind": "multi", "user": {"key": "u", "a": 1, "b": [2, 1]}, "org": {"key": "o"}},
        {
            "kind": "multi",
            "user": {"key": "u", "a": 1, "b": [1, 2], "anonymous": True},
            "org": {"key": "o"},
        },
        {"kind": "user", "key": "u", "a": 1, "b": [1, 2]},
    ]
    prints = {parse_context(d).fingerprint for d in different}
    assert len(prints) == len(different) and a.fingerprint not in prints
