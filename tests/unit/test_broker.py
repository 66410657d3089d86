"""LocalBroker without Kafka: configuration, probes and every start-up error message.

Fake ``java`` / ``mvn`` scripts stand in for the real programs, so the failure paths
(broker exits, broker never answers, Maven fails) run in well under a second each.
"""

from __future__ import annotations

import base64
import functools
import os
import shutil
import socket
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.broker import (
    LocalBroker,
    default_cache_dir,
    metadata_answers,
    new_cluster_id,
    port_is_free,
    split_host_port,
)
from streams.broker_cli import main
from streams.errors import BrokerError
from streams.settings import Settings


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def foreign_listener() -> Iterator[int]:
    """A plain TCP server that answers every connection like a web server, not like Kafka."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.settimeout(0.05)
        stop = threading.Event()
        thread = threading.Thread(target=_answer_http, args=(server, stop), daemon=True)
        thread.start()
        yield server.getsockname()[1]
        stop.set()
        thread.join(timeout=2)


def _answer_http(server: socket.socket, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            connection, _ = server.accept()
        except TimeoutError:
            continue
        with connection:
            connection.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")


@pytest.fixture
def silent_listener() -> Iterator[int]:
    """A listener whose connections are never accepted nor answered."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield server.getsockname()[1]


def _script(folder: Path, name: str, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(f"#!/bin/sh\n{body}\n", encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def _installed_cache(tmp_path: Path) -> Path:
    cache = tmp_path / "libs"
    cache.mkdir()
    (cache / "kafka_2.13-3.9.1.jar").touch()
    (cache / ".complete").write_text("fake\n", encoding="utf-8")
    return cache


def _fake_java_broker(tmp_path: Path, kafka_body: str, port: int) -> LocalBroker:
    """A broker whose `java` formats fine and then runs ``kafka_body`` as the broker."""
    bin_dir = tmp_path / "bin"
    body = f'case "$*" in *StorageTool*) exit 0;; esac\n{kafka_body}'
    _script(bin_dir, "java", body)
    which = functools.partial(shutil.which, path=str(bin_dir))
    return LocalBroker(f"127.0.0.1:{port}", tmp_path / "data",
                       cache_dir=_installed_cache(tmp_path), which=which)


# ---- configuration -------------------------------------------------------------------------


def _properties(broker: LocalBroker, controller_port: int) -> dict[str, str]:
    text = broker.server_properties(controller_port)
    return dict(line.split("=", 1) for line in text.splitlines())


def test_server_properties_configure_a_single_kraft_node(tmp_path: Path) -> None:
    broker = LocalBroker("127.0.0.1:19555", tmp_path / "d", cache_dir=tmp_path / "c")
    props = _properties(broker, 19556)
    assert props["process.roles"] == "broker,controller"
    assert props["node.id"] == "1"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19556"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19555,CONTROLLER://127.0.0.1:19556"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19555"
    assert props["controller.listener.names"] == "CONTROLLER"
    assert props["log.dirs"] == str((tmp_path / "d" / "kafka" / "data").absolute())
    for key in ("offsets.topic.replication.factor", "transaction.state.log.replication.factor",
                "transaction.state.log.min.isr", "min.insync.replicas", "num.partitions"):
        assert props[key] == "1", key
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert props["auto.create.topics.enable"] == "true"


def test_wildcard_listener_advertises_loopback(tmp_path: Path) -> None:
    props = _properties(LocalBroker("0.0.0.0:9092", tmp_path), 9093)
    assert props["listeners"].startswith("PLAINTEXT://0.0.0.0:9092,")
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:9092"


def test_write_config_writes_both_files(tmp_path: Path) -> None:
    broker = LocalBroker("127.0.0.1:19555", tmp_path, cache_dir=tmp_path / "c")
    (tmp_path / "kafka").mkdir()
    path = broker.write_config(19600)
    assert "controller.quorum.voters=1@127.0.0.1:19600\n" in path.read_text(encoding="utf-8")
    assert (tmp_path / "kafka" / "log4j.properties").read_text().startswith("log4j.rootLogger")


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        pytest.param({"XDG_CACHE_HOME": "/x/cache"}, Path("/x/cache/revwatch/kafka-3.9.1/libs"),
                     id="xdg"),
        pytest.param({}, Path.home() / ".cache/revwatch/kafka-3.9.1/libs", id="home"),
    ],
)
def test_default_cache_dir(env: dict[str, str], expected: Path) -> None:
    assert default_cache_dir("3.9.1", env) == expected


def test_cluster_id_is_a_kafka_uuid() -> None:
    ids = {new_cluster_id() for _ in range(200)}
    assert len(ids) == 200
    for text in ids:
        assert len(text) == 22
        assert not text.startswith("-")
        assert len(base64.urlsafe_b64decode(text + "==")) == 16


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("127.0.0.1:9092", ("127.0.0.1", 9092), id="ipv4"),
        pytest.param("localhost:19092", ("localhost", 19092), id="name"),
        pytest.param("[::1]:9092", ("::1", 9092), id="ipv6"),
    ],
)
def test_split_host_port(text: str, expected: tuple[str, int]) -> None:
    assert split_host_port(text) == expected


