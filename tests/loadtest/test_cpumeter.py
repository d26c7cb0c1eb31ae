"""``loadtest.cpumeter``: CPU of named processes and of the machine, read from the real /proc."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from loadtest import cpumeter

pytestmark = pytest.mark.unit


def _spin(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_this_process_is_the_client_and_its_work_is_counted() -> None:
    before = cpumeter.read({})
    _spin(0.2)
    use = cpumeter.since(before, {})
    assert set(use.seconds) == {cpumeter.CLIENT}
    assert 0.2 <= use.seconds[cpumeter.CLIENT] < 5
    # at least the core this process kept busy, never more than the machine has
    assert 0.5 <= use.machine_cores_busy <= use.cores == os.cpu_count()


def _measure_half_a_second_of(argv: list[str], name: str) -> cpumeter.CpuUse:
    """Start ``argv`` (in a process group of its own), measure it as ``name`` for ~0.5 s."""
    process = subprocess.Popen(argv, start_new_session=True)
    try:
        time.sleep(0.2)
        before = cpumeter.read({name: process.pid})
        time.sleep(0.5)
        return cpumeter.since(before, {name: process.pid})
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def test_a_named_process_counts_its_descendants() -> None:
    # a shell (the named process) whose child spins: the broker's launcher and its JVM
    spin = f"{sys.executable} -c 'while True: pass'"
    use = _measure_half_a_second_of(["sh", "-c", f"{spin}; true"], "launcher")
    assert 0.05 <= use.seconds["launcher"] < 5  # ~0.5 s on an idle machine


def test_a_child_that_exits_within_the_interval_stays_counted(tmp_path: Path) -> None:
    # Redis's AOF rewrite: a child forked, busy for a while, reaped before the second reading
    spin = "import time\ne = time.process_time() + 0.3\nwhile time.process_time() < e: pass"
    reaped = tmp_path / "reaped"
    parent = subprocess.Popen(
        ["sh", "-c", f'{sys.executable} -c "$0"; touch "$1"; sleep 30', spin, str(reaped)],
        start_new_session=True,
    )
    try:
        before = cpumeter.read({"forker": parent.pid})
        deadline = time.monotonic() + 30
        while not reaped.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        use = cpumeter.since(before, {"forker": parent.pid})
    finally:
        os.killpg(parent.pid, signal.SIGKILL)
        parent.wait()
    assert reaped.exists()
    assert 0.2 <= use.seconds["forker"] < 5


def test_a_busy_named_process_is_counted() -> None:
    use = _measure_half_a_second_of([sys.executable, "-c", "while True: pass"], "spinner")
    assert 0.05 <= use.seconds["spinner"] < 5  # ~0.5 s on an idle machine
    assert use.seconds[cpumeter.CLIENT] < 0.2  # this process slept
    per_write = use.per_unit_us(1000)
    assert per_write["spinner"] == pytest.approx(use.seconds["spinner"] * 1000, abs=0.1)


def test_a_process_that_exits_counts_as_nothing_more() -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    before = cpumeter.read({"gone": gone.pid})
    gone.wait()
    use = cpumeter.since(before, {"gone": gone.pid})
    assert use.seconds["gone"] == 0.0  # never negative, never an error


def test_machine_time_counts_busy_fields_and_all_ticks(tmp_path: Path) -> None:
    stat = tmp_path / "stat"
    ticks = os.sysconf("SC_CLK_TCK")
    # user nice system idle iowait irq softirq steal guest guest_nice
    stat.write_text(
        f"cpu  {ticks} {ticks} {ticks} {50 * ticks} {9 * ticks} 0 {ticks} {ticks} 7 7\n"
    )
    assert cpumeter.machine_time(stat) == cpumeter.MachineTime(
        busy=pytest.approx(5.0), total=pytest.approx(64.0)
    )
    stat.write_text("intr 1 2 3\n")
    with pytest.raises(ValueError, match="'cpu' line"):
        cpumeter.machine_time(stat)


@pytest.mark.parametrize(
    ("busy", "total", "share"),
    [
        (3.0, 4.0, 0.75),  # three of four core-seconds busy
        (0.0, 0.0, 0.0),  # no tick in the interval: nothing measured
        (2.0, 1.5, 1.0),  # iowait stepped back: never more than every core
    ],
)
def test_busy_cores_are_the_busy_share_of_all_ticks(
    monkeypatch: pytest.MonkeyPatch, busy: float, total: float, share: float
) -> None:
    # The same clock for busy and total: the figure can never exceed the machine's cores,
    # as busy ticks over wall time did (2.03 of 2 when the clocks were read a tick apart).
    monkeypatch.setattr(cpumeter, "machine_time", lambda: cpumeter.MachineTime(busy, total))
    use = cpumeter.since(cpumeter.CpuReading({}, cpumeter.MachineTime(0.0, 0.0)), {})
    assert use.machine_cores_busy == round(share * use.cores, 2)


@pytest.mark.parametrize("spec", ["publisher", "=12", "kafka=", "kafka=x1", "client=12"])
def test_a_malformed_named_pid_says_the_form(spec: str) -> None:
    with pytest.raises(ValueError, match="NAME=PID"):
        cpumeter.parse_named_pid(spec)


def test_a_named_pid_parses() -> None:
    assert cpumeter.parse_named_pid("kafka=1234") == ("kafka", 1234)
