"""The local development broker: real Apache Kafka, single node, KRaft mode.

``revwatch broker start|stop|status`` and the integration tests run this broker. Production
points ``REVWATCH_BROKER`` at a real cluster and never uses this module.

Why Kafka 3.9.1: it is the newest release line that runs in KRaft mode (no ZooKeeper) on
Java 17 *and* still accepts the older protocol versions that aiokafka 0.14, kafka-python 3
and faust-streaming 0.15 send. Kafka 4.0 removed many of them (KIP-896), so 4.x is taken
only once those clients pass against it.

How it runs, with no Docker and no tarball download:

* :meth:`LocalBroker.install` writes a small pom naming ``org.apache.kafka:kafka_2.13`` and
  ``org.slf4j:slf4j-reload4j`` (so the broker logs) and lets Maven copy the classpath into
  a cache folder (default ``$XDG_CACHE_HOME/revwatch/kafka-<version>/libs``; the one
  place besides ``settings.py`` that reads the environment, because the cache is per user,
  not per revwatch setting). A ``.complete`` marker is written last, so a broken download
  is resumed, not trusted.
* :meth:`LocalBroker.start` writes ``server.properties`` under ``<data_dir>/kafka``, formats
  the storage once (``kafka.tools.StorageTool format``, cluster id kept in ``cluster.id``),
  launches ``kafka.Kafka`` detached (pid in ``broker.pid``, output in ``broker.log``) and
  returns once a Metadata request lists a live broker.

Files under ``<data_dir>/kafka``: ``server.properties``, ``log4j.properties``,
``cluster.id``, ``controller.port``, ``broker.pid``, ``broker.log`` (the previous one is
kept as ``broker.log.1``) and ``data/`` (the log dirs).
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from streams.broker_probes import metadata_answers, port_is_free, split_host_port
from streams.broker_proc import (
    exclusive,
    free_port,
    is_live_kafka,
    make_dir,
    run_tool,
    send_signal,
    tail,
)
from streams.errors import BrokerError

__all__ = ["BrokerStatus", "LocalBroker", "default_cache_dir", "metadata_answers",
           "new_cluster_id", "port_is_free", "split_host_port"]

Which = Callable[[str], str | None]

INSTALL_JAVA = "install Java 17: apt-get install openjdk-17-jre-headless"
INSTALL_MAVEN = "install Maven to fetch the Kafka jars: apt-get install maven"
_MARKER = ".complete"
# Brokers this Python process launched, by pid: any LocalBroker here can reap them (a child
# that exits stays a zombie until reaped), and a running one is never garbage-collected
# mid-run (Popen's ResourceWarning). The CLI exits and leaves its broker to init.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}
_POM = """<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>dev.revwatch</groupId>
  <artifactId>local-kafka</artifactId>
  <version>{version}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>{version}</version>
    </dependency>
    <dependency>
      <groupId>org.slf4j</groupId>
      <artifactId>slf4j-reload4j</artifactId>
      <version>1.7.36</version>
    </dependency>
  </dependencies>
</project>
"""
_LOG4J = """log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.state.change.logger=WARN
log4j.logger.kafka.request.logger=WARN
log4j.logger.org.apache.kafka.clients=WARN
"""


@dataclass(frozen=True, slots=True)
class BrokerStatus:
    """What :meth:`LocalBroker.status` found.

    Attributes:
        running: the process named in the pid file is alive and is ``kafka.Kafka``.
        answering: something at ``host_port`` answers a Kafka Metadata request.
        pid: the broker's process id when ``running``.
        host_port: the address probed.
        log_path: where the broker writes its output.
    """

    running: bool
    answering: bool
    pid: int | None
    host_port: str
    log_path: Path


def default_cache_dir(kafka_version: str, environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_CACHE_HOME`` (else ``~/.cache``) ``/revwatch/kafka-<version>/libs``."""
    env = os.environ if environ is None else environ
    base = Path(env["XDG_CACHE_HOME"]) if env.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return base / "revwatch" / f"kafka-{kafka_version}" / "libs"


