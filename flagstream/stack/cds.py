"""A class-data-sharing (AppCDS) archive of Kafka's classes, made once per Kafka + JDK.

Why: on a shared 2-core machine most of a broker's start-up is the JVM loading and verifying
~5,000 classes from 60 jars; mapping them from an archive instead cuts start-up by roughly a
third to a half, and every fault test starts private brokers. JDK 17 has no
``-XX:+AutoCreateSharedArchive``, so the archive is trained explicitly: one throw-away broker
is started with ``-XX:ArchiveClassesAtExit`` and stopped cleanly, and the JVM writes the
classes it loaded while exiting.

Guarantees: the archive is published atomically (written to ``.tmp``, renamed when the
training broker exited normally) and under a file lock, so concurrent starts train once. Any
failure leaves a ``.failed`` marker and brokers simply start without the archive; a JVM that
cannot use an archive (other JDK build) ignores it with a warning. ``FLAGSTREAM_KAFKA_CDS=0``
disables it.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Callable
from pathlib import Path

from flagstream.stack.errors import StackError
from flagstream.stack.process import file_lock


def enabled() -> bool:
    return os.environ.get("FLAGSTREAM_KAFKA_CDS", "1") not in {"0", "false", "no", "off"}


def archive_path(jars: Path, java_identity: str) -> Path:
    """Where the archive for this jar set and this exact JDK build lives."""
    tag = hashlib.sha256(java_identity.encode()).hexdigest()[:12]
    return jars / f"kafka-cds-{tag}.jsa"


def ensure_archive(archive: Path, train: Callable[[Path], None]) -> Path | None:
    """The archive, training it with ``train(tmp_path)`` first if needed; None when it
    cannot be had (disabled, or training failed now or before)."""
    failed = archive.with_suffix(".failed")
    if archive.exists():
        return archive
    if not enabled() or failed.exists():
        return None
    with file_lock(archive.with_suffix(".lock")):
        if archive.exists():
            return archive
        tmp = archive.with_suffix(".jsa.tmp")
        tmp.unlink(missing_ok=True)
        print(
            "stack: training a class-data archive for faster Kafka starts (once)...",
            file=sys.stderr,
            flush=True,
        )
        try:
            train(tmp)
            if not tmp.exists() or tmp.stat().st_size == 0:
                raise StackError("the training broker wrote no archive")
        except StackError as error:
            tmp.unlink(missing_ok=True)
            failed.write_text(f"{error}\n")
            print(f"stack: no class-data archive ({error}); continuing without", file=sys.stderr)
            return None
        tmp.rename(archive)
    return archive
