"""A real single-node Apache Kafka broker (KRaft, combined broker + controller) on loopback.

One :class:`KafkaBroker` owns one data directory::

    <data_dir>/server.properties   broker config, rewritten on every start
    <data_dir>/log4j2.xml          log config (WARN, a few INFO loggers)
    <data_dir>/broker.json         ports and cluster id recorded when the storage was formatted
    <data_dir>/data/               log.dirs (partitions and the KRaft metadata log)
    <data_dir>/server.log          the broker's log (log4j2, rolled at 10 MB)
    <data_dir>/stdout.log          JVM stdout/stderr (crashes, GC warnings)
    <data_dir>/kafka.pid           PID of the running JVM

Guarantees: ``start`` is idempotent (a running broker of this directory is reused) and
returns only once the broker answers a Metadata request; ``stop``/``kill`` act only on the
PID recorded here and only if its command line names this directory's config, and return
once that process is gone. Data survives ``stop``/``kill`` + ``start``.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from flagstream.stack import cds, kafka_probe, process
from flagstream.stack.errors import StackError
from flagstream.stack.jars import ensure_jars, kafka_version, require_tool
from flagstream.stack.paths import HOST

JAVA_FIX = "apt-get update && apt-get install -y openjdk-17-jre-headless"
MAIN_CLASS = "kafka.Kafka"

# Sized for a shared 2-core machine: a small heap, G1 with short pauses, few threads.
JVM_OPTS = (
    "-Xms256m",
    "-Xmx512m",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-XX:+ExitOnOutOfMemoryError",
    "-Djava.awt.headless=true",
)

_LOG4J2 = """<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN">
  <Appenders>
    <RollingFile name="file" fileName="{log}" filePattern="{log}.%i">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
      <Policies><SizeBasedTriggeringPolicy size="10 MB"/></Policies>
      <DefaultRolloverStrategy max="3"/>
    </RollingFile>
  </Appenders>
  <Loggers>
    <Root level="WARN"><AppenderRef ref="file"/></Root>
    <Logger name="kafka.server.KafkaRaftServer" level="INFO"/>
    <Logger name="kafka.server.BrokerServer" level="INFO"/>
    <Logger name="kafka.server.ControllerServer" level="INFO"/>
    <Logger name="kafka.log.LogCleaner" level="INFO"/>
  </Loggers>
</Configuration>
"""


def _cluster_id() -> str:
    """A Kafka ``Uuid`` string: 16 random bytes, URL-safe base64, no padding, no leading '-'."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def check_java() -> tuple[str, str]:
    """Path of a ``java`` of version 17 or newer (Kafka 4 brokers need 17), and an identity
    string of that exact JDK build (for the class-data archive)."""
    java = require_tool("java", JAVA_FIX)
    out = subprocess.run(
        [java, "-version"], capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL
    )
    text = out.stderr + out.stdout
    match = re.search(r'version "(\d+)', text)
    if match is None or int(match.group(1)) < 17:
        found = match.group(1) if match else "unknown"
        raise StackError(f"Kafka 4 needs Java 17 or newer, found {found}; fix: {JAVA_FIX}")
    return java, f"{os.path.realpath(java)}\n{text}"


