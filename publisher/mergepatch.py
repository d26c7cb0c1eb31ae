"""JSON Merge Patch (RFC 7386): ``apply_merge_patch(target, patch)``.

Objects merge recursively, ``null`` removes a member, anything else (arrays included)
replaces. The inputs are not modified.
"""

from __future__ import annotations

from typing import Any

__all__ = ["apply_merge_patch"]


def apply_merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for name, value in patch.items():
        if value is None:
            result.pop(name, None)
        else:
            result[name] = apply_merge_patch(result.get(name), value)
    return result
