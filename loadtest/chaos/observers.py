"""What the chaos run watches the system through: an SSE swarm whose every event is checked,
clients that stop reading, and real LaunchDarkly SDKs in subprocesses.

Rules:
- Every event a swarm stream receives goes through ``ClientLedger.on_event`` (the swarm's
  recorder hook): the stream's view of each flag is updated the way an SDK updates its
  store (a ``put`` replaces everything, a ``patch``/``delete`` applies a greater version),
  and a *regression* is recorded when the event would take a version down: a ``put`` with an
  older version of a flag the stream holds, or without a flag it holds, or a ``patch`` or
  ``delete`` older than what it holds. Every event is also appended to a compact timeline
  (time, stream, flag, version), saved when the run fails.
- ``StalledClients`` open streams with a small receive window, read until the first
  ``put`` and then stop reading, so the relay's buffers toward them fill (the relay must
  evict them, its memory must stay bounded); every ``cycle`` seconds each reads again (a
  stream the relay evicted ends with its close: counted), then reconnects and stalls again.
- ``SdkClient`` runs ``loadtest.chaos.sdk_client`` (the LaunchDarkly Python server SDK with a
  store that logs every ``init``/``upsert``/``delete``); its log is replayed by
  ``replay_sdk_log`` with the same rules as the swarm's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "ClientLedger",
    "Regression",
    "SdkClient",
    "SdkReplay",
    "StalledClients",
    "replay_sdk_log",
]


@dataclass(frozen=True, slots=True)
class Regression:
    """An observer was shown an older version of a flag than it held (or lost the flag)."""

    t: float
    observer: str
    env: str
    key: str
    held: int
    shown: int  # 0: the flag was missing from a full put
    event: str


def _parse(event: str, data: str) -> tuple[str, dict[str, int]] | None:
    """(``put``|``upsert``, {flag key: version}) from an SSE event, None if not about flags."""
    try:
        obj = json.loads(data)
    except ValueError:
        return None
    if not isinstance(obj, dict):
        return None
    if event == "put":
        flags = (obj.get("data") or {}).get("flags") or {}
        return "put", {k: int(v.get("version", 0)) for k, v in flags.items()}
    path = obj.get("path", "")
    if not isinstance(path, str) or not path.startswith("/flags/"):
        return None
    key = path[len("/flags/") :]
    if event == "patch":
        return "upsert", {key: int((obj.get("data") or {}).get("version", 0))}
    if event == "delete":
        return "upsert", {key: int(obj.get("version", 0))}
    return None


def apply_view(
    view: dict[str, int], kind: str, versions: dict[str, int]
) -> tuple[bool, list[tuple[str, int, int]]]:
    """Apply one update to ``view`` as an SDK store would; return (changed, regressions as
    (key, held, shown))."""
    regressions = []
    changed = False
    if kind == "put":
        for key, held in view.items():
            shown = versions.get(key, 0)
            if shown < held:
                regressions.append((key, held, shown))
        if versions != view:
            changed = True
            view.clear()
            view.update(versions)
        return changed, regressions
    for key, shown in versions.items():
        held = view.get(key, 0)
        if shown > held:
            view[key] = shown
            changed = True
        elif shown < held:
            regressions.append((key, held, shown))
    return changed, regressions


class ClientLedger:
    """The swarm's recorder: per-stream views, regressions, last change, event timeline."""

    def __init__(self, key_ids: dict[tuple[str, str], int]) -> None:
        self.key_ids = key_ids
        self.views: dict[int, dict[str, int]] = {}
        self.envs: dict[int, str] = {}
        self.last_change: dict[int, float] = {}
        self.regressions: list[Regression] = []
        self.events = 0
        self.puts = 0
        self.t = array("d")
        self.stream = array("i")
        self.item = array("i")
        self.version = array("i")
        self._cache: dict[str, tuple[str, dict[str, int]] | None] = {}

    def on_event(self, stream_id: int, env: str, event: str, data: str, now: float) -> None:
        parsed = self._cache.get(data)
        if parsed is None and data not in self._cache:
            parsed = _parse(event, data)
            if len(self._cache) > 4096:
                self._cache.clear()
            self._cache[data] = parsed
        if parsed is None:
            return
        kind, versions = parsed
        self.events += 1
        self.puts += kind == "put"
        self.envs[stream_id] = env
        view = self.views.setdefault(stream_id, {})
        changed, regressions = apply_view(view, kind, versions)
        t = time.monotonic()
        if changed:
            self.last_change[stream_id] = t
        for key, held, shown in regressions:
            self.regressions.append(
                Regression(t, f"stream-{stream_id}", env, key, held, shown, event)
            )
        if kind != "put":
            for key, version in versions.items():
                self.t.append(t)
                self.stream.append(stream_id)
                self.item.append(self.key_ids.get((env, key), -1))
                self.version.append(version)

    def timeline(self) -> list[dict[str, Any]]:
        names = {v: k for k, v in self.key_ids.items()}
        return [
            {
                "t": self.t[i],
                "what": "event",
                "observer": f"stream-{self.stream[i]}",
                "item": "/".join(names.get(self.item[i], ("?", "?"))),
                "version": self.version[i],
            }
            for i in range(len(self.t))
        ]


