"""Carrying out planned faults on a ``Cluster`` and recording when each began and recovered.

Rules:
- One fault at a time: ``inject`` returns once the system is whole again (processes
  restarted and ready, links healed, processes continued), so the next fault starts from a
  healthy system and every fault has a clear recovery time.
- Every step is appended to the timeline (``FaultRecord.steps``), with ``time.monotonic()``.
- ``leader-kill-mid-batch`` and the ``held`` zombie make "a batch in flight" certain rather
  than lucky: the leader's Kafka link is blackholed first, so the produce request of its next
  batch is sent but not answered; then the leader is killed (or stopped) with that batch
  unacknowledged. The ``plain`` zombie stops the leader at whatever moment it is in.
- The zombie: the leader is SIGSTOPped; the run waits until the other publisher holds the
  lease and has forwarded writes (the writers keep writing), heals the link (the held batch
  is now delivered to Kafka, after the new leader's records), then SIGCONTs the old leader
  and lets it run with its stale view of the lease for a few seconds. With fencing, Kafka
  must reject or abort whatever the old leader sends; without it, the old batch lands after
  the new leader's records, and the checker sees a compacted-topic view older than Redis.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from loadtest.chaos.cluster import Cluster
from loadtest.chaos.schedule import Fault

__all__ = ["FaultRecord", "inject"]


@dataclass
class FaultRecord:
    """When a fault began, *ended* (its last corrective action: restart issued, SIGCONT sent,
    link healed) and *recovered* (the system whole again), with every step in between."""

    fault: Fault
    started: float = 0.0
    ended: float = 0.0
    recovered: float = 0.0
    steps: list[tuple[float, str]] = field(default_factory=list)
    error: str | None = None
    on_end: Callable[[], None] | None = None

    def step(self, what: str) -> None:
        self.steps.append((time.monotonic(), what))

    def end(self) -> None:
        """The fault is removed from here on (called once; later calls are ignored)."""
        if self.ended:
            return
        self.ended = time.monotonic()
        if self.on_end is not None:
            self.on_end()

    def to_json(self) -> dict[str, Any]:
        return {
            "what": "fault",
            "t": self.started,
            "ended": self.ended,
            "recovered": self.recovered,
            "fault": self.fault.describe(),
            "steps": [{"t": t, "step": s} for t, s in self.steps],
            "error": self.error,
        }


async def inject(
    cluster: Cluster, fault: Fault, on_end: Callable[[], None] | None = None
) -> FaultRecord:
    """Carry out ``fault``; ``on_end`` is called at its last corrective action."""
    record = FaultRecord(fault, started=time.monotonic(), on_end=on_end)
    record.step(f"begin {fault.describe()}")
    try:
        await _KINDS[fault.kind](cluster, fault, record)
    except Exception as exc:  # recorded; the run reports it and goes on to recover
        record.error = f"{type(exc).__name__}: {exc}"
        record.step(f"error {record.error}")
        record.end()
        await _recover_everything(cluster, record)
    record.end()
    record.recovered = time.monotonic()
    record.step("recovered")
    return record


async def _recover_everything(cluster: Cluster, record: FaultRecord) -> None:
    """After a fault that failed half-way: continue, heal, restart whatever is down."""
    for sig_target in ("kafka",):
        try:
            cluster.signal_kafka(signal.SIGCONT)
        except Exception:
            record.step(f"{sig_target} not running")
    for i in range(len(cluster.links)):
        try:
            await cluster.proxy_command(f"heal {i}")
        except Exception as exc:
            record.step(f"heal {i} failed: {exc}")
    if not cluster.kafka.is_ready():
        await asyncio.to_thread(cluster.kafka.start, 240.0)
    if not cluster.redis.is_ready():
        await asyncio.to_thread(cluster.redis.start, 60.0)
    for i, service in enumerate(cluster.publishers):
        if service is None or service.proc.poll() is not None:
            await cluster.restart_publisher(i)
        else:
            cluster.signal_publisher(i, signal.SIGCONT)
    for i, service in enumerate(cluster.relays):
        if service is None or service.proc.poll() is not None:
            await cluster.restart_relay(i)


async def _relay_worker_kill(cluster: Cluster, fault: Fault, record: FaultRecord) -> None:
    pids = cluster.relay_worker_pids(fault.target)
    if not pids:
        raise RuntimeError(f"relay-{fault.target} has no worker processes")
    victim = pids[0]
    os.kill(victim, signal.SIGKILL)
    record.step(f"SIGKILL worker pid {victim} of relay-{fault.target}")
    record.end()  # the supervisor restarts it by itself
    deadline = time.monotonic() + 60
    while True:  # the supervisor starts a new worker; wait until it serves again
        now = cluster.relay_worker_pids(fault.target)
        if victim not in now and len(now) == len(pids):
            break
        if time.monotonic() > deadline:
            raise RuntimeError("the relay supervisor did not restart its worker")
        await asyncio.sleep(0.2)
    await _wait_relay_ready(cluster, fault.target)
    record.step("worker restarted and ready")


async def _wait_relay_ready(cluster: Cluster, index: int) -> None:
    from loadtest.procs import wait_ready

    # Several answers in a row: with 2 workers, each must have bootstrapped.
    for _ in range(6):
        await wait_ready(cluster.relay_urls[index], within=120)


async def _relay_kill(cluster: Cluster, fault: Fault, record: FaultRecord) -> None:
    cluster.kill_relay(fault.target)
    record.step(f"SIGKILL relay-{fault.target} (every process)")
    await asyncio.sleep(fault.hold)
    record.end()
    await cluster.restart_relay(fault.target)
    record.step(f"relay-{fault.target} restarted and ready")


async def _leader_kill(cluster: Cluster, fault: Fault, record: FaultRecord) -> None:
    leader = await cluster.wait_leader(30)
    if fault.kind == "leader-kill-mid-batch":
        link = cluster.publisher_link(leader)
        await cluster.proxy_command(f"cut {link} blackhole")
        record.step(f"publisher-{leader}'s Kafka link blackholed (its next batch stays in flight)")
        await asyncio.sleep(0.7)
    cluster.kill_publisher(leader)
    record.step(f"SIGKILL publisher-{leader} (the leader)")
    if fault.kind == "leader-kill-mid-batch":
        await cluster.proxy_command(f"heal {cluster.publisher_link(leader)}")
    other = await cluster.wait_leader(60, other_than=leader)
    record.step(f"publisher-{other} took the lease")
    await asyncio.sleep(fault.hold)
    record.end()
    await cluster.restart_publisher(leader)
    record.step(f"publisher-{leader} restarted and ready")


async def _kafka_kill(cluster: Cluster, fault: Fault, record: FaultRecord) -> None:
    record.step("SIGKILL Kafka")
    await cluster.restart_kafka(on_killed=record.end)
    record.step("Kafka restarted and answering")


async def _kafka_pause(cluster: Cluster, fault: Fault, record: FaultRecord) -> None:
    cluster.signal_kafka(signal.SIGSTOP)
    record.step("SIGSTOP Kafka")
    try:
        await asyncio.sleep(fault.hold)
    finally:
        cluster.signal_kafka(signal.SIGCONT)
        record.end()
    record.step("SIGCONT Kafka")


async def _redis_kill(cluster: Cluster, fault: Fault, record: FaultRecord) -> None:
    record.step("SIGKILL Redis")
    await cluster.restart_redis(on_killed=record.end)
    record.step("Redis restarted and answering")


async def _relay_cut(cluster: Cluster, fault: Fault, record: FaultRecord) -> None:
    link = cluster.relay_link(fault.target)
    await cluster.proxy_command(f"cut {link} {fault.variant}")
    record.step(f"relay-{fault.target} cut from Kafka ({fault.variant})")
    try:
        await asyncio.sleep(fault.hold)
    finally:
        await cluster.proxy_command(f"heal {link}")
        record.end()
    record.step(f"relay-{fault.target} reconnected to Kafka")


async def _zombie(cluster: Cluster, fault: Fault, record: FaultRecord) -> None:
    leader = await cluster.wait_leader(30)
    link = cluster.publisher_link(leader)
    if fault.variant == "held":
        await cluster.proxy_command(f"cut {link} blackhole")
        record.step(f"publisher-{leader}'s Kafka link blackholed (its batch stays in flight)")
        await asyncio.sleep(0.7)
    cluster.signal_publisher(leader, signal.SIGSTOP)
    record.step(f"SIGSTOP publisher-{leader} (the leader)")
    try:
        other = await cluster.wait_leader(cluster.config.lease_ttl * 4 + 30, other_than=leader)
        record.step(f"publisher-{other} took the lease")
        await asyncio.sleep(cluster.config.lease_ttl)  # the new leader forwards new writes
    finally:
        if fault.variant == "held":
            await cluster.proxy_command(f"heal {link}")
            record.step(f"publisher-{leader}'s link healed: its held batch reaches Kafka now")
        cluster.signal_publisher(leader, signal.SIGCONT)
        record.end()
        record.step(f"SIGCONT publisher-{leader}: the old leader runs again")
    await asyncio.sleep(cluster.config.lease_ttl)


_KINDS = {
    "relay-worker-kill": _relay_worker_kill,
    "relay-kill": _relay_kill,
    "leader-kill": _leader_kill,
    "leader-kill-mid-batch": _leader_kill,
    "kafka-kill": _kafka_kill,
    "kafka-pause": _kafka_pause,
    "redis-kill": _redis_kill,
    "relay-cut": _relay_cut,
    "zombie": _zombie,
}
