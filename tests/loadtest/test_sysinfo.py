"""Limits and /proc readings."""

from __future__ import annotations

import os
import resource

import pytest

from loadtest.sysinfo import (
    LimitError,
    cpu_seconds,
    machine_facts,
    pid_tree,
    raise_nofile_limit,
    rss_bytes,
)

pytestmark = pytest.mark.unit


def test_raise_nofile_limit_reaches_the_hard_limit() -> None:
    soft = raise_nofile_limit(16)
    assert soft == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY:
        assert soft == hard
        with pytest.raises(LimitError, match="ulimit"):
            raise_nofile_limit(hard + 1)


def test_machine_facts_and_memory() -> None:
    facts = machine_facts()
    assert facts["cores"] == os.cpu_count()
    assert facts["python"].count(".") == 2
    assert os.getpid() in pid_tree(os.getpid())
    assert rss_bytes(os.getpid(), tree=False) > 1_000_000
    assert rss_bytes(2**22 + 12345) == 0  # no such process


def test_cpu_seconds_grows_with_work() -> None:
    before = cpu_seconds(os.getpid(), tree=False)
    deadline = cpu_seconds(os.getpid(), tree=False) + 0.05
    while cpu_seconds(os.getpid(), tree=False) < deadline:
        sum(range(10_000))
    assert cpu_seconds(os.getpid()) >= before + 0.05
    assert cpu_seconds(2**22 + 12345) == 0
