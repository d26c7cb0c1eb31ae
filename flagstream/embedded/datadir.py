"""The data directory of the embedded backends: one owner process, owner-only permissions.

Layout (``./.flagstream`` by default)::

    flagstream.db        the SQLite file (store + log), with -wal/-shm while open
    lock                 held with flock(LOCK_EX) by the process that uses the directory
    admin-token          the admin token ``flagstream dev`` generated (mode 0600)
    demo-sdk-key         the demo environment's SDK key as created (mode 0600)

Rules:

- **One process.** ``DataDir.open`` takes an exclusive, non-blocking ``flock`` on ``lock``
  and keeps it until ``close`` (or the process's death: the kernel releases it, so a killed
  process never leaves a stale lock behind). A second process gets ``DataDirError`` at once,
  naming the pid that holds it and the fix.
- **Owner only.** The directory is created ``0700`` and every file in it ``0600``; secrets are
  written to a temporary file with those permissions and renamed into place, so a secret is
  never readable by anyone else, not even for an instant, and never half-written.
- **One-line errors.** Every problem (not a directory, not writable, in use) is a
  ``DataDirError`` whose message says what to do.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path

from flagstream.embedded.database import DataDirError

__all__ = ["DB_FILE", "DataDir", "DataDirError"]

DB_FILE = "flagstream.db"
_LOCK_FILE = "lock"


class DataDir:
    """A locked data directory (see the module rules)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock_fd: int | None = None

    @property
    def db_path(self) -> Path:
        return self.path / DB_FILE

    def open(self) -> None:
        """Create (0700) if missing and lock; ``DataDirError`` if it cannot be used."""
        try:
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        except FileExistsError:
            raise DataDirError(
                f"{self.path} exists and is not a directory; choose another --data-dir"
            ) from None
        except OSError as exc:
            raise DataDirError(
                f"cannot create the data directory {self.path}: {exc.strerror or exc}; "
                "choose a writable --data-dir"
            ) from None
        if not self.path.is_dir():
            raise DataDirError(f"{self.path} is not a directory; choose another --data-dir")
        lock_path = self.path / _LOCK_FILE
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise DataDirError(
                f"cannot write to the data directory {self.path}: {exc.strerror or exc}; "
                "fix its permissions or choose another --data-dir"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_pid(fd)
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                who = f" (pid {holder})" if holder else ""
                raise DataDirError(
                    f"the data directory {self.path} is in use by another flagstream "
                    f"process{who}; stop it, or start this one with another --data-dir "
                    "(or --ephemeral)"
                ) from None
            raise DataDirError(f"cannot lock {lock_path}: {exc.strerror or exc}") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd
        # SQLite creates the database with the process's umask and gives its -wal/-shm files
        # the database's mode: create it 0600 first (an empty file is a valid new database).
        os.close(os.open(self.db_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
        for existing in (self.db_path, lock_path):
            with contextlib.suppress(OSError):
                existing.chmod(0o600)

    def close(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # releases the flock

    # --- secrets kept beside the database ---------------------------------------------------

    def read_secret(self, name: str) -> str | None:
        """The content of secret ``name`` (stripped), or None if there is none."""
        try:
            text = (self.path / name).read_text().strip()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise DataDirError(
                f"cannot read {self.path / name}: {exc.strerror or exc}; fix its permissions"
            ) from None
        return text or None

    def write_secret(self, name: str, value: str) -> None:
        """Store ``value`` as ``name``, mode 0600, atomically (temporary file + rename)."""
        target = self.path / name
        tmp = self.path / f".{name}.tmp"
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, f"{value}\n".encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)


def _read_pid(fd: int) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        text = os.pread(fd, 32, 0).decode().strip()
        return int(text) if text else None
    return None
