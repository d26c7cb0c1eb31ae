"""A one-line progress display on stderr while a scenario runs.

On a terminal the line is redrawn in place (``\\r``); otherwise (CI logs, pytest) a line is
printed every ``log_every`` seconds so logs stay short.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Callable
from typing import TextIO

__all__ = ["Progress"]


class Progress:
    """``async with Progress("fanout", render):`` shows ``render()`` until the block ends."""

    def __init__(
        self,
        label: str,
        render: Callable[[], str],
        *,
        stream: TextIO | None = None,
        interval: float = 0.5,
        log_every: float = 5.0,
        enabled: bool = True,
    ) -> None:
        self.label = label
        self.render = render
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self.log_every = log_every
        self.enabled = enabled
        self._task: asyncio.Task[None] | None = None
        self._start = time.perf_counter()
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def line(self) -> str:
        try:
            body = self.render()
        except Exception as exc:  # a progress display must never kill the run
            body = f"(progress unavailable: {type(exc).__name__})"
        return f"[{self.label} {time.perf_counter() - self._start:6.1f}s] {body}"

    async def _run(self) -> None:
        last_log = 0.0
        while True:
            await asyncio.sleep(self.interval)
            now = time.perf_counter()
            if self._tty:
                self.stream.write("\r\x1b[K" + self.line())
                self.stream.flush()
            elif now - last_log >= self.log_every:
                last_log = now
                self.stream.write(self.line() + "\n")
                self.stream.flush()

    def note(self, text: str) -> None:
        """A permanent line (a phase change), printed above the progress line."""
        if not self.enabled:
            return
        prefix = "\r\x1b[K" if self._tty else ""
        self.stream.write(f"{prefix}[{self.label}] {text}\n")
        self.stream.flush()

    async def __aenter__(self) -> Progress:
        self._start = time.perf_counter()
        if self.enabled:
            self._task = asyncio.ensure_future(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self.stream.write(("\r\x1b[K" if self._tty else "") + self.line() + "\n")
            self.stream.flush()
