"""Fixtures for tests against the real local Kafka broker.

``kafka_bootstrap`` starts one :class:`~streams.broker.LocalBroker` per session on
``127.0.0.1:$REVWATCH_TEST_BROKER_PORT`` (default 19092) with its data under a session temp
dir (or ``$REVWATCH_TEST_DATA_DIR``). A broker already answering there is reused and left
running; one this fixture started is stopped at the end. A broker that cannot start fails
the tests with the :class:`~streams.errors.BrokerError` message; nothing is skipped.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

# streams.topics imports kafka-python with its import-time DeprecationWarning silenced; loading
# it first lets test modules import kafka directly under filterwarnings = error.
import streams.topics  # noqa: F401
from streams.broker import LocalBroker
from streams.errors import BrokerError


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    """The session's broker (reused if one already answers at the test address)."""
    port = int(os.environ.get("REVWATCH_TEST_BROKER_PORT", "19092"))
    data_env = os.environ.get("REVWATCH_TEST_DATA_DIR")
    data_dir = Path(data_env) if data_env else tmp_path_factory.mktemp("kafka-broker")
    broker = LocalBroker(f"127.0.0.1:{port}", data_dir)
    if broker.status().answering:
        yield broker
        return
    try:
        broker.start(timeout_s=120.0)
    except BrokerError as exc:
        pytest.fail(f"the local Kafka broker did not start: {exc}", pytrace=False)
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: LocalBroker) -> str:
    """``host:port`` of the session's running broker."""
    return kafka_broker.host_port


@pytest.fixture
def unique_name() -> str:
    """A fresh name for a topic, group or app id, so tests never share Kafka state."""
    return f"t-{uuid.uuid4().hex[:10]}"