@pytest.mark.parametrize("text", [pytest.param("127.0.0.1", id="no-port"),
                                  pytest.param("h:0", id="zero"), pytest.param("h:70000", id="big"),
                                  pytest.param("h:x", id="word")])
def test_split_host_port_rejects(text: str) -> None:
    with pytest.raises(BrokerError, match="host:port"):
        split_host_port(text)


# ---- probes --------------------------------------------------------------------------------


def test_probes_tell_a_foreign_listener_from_kafka(foreign_listener: int) -> None:
    assert port_is_free("127.0.0.1", foreign_listener) is False
    assert metadata_answers("127.0.0.1", foreign_listener) is False


def test_probe_of_a_silent_listener_is_bounded(silent_listener: int) -> None:
    began = time.monotonic()
    assert metadata_answers("127.0.0.1", silent_listener, timeout_s=0.3) is False
    assert 0.25 < time.monotonic() - began < 2.0


def test_probes_on_a_closed_port() -> None:
    port = _free_port()
    assert port_is_free("127.0.0.1", port) is True
    assert metadata_answers("127.0.0.1", port) is False


def test_port_is_free_says_none_for_an_address_of_another_machine() -> None:
    assert port_is_free("192.0.2.1", 9092) is None  # TEST-NET-1, never local


# ---- error messages ------------------------------------------------------------------------


def test_start_without_java_names_the_package(tmp_path: Path) -> None:
    empty_path = tmp_path / "empty-bin"
    empty_path.mkdir()
    which = functools.partial(shutil.which, path=str(empty_path))
    broker = LocalBroker(f"127.0.0.1:{_free_port()}", tmp_path / "d",
                         cache_dir=tmp_path / "c", which=which)
    with pytest.raises(BrokerError, match=r"`java` is not on PATH.*openjdk-17-jre-headless"):
        broker.start(timeout_s=5)
    assert not (tmp_path / "c").exists()


