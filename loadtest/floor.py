"""The kernel floor: the fastest this machine can push one frame to N loopback connections.

A plain blocking ``send()`` loop in this process writes one frame of the measured size to
each of N accepted TCP connections; a sink child process (``python -m loadtest.floor``)
holds the other ends, reads with epoll and reports on a control connection when it has every
byte of the round. Per round two times are taken from the start of the loop:

- ``send_loop``: the loop returned (on loopback the whole TCP path to the peer's receive
  queue runs inside ``send()``, so this is the kernel's write-side cost of a fan-out);
- ``delivered``: the sink has read the frame from all N connections (the same two-process
  shape as relay -> swarm, minus everything a relay and an SSE client do on top).

A relay's fan-out figure divided by ``delivered`` says how far above the floor it is.
"""

from __future__ import annotations

import argparse
import selectors
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

from loadtest.stats import summarize
from loadtest.sysinfo import raise_nofile_limit

__all__ = ["FloorResult", "measure_floor"]


@dataclass(frozen=True, slots=True)
class FloorResult:
    connections: int
    frame_bytes: int
    rounds: int
    send_loop_s: dict[str, float | int]
    delivered_s: dict[str, float | int]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("floor sink closed its control connection")
        buf += chunk
    return buf


def measure_floor(
    connections: int, frame_bytes: int, *, rounds: int = 20, warmup: int = 3, timeout: float = 60
) -> FloorResult:
    """Measure ``rounds`` fan-outs of a ``frame_bytes`` frame to ``connections`` sockets."""
    if connections < 1 or frame_bytes < 1:
        raise ValueError("connections and frame_bytes must be >= 1")
    raise_nofile_limit(connections + 64)
    frame = (b"x" * (frame_bytes - 1)) + b"\n"
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    listener.settimeout(timeout)
    port = listener.getsockname()[1]
    sink = subprocess.Popen(
        [sys.executable, "-m", "loadtest.floor", str(port), str(connections), str(frame_bytes)],
        stdin=subprocess.DEVNULL,
    )
    socks: list[socket.socket] = []
    ctl: socket.socket | None = None
    try:
        ctl, _ = listener.accept()
        ctl.settimeout(timeout)
        if _recv_exact(ctl, 4) != b"ctl\n":
            raise ConnectionError("floor sink sent a bad greeting")
        for _ in range(connections):
            s, _ = listener.accept()
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            socks.append(s)
        ctl.sendall(b"go\n")
        send_loop: list[float] = []
        delivered: list[float] = []
        for r in range(warmup + rounds):
            t0 = time.perf_counter()
            for s in socks:
                s.send(frame)
            t1 = time.perf_counter()
            _recv_exact(ctl, 1)
            t2 = time.perf_counter()
            if r >= warmup:
                send_loop.append(t1 - t0)
                delivered.append(t2 - t0)
            time.sleep(0.01)  # let the sink settle, as a relay's rounds are apart
        return FloorResult(
            connections=connections,
            frame_bytes=frame_bytes,
            rounds=rounds,
            send_loop_s=summarize(send_loop),
            delivered_s=summarize(delivered),
        )
    finally:
        for s in socks:
            s.close()
        if ctl is not None:
            ctl.close()
        listener.close()
        try:
            sink.wait(timeout=10)
        except subprocess.TimeoutExpired:
            sink.kill()
            sink.wait()


def _sink(port: int, connections: int, frame_bytes: int) -> int:
    """Child side: connect, then acknowledge each complete round on the control socket."""
    raise_nofile_limit(connections + 64)
    ctl = socket.create_connection(("127.0.0.1", port))
    ctl.sendall(b"ctl\n")
    sel = selectors.DefaultSelector()
    socks = []
    for _ in range(connections):
        s = socket.create_connection(("127.0.0.1", port))
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
        socks.append(s)
    if _recv_exact(ctl, 3) != b"go\n":
        return 1
    per_round = connections * frame_bytes
    got = 0
    closed = 0
    while closed < connections:
        for key, _ in sel.select():
            sock: socket.socket = key.fileobj  # type: ignore[assignment]
            data = sock.recv(1 << 16)
            if not data:
                sel.unregister(sock)
                sock.close()
                closed += 1
                continue
            got += len(data)
            while got >= per_round:
                got -= per_round
                try:
                    ctl.sendall(b"r")
                except OSError:
                    return 0
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="floor sink (started by measure_floor)")
    parser.add_argument("port", type=int)
    parser.add_argument("connections", type=int)
    parser.add_argument("frame_bytes", type=int)
    args = parser.parse_args(argv)
    return _sink(args.port, args.connections, args.frame_bytes)


if __name__ == "__main__":
    sys.exit(main())
