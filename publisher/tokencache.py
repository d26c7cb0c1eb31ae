"""Principals of API tokens, remembered for a bounded time: no Redis round trip per request.

Rules:

1. **Bounded revocation.** A token found in the store is remembered for at most ``ttl``
   seconds (``FLAGSTREAM_PUBLISHER_TOKEN_CACHE_TTL``, default 5). A token revoked through
   *this* instance stops working at once (``revoke`` drops it before the API answers 204); a
   token revoked through another instance stops working here within ``ttl``. ``ttl = 0``
   turns the cache off (every request asks the store, as before).
2. **Only positive answers are remembered.** An unknown token is asked again every time, so
   a token created on another instance works at once.
3. **Keyed by the secret's SHA-256**, like the store: no secret is held in memory longer than
   the request that presented it.
4. **Bounded size.** At most ``max_entries`` principals; when full, the oldest is dropped.
"""

from __future__ import annotations

import time
from collections import OrderedDict

from publisher.auth import Principal

__all__ = ["PrincipalCache"]


class PrincipalCache:
    """SHA-256 of a token -> its Principal, for ``ttl`` seconds (see the module rules)."""

    def __init__(self, ttl: float, *, max_entries: int = 10_000) -> None:
        self.ttl = ttl
        self._max = max_entries
        self._entries: OrderedDict[str, tuple[float, Principal]] = OrderedDict()

    def get(self, digest: str) -> Principal | None:
        entry = self._entries.get(digest)
        if entry is None:
            return None
        if time.monotonic() >= entry[0]:
            del self._entries[digest]
            return None
        return entry[1]

    def put(self, digest: str, principal: Principal) -> None:
        if self.ttl <= 0:
            return
        self._entries[digest] = (time.monotonic() + self.ttl, principal)
        self._entries.move_to_end(digest)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def revoke(self, token_id: str) -> None:
        """Forget every principal of ``token_id`` (called when this instance revokes it)."""
        for digest in [d for d, (_, p) in self._entries.items() if p.token_id == token_id]:
            del self._entries[digest]