def test_install_without_maven_names_the_package(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    _script(bin_dir, "java", "exit 0")
    which = functools.partial(shutil.which, path=str(bin_dir))
    broker = LocalBroker(cache_dir=tmp_path / "c", which=which)
    with pytest.raises(BrokerError, match=r"`mvn` is not on PATH.*apt-get install maven"):
        broker.install()


def test_install_shows_the_tail_of_a_failed_maven_run(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    _script(bin_dir, "java", "exit 0")
    _script(bin_dir, "mvn", 'echo "[ERROR] Could not resolve org.apache.kafka:kafka_2.13"; exit 1')
    which = functools.partial(shutil.which, path=str(bin_dir))
    broker = LocalBroker(cache_dir=tmp_path / "c", which=which)
    with pytest.raises(BrokerError, match=r"Maven failed \(exit 1\)[\s\S]*Could not resolve"):
        broker.install()
    assert not (tmp_path / "c" / ".complete").exists()


def test_install_runs_maven_once_then_trusts_the_marker(tmp_path: Path) -> None:
    bin_dir, calls = tmp_path / "bin", tmp_path / "mvn-calls"
    _script(bin_dir, "java", "exit 0")
    _script(bin_dir, "mvn", f'echo "$*" >> {calls}\nfor a in "$@"; do case "$a" in '
            '-DoutputDirectory=*) touch "${a#-DoutputDirectory=}/kafka_2.13-3.9.1.jar";; '
            "esac; done")
    which = functools.partial(shutil.which, path=str(bin_dir))
    broker = LocalBroker(cache_dir=tmp_path / "c", which=which)
    assert broker.install() == (tmp_path / "c").absolute()
    assert broker.install() == (tmp_path / "c").absolute()
    (args,) = calls.read_text().splitlines()
    assert "dependency:copy-dependencies" in args
    assert "-B" in args
    pom = (tmp_path / "c" / "revwatch-kafka.pom.xml").read_text()
    assert "<artifactId>kafka_2.13</artifactId>\n      <version>3.9.1</version>" in pom
    assert "slf4j-reload4j" in pom
    assert (tmp_path / "c" / ".complete").read_text().startswith("kafka 3.9.1, 1 jars")
    (tmp_path / "c" / "kafka_2.13-3.9.1.jar").unlink()  # a cache someone pruned
    broker.install()
    assert len(calls.read_text().splitlines()) == 2


def test_install_rejects_a_maven_run_without_the_kafka_jar(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    _script(bin_dir, "java", "exit 0")
    _script(bin_dir, "mvn", "exit 0")
    broker = LocalBroker(cache_dir=tmp_path / "c",
                         which=functools.partial(shutil.which, path=str(bin_dir)))
    with pytest.raises(BrokerError, match=r"no kafka_2\.13 jar"):
        broker.install()
    assert not (tmp_path / "c" / ".complete").exists()


def test_install_is_skipped_when_the_marker_exists(tmp_path: Path) -> None:
    cache = _installed_cache(tmp_path)
    broker = LocalBroker(cache_dir=cache, which=lambda _name: None)  # would fail if it looked
    assert broker.install() == cache.absolute()


def test_start_refuses_a_data_dir_that_is_a_file(tmp_path: Path) -> None:
    data = tmp_path / "revwatch-data"
    data.write_text("not a directory", encoding="utf-8")
    broker = LocalBroker(f"127.0.0.1:{_free_port()}", data, cache_dir=tmp_path / "c")
    with pytest.raises(BrokerError, match=r"revwatch-data is a file.*REVWATCH_DATA_DIR"):
        broker.start(timeout_s=5)


def test_start_refuses_a_port_held_by_another_program(
    tmp_path: Path, foreign_listener: int
) -> None:
    broker = LocalBroker(f"127.0.0.1:{foreign_listener}", tmp_path / "d",
                         cache_dir=tmp_path / "c")
    with pytest.raises(BrokerError, match=rf"port {foreign_listener} .* another program"):
        broker.start(timeout_s=5)
    assert not (tmp_path / "c").exists(), "must fail before installing anything"


def test_start_reports_a_broker_that_exits(tmp_path: Path) -> None:
    broker = _fake_java_broker(tmp_path, 'echo "Exiting Kafka due to fatal exception"; exit 1',
                               _free_port())
    with pytest.raises(BrokerError, match=r"exited during start[\s\S]*due to fatal exception"):
        broker.start(timeout_s=10)
    assert broker.status().running is False


def test_start_times_out_and_stops_a_silent_broker(tmp_path: Path) -> None:
    broker = _fake_java_broker(tmp_path, "exec sleep 30", _free_port())
    began = time.monotonic()
    with pytest.raises(BrokerError, match=r"did not answer on 127\.0\.0\.1:\d+ within 1 s"):
        broker.start(timeout_s=1.0)
    assert time.monotonic() - began < 5.0
    assert broker.status().running is False
    assert not (tmp_path / "data" / "kafka" / "broker.pid").exists()


def test_start_records_cluster_id_and_controller_port(tmp_path: Path) -> None:
    port = _free_port()
    broker = _fake_java_broker(tmp_path, "exit 3", port)
    with pytest.raises(BrokerError):
        broker.start(timeout_s=5)
    home = tmp_path / "data" / "kafka"
    assert len((home / "cluster.id").read_text().strip()) == 22
    controller = int((home / "controller.port").read_text())
    assert controller != port
    assert f"1@127.0.0.1:{controller}" in (home / "server.properties").read_text()


# ---- status, stop and the command line -----------------------------------------------------


def test_status_of_a_broker_never_started(tmp_path: Path) -> None:
    broker = LocalBroker(f"127.0.0.1:{_free_port()}", tmp_path)
    state = broker.status()
    assert (state.running, state.answering, state.pid) == (False, False, None)
    assert state.log_path == (tmp_path / "kafka" / "broker.log").absolute()
    broker.stop()  # no error when nothing runs


def test_a_pid_file_naming_another_process_is_not_our_broker(tmp_path: Path) -> None:
    (tmp_path / "kafka").mkdir()
    (tmp_path / "kafka" / "broker.pid").write_text(f"{os.getpid()}\n")
    broker = LocalBroker(f"127.0.0.1:{_free_port()}", tmp_path)
    assert broker.status().running is False
    broker.stop()  # must not signal this test process
    assert not (tmp_path / "kafka" / "broker.pid").exists()


def test_cli_status_and_errors(
    tmp_path: Path, foreign_listener: int, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = Settings(broker=f"kafka://127.0.0.1:{foreign_listener}", data_dir=tmp_path)
    assert main("status", settings) == 1
    assert "kafka not running on 127.0.0.1:" in capsys.readouterr().out
    assert main("start", settings) == 1
    assert f"revwatch broker start: port {foreign_listener}" in capsys.readouterr().err
    assert main("stop", settings) == 0
    assert "kafka was not running" in capsys.readouterr().out
    assert main("restart", settings) == 2
    assert "unknown action 'restart'" in capsys.readouterr().err


# ---- topics (no broker needed) -------------------------------------------------------------


def test_revwatch_topics_copartition_the_session_topics() -> None:
    from streams.topics import revwatch_topics

    topics = revwatch_topics(Settings(partitions=6))
    assert topics == {"rum-beacons": 6, "orders": 6, "revwatch-session-facts": 6, "alerts": 6,
                      "revwatch-dead-letter": 6, "revwatch-verdicts": 1}


def test_ensure_topics_rejects_zero_partitions() -> None:
    from streams.topics import ensure_topics

    with pytest.raises(ValueError, match="must be >= 1"):
        ensure_topics("127.0.0.1:1", {"t": 0})


def test_ensure_topics_names_an_unreachable_broker() -> None:
    from streams.topics import ensure_topics

    began = time.monotonic()
    with pytest.raises(BrokerError, match=r"cannot reach Kafka at 127\.0\.0\.1:\d+.*broker start"):
        ensure_topics(f"127.0.0.1:{_free_port()}", {"t": 1}, timeout_s=1.0)
    assert time.monotonic() - began < 5.0
