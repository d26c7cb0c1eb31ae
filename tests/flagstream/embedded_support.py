"""Helpers for tests that run on the embedded SQLite backends (``flagstream.embedded``)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from flagstream.embedded import Embedded, SQLiteStore, open_embedded


@contextlib.asynccontextmanager
async def embedded(path: Path, *, partitions: int = 3) -> AsyncIterator[Embedded]:
    """The store and log of a data directory at ``path``, closed afterwards."""
    backends = await open_embedded(path, partitions=partitions)
    try:
        yield backends
    finally:
        await backends.close()


@contextlib.asynccontextmanager
async def embedded_store(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    """A ``SQLiteStore`` in a fresh data directory under ``tmp_path``."""
    async with embedded(tmp_path / "data") as backends:
        yield backends.store
