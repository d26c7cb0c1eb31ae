"""Attribute references: which attribute (or property inside one) a clause or rollout reads.

Rules (LaunchDarkly's, as its SDKs implement them):

- With a ``contextKind`` next to it, an attribute string is a *path*: ``/a/b`` reads property
  ``b`` of the object attribute ``a``; ``~1`` stands for ``/`` and ``~0`` for ``~`` inside a
  component. A string without a leading ``/`` is one top-level name. ``""``, ``"/"``, an empty
  component (``//``, trailing ``/``) and a ``~`` not followed by ``0`` or ``1`` are invalid.
- Without a ``contextKind`` (data written before contexts existed), the string is a *literal*
  top-level attribute name, even if it starts with ``/``; only ``""`` is invalid.
- An invalid reference is not an error until it is used on a context that has the kind it
  applies to: then the evaluation fails with ``MALFORMED_FLAG``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

__all__ = ["AttributeRef"]

_BAD_ESCAPE: Final = re.compile("(~[^01]|~$)")


@dataclass(frozen=True, slots=True)
class AttributeRef:
    """A parsed reference: ``components`` to walk, or ``error`` (then ``components == ()``)."""

    components: tuple[str, ...]
    error: str | None = None

    @property
    def is_kind(self) -> bool:
        """True for the reference ``kind``, which matches against the context kinds."""
        return self.components == ("kind",)

    @classmethod
    def parse(cls, text: str, context_kind: str | None) -> AttributeRef:
        """A path if ``context_kind`` is non-empty, else a literal name (see module rules)."""
        if context_kind:
            return cls.from_path(text)
        return cls.from_literal(text)

    @classmethod
    def from_literal(cls, name: str) -> AttributeRef:
        if name == "":
            return cls((), "attribute reference cannot be empty")
        return cls((name,))

    @classmethod
    def from_path(cls, path: str) -> AttributeRef:
        if path in ("", "/"):
            return cls((), "attribute reference cannot be empty")
        if not path.startswith("/"):
            return cls((path,))
        components = path[1:].split("/")
        for i, component in enumerate(components):
            if component == "":
                return cls(
                    (), "attribute reference contains an empty component ('//' or '/' at the end)"
                )
            if _BAD_ESCAPE.search(component):
                return cls((), "attribute reference contains '~' not followed by '0' or '1'")
            components[i] = component.replace("~1", "/").replace("~0", "~")
        return cls(tuple(components))
