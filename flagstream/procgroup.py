"""Child processes started in a session of their own, so one signal reaches the whole group.

A relay started with workers forks them into its process group; stopping only the parent
would leave the workers holding the port. Both the demo and the load generator's spawned
services stop their children through these functions.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path

__all__ = ["kill_group", "log_tail", "stop_group"]


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process group, no drain (what a crashed machine looks like), and reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def stop_group(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM (a relay drains), SIGKILL after ``timeout``; then SIGKILL any stray worker."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            kill_group(proc)
    # The leader may be gone while workers of its group are still there.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)


def log_tail(path: Path, lines: int = 15) -> str:
    """The last ``lines`` lines of a child's log ("" if it cannot be read)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
