"""The scheduler: applies due change requests and rollout steps on the forwarder lease holder.

Rules:

1. Every publisher runs one; only the one whose forwarder holds the lease works, and each of
   its writes is fenced inside the store's atomic step (``lease_owner``): a publisher that lost
   the lease while working writes nothing (``NotLeaseHolder`` ends its round).
2. Every ``interval`` seconds it reads what is due (by time, then creation order) and handles
   it one record at a time, in that order, so two changes of one flag due together are
   written in the order they were created. A full batch is followed at once by the next.
3. Exactly once: a due record leaves the schedule only in the atomic step that applies (or
   fails) it, so a publisher killed at any moment leaves it either done or still due; the
   next lease holder picks it up (late, and its audit entry says by how much: ``lateMs``).
4. An error of the store ends the round (retried next interval, logged once per kind); an
   unexpected error on one record is logged and ends the round too, and so does a record
   still contended after every attempt ("busy"): order per flag must hold, so the scheduler
   never skips past a record it could not handle.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Protocol

from flagstream.logs import rate_limit
from publisher.governance.change_requests import ChangeRequests
from publisher.governance.core import now_ms
from publisher.governance.rollouts import Rollouts
from publisher.governance.store import GovernanceStore, NotLeaseHolder
from publisher.store import StoreUnavailable

__all__ = ["LeaseView", "Scheduler"]

_log = logging.getLogger("flagstream.publisher.scheduler")
rate_limit("flagstream.publisher.scheduler")


class LeaseView(Protocol):
    """What the scheduler needs of the forwarder: whether it leads, and under which name."""

    @property
    def is_leader(self) -> bool: ...

    owner: str


class Scheduler:
    def __init__(
        self,
        store: GovernanceStore,
        requests: ChangeRequests,
        rollouts: Rollouts,
        lease: LeaseView,
        *,
        interval: float = 0.5,
        batch: int = 100,
    ) -> None:
        self._store = store
        self._requests = requests
        self._rollouts = rollouts
        self._lease = lease
        self._interval = interval
        self._batch = batch
        self._stopping = asyncio.Event()
        self._kick = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.rounds = 0

    def start(self) -> None:
        self._stopping.clear()
        self._task = asyncio.create_task(self._loop(), name="governance-scheduler")

    async def stop(self) -> None:
        self._stopping.set()
        self._kick.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    def kick(self) -> None:
        """Something became due now: look at once rather than at the next interval."""
        self._kick.set()

    async def _loop(self) -> None:
        while not self._stopping.is_set():
            full = False
            if self._lease.is_leader:
                try:
                    full = await self.run_once() >= self._batch
                except asyncio.CancelledError:
                    raise
                except (StoreUnavailable, NotLeaseHolder) as exc:
                    _log.warning("scheduler: %s; retrying in %.1fs", exc, self._interval)
                except Exception:
                    _log.exception("scheduler: round failed; retrying in %.1fs", self._interval)
            if not full:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._kick.wait(), self._interval)
                self._kick.clear()

    async def run_once(self) -> int:
        """One round (rules 2-4): handle what is due now; how many records were handled."""
        self.rounds += 1
        due = await self._store.due(now_ms(), self._batch)
        owner = self._lease.owner
        for ref in due:
            if ref.collection == "change-request":
                outcome = await self._requests.run_scheduled(ref.env, ref.id, owner=owner)
            elif ref.collection == "rollout":
                outcome = await self._rollouts.advance(ref.env, ref.id, owner=owner)
            else:  # pragma: no cover - nothing else is ever scheduled
                outcome = "unknown"
            _log.debug("scheduler: %s %s/%s: %s", ref.collection, ref.env, ref.id, outcome)
            if outcome == "busy":  # rule 4: never skip past a record that is still due
                return 0
        return len(due)
