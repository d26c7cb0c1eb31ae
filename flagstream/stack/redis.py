"""A Redis server (Debian's ``redis-server``) with its own config, on loopback.

One :class:`RedisServer` owns one data directory::

    <data_dir>/redis.conf       written on every start
    <data_dir>/redis.pid        written by redis itself (daemonized)
    <data_dir>/redis.log
    <data_dir>/appendonlydir/   the AOF (appendonly yes, fsync every second)

Guarantees: ``start`` is idempotent and returns once the server answers PING; ``stop``
(SIGTERM: redis flushes the AOF and exits) and ``kill`` (SIGKILL: loses at most the last
second of writes) act only on the PID in this directory's pidfile and only if that process
is a redis-server on this port. Data survives ``stop``/``kill`` + ``start``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from flagstream.stack import process
from flagstream.stack.errors import StackError
from flagstream.stack.paths import HOST

INSTALL = "apt-get update && apt-get install -y redis-server"


def ping(port: int, host: str = HOST, timeout: float = 1.0) -> bool:
    """True when a Redis server on ``host:port`` answers PING with PONG."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def find_redis_server(*, install: bool = True) -> str:
    """Path of ``redis-server``; installed with apt-get when missing and we are root."""
    path = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None
    )
    if path:
        return path
    if not install or os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise StackError(f"redis-server not found; install it: {INSTALL}")
    print("redis-server missing; installing it with apt-get...", file=sys.stderr)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "redis-server"]):
        result = subprocess.run(
            argv, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL, check=False
        )
        if result.returncode != 0:
            lines = [x for x in (result.stderr + result.stdout).splitlines() if x.strip()]
            raise StackError(
                f"'{' '.join(argv)}' failed ({lines[-1] if lines else result.returncode}); "
                f"install redis-server by hand: {INSTALL}"
            )
    # Debian starts its own service on 6379; we run our own instance, so leave that alone.
    path = shutil.which("redis-server")
    if path is None:
        raise StackError(f"redis-server still not found after installing; run: {INSTALL}")
    return path


class RedisServer:
    """One redis-server process listening on 127.0.0.1 only."""

    def __init__(self, data_dir: Path | str, port: int) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self.last_start_seconds: float | None = None

    @property
    def config_path(self) -> Path:
        return self.data_dir / "redis.conf"

    @property
    def pidfile(self) -> Path:
        return self.data_dir / "redis.pid"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "redis.log"

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    @property
    def _markers(self) -> tuple[str, ...]:
        # Once started, redis replaces its process title with "…redis-server 127.0.0.1:PORT".
        return ("redis-server", f"{HOST}:{self.port}")

    @property
    def _early_markers(self) -> tuple[str, ...]:
        # Before that (it writes the pidfile first) the command line is still ours.
        return ("redis-server", str(self.config_path))

    @property
    def pid(self) -> int | None:
        pid = process.read_pid(self.pidfile)
        for markers in (self._markers, self._early_markers):
            if process.is_running(pid, markers):
                return pid
        return None

    def is_running(self) -> bool:
        return self.pid is not None

    def is_ready(self) -> bool:
        return self.is_running() and ping(self.port)

    def start(self, timeout: float = 30.0) -> None:
        """Start redis (or reuse the running one) and wait until it answers PING."""
        began = time.monotonic()
        if not self.is_running():
            self._launch()
        deadline = time.monotonic() + timeout
        while not ping(self.port):
            if time.monotonic() >= deadline or (self.pidfile.exists() and not self.is_running()):
                raise StackError(
                    f"redis-server did not answer PING on {HOST}:{self.port}; see "
                    f"{self.log_path}: {process.tail(self.log_path, 2)}"
                )
            time.sleep(0.05)
        self.last_start_seconds = time.monotonic() - began

    def stop(self, timeout: float = 15.0) -> None:
        pid = self.pid
        if pid is not None:
            process.terminate(pid, ("redis-server",), timeout=timeout)
        self.pidfile.unlink(missing_ok=True)

    def kill(self) -> None:
        pid = self.pid
        if pid is not None:
            process.kill(pid, ("redis-server",))
        self.pidfile.unlink(missing_ok=True)

    def restart(self, timeout: float = 30.0) -> None:
        self.stop()
        self.start(timeout)

    def _launch(self) -> None:
        server = find_redis_server()
        if process.port_in_use(HOST, self.port):
            raise StackError(
                f"port {self.port} (Redis) on {HOST} is in use by another process; stop it "
                f"or choose another port (--redis-port)"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.pidfile.unlink(missing_ok=True)
        self.config_path.write_text(self._config())
        result = subprocess.run(
            [server, str(self.config_path)],
            capture_output=True,
            text=True,
            cwd=self.data_dir,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            check=False,
        )
        if result.returncode != 0:
            detail = (result.stderr + result.stdout).strip().splitlines()
            raise StackError(
                f"redis-server failed to start: {detail[-1] if detail else result.returncode}"
            )

    def _config(self) -> str:
        settings = {
            "bind": HOST,
            "port": str(self.port),
            "protected-mode": "yes",
            "daemonize": "yes",
            "supervised": "no",
            "pidfile": str(self.pidfile),
            "logfile": str(self.log_path),
            "loglevel": "notice",
            "dir": str(self.data_dir),
            "appendonly": "yes",
            "appendfsync": "everysec",
            # The AOF is the durability story; no periodic RDB forks on a small machine.
            "save": '""',
            "tcp-backlog": "128",
        }
        return "".join(f"{key} {value}\n" for key, value in settings.items())