# --- clients that stop reading -----------------------------------------------------------


class _Staller(asyncio.Protocol):
    def __init__(self, owner: StalledClients) -> None:
        self.owner = owner
        self.transport: asyncio.Transport | None = None
        self.seen = bytearray()
        self.paused = False
        self.closed_by_relay = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(self.owner.request)  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        if self.paused:
            return  # reading again at the end of a cycle: drain towards the close
        self.seen += data[:4096]
        if b"event: put" in self.seen and self.transport is not None:
            self.transport.pause_reading()  # from now on the relay's buffer toward us fills
            self.paused = True
            self.owner.stalled += 1

    def eof_received(self) -> bool | None:
        self.closed_by_relay = True
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.paused:
            self.closed_by_relay = True
        self.transport = None


@dataclass
class StalledClients:
    """``count`` streams spread over ``targets`` (host, port) that stop reading."""

    targets: list[tuple[str, int]]
    sdk_keys: list[str]
    count: int = 4
    cycle: float = 45.0
    stalled: int = 0
    evicted: int = 0  # stalls the relay ended by closing the connection (eviction)
    request: bytes = b""
    _task: asyncio.Task[None] | None = None
    _open: list[_Staller] = field(default_factory=list)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        round_ = 0
        while True:
            await self._end_cycle()
            for i in range(self.count):
                host, port = self.targets[(i + round_) % len(self.targets)]
                key = self.sdk_keys[i % len(self.sdk_keys)]
                self.request = (
                    f"GET /all HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: {key}\r\n\r\n"
                ).encode()
                staller = _Staller(self)
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                # A small receive window: the relay's own buffer fills, not the kernel's.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                sock.setblocking(False)
                try:
                    await loop.sock_connect(sock, (host, port))
                    await loop.create_connection(lambda s=staller: s, sock=sock)  # type: ignore[misc]
                except OSError:
                    sock.close()
                    continue
                self._open.append(staller)
            round_ += 1
            await asyncio.sleep(self.cycle)

    async def _end_cycle(self) -> None:
        """Read again: a stream the relay evicted ends with its close; abort the others."""
        for staller in self._open:
            if staller.transport is not None and staller.paused:
                staller.transport.resume_reading()
        if self._open:
            await asyncio.sleep(1.0)
        for staller in self._open:
            if staller.paused and staller.closed_by_relay:
                self.evicted += 1
            if staller.transport is not None:
                staller.transport.abort()
        self._open = []

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
            await self._end_cycle()
        for staller in self._open:
            if staller.transport is not None:
                staller.transport.abort()


# --- real LaunchDarkly SDKs --------------------------------------------------------------


@dataclass
class SdkClient:
    """One LaunchDarkly SDK process streaming from ``url``; its log is ``log_path``."""

    name: str
    url: str
    sdk_key: str
    env: str
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        out = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "loadtest.chaos.sdk_client", self.url],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "FLAGSTREAM_CHAOS_SDK_KEY": self.sdk_key},
            start_new_session=True,
        )
        out.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@dataclass
class SdkReplay:
    view: dict[str, int]
    regressions: list[Regression]
    last_change: float
    updates: int
    inits: int
    timeline: list[dict[str, Any]]


def replay_sdk_log(path: Path, name: str, env: str) -> SdkReplay:
    """Rebuild an SDK's store from its log, finding every regression (``apply_view`` rules)."""
    view: dict[str, int] = {}
    regressions: list[Regression] = []
    last_change = 0.0
    updates = inits = 0
    timeline: list[dict[str, Any]] = []
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    for line in lines:
        if not line.startswith("{"):
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        op = entry.get("op")
        if op not in ("init", "upsert"):
            continue
        kind = "put" if op == "init" else "upsert"
        versions = {str(k): int(v) for k, v in entry.get("flags", {}).items()}
        t = float(entry["t"])
        changed, found = apply_view(view, kind, versions)
        inits += op == "init"
        updates += op == "upsert"
        if changed:
            last_change = t
        for key, held, shown in found:
            regressions.append(Regression(t, name, env, key, held, shown, op))
        timeline.append({"t": t, "what": "sdk", "observer": name, "op": op, "flags": versions})
    return SdkReplay(view, regressions, last_change, updates, inits, timeline)
