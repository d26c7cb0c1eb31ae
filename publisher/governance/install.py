"""Wiring governance into a publisher app: ``install_governance(app, settings, store, ...)``.

What it adds to the app ``publisher.app.build_app`` made:

- a ``Governance`` (every operation) under ``GOVERNANCE``, on the ``GovernanceStore`` that
  matches the publisher's ``Store`` (Redis → ``RedisGovernanceStore``, SQLite →
  ``flagstream.embedded.governance.SQLiteGovernanceStore``, in-memory →
  ``MemoryGovernanceStore``);
- the guard of direct writes (``Publisher.write_guard``): policy and bypass audit;
- the routes of ``governance.http``;
- the scheduler, started and stopped with the app, working while the app's forwarder holds the
  lease (in ``flagstream dev``: the lease of its data directory's SQLite file).

For a ``Store`` with no governance implementation yet (e.g. a new embedded backend), the app
runs without governance: its routes answer 501 saying so, and no policy can be set (so none is
enforced). Implement a ``GovernanceStore`` for it, with ``MemoryGovernanceStore`` as the
reference, to enable it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from aiohttp import web

from flagstream.embedded.governance import SQLiteGovernanceStore
from flagstream.embedded.store import SQLiteStore
from publisher.config import PublisherSettings
from publisher.forwarder import Forwarder
from publisher.governance.change_requests import ChangeRequests
from publisher.governance.core import GovernanceCore
from publisher.governance.memory_store import MemoryGovernanceStore
from publisher.governance.metrics import GovernanceMetrics
from publisher.governance.policy import Policies
from publisher.governance.redis_store import RedisGovernanceStore
from publisher.governance.rollouts import Rollouts
from publisher.governance.scheduler import Scheduler
from publisher.governance.store import GovernanceStore
from publisher.governance.triggers import Triggers
from publisher.memory_store import MemoryStore
from publisher.metrics import PublisherMetrics
from publisher.redis_store import RedisStore
from publisher.service import Publisher
from publisher.store import Store

__all__ = ["GOVERNANCE", "Governance", "governance_store_for", "install_governance"]

_log = logging.getLogger("flagstream.publisher.governance")


@dataclass(frozen=True, slots=True)
class Governance:
    core: GovernanceCore
    policies: Policies
    requests: ChangeRequests
    triggers: Triggers
    rollouts: Rollouts
    scheduler: Scheduler
    ack_timeout: float


GOVERNANCE = web.AppKey("governance", Governance)
UNAVAILABLE = web.AppKey("governance_unavailable", str)


def governance_store_for(store: Store) -> GovernanceStore | None:
    """The governance store living next to ``store``, or None if there is none for its kind."""
    if isinstance(store, RedisStore):
        return RedisGovernanceStore(store)
    if isinstance(store, SQLiteStore):
        return SQLiteGovernanceStore(store)
    if isinstance(store, MemoryStore):
        return MemoryGovernanceStore(store)
    return None


def install_governance(
    app: web.Application,
    settings: PublisherSettings,
    publisher: Publisher,
    forwarder: Forwarder,
    metrics: PublisherMetrics,
) -> None:
    from publisher.governance.http import add_routes

    add_routes(app)
    gov_store = governance_store_for(publisher.store)
    if gov_store is None:
        reason = (
            f"governance is not available on this publisher's store "
            f"({type(publisher.store).__name__}): it needs Redis, SQLite or the in-memory store"
        )
        _log.warning("%s", reason)
        app[UNAVAILABLE] = reason
        return
    core = GovernanceCore(
        publisher,
        gov_store,
        GovernanceMetrics(metrics.registry),
        audit_max_entries=settings.audit_max_entries,
    )
    policies = Policies(core)
    requests = ChangeRequests(core)
    rollouts = Rollouts(core)
    governance = Governance(
        core=core,
        policies=policies,
        requests=requests,
        triggers=Triggers(
            core,
            rate_limit=settings.trigger_rate_limit,
            rate_window_s=settings.trigger_rate_window,
        ),
        rollouts=rollouts,
        scheduler=Scheduler(
            gov_store, requests, rollouts, forwarder, interval=settings.scheduler_interval
        ),
        ack_timeout=settings.ack_timeout,
    )
    app[GOVERNANCE] = governance
    publisher.write_guard = policies.guard_direct_write

    async def start(app: web.Application) -> None:
        governance.scheduler.start()

    async def stop(app: web.Application) -> None:
        await governance.scheduler.stop()

    app.on_startup.append(start)
    # on_cleanup runs in order: stop the scheduler before build_app's cleanup stops the
    # forwarder (whose lease fences the scheduler's writes)
    app.on_cleanup.insert(0, stop)