class KafkaBroker:
    """One KRaft broker+controller process listening on 127.0.0.1 only."""

    def __init__(
        self,
        data_dir: Path | str,
        port: int,
        controller_port: int,
        *,
        version: str | None = None,
        class_data_sharing: bool = True,
    ) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = port
        self.controller_port = controller_port
        self.version = version or kafka_version()
        self.class_data_sharing = class_data_sharing
        self.last_start_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._dump_archive_to: Path | None = None

    # --- paths -----------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def pidfile(self) -> Path:
        return self.data_dir / "kafka.pid"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "server.log"

    @property
    def stdout_path(self) -> Path:
        return self.data_dir / "stdout.log"

    @property
    def bootstrap(self) -> str:
        return f"{HOST}:{self.port}"

    @property
    def _markers(self) -> tuple[str, ...]:
        return (MAIN_CLASS, str(self.config_path))

    # --- state -----------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        """PID of this directory's running broker, or None."""
        if self._proc is not None and self._proc.poll() is None:
            # Our own unreaped child: its PID cannot have been reused, no marker check needed
            # (and /proc/<pid>/cmdline can be briefly empty while the launcher execs).
            return self._proc.pid
        pid = process.read_pid(self.pidfile)
        return pid if process.is_running(pid, self._markers) else None

    def is_running(self) -> bool:
        return self.pid is not None

    def is_ready(self) -> bool:
        return self.is_running() and kafka_probe.is_ready(HOST, self.port)

    # --- lifecycle -------------------------------------------------------------------------
    def start(self, timeout: float = 120.0) -> None:
        """Start the broker (or reuse the running one) and wait until it serves metadata."""
        began = time.monotonic()
        if not self.is_running():
            self._launch()
        self.wait_ready(timeout)
        self.last_start_seconds = time.monotonic() - began

    def stop(self, timeout: float = 30.0) -> None:
        """Controlled shutdown (SIGTERM); SIGKILL if still alive after ``timeout`` seconds."""
        for pid in self._pids():
            process.terminate(pid, self._markers_for(pid), timeout=timeout, proc=self._proc)
        self._forget()

    def kill(self) -> None:
        """Crash the broker (SIGKILL), as a power loss would."""
        for pid in self._pids():
            process.kill(pid, self._markers_for(pid), proc=self._proc)
        self._forget()

    def restart(self, timeout: float = 120.0) -> None:
        self.stop()
        self.start(timeout)

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not kafka_probe.is_ready(HOST, self.port):
            if not self.is_running():
                raise StackError(
                    f"Kafka exited during start-up; see {self.log_path} and {self.stdout_path}: "
                    f"{self._failure_hint()}"
                )
            if time.monotonic() >= deadline:
                raise StackError(
                    f"Kafka did not answer on {self.bootstrap} within {timeout:.0f}s; "
                    f"see {self.log_path}"
                )
            time.sleep(0.2)

    # --- internals -------------------------------------------------------------------------
    def _pids(self) -> list[int]:
        """The broker's PID; without a PID file, any JVM running this directory's config."""
        pid = self.pid
        return [pid] if pid is not None else process.find(self._markers)

    def _markers_for(self, pid: int) -> tuple[str, ...]:
        own_child = self._proc is not None and self._proc.pid == pid
        return () if own_child else self._markers

    def _forget(self) -> None:
        self.pidfile.unlink(missing_ok=True)
        self._proc = None

    def _failure_hint(self) -> str:
        return process.tail(self.stdout_path, 2) or process.tail(self.log_path, 2)

    def _launch(self) -> None:
        java, java_identity = check_java()
        for port, what in ((self.port, "broker"), (self.controller_port, "controller")):
            if process.port_in_use(HOST, port):
                raise StackError(
                    f"port {port} (Kafka {what}) on {HOST} is in use by another process; "
                    f"stop it or choose other ports (--kafka-port/--controller-port)"
                )
        jars = ensure_jars(self.version)
        archive_opts: list[str] = []
        if self._dump_archive_to is not None:
            archive_opts = [f"-XX:ArchiveClassesAtExit={self._dump_archive_to}"]
        elif self.class_data_sharing:
            archive = cds.ensure_archive(cds.archive_path(jars, java_identity), self._train)
            archive_opts = [f"-XX:SharedArchiveFile={archive}"] if archive else []
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "log4j2.xml").write_text(_LOG4J2.format(log=self.log_path))
        self.config_path.write_text(self._server_properties())
        base = [
            java,
            *JVM_OPTS,
            *os.environ.get("FLAGSTREAM_KAFKA_JVM_OPTS", "").split(),
            f"-Dlog4j2.configurationFile={self.data_dir / 'log4j2.xml'}",
            f"-Dkafka.logs.dir={self.data_dir}",
            "-cp",
            f"{jars}/*",
        ]
        base[1:1] = archive_opts
        self._format_storage(base)
        self._proc = process.spawn_detached(
            [*base, MAIN_CLASS, str(self.config_path)],
            log=self.stdout_path,
            cwd=self.data_dir,
        )
        self.pidfile.write_text(f"{self._proc.pid}\n")

    def _train(self, archive: Path) -> None:
        """Start and cleanly stop a throw-away broker that dumps its classes to ``archive``."""
        with tempfile.TemporaryDirectory(prefix="flagstream-cds-") as scratch:
            port, controller_port = process.free_ports(2)
            trainer = KafkaBroker(
                scratch, port, controller_port, version=self.version, class_data_sharing=False
            )
            trainer._dump_archive_to = archive
            try:
                trainer.start(timeout=300.0)
                proc = trainer._proc
                trainer.stop(timeout=300.0)  # the JVM writes the archive while exiting
            finally:
                trainer.kill()
            if proc is None or proc.returncode == -9:
                raise StackError("the training broker did not exit cleanly")

    def _format_storage(self, base: list[str]) -> None:
        """Format ``log.dirs`` once (KRaft ``--standalone``: this node is the only voter)."""
        record = self.data_dir / "broker.json"
        if (self.data_dir / "data" / "meta.properties").exists() and record.exists():
            formatted = json.loads(record.read_text())
            if formatted.get("controller_port") != self.controller_port:
                raise StackError(
                    f"{self.data_dir} was formatted for controller port "
                    f"{formatted.get('controller_port')}; use that port, or delete the data "
                    f"('flagstream stack down --purge')"
                )
            return
        cluster_id = _cluster_id()
        result = subprocess.run(
            [
                *base,
                "kafka.tools.StorageTool",
                "format",
                "--standalone",
                "-t",
                cluster_id,
                "-c",
                str(self.config_path),
            ],
            capture_output=True,
            text=True,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        if result.returncode != 0:
            lines = [x for x in (result.stderr + result.stdout).splitlines() if x.strip()]
            raise StackError(f"formatting Kafka storage failed: {lines[-1] if lines else '?'}")
        record.write_text(
            json.dumps(
                {
                    "cluster_id": cluster_id,
                    "port": self.port,
                    "controller_port": self.controller_port,
                    "version": self.version,
                }
            )
        )

    def _server_properties(self) -> str:
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": f"{HOST}:{self.controller_port}",
            "listeners": f"PLAINTEXT://{HOST}:{self.port},CONTROLLER://{HOST}:{self.controller_port}",
            "advertised.listeners": (
                f"PLAINTEXT://{HOST}:{self.port},CONTROLLER://{HOST}:{self.controller_port}"
            ),
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.data_dir / "data"),
            # A single node: every internal topic has one replica and one partition.
            "num.partitions": "1",
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            # Topics are created explicitly (the publisher owns flagstream.state).
            "auto.create.topics.enable": "false",
            # Compaction that a test can observe within seconds: roll segments often,
            # clean as soon as 1% of a log is dirty, check every second.
            "log.roll.ms": "30000",
            "log.cleaner.backoff.ms": "1000",
            "log.cleaner.min.cleanable.ratio": "0.01",
            "log.cleaner.min.compaction.lag.ms": "0",
            "log.cleaner.dedupe.buffer.size": str(16 * 1024 * 1024),
            "log.cleaner.threads": "1",
            "log.initial.task.delay.ms": "1000",
            # Few threads: the machine has 2 cores shared with everything else.
            "num.network.threads": "2",
            "num.io.threads": "2",
            "num.recovery.threads.per.data.dir": "1",
            "background.threads": "2",
        }
        return "".join(f"{key}={value}\n" for key, value in props.items())
