"""The items this publisher instance committed last: read-your-own-writes without Redis.

Rules:

1. An entry is exactly what this instance committed: the item's version, its JSON as stored
   and the parsed item. A version is committed once, so version *v* of an item has one
   content everywhere; a remembered entry is never wrong, only possibly old.
2. A write may be *built* on a remembered entry, but it is still committed with a
   compare-and-set on that version: if another instance wrote the item since, the commit
   fails, the entry is forgotten and the write is rebuilt on the store's state.
3. A refusal (412 on If-Match, 404 on a missing item) is only ever answered from the store's
   state, never from a remembered one (the caller re-reads first).
4. Bounded: at most ``capacity`` entries, the least recently used dropped first. Items held
   here are shared and never modified.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, NamedTuple

__all__ = ["RecentItem", "RecentItems"]

_Key = tuple[str, str, str]  # (env, kind, key)


class RecentItem(NamedTuple):
    version: int
    raw: bytes
    item: dict[str, Any]


class RecentItems:
    """An LRU map (env, kind, key) -> RecentItem (see the module rules)."""

    def __init__(self, capacity: int = 10_000) -> None:
        self._capacity = capacity
        self._entries: OrderedDict[_Key, RecentItem] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: _Key) -> RecentItem | None:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def put(self, key: _Key, entry: RecentItem) -> None:
        if self._capacity <= 0:
            return
        self._entries[key] = entry
        self._entries.move_to_end(key)
        if len(self._entries) > self._capacity:
            self._entries.popitem(last=False)

    def forget(self, key: _Key) -> None:
        self._entries.pop(key, None)
