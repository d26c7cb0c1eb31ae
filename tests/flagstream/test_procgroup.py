"""flagstream.procgroup: a child's whole process group is stopped, and its log tail read."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flagstream.procgroup import kill_group, log_tail, stop_group

# A parent that forks a "worker" into its own process group and then waits for SIGTERM.
# The parent takes SIGTERM synchronously (blocked, then sigwait), not through a Python
# handler: a SIGTERM arriving after the handler's flag was last checked but before
# time.sleep entered its system call did not interrupt the sleep, so the handler would only
# have run 300 s later, and stop_group killed the parent after its 60 s (about one run in a
# thousand with a busy core). The worker inherited that handler too until it reset it. The
# worker unblocks SIGTERM with its default action: it dies.
_PARENT = """
import os, signal, sys, time
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
pid = os.fork()
if pid == 0:
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
    time.sleep(300)
    os._exit(0)
print(pid, flush=True)
signal.sigwait({signal.SIGTERM})
sys.exit(0)
"""


def _spawn() -> tuple[subprocess.Popen[bytes], int]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _PARENT], stdout=subprocess.PIPE, start_new_session=True
    )
    assert proc.stdout is not None
    worker = int(proc.stdout.readline())
    return proc, worker


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie still answers signal 0; its parent (the leader) is gone, so init reaps it.
    with open(f"/proc/{pid}/stat") as f:
        return f.read().split(")")[-1].split()[0] == "Z"


def _wait_gone(pid: int) -> bool:
    for _ in range(200):
        if _gone(pid):
            return True
        time.sleep(0.02)
    return False


@pytest.mark.integration
def test_stop_group_stops_the_leader_and_its_workers() -> None:
    proc, worker = _spawn()
    stop_group(proc, timeout=60)  # generous: a busy 2-core machine must not turn it into a kill
    assert proc.returncode == 0  # SIGTERM reached the leader first, which exited cleanly
    assert _wait_gone(worker)


@pytest.mark.integration
def test_kill_group_kills_without_drain() -> None:
    proc, worker = _spawn()
    kill_group(proc)
    assert proc.returncode == -signal.SIGKILL
    assert _wait_gone(worker)


@pytest.mark.unit
def test_log_tail(tmp_path: Path) -> None:
    log = tmp_path / "child.log"
    assert log_tail(log) == ""
    log.write_text("".join(f"line {i}\n" for i in range(20)))
    assert log_tail(log, 3) == "line 17\nline 18\nline 19"
