"""A minimal, blocking Kafka metadata request over a raw socket.

Readiness means "the broker answers a Metadata request and lists itself". A raw request
keeps the probe free of asyncio (callable from sync code and from inside a running event
loop alike) and fast. Versions are negotiated first with ApiVersions v0, which every broker
answers; Kafka 4 removed Metadata v0-v3, so v4 (non-flexible, easy to parse) is used.

Wire format (big-endian): request = int32 size, int16 api_key, int16 api_version,
int32 correlation_id, string client_id, body; response = int32 size, int32 correlation_id,
body.
"""

from __future__ import annotations

import socket
import struct

_API_VERSIONS = 18
_METADATA = 3
_METADATA_VERSION = 4
_CLIENT_ID = b"flagstream-stack"


class ProbeError(Exception):
    """The broker did not answer as a ready Kafka broker would."""


def _request(sock: socket.socket, api_key: int, version: int, corr: int, body: bytes) -> bytes:
    header = struct.pack(">hhih", api_key, version, corr, len(_CLIENT_ID)) + _CLIENT_ID
    payload = header + body
    sock.sendall(struct.pack(">i", len(payload)) + payload)
    size = struct.unpack(">i", _recv_exact(sock, 4))[0]
    data = _recv_exact(sock, size)
    if struct.unpack(">i", data[:4])[0] != corr:
        raise ProbeError("correlation id mismatch")
    return data[4:]


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks: list[bytes] = []
    while n:
        chunk = sock.recv(n)
        if not chunk:
            raise ProbeError("connection closed by broker")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def metadata_brokers(host: str, port: int, timeout: float = 2.0) -> list[tuple[int, str, int]]:
    """``(node_id, host, port)`` of every broker the cluster metadata lists.

    Raises OSError when nothing listens, ProbeError on an unexpected answer.
    """
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        body = _request(sock, _API_VERSIONS, 0, 1, b"")
        error, count = struct.unpack(">hi", body[:6])
        if error:
            raise ProbeError(f"ApiVersions error {error}")
        ranges = {
            key: (low, high)
            for key, low, high in struct.iter_unpack(">hhh", body[6 : 6 + 6 * count])
        }
        low, high = ranges.get(_METADATA, (1, 0))
        if not low <= _METADATA_VERSION <= high:
            raise ProbeError(f"broker supports Metadata v{low}-v{high}, need v4")
        # topics: empty array (not null, which would mean "all topics"); no auto-creation.
        body = _request(sock, _METADATA, _METADATA_VERSION, 2, struct.pack(">ib", 0, 0))
        pos = 4  # throttle_time_ms
        (n_brokers,) = struct.unpack_from(">i", body, pos)
        pos += 4
        brokers: list[tuple[int, str, int]] = []
        for _ in range(n_brokers):
            node_id, host_len = struct.unpack_from(">ih", body, pos)
            pos += 6
            broker_host = body[pos : pos + host_len].decode()
            pos += host_len
            broker_port, rack_len = struct.unpack_from(">ih", body, pos)
            pos += 6 + max(rack_len, 0)
            brokers.append((node_id, broker_host, broker_port))
        return brokers


def is_ready(host: str, port: int, timeout: float = 2.0) -> bool:
    """True when the broker answers a Metadata request listing at least one broker."""
    try:
        return bool(metadata_brokers(host, port, timeout))
    except (OSError, ProbeError, struct.error):
        return False
