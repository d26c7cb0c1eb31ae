"""The seeded fault schedule: which faults, in which order, with which parameters.

Rules:
- A schedule depends only on the seed, the fault-phase duration and the kinds allowed, so a
  failed run is replayed with the same ``--seed``. (Timing on a shared machine still varies:
  the schedule is the same, what the system was doing at each instant is not.)
- Faults run one after another, each followed by its recovery and a pause (``gap``); the
  first round has every allowed kind once in a shuffled order, later rounds draw kinds at
  random, until the expected cost of the faults fills the duration. The first round is
  always complete (a short duration still sees every kind once), so a schedule has at
  least one fault.
- Parameters are drawn here too: which relay or worker, how long a cut lasts, whether a cut
  resets connections or silently drops them, how long a killed relay stays down. A kind
  given as ``kind:variant`` (``zombie:held``) always gets that variant.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

__all__ = ["FAULT_KINDS", "VARIANTS", "Fault", "is_known", "plan"]

# kind -> expected seconds it takes with its recovery (for filling the duration only)
FAULT_KINDS: dict[str, float] = {
    "relay-worker-kill": 5.0,  # SIGKILL a worker of the 2-worker relay; its supervisor restarts it
    "relay-kill": 8.0,  # SIGKILL a whole relay, restart it after `hold` s
    "leader-kill": 10.0,  # SIGKILL the publisher holding the lease, restart it
    "leader-kill-mid-batch": 10.0,  # the same while its batch is unacknowledged by Kafka
    "kafka-kill": 30.0,  # SIGKILL the broker, restart it
    "kafka-pause": 14.0,  # SIGSTOP the broker for `hold` s (10), SIGCONT
    "redis-kill": 8.0,  # SIGKILL Redis, restart it
    "relay-cut": 14.0,  # one relay's Kafka link cut for `hold` s, its clients stay connected
    "zombie": 18.0,  # the leader SIGSTOPped past its lease while the other one leads
}


@dataclass(frozen=True, slots=True)
class Fault:
    """One planned fault."""

    index: int
    kind: str
    target: int  # relay index for relay faults; unused (0) otherwise
    hold: float  # seconds: pause, cut or downtime length
    variant: str  # relay-cut: "reset" | "blackhole"; zombie: "held" | "plain"; else ""
    gap: float  # seconds of quiet after the fault recovered

    def describe(self) -> str:
        extra = f" {self.variant}" if self.variant else ""
        target = f" relay-{self.target}" if self.kind.startswith("relay") else ""
        return f"{self.kind}{target}{extra} ({self.hold:.1f}s)"


def plan(
    seed: int, duration: float, kinds: tuple[str, ...], *, relays: int = 3, worker_relay: int = 2
) -> list[Fault]:
    """The fault schedule for ``seed``: faults whose expected cost fills ``duration``."""
    unknown = [k for k in kinds if not is_known(k)]
    if unknown or not kinds:
        raise ValueError(f"unknown fault kinds {unknown}; choose from {', '.join(FAULT_KINDS)}")
    rng = random.Random(seed)
    first = list(kinds)
    rng.shuffle(first)
    faults: list[Fault] = []
    spent = 0.0
    while first or spent < duration:
        chosen = first.pop(0) if first else rng.choice(kinds)
        kind, _, forced = chosen.partition(":")
        gap = rng.uniform(2.0, 5.0)
        spent += FAULT_KINDS[kind] + gap
        if faults and not first and spent > duration * 1.1 and len(faults) >= len(kinds):
            break
        fault = _draw(rng, len(faults), kind, gap, relays, worker_relay)
        if forced:
            fault = replace(fault, variant=forced)
        faults.append(fault)
    return faults


VARIANTS = {"relay-cut": ("reset", "blackhole"), "zombie": ("held", "plain")}


def is_known(kind: str) -> bool:
    """``kind`` or ``kind:variant`` (``relay-cut:reset|blackhole``, ``zombie:held|plain``)."""
    name, sep, variant = kind.partition(":")
    if name not in FAULT_KINDS:
        return False
    return not sep or variant in VARIANTS.get(name, ())


def _draw(
    rng: random.Random, index: int, kind: str, gap: float, relays: int, worker_relay: int
) -> Fault:
    target, hold, variant = 0, 0.0, ""
    if kind == "relay-worker-kill":
        target = worker_relay
    elif kind == "relay-kill":
        target, hold = rng.randrange(relays), rng.uniform(0.5, 4.0)
    elif kind == "kafka-pause":
        hold = 10.0
    elif kind == "relay-cut":
        target, hold = rng.randrange(relays), rng.uniform(6.0, 14.0)
        variant = rng.choice(("reset", "blackhole"))
    elif kind == "zombie":
        variant = rng.choice(("held", "plain"))
    elif kind in ("leader-kill", "leader-kill-mid-batch"):
        hold = rng.uniform(0.5, 3.0)
    return Fault(index, kind, target, round(hold, 2), variant, round(gap, 2))
