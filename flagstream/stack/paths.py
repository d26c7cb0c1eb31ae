"""Default locations and ports of the local stack, each overridable by environment variable."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_KAFKA_PORT = 19092
DEFAULT_CONTROLLER_PORT = 19093
DEFAULT_REDIS_PORT = 16379
HOST = "127.0.0.1"


def cache_root() -> Path:
    """The cache root: ``$FLAGSTREAM_CACHE_DIR``, else ``$XDG_CACHE_HOME/flagstream``,
    else ``~/.cache/flagstream``."""
    explicit = os.environ.get("FLAGSTREAM_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "flagstream"


def default_data_dir() -> Path:
    """Where the shared stack keeps its data, logs and PID files."""
    explicit = os.environ.get("FLAGSTREAM_STACK_DIR")
    return Path(explicit).expanduser() if explicit else cache_root() / "stack"


def jar_cache_dir() -> Path:
    """Where downloaded Kafka jars are kept, one sub-directory per Kafka version."""
    return cache_root() / "kafka-jars"
