"""Facts about this machine and process: cores, memory, kernel, limits, memory of a pid."""

from __future__ import annotations

import os
import platform
import resource
import sys
from pathlib import Path
from typing import Any

__all__ = [
    "LimitError",
    "cpu_seconds",
    "machine_facts",
    "pid_tree",
    "raise_nofile_limit",
    "rss_bytes",
]


class LimitError(Exception):
    """A kernel or process limit is too low for the requested size; says what to raise."""


def raise_nofile_limit(needed: int) -> int:
    """Raise RLIMIT_NOFILE's soft limit to its hard limit; return the soft limit now in force.

    Raises LimitError naming the knob to turn if even the hard limit is below ``needed``.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    if soft < needed:
        raise LimitError(
            f"needs {needed} open files but the hard limit (RLIMIT_NOFILE) is {hard}: "
            f"raise it (e.g. `ulimit -Hn {needed * 2}` as root, LimitNOFILE= in systemd, "
            "or nofile in /etc/security/limits.conf), or use fewer streams"
        )
    return soft


def _meminfo_total() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_facts() -> dict[str, Any]:
    """What a reader needs to judge a figure: cores, memory, kernel, Python, limits."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        ports = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        port_range = f"{ports[0]}-{ports[1]}"
    except (OSError, IndexError):
        port_range = "unknown"
    try:
        load = os.getloadavg()
    except OSError:
        load = (0.0, 0.0, 0.0)
    mem = _meminfo_total()
    return {
        "cores": os.cpu_count(),
        "cpu": _cpu_model(),
        "memory_gib": round(mem / 2**30, 1) if mem else None,
        "kernel": platform.release(),
        "os": platform.system(),
        "python": sys.version.split()[0],
        "nofile_soft": soft,
        "nofile_hard": hard,
        "ephemeral_ports": port_range,
        "loadavg_at_start": [round(x, 2) for x in load],
    }


def pid_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (relay workers), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # the command name is in parentheses and may contain spaces: split after the last ')'
        fields = stat.rsplit(")", 1)[-1].split()
        children.setdefault(int(fields[1]), []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_seconds(pid: int, *, tree: bool = True, reaped: bool = False) -> float:
    """User + system CPU time consumed so far by ``pid`` (and its descendants), from
    /proc/*/stat. Diff two readings to get a process's CPU share over an interval.

    ``reaped`` also counts the children each of them has waited for (cutime, cstime): without
    it, a descendant that exits between two readings takes its CPU with it (Redis's AOF
    rewrite child, forked and reaped within a benchmark, made Redis read 0 one run and
    three times its share the next)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in pid_tree(pid) if tree else [pid]:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[-1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
        if reaped:
            total += int(fields[13]) + int(fields[14])  # cutime, cstime (fields 16, 17)
    return total / ticks


def rss_bytes(pid: int, *, tree: bool = True) -> int:
    """Resident memory of ``pid`` (and its descendants) from /proc/*/status VmRSS."""
    total = 0
    for p in pid_tree(pid) if tree else [pid]:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
                    break
        except OSError:
            continue
    return total
