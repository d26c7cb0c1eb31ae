"""The process group's collector (relay/metrics.py) on real prometheus-client metric files:
a file a restarted worker is still creating is skipped, not a failed scrape."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.multiprocess import MultiProcessCollector

from relay.metrics import ProcessGroupCollector

NAME = "flagstream_relay_connections_opened_total"


def _worker_file(directory: Path, pid: int, opened: float) -> None:
    """What a worker's Counter writes: its value in ``counter_{pid}.db``."""
    values = MmapedDict(str(directory / f"counter_{pid}.db"))
    key = mmap_key(NAME[: -len("_total")], NAME, [], [], "Streams opened")
    values.write_value(key, opened, 0.0)
    values.close()


def test_a_metric_file_still_being_created_is_skipped(tmp_path: Path) -> None:
    _worker_file(tmp_path, 101, 3)
    _worker_file(tmp_path, 102, 4)
    (tmp_path / "counter_103.db").touch()  # a restarted worker between open() and sizing it
    (tmp_path / "notes.txt").write_text("not a metric file")

    # prometheus-client's own collector fails on it: the scrape answered 500 ...
    plain = CollectorRegistry()
    MultiProcessCollector(plain, path=str(tmp_path))  # type: ignore[no-untyped-call]
    with pytest.raises(Exception, match="unpack"):
        generate_latest(plain)

    # ... the group's collector merges the others.
    group = CollectorRegistry()
    ProcessGroupCollector(group, path=str(tmp_path))  # type: ignore[no-untyped-call]
    assert f"{NAME} 7.0" in generate_latest(group).decode()


def test_a_sized_file_without_values_yet_reads_as_empty(tmp_path: Path) -> None:
    _worker_file(tmp_path, 101, 3)
    (tmp_path / "counter_104.db").write_bytes(bytes(1 << 20))  # sized, its header not written
    MmapedDict(str(tmp_path / "counter_105.db")).close()  # headed, no value written yet
    group = CollectorRegistry()
    ProcessGroupCollector(group, path=str(tmp_path))  # type: ignore[no-untyped-call]
    assert f"{NAME} 3.0" in generate_latest(group).decode()
