"""The campaign stage shares the site slope: shares out to every facts partition, in from
any, dead-lettered when unreadable, kept over a restore."""

from __future__ import annotations

import math

import orjson
import pytest

from detectors.site import SlopeShare
from detectors.site_season import season_share_of
from streams.facts_codec import ShareFact, decode_facts, encode_shares
from streams.records import SessionFact
from streams.stages import CampaignStage, sharing_monitor
from streams.topics import campaign_partition
from tests.unit.test_campaign import MIN, T0, Traffic
from tests.unit.test_site_season import strata
from tests.unit.test_stages import TOPICS, Event, Message, dead_count, metrics

PARTITIONS = TOPICS.facts_partitions


def beat(watermark_ms: int) -> Event:
    fact = SessionFact("heartbeat", "", watermark_ms, "w:1")
    return Event(fact.to_json(), Message("facts", 0))


def warmed_stage(campaign: str, minutes: int = 200) -> CampaignStage:
    """A stage whose monitor has learned ``campaign``'s curve, ticked to ``minutes``."""
    stage = CampaignStage(sharing_monitor(PARTITIONS), TOPICS, metrics())
    source = Traffic(5, campaign=campaign, sessions_per_minute=40)
    for i in range(minutes):
        source.minute(stage.monitor, T0 + i * MIN)
        stage.batch([beat(T0 + (i + 1) * MIN)])
    return stage


def shares_sent(records: list[tuple[str, bytes | None, bytes, int | None]]
                ) -> list[tuple[int | None, bytes | None, list[ShareFact]]]:
    return [(p, k, [f for f in decode_facts(v) if isinstance(f, ShareFact)])
            for t, k, v, p in records if t == TOPICS.facts]


def test_a_refit_sends_this_workers_shares_to_every_facts_partition() -> None:
    stage = warmed_stage("spring")
    sent = []
    for i in range(200, 210):  # one refit in 10 minutes
        sent += shares_sent(stage.batch([beat(T0 + (i + 1) * MIN)]).records)
    assert sorted(p for p, _, _ in sent) == list(range(PARTITIONS))
    assert {k for _, k, _ in sent} == {b""}
    (share,) = {f for _, _, facts in sent for f in facts}
    assert share.partition == campaign_partition("spring", PARTITIONS)
    assert stage.monitor.site_fit is not None
    assert share.share.mean == pytest.approx(stage.monitor.site_fit.slope, abs=0.05)


def test_shares_received_reach_the_monitor_and_move_its_site_slope() -> None:
    stage = warmed_stage("spring")
    own = stage.monitor.site_fit
    assert own is not None
    other = (campaign_partition("spring", PARTITIONS) + 1) % PARTITIONS
    share = SlopeShare(T0 + 205 * MIN, own.slope + 0.3, 1e5, 1e4)
    value = encode_shares({other: share})
    stage.batch([Event(value, Message("facts", 3))])
    assert stage.monitor.shares == {other: share}
    for i in range(200, 212):
        stage.batch([beat(T0 + (i + 1) * MIN)])
    assert stage.monitor.site_sources == (1, 1)
    assert stage.monitor.site_fit is not None
    assert stage.monitor.site_fit.slope == pytest.approx(own.slope + 0.3, abs=0.02)


def test_an_unreadable_share_is_dead_lettered_and_the_rest_is_read() -> None:
    m = metrics()
    stage = CampaignStage(sharing_monitor(PARTITIONS), TOPICS, m)
    good = {"kind": "site", "partition": 1, "tick_ms": T0, "mean": -0.1, "information": 50.0,
            "conversions": 9.0}
    bad = [{**good, "partition": -1}, {**good, "partition": "1"}, {**good, "information": 0},
           {**good, "mean": None}]
    out = stage.batch([Event(orjson.dumps([*bad, good]), Message("facts", 2))])
    dead = [orjson.loads(v) for t, _, v, _ in out.records if t == TOPICS.dead_letter]
    assert len(dead) == 4
    assert all("slope share" in d["error"] for d in dead)
    assert dead_count(m) == 4
    assert stage.monitor.shares == {1: SlopeShare(T0, -0.1, 50.0, 9.0)}


def test_shares_round_trip_through_a_facts_record() -> None:
    shares = {0: SlopeShare(T0, -0.12, 300.0, 40.0), 3: SlopeShare(T0, -0.2, 10.0, 2.0)}
    decoded = decode_facts(encode_shares(shares))
    assert decoded == [ShareFact(0, shares[0]), ShareFact(3, shares[3])]


def test_a_restore_keeps_the_partitioner_and_the_shares_received() -> None:
    stage = CampaignStage(sharing_monitor(PARTITIONS), TOPICS, metrics())
    stage.monitor.receive_share(2, SlopeShare(T0, -0.1, 50.0, 9.0))
    group_of = stage.monitor.group_of
    stage.restore([])
    assert stage.monitor.group_of is group_of
    assert stage.monitor.shares == {2: SlopeShare(T0, -0.1, 50.0, 9.0)}


def test_the_site_curve_gauges_say_where_the_slope_comes_from() -> None:
    stage = warmed_stage("spring")
    samples = {(s.name, tuple(s.labels.values())): s.value
               for g in (stage.metrics.site_partitions, stage.metrics.site_slope,
                         stage.metrics.site_conversions)
               for metric in g.collect() for s in metric.samples}
    assert samples[("revwatch_site_curve_partitions", ("own",))] == 1
    assert samples[("revwatch_site_curve_partitions", ("shared",))] == 0
    assert stage.monitor.site_fit is not None
    assert samples[("revwatch_site_curve_slope", ())] == stage.monitor.site_fit.slope
    assert samples[("revwatch_site_curve_conversions", ())] == stage.monitor.site_conversions
    assert stage.monitor.site_conversions > 100
    assert not math.isnan(stage.monitor.site_fit.slope)


def test_the_site_hour_gauge_shows_the_sites_day() -> None:
    """All 1 while the site has no pattern; once a share brings one, the hour factors of
    ``detectors.site_season.hour_factors`` (x0.6 at 08:00 to x1.4 at 20:00 here); and
    whether the site knows its day."""
    stage = warmed_stage("spring", minutes=30)

    def gauge() -> dict[str, float]:
        return {s.labels["hour"]: s.value for metric in stage.metrics.site_hour_factor.collect()
                for s in metric.samples}

    def day_known() -> float:
        return next(s.value for metric in stage.metrics.site_day_known.collect()
                    for s in metric.samples)

    assert stage.monitor.site_season is None
    assert gauge() == {str(h): 1.0 for h in range(24)}
    assert day_known() == 0.0  # no whole day anywhere yet: the shop's first day
    conversions, sessions = strata(3, 0.4)
    share = season_share_of(conversions, sessions, None)
    elsewhere = next(p for p in range(PARTITIONS)
                     if p != campaign_partition("spring", PARTITIONS))
    stage.monitor.receive_share(elsewhere, SlopeShare(T0, -0.1, 50.0, 900.0, share))
    for i in range(30, 100):  # to the next hour's site refit
        stage.batch([beat(T0 + (i + 1) * MIN)])
    assert stage.monitor.site_season is not None
    shown = gauge()
    assert sum(shown.values()) == pytest.approx(24.0)
    assert shown["20"] / shown["8"] > 2.0  # truth 2.33
    assert day_known() == 1.0  # another worker's campaigns have learned a whole day
