"""The data directory: owner-only permissions, atomic secrets, one process at a time."""

from __future__ import annotations

import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from embedded_support import embedded

from flagstream.embedded import DataDir, DataDirError


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_directory_and_files_are_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "data"
    async with embedded(path) as backends:
        backends.datadir.write_secret("admin-token", "s3cret-token-value")
        assert mode(path) == 0o700
        for name in ("flagstream.db", "lock", "admin-token"):
            assert mode(path / name) == 0o600, name
        assert backends.datadir.read_secret("admin-token") == "s3cret-token-value"
        assert backends.datadir.read_secret("missing") is None
        backends.datadir.write_secret("admin-token", "replaced-token-value")
        assert backends.datadir.read_secret("admin-token") == "replaced-token-value"
        assert sorted(p.name for p in path.iterdir() if p.name.startswith(".")) == []


def test_a_second_user_in_this_process_is_refused(tmp_path: Path) -> None:
    first = DataDir(tmp_path / "d")
    first.open()
    try:
        with pytest.raises(DataDirError) as error:
            DataDir(tmp_path / "d").open()
        message = str(error.value)
        assert "in use by another flagstream process" in message and "\n" not in message
        assert "--data-dir" in message and "--ephemeral" in message
    finally:
        first.close()
    again = DataDir(tmp_path / "d")
    again.open()  # released by close
    again.close()


def test_a_lock_held_by_another_process_names_its_pid(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys, time
                from pathlib import Path
                from flagstream.embedded import DataDir
                d = DataDir(Path({str(tmp_path / "d")!r}))
                d.open()
                print("locked", flush=True)
                time.sleep(60)
                """
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(DataDirError, match=f"pid {holder.pid}"):
            DataDir(tmp_path / "d").open()
    finally:
        holder.kill()
        holder.wait()
    # The kernel released the lock of the killed process: nothing stale is left behind.
    after = DataDir(tmp_path / "d")
    after.open()
    after.close()


def test_a_path_that_is_a_file_or_under_a_file_is_a_one_line_error(tmp_path: Path) -> None:
    afile = tmp_path / "file"
    afile.write_text("x")
    for path in (afile, afile / "sub"):
        with pytest.raises(DataDirError) as error:
            DataDir(path).open()
        assert "--data-dir" in str(error.value) and "\n" not in str(error.value)
