"""flagstream.gcpolicy: freeze after startup, a larger youngest generation, or nothing."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from flagstream.gcpolicy import DEFAULT_GEN0_THRESHOLD, tune_collector


@pytest.fixture
def restore_collector() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


@pytest.mark.usefixtures("restore_collector")
def test_tuning_freezes_startup_objects_and_raises_only_the_first_threshold() -> None:
    gc.unfreeze()
    _, gen1, gen2 = gc.get_threshold()
    assert tune_collector(12_345) is True
    assert gc.get_threshold() == (12_345, gen1, gen2)
    assert gc.get_freeze_count() > 1000  # at least the modules this test process imported


@pytest.mark.usefixtures("restore_collector")
def test_zero_leaves_the_collector_as_python_configured_it() -> None:
    gc.unfreeze()
    before = gc.get_threshold()
    assert tune_collector(0) is False
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_the_default_is_the_documented_one() -> None:
    assert DEFAULT_GEN0_THRESHOLD == 20_000
