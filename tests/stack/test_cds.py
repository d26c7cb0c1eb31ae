"""The class-data archive: trained once, published atomically, failures remembered."""

from __future__ import annotations

from pathlib import Path

import pytest

from flagstream.stack import cds
from flagstream.stack.errors import StackError

pytestmark = pytest.mark.unit


def test_trains_once_and_publishes(tmp_path: Path) -> None:
    archive = cds.archive_path(tmp_path, "java 17 build x")
    calls: list[Path] = []

    def train(target: Path) -> None:
        calls.append(target)
        target.write_bytes(b"archive")

    assert cds.ensure_archive(archive, train) == archive
    assert cds.ensure_archive(archive, train) == archive
    assert len(calls) == 1 and calls[0] != archive  # written elsewhere, then renamed
    assert archive.read_bytes() == b"archive"


def test_a_failed_training_is_remembered(tmp_path: Path) -> None:
    archive = cds.archive_path(tmp_path, "jdk")
    calls = 0

    def train(target: Path) -> None:
        nonlocal calls
        calls += 1
        target.write_bytes(b"partial")
        raise StackError("broker crashed")

    assert cds.ensure_archive(archive, train) is None
    assert cds.ensure_archive(archive, train) is None
    assert calls == 1
    assert not archive.exists() and not archive.with_suffix(".jsa.tmp").exists()


def test_an_empty_archive_is_a_failure(tmp_path: Path) -> None:
    archive = cds.archive_path(tmp_path, "jdk")
    assert cds.ensure_archive(archive, lambda target: target.touch()) is None
    assert not archive.exists()


def test_disabled_by_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLAGSTREAM_KAFKA_CDS", "0")
    archive = cds.archive_path(tmp_path, "jdk")
    assert cds.ensure_archive(archive, lambda target: None) is None
    assert not archive.exists()


def test_archive_name_depends_on_the_jdk(tmp_path: Path) -> None:
    assert cds.archive_path(tmp_path, "a") != cds.archive_path(tmp_path, "b")
