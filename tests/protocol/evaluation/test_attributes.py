"""Attribute references: paths with a context kind, literal names without one."""

from __future__ import annotations

import pytest

from protocol.evaluation.attributes import AttributeRef

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "components"),
    [
        ("name", ("name",)),
        ("/name", ("name",)),
        ("/a/b", ("a", "b")),
        ("/a~1b/c~0d", ("a/b", "c~d")),
        ("/~01", ("~1",)),
    ],
)
def test_paths(text: str, components: tuple[str, ...]) -> None:
    ref = AttributeRef.parse(text, "user")
    assert (ref.components, ref.error) == (components, None)


@pytest.mark.parametrize("text", ["", "/", "//a", "/a/", "/a//b", "/a~", "/a~2", "/~x"])
def test_invalid_paths(text: str) -> None:
    ref = AttributeRef.parse(text, "org")
    assert ref.components == ()
    assert ref.error


def test_literals_without_a_context_kind() -> None:
    assert AttributeRef.parse("/a/b", None).components == ("/a/b",)
    assert AttributeRef.parse("/a/b", "").components == ("/a/b",)
    assert AttributeRef.parse("a~b", None).components == ("a~b",)
    assert AttributeRef.parse("", None).error == "attribute reference cannot be empty"


def test_kind_reference() -> None:
    assert AttributeRef.parse("kind", None).is_kind
    assert AttributeRef.parse("/kind", "user").is_kind
    assert not AttributeRef.parse("/kind/x", "user").is_kind
    assert not AttributeRef.parse("", None).is_kind
