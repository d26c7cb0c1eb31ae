"""Kafka's jars, assembled from Maven Central with ``mvn`` once and cached per version.

Kafka 4 logs through SLF4J 1.7 to log4j2, so the broker needs ``log4j-slf4j-impl`` (the
SLF4J 1.x binding) next to ``log4j-core``/``log4j-api``; without the binding it logs nothing.
A version directory is used only once it holds the ``.complete`` marker, written after every
jar was copied, so an interrupted download is redone rather than half-used.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from flagstream.stack.errors import StackError
from flagstream.stack.paths import jar_cache_dir
from flagstream.stack.process import file_lock

KAFKA_VERSION = "4.1.2"
LOG4J_VERSION = "2.25.3"
_MARKER = ".complete"

_POM = """<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>flagstream.local</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>{kafka}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-core</artifactId>
      <version>{log4j}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-api</artifactId>
      <version>{log4j}</version>
    </dependency>
  </dependencies>
</project>
"""


def kafka_version() -> str:
    return os.environ.get("FLAGSTREAM_KAFKA_VERSION", KAFKA_VERSION)


def require_tool(name: str, fix: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise StackError(f"{name!r} not found on PATH; install it: {fix}")
    return path


def ensure_jars(version: str | None = None, *, cache: Path | None = None) -> Path:
    """The directory holding every jar Kafka ``version`` needs, downloading them if absent.

    Idempotent and safe to call from several processes at once (a file lock serialises the
    download). Needs network access to Maven Central only the first time per version.
    """
    version = version or kafka_version()
    root = cache or jar_cache_dir()
    target = root / version
    if (target / _MARKER).exists():
        return target
    with file_lock(root / f".{version}.lock"):
        if (target / _MARKER).exists():  # another process finished it while we waited
            return target
        mvn = require_tool("mvn", "apt-get update && apt-get install -y maven")
        build = root / f".build-{version}"
        shutil.rmtree(build, ignore_errors=True)
        build.mkdir(parents=True)
        (build / "pom.xml").write_text(_POM.format(kafka=version, log4j=LOG4J_VERSION))
        staging = build / "jars"
        print(f"downloading Kafka {version} jars from Maven Central (once)...", file=sys.stderr)
        result = subprocess.run(
            [
                mvn,
                "-q",
                "-B",
                "dependency:copy-dependencies",
                f"-DoutputDirectory={staging}",
                "-DincludeScope=runtime",
            ],
            cwd=build,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
        )
        jars = sorted(staging.glob("*.jar")) if staging.is_dir() else []
        if result.returncode != 0 or not any(j.name.startswith("kafka_2.13-") for j in jars):
            detail = _first_error(result.stdout + result.stderr) or f"exit {result.returncode}"
            raise StackError(
                f"failed to download Kafka {version} jars with mvn ({detail}); check access "
                f"to Maven Central (or a settings.xml mirror) and retry 'flagstream stack up'"
            )
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
        (target / _MARKER).write_text(f"kafka {version}, log4j {LOG4J_VERSION}\n")
        shutil.rmtree(build, ignore_errors=True)
    return target


def _first_error(output: str) -> str:
    for line in output.splitlines():
        if "[ERROR]" in line or "ERROR" in line:
            return line.replace("[ERROR]", "").strip()[:300]
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""
