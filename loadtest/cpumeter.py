"""Where a benchmark's CPU went: named processes and the whole machine over one interval.

On a small machine every stage of the write path (the benchmark's own client, the publisher,
the Kafka broker, Redis) shares the same cores. A throughput figure alone cannot say whether
the publisher is slow or the machine is full; the per-process CPU of the measured interval,
beside how many of the machine's cores were busy, can: when the cores are all busy, the
other processes' CPU per write bounds what any publisher could reach on this machine.

Readings come from ``/proc`` (Linux): ``/proc/PID/stat`` for a process, its descendants and
the children they reaped (``loadtest.sysinfo.cpu_seconds``: a child that forks and exits
within the interval, like Redis's AOF rewrite, stays counted), and the first line of
``/proc/stat`` for the machine (every core's busy time; idle and iowait are not busy). The
machine's busy cores are its busy share of *all* its ticks (busy, idle, iowait) over the
interval, times its cores: one clock for both, so the figure never exceeds the core count
(busy ticks over wall time did, 2.03 of 2, when the two clocks were read a tick apart).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from loadtest.sysinfo import cpu_seconds

__all__ = [
    "CLIENT",
    "CpuReading",
    "CpuUse",
    "MachineTime",
    "machine_time",
    "parse_named_pid",
    "read",
    "since",
]

CLIENT = "client"  # this process: the benchmark's own load generator


@dataclass(frozen=True, slots=True)
class MachineTime:
    """CPU-seconds of all cores together since boot."""

    busy: float  # user, nice, system, irq, softirq, steal (guest is counted in user, nice)
    total: float  # busy, idle and iowait


def machine_time(stat: Path = Path("/proc/stat")) -> MachineTime:
    """The machine's busy and total CPU time, from the all-cores line of ``/proc/stat``."""
    fields = stat.read_text().splitlines()[0].split()
    if fields[0] != "cpu":
        raise ValueError(f"{stat}: first line is not the all-cores 'cpu' line")
    user, nice, system, idle, iowait, irq, softirq, *rest = (int(v) for v in fields[1:])
    steal = rest[0] if rest else 0
    busy = user + nice + system + irq + softirq + steal
    ticks = os.sysconf("SC_CLK_TCK")
    return MachineTime(busy / ticks, (busy + idle + iowait) / ticks)


def parse_named_pid(spec: str) -> tuple[str, int]:
    """``NAME=PID`` as given to ``--cpu-of``; ValueError with the expected form otherwise."""
    name, sep, pid = spec.partition("=")
    if not sep or not name or not pid.isdigit() or name == CLIENT:
        raise ValueError(f"expected NAME=PID (NAME not {CLIENT!r}), got {spec!r}")
    return name, int(pid)


@dataclass(frozen=True, slots=True)
class CpuReading:
    """CPU time so far of each named process, of this process and of the machine."""

    processes: Mapping[str, float]
    machine: MachineTime


@dataclass(frozen=True, slots=True)
class CpuUse:
    """CPU used between two readings: seconds per named process (``client`` is this one) and
    the machine's busy cores on average (0 to ``os.cpu_count()``)."""

    seconds: Mapping[str, float]
    machine_cores_busy: float
    cores: int

    def per_unit_us(self, units: int) -> dict[str, float]:
        """Microseconds of CPU per unit of work (a write, an item) for every process."""
        return {name: round(s / max(1, units) * 1e6, 1) for name, s in self.seconds.items()}


def read(pids: Mapping[str, int]) -> CpuReading:
    """Read now. A process (and its descendants) that exited counts as having used nothing
    more, so a reading never fails on a process that ended."""
    processes = {name: cpu_seconds(pid, reaped=True) for name, pid in pids.items()}
    processes[CLIENT] = time.process_time()
    return CpuReading(processes, machine_time())


def since(before: CpuReading, pids: Mapping[str, int]) -> CpuUse:
    """What was used from ``before`` until now."""
    after = read(pids)
    seconds = {
        name: max(0.0, after.processes[name] - before.processes.get(name, 0.0))
        for name in after.processes
    }
    cores = os.cpu_count() or 1
    busy = max(0.0, after.machine.busy - before.machine.busy)
    total = after.machine.total - before.machine.total
    # No tick passed (an interval shorter than 1/CLK_TCK per core): nothing measured. The
    # kernel's iowait count can step backwards, so the share is capped at every core busy.
    share = busy / total if total > 0 else 0.0
    return CpuUse(seconds, round(min(share, 1.0) * cores, 2), cores)
