"""Process bookkeeping: PID + command-line markers, SIGTERM-then-SIGKILL, ports."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from flagstream.stack import process

pytestmark = pytest.mark.unit

_STUBBORN = (
    "import signal, sys, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('ready', flush=True)\n"
    "time.sleep(60)\n"
)


def test_read_pid(tmp_path: Path) -> None:
    pidfile = tmp_path / "x.pid"
    assert process.read_pid(pidfile) is None
    pidfile.write_text("garbage\n")
    assert process.read_pid(pidfile) is None
    pidfile.write_text("123\n")
    assert process.read_pid(pidfile) == 123


def test_is_running_needs_every_marker() -> None:
    me = os.getpid()
    assert process.is_running(me, [])
    assert process.is_running(me, ["python"]) or process.is_running(me, ["pytest"])
    assert not process.is_running(me, ["definitely-not-in-my-cmdline"])
    assert not process.is_running(None, [])
    assert not process.is_running(0, [])


def test_terminate_escalates_to_sigkill() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", _STUBBORN, "stubborn-marker"], stdout=subprocess.PIPE
    )
    assert child.stdout is not None and child.stdout.readline() == b"ready\n"
    markers = ["stubborn-marker"]
    assert process.is_running(child.pid, markers)
    process.terminate(child.pid, markers, timeout=0.5, proc=child)
    assert child.wait(timeout=5) == -9
    assert not process.is_running(child.pid, markers)


def test_a_zombie_counts_as_stopped() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass", "zombie-marker"])
    # Wait for the exit without reaping (WNOWAIT), so the child stays a zombie. Polling the
    # command line instead raced: between fork and exec it is the parent's, without the marker.
    os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
    assert process._is_zombie(child.pid)
    assert not process.is_running(child.pid, [])  # exited, not yet reaped
    child.wait()


def test_port_in_use() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert process.port_in_use("127.0.0.1", port)
    assert not process.port_in_use("127.0.0.1", port)


def test_tail(tmp_path: Path) -> None:
    log = tmp_path / "x.log"
    assert process.tail(log) == ""
    log.write_text("a\n\nb\nc\n")
    assert process.tail(log, 2) == "b | c"


def test_spawn_detached_runs_in_its_own_session(tmp_path: Path) -> None:
    child = process.spawn_detached(
        [sys.executable, "-c", "print('hello')"], log=tmp_path / "out.log", cwd=tmp_path
    )
    assert child.wait(timeout=10) == 0
    assert (tmp_path / "out.log").read_text() == "hello\n"


def test_find_by_markers() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", _STUBBORN, "find-me-marker"], stdout=subprocess.PIPE
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == b"ready\n"
        assert process.find(["find-me-marker", "-c"]) == [child.pid]
        assert process.find(["find-me-marker", "no-such-arg"]) == []
        assert process.find([]) == []
    finally:
        child.kill()
        child.wait()
