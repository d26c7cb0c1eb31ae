"""Detached processes identified by PID *and* command line, and stopping exactly those.

A PID file alone is not proof: after a reboot or a crash the PID may belong to something
else. Every check therefore also requires markers (e.g. the config file path) to appear in
``/proc/<pid>/cmdline``, so ``down`` can never signal a process the stack did not start.
A zombie (exited, not yet reaped) counts as stopped.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from flagstream.stack.errors import StackError


def read_pid(pidfile: Path) -> int | None:
    """The PID recorded in ``pidfile``, or None when the file is missing or garbled."""
    try:
        text = pidfile.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _cmdline(pid: int) -> str | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return raw.replace(b"\0", b" ").decode("utf-8", "replace")


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # The state letter follows the parenthesised command name, which may contain spaces.
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


def is_running(pid: int | None, markers: Sequence[str]) -> bool:
    """True when ``pid`` is a live, non-zombie process whose command line has every marker."""
    if pid is None or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else; the marker check below decides
    if _is_zombie(pid):
        return False
    cmdline = _cmdline(pid)
    if cmdline is None:
        return False
    return all(marker in cmdline for marker in markers)


def find(markers: Sequence[str]) -> list[int]:
    """PIDs of live processes whose command line contains every marker (for cleaning up
    after a lost PID file)."""
    if not markers:
        return []
    pids = (int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit())
    return [pid for pid in pids if pid != os.getpid() and is_running(pid, markers)]


def spawn_detached(argv: Sequence[str], *, log: Path, cwd: Path) -> subprocess.Popen[bytes]:
    """Start ``argv`` in a new session (immune to the caller's Ctrl-C and terminal hang-up),
    with stdin closed and stdout/stderr appended to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            start_new_session=True,
            close_fds=True,
        )


def wait_gone(
    pid: int,
    markers: Sequence[str],
    timeout: float,
    proc: subprocess.Popen[bytes] | None = None,
) -> bool:
    """Wait until the process is gone (reaping it if it is our child); True if it went."""
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None:
            proc.poll()
        if not is_running(pid, markers):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def terminate(
    pid: int,
    markers: Sequence[str],
    *,
    timeout: float,
    proc: subprocess.Popen[bytes] | None = None,
) -> None:
    """SIGTERM, then SIGKILL if the process has not exited within ``timeout`` seconds."""
    if not is_running(pid, markers):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if wait_gone(pid, markers, timeout, proc):
        return
    kill(pid, markers, proc=proc)


def kill(pid: int, markers: Sequence[str], *, proc: subprocess.Popen[bytes] | None = None) -> None:
    """SIGKILL and wait until the kernel has removed the process."""
    if not is_running(pid, markers):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if not wait_gone(pid, markers, 10.0, proc):
        raise StackError(f"process {pid} survived SIGKILL; check it with 'ps -p {pid}'")


def port_in_use(host: str, port: int) -> bool:
    """True when something already listens on (or holds) ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR: a socket in TIME_WAIT from an earlier run is not "in use".
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (for private test instances)."""
    return free_ports(1, host)[0]


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct ports that were free a moment ago (all bound at once, then freed).

    Chosen below the kernel's ephemeral range when there is room: a port handed out by
    ``bind(0)`` comes from that range, so any outgoing connection made before the caller
    binds it (a Kafka or HTTP client) could take it as its source port in between; ports
    outside the range are taken only by something that binds them on purpose."""
    low = _ephemeral_low()
    with contextlib.ExitStack() as stack:
        ports: list[int] = []
        tries = 0
        while len(ports) < count:
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            tries += 1
            if low > _FIRST_PORT + 1000 and tries <= 50 * count:
                try:
                    sock.bind((host, random.randrange(_FIRST_PORT, low)))
                except OSError:
                    continue  # in use: another try
            else:
                sock.bind((host, 0))
            ports.append(sock.getsockname()[1])
        return ports


# Ports below this are left to well-known services.
_FIRST_PORT = 20000


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (0 when it cannot be read)."""
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
        return int(text.split()[0])
    except (OSError, ValueError, IndexError):
        return 0


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock, so concurrent ``up``/``down`` calls (several test
    sessions at once) serialise instead of racing to start two brokers."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def tail(path: Path, lines: int = 5) -> str:
    """The last non-empty lines of a log file, joined with `` | `` for one-line errors."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    kept = [line.strip() for line in text.splitlines() if line.strip()]
    return " | ".join(kept[-lines:])