class LocalBroker:
    """One single-node Kafka broker whose files live in ``<data_dir>/kafka``.

    Args:
        host_port: the PLAINTEXT listener, e.g. ``127.0.0.1:9092``.
        data_dir: revwatch's data folder (``REVWATCH_DATA_DIR``).
        cache_dir: where the jars go; see :func:`default_cache_dir`.
        kafka_version: the ``kafka_2.13`` release to run.
        heap_mb: the JVM's maximum heap.
        which: finds an executable on PATH (injected so tests can hide ``java``).
    """

    def __init__(
        self,
        host_port: str = "127.0.0.1:9092",
        data_dir: Path = Path(".revwatch"),
        *,
        cache_dir: Path | None = None,
        kafka_version: str = "3.9.1",
        heap_mb: int = 512,
        which: Which = shutil.which,
    ) -> None:
        self.host, self.port = split_host_port(host_port)
        self.host_port = host_port
        self.kafka_version = kafka_version
        self.heap_mb = heap_mb
        self.data_dir = data_dir.absolute()
        self.home = self.data_dir / "kafka"
        self.cache_dir = (cache_dir or default_cache_dir(kafka_version)).absolute()
        self.log_path = self.home / "broker.log"
        self._pid_path = self.home / "broker.pid"
        self._which = which

    # ---- install -------------------------------------------------------------------------

    def install(self) -> Path:
        """Fetch the broker's jars into ``cache_dir`` unless already complete; return it."""
        marker = self.cache_dir / _MARKER
        if marker.is_file() and any(self.cache_dir.glob(f"kafka_2.13-{self.kafka_version}*")):
            return self.cache_dir
        self._require("java", INSTALL_JAVA)
        mvn = self._require("mvn", INSTALL_MAVEN)
        make_dir(self.cache_dir, "the jar cache")
        pom = self.cache_dir / "revwatch-kafka.pom.xml"
        pom.write_text(_POM.format(version=self.kafka_version), encoding="utf-8")
        command = [mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
                   f"-DoutputDirectory={self.cache_dir}", "-DincludeScope=runtime"]
        output = run_tool(command, timeout_s=900.0, what="Maven")
        jars = sorted(self.cache_dir.glob("*.jar"))
        if not any(j.name.startswith(f"kafka_2.13-{self.kafka_version}") for j in jars):
            message = f"Maven finished but no kafka_2.13 jar is in {self.cache_dir}:\n{output}"
            raise BrokerError(message)
        marker.write_text(f"kafka {self.kafka_version}, {len(jars)} jars\n", encoding="utf-8")
        return self.cache_dir

    # ---- start ---------------------------------------------------------------------------

    def start(self, timeout_s: float = 90.0) -> None:
        """Install if needed, format once, launch, and return once the broker answers."""
        deadline = time.monotonic() + timeout_s
        java = self._require("java", INSTALL_JAVA)
        self._prepare_home()
        with exclusive(self.home / "start.lock"):  # two starts of one data dir: one launches
            if self._running_pid() is None:
                self._launch_new(java)
            self._wait_answering(deadline, timeout_s)

    def server_properties(self, controller_port: int) -> str:
        """The ``server.properties`` text for a single KRaft broker+controller."""
        advertised = "127.0.0.1" if self.host in {"", "0.0.0.0"} else self.host
        lines = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
            "listeners": f"PLAINTEXT://{self.host}:{self.port},"
                         f"CONTROLLER://127.0.0.1:{controller_port}",
            "advertised.listeners": f"PLAINTEXT://{advertised}:{self.port}",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "log.dirs": str(self.home / "data"),
            "num.partitions": "1",
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "10",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "true",
            "num.network.threads": "2",
            "num.io.threads": "4",
        }
        return "".join(f"{key}={value}\n" for key, value in lines.items())

    def write_config(self, controller_port: int) -> Path:
        """Write ``server.properties`` and ``log4j.properties``; return the former."""
        (self.home / "log4j.properties").write_text(_LOG4J, encoding="utf-8")
        path = self.home / "server.properties"
        path.write_text(self.server_properties(controller_port), encoding="utf-8")
        return path

    # ---- stop and status -----------------------------------------------------------------

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM the broker, wait, SIGKILL after ``timeout_s``; no error if not running."""
        pid = self._running_pid()
        if pid is not None:
            send_signal(pid, signal.SIGTERM)
            if not self._wait_exit(pid, timeout_s):
                send_signal(pid, signal.SIGKILL)
                self._wait_exit(pid, 10.0)
        self._pid_path.unlink(missing_ok=True)

    def status(self) -> BrokerStatus:
        """Whether our process runs and whether ``host_port`` answers Kafka requests."""
        pid = self._running_pid()
        answering = metadata_answers(self.host, self.port)
        return BrokerStatus(pid is not None, answering, pid, self.host_port, self.log_path)

    # ---- helpers -------------------------------------------------------------------------

    def _require(self, program: str, advice: str) -> str:
        path = self._which(program)
        if path is None:
            message = f"`{program}` is not on PATH; {advice}"
            raise BrokerError(message)
        return path

    def _prepare_home(self) -> None:
        for path in (self.data_dir, self.home):
            if path.exists() and not path.is_dir():
                message = (f"data dir {path} is a file, not a directory; move it away or set "
                           "REVWATCH_DATA_DIR to a directory")
                raise BrokerError(message)
        make_dir(self.home / "data", "the data dir")

    def _check_port_free(self) -> None:
        free = port_is_free(self.host, self.port)
        if free is None:
            message = (f"{self.host} is not an address of this machine; the local broker "
                       "listens on this machine only (REVWATCH_BROKER=kafka://127.0.0.1:9092)")
            raise BrokerError(message)
        if not free:
            who = "another Kafka broker" if metadata_answers(self.host, self.port) else (
                "another program")
            message = (f"port {self.port} on {self.host} is already in use by {who}, not the "
                       f"broker of {self.home}; stop it (find it with `ss -ltnp "
                       f"'sport = :{self.port}'`) or set REVWATCH_BROKER to another port")
            raise BrokerError(message)

    def _launch_new(self, java: str) -> None:
        self._check_port_free()
        libs = self.install()
        properties = self.write_config(self._controller_port())
        self._format_once(java, libs, properties)
        self._launch(java, libs, properties)

    def _controller_port(self) -> int:
        record = self.home / "controller.port"
        candidates = [self.port + 1]
        with contextlib.suppress(OSError, ValueError):
            candidates.insert(0, int(record.read_text(encoding="utf-8")))
        chosen = next((p for p in candidates if port_is_free("127.0.0.1", p)), None)
        chosen = chosen or free_port()
        record.write_text(f"{chosen}\n", encoding="utf-8")
        return chosen

    def _format_once(self, java: str, libs: Path, properties: Path) -> None:
        if (self.home / "data" / "meta.properties").is_file():
            return
        id_path = self.home / "cluster.id"
        if not id_path.is_file():
            id_path.write_text(new_cluster_id() + "\n", encoding="utf-8")
        cluster_id = id_path.read_text(encoding="utf-8").strip()
        command = [java, "-Xmx256m", f"-Dlog4j.configuration=file:{self.home}/log4j.properties",
                   "-cp", f"{libs}/*", "kafka.tools.StorageTool", "format", "--ignore-formatted",
                   "-t", cluster_id, "-c", str(properties)]
        run_tool(command, timeout_s=120.0, what="Kafka's storage format")

    def _launch(self, java: str, libs: Path, properties: Path) -> None:
        if self.log_path.exists():
            self.log_path.replace(self.log_path.with_suffix(".log.1"))
        command = [java, f"-Xmx{self.heap_mb}m", f"-Xms{min(self.heap_mb, 128)}m",
                   "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-XX:+ExitOnOutOfMemoryError",
                   "-Djava.awt.headless=true",
                   f"-Dlog4j.configuration=file:{self.home}/log4j.properties",
                   "-cp", f"{libs}/*", "kafka.Kafka", str(properties)]
        with self.log_path.open("wb") as log:
            process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=self.home, start_new_session=True)
        _CHILDREN[process.pid] = process
        self._pid_path.write_text(f"{process.pid}\n", encoding="utf-8")

    def _wait_answering(self, deadline: float, timeout_s: float) -> None:
        while time.monotonic() < deadline:
            if self._running_pid() is None:
                message = (f"the Kafka broker exited during start; the end of "
                           f"{self.log_path}:\n{tail(self.log_path)}")
                raise BrokerError(message)
            if metadata_answers(self.host, self.port):
                return
            time.sleep(0.2)
        self.stop()
        message = (f"the Kafka broker did not answer on {self.host_port} within {timeout_s:g}"
                   f" s and was stopped; the end of {self.log_path}:\n{tail(self.log_path)}")
        raise BrokerError(message)

    def _running_pid(self) -> int | None:
        try:
            pid = int(self._pid_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        child = _CHILDREN.get(pid)
        if child is not None and child.poll() is not None:
            del _CHILDREN[pid]
            return None
        return pid if child is not None or is_live_kafka(pid) else None

    def _wait_exit(self, pid: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._running_pid() != pid:
                return True
            time.sleep(0.1)
        return False


def new_cluster_id() -> str:
    """A Kafka cluster id: a random UUID, base64url without padding, not starting with '-'."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii").rstrip("=")
        if not text.startswith("-"):
            return text
