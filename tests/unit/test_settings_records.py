"""streams.settings (environment in, environment out) and streams.records (readers, facts)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from streams.errors import InvalidRecord, SettingsError
from streams.records import (
    Beacon,
    SessionFact,
    parse_beacon,
    parse_order,
)
from streams.settings import Settings

T0 = 1_741_003_200_000


def test_defaults_without_environment() -> None:
    assert Settings.from_env({}) == Settings()


def test_from_env_converts_every_kind() -> None:
    s = Settings.from_env({
        "REVWATCH_PARTITIONS": "4", "REVWATCH_MIN_REVENUE_PER_HOUR": "12.5",
        "REVWATCH_DATA_DIR": "/tmp/rw", "REVWATCH_CORS_ORIGINS": " https://a.example , ,b ",
        "REVWATCH_BROKER": "kafka://127.0.0.1:19092", "OTHER": "ignored"})
    assert s.partitions == 4
    assert s.min_revenue_per_hour == 12.5
    assert s.data_dir == Path("/tmp/rw")
    assert s.cors_origins == ("https://a.example", "b")
    assert s.broker_host_port == "127.0.0.1:19092"


@pytest.mark.parametrize(("variable", "text"), [
    ("REVWATCH_PARTITIONS", "eight"), ("REVWATCH_WEB_PORT", "1.5"),
    ("REVWATCH_FALSE_ALARMS_PER_CAMPAIGN_DAY", "lots"),
])
def test_a_value_of_the_wrong_type_names_its_variable(variable: str, text: str) -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({variable: text})
    assert raised.value.variable == variable
    assert str(raised.value).startswith(f"{variable}: expected")
    assert repr(text) in str(raised.value)


@pytest.mark.parametrize(("variable", "text"), [
    ("REVWATCH_BROKER", "127.0.0.1:9092"), ("REVWATCH_WEB_PORT", "70000"),
    ("REVWATCH_PARTITIONS", "0"), ("REVWATCH_MAX_BODY_BYTES", "10"),
    ("REVWATCH_SESSION_TIMEOUT_MINUTES", "0"), ("REVWATCH_CURRENCY", "EURO"),
    ("REVWATCH_MAX_CAMPAIGN_LABELS", "0"), ("REVWATCH_CONVERSION_STAKE_POWER", "-0.5"),
])
def test_an_unusable_value_names_its_variable(variable: str, text: str) -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({variable: text})
    assert raised.value.variable == variable


def test_to_env_round_trips() -> None:
    s = Settings(broker="kafka://h:1", partitions=3, data_dir=Path("/tmp/x"),
                 cors_origins=("https://a", "https://b"), allowed_query_params=("q",),
                 non_commerce_groups=(), lcp_wait_seconds=12.5, alertmanager_url="",
                 currency="EUR")
    env = s.to_env()
    assert all(k.startswith("REVWATCH_") and isinstance(v, str) for k, v in env.items())
    assert env["REVWATCH_CORS_ORIGINS"] == "https://a,https://b"
    assert Settings.from_env(env) == s
    assert Settings.from_env(Settings().to_env()) == Settings()


def test_replace_keeps_the_rest() -> None:
    s = Settings().replace(app_id="t1", partitions=2)
    assert (s.app_id, s.partitions, s.beacons_topic) == ("t1", 2, "rum-beacons")


GOOD_BEACON = {"beacon_id": "b1", "session_id": "s1", "ts": T0, "page_url": "https://x/p",
               "lcp_ms": 2100, "cls": 0.12, "device": "mobile", "custom": {"k": 1}}
GOOD_ORDER = {"order_id": "o1", "session_id": "s1", "ts": T0, "revenue": 19, "currency": "eur"}


def test_parse_beacon_reads_types_and_keeps_extra_fields() -> None:
    b = parse_beacon(orjson.dumps(GOOD_BEACON))
    assert b == Beacon("b1", "s1", T0, "https://x/p", lcp_ms=2100.0, cls=0.12, device="mobile")
    assert isinstance(b.lcp_ms, float)
    assert b.extra == {"custom": {"k": 1}}
    assert orjson.loads(b.to_json()) == {**GOOD_BEACON, "lcp_ms": 2100.0}


@pytest.mark.parametrize(("change", "reason"), [
    ({"session_id": ""}, "'session_id' must be a non-empty string"),
    ({"beacon_id": 7}, "'beacon_id' must be a non-empty string"),
    ({"ts": "today"}, "'ts' must be epoch milliseconds"),
    ({"ts": True}, "'ts' must be epoch milliseconds"),
    ({"ts": 1_700_000_000}, "'ts' is not a plausible epoch-ms timestamp"),  # seconds
    ({"lcp_ms": -1}, "'lcp_ms' is out of range"),
    ({"lcp_ms": 700_000}, "'lcp_ms' is out of range"),
    ({"inp_ms": "fast"}, "'inp_ms' must be a number or null"),
    ({"device": "fridge"}, "'device' must be one of"),
    ({"page_url": "x" * 5000}, "'page_url' is longer than 4096"),
    ({"received_at": "now"}, "'received_at' must be epoch milliseconds"),
])
def test_parse_beacon_rejects_with_a_reason(change: dict[str, object], reason: str) -> None:
    with pytest.raises(InvalidRecord) as raised:
        parse_beacon(orjson.dumps({**GOOD_BEACON, **change}))
    assert reason in raised.value.reason
    assert raised.value.field == next(iter(change))


@pytest.mark.parametrize(("raw", "reason"), [
    (b"{", "not valid JSON"), (b"[]", "expected a JSON object, got list"),
    (b'"text"', "expected a JSON object, got str"),
])
def test_unreadable_json_is_an_invalid_record(raw: bytes, reason: str) -> None:
    for parse in (parse_beacon, parse_order):
        with pytest.raises(InvalidRecord, match=reason):
            parse(raw)


def test_parse_order_reads_and_normalises_currency() -> None:
    o = parse_order(orjson.dumps(GOOD_ORDER))
    assert (o.order_id, o.revenue, o.currency, o.campaign) == ("o1", 19.0, "EUR", None)
    assert orjson.loads(o.to_json()) == {**GOOD_ORDER, "revenue": 19.0, "currency": "EUR"}


@pytest.mark.parametrize(("change", "reason"), [
    ({"revenue": -1}, "'revenue' must be a number from 0 to"),
    ({"revenue": "12"}, "'revenue' must be a number from 0 to"),
    ({"revenue": None}, "'revenue' must be a number from 0 to"),
    ({"currency": "E1R"}, "'currency' must be an ISO 4217 code"),
    ({"currency": "EURO"}, "'currency' must be a string of at most 3"),
    ({"order_id": ""}, "'order_id' must be a non-empty string"),
    ({"ts": 4_200_000_000_000}, "'ts' is not a plausible"),
])
def test_parse_order_rejects_with_a_reason(change: dict[str, object], reason: str) -> None:
    with pytest.raises(InvalidRecord) as raised:
        parse_order(orjson.dumps({**GOOD_ORDER, **change}))
    assert reason in raised.value.reason
    assert raised.value.field == next(iter(change))


def test_invalid_record_becomes_a_contract_dead_letter() -> None:
    letter = InvalidRecord("bad").to_dead_letter("orders", b"\xff{", received_at_ms=T0)
    assert letter == {"error": "bad", "topic": "orders", "raw": "\ufffd{", "received_at": T0}
    orjson.dumps(letter)


@pytest.mark.parametrize("fact", [
    SessionFact("session", "spring", T0, "s1", T0 - 5_000, 2_300.5, commerce=False,
                device="tablet"),
    SessionFact("order", "(none)", T0, "s2", T0 - 9_000, None, order_id="o1",
                order_ts_ms=T0, revenue=12.25, first_order=True, known_session=False),
    SessionFact("heartbeat", "", T0, "host:1"),
])
def test_session_fact_json_round_trip(fact: SessionFact) -> None:
    assert SessionFact.from_json(fact.to_json()) == fact


@pytest.mark.parametrize("raw", [b'{"kind": "session"}', b'{"kind": "session", "campaign": "c",'
                                 b' "watermark_ms": 1, "colour": "red"}', b"null"])
def test_session_fact_rejects_what_it_cannot_build(raw: bytes) -> None:
    with pytest.raises(InvalidRecord):
        SessionFact.from_json(raw)
