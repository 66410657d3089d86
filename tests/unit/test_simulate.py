"""revwatch simulate: determinism, record validity, arrival order, the model's statistics,
traps, and the truth file against an independent Monte-Carlo recomputation."""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from streams.records import NONE_CAMPAIGN, beacon_from_dict, order_from_dict
from streams.simulate import Record, generate, main, paced, truth, write_files
from streams.simulate_demo import demo_scenario
from streams.simulate_model import (
    DEFAULT_START_MS,
    HOUR_MS,
    MINUTE_MS,
    CampaignSpec,
    IncidentSpec,
    Scenario,
    TrapSpec,
    default_scenario,
    human_rate,
)
from streams.simulate_pages import BOT_USER_AGENTS, USER_AGENTS

EVENING = DEFAULT_START_MS + 18 * HOUR_MS  # busy hours: more sessions per test second
Records = Sequence[tuple[str, dict[str, Any]]]


def _spec(name: str = "shop", rate: float = 60.0, cr: float = 0.3, *,
          path: str = "/product/x", mobile: float = 0.0, lcp: float = 2200.0,
          aov: float = 80.0) -> CampaignSpec:
    return CampaignSpec(name, rate, cr, aov, path, mobile, lcp)


def _scenario(*campaigns: CampaignSpec, days: float = 0.1, **kw: Any) -> Scenario:
    return Scenario(seed=kw.pop("seed", 7), start_ms=kw.pop("start_ms", EVENING), days=days,
                    campaigns=campaigns or (_spec(),), **kw)


def _sessions(records: Records) -> dict[str, dict[str, Any]]:
    """Per session: landing ts, URL, user agent, landing LCP and its orders' ts."""
    out: dict[str, dict[str, Any]] = {}
    for kind, r in records:
        if kind != "beacon":
            continue
        row = out.setdefault(r["session_id"], {"ts": r["ts"], "url": r["page_url"],
                                               "ua": r["user_agent"], "beacon": r["beacon_id"],
                                               "lcp": None, "orders": []})
        if r["ts"] < row["ts"]:
            row.update(ts=r["ts"], url=r["page_url"], beacon=r["beacon_id"], lcp=None)
        if r["beacon_id"] == row["beacon"] and "lcp_ms" in r:
            row["lcp"] = r["lcp_ms"]
    for kind, r in records:
        if kind == "order" and r["session_id"] in out:
            out[r["session_id"]]["orders"].append(r["ts"])
    return out


def _content(record: dict[str, Any]) -> bytes:
    """A record without its receive time: a retry has the same content."""
    return orjson.dumps({k: v for k, v in record.items() if k != "received_at"})


def _log_slope(x: np.ndarray, y: np.ndarray) -> float:
    """Poisson regression log E[y] = a + b x by IRLS (consistent for binary y too)."""
    design = np.column_stack([np.ones_like(x), x])
    beta = np.array([math.log(y.mean()), 0.0])
    for _ in range(30):
        mu = np.exp(design @ beta)
        z = design @ beta + (y - mu) / mu
        beta = np.linalg.solve(design.T @ (mu[:, None] * design), design.T @ (mu * z))
    return float(beta[1])


@pytest.fixture(scope="module")
def shop() -> tuple[Scenario, Records]:
    """One commerce campaign (desktop only, high conversion, slope -0.2/s) and a blog."""
    s = _scenario(_spec(), _spec("guides", 10.0, 0.01, path="/blog/how-to"),
                  curve_slope_per_s=-0.2)
    return s, list(generate(s))


def test_same_seed_gives_the_same_bytes(tmp_path: Path) -> None:
    s = _scenario(_spec(rate=5.0), days=0.03)
    write_files(s, tmp_path / "a")
    write_files(s, tmp_path / "b")
    write_files(replace(s, seed=8), tmp_path / "c")
    for name in ("beacons.jsonl", "orders.jsonl", "truth.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    other = (tmp_path / "c/beacons.jsonl").read_bytes()
    assert (tmp_path / "a/beacons.jsonl").read_bytes() != other


def test_every_record_reads_as_a_canonical_beacon_or_order(shop: tuple[Scenario, Records]) -> None:
    _, records = shop
    kinds = {kind for kind, _ in records}
    assert kinds == {"beacon", "order"}
    for kind, r in records:
        parsed = beacon_from_dict(r) if kind == "beacon" else order_from_dict(r)
        assert parsed.received_at is not None
        assert parsed.received_at >= parsed.ts
        assert not getattr(parsed, "extra", {})


def test_records_arrive_in_received_at_order(shop: tuple[Scenario, Records]) -> None:
    received = [r["received_at"] for _, r in shop[1]]
    assert received == sorted(received)


def test_utm_is_on_the_landing_page_only(shop: tuple[Scenario, Records]) -> None:
    landing_ids = {row["beacon"] for row in _sessions(shop[1]).values()}
    for kind, r in shop[1]:
        if kind == "beacon":
            assert ("utm_campaign=" in r["page_url"]) == (r["beacon_id"] in landing_ids)


def test_a_landing_names_its_source_and_a_later_page_the_shop(
        shop: tuple[Scenario, Records]) -> None:
    """The default spec's source is google; its later pages were reached from the shop."""
    landing_ids = {row["beacon"] for row in _sessions(shop[1]).values()}
    seen = {(r["beacon_id"] in landing_ids, r.get("referrer"))
            for kind, r in shop[1] if kind == "beacon"}
    assert seen == {(True, "https://www.google.com"), (False, "https://shop.example")}


def test_page_views_split_duplicated_and_late_as_configured(
        shop: tuple[Scenario, Records]) -> None:
    s, records = shop
    per_view: defaultdict[str, list[dict[str, Any]]] = defaultdict(list)
    for kind, r in records:
        if kind == "beacon":
            per_view[r["beacon_id"]].append(r)
    metric_names = {"lcp_ms", "fcp_ms", "ttfb_ms", "inp_ms", "load_ms", "cls"}
    split = [v for v in per_view.values() if len({_content(r) for r in v}) >= 4]
    assert len(split) / len(per_view) == pytest.approx(s.split_metrics_fraction, abs=0.03)
    assert all(len(metric_names & r.keys()) == 1 for v in split for r in v)
    beacons = [_content(r) for kind, r in records if kind == "beacon"]
    duplicates = len(beacons) - len(set(beacons))
    assert duplicates / len(beacons) == pytest.approx(s.duplicate_fraction, abs=0.005)
    late = [v for v in per_view.values() if min(r["received_at"] - r["ts"] for r in v) > 90_000]
    assert len(late) / len(per_view) == pytest.approx(s.late_fraction, abs=0.006)


def test_conversion_falls_with_landing_lcp_at_the_configured_slope(
        shop: tuple[Scenario, Records]) -> None:
    s, records = shop
    rows = [r for r in _sessions(records).values() if "utm_campaign=shop" in r["url"]
            and r["lcp"] is not None and r["ua"] not in BOT_USER_AGENTS]
    lcp_s = np.array([r["lcp"] / 1000.0 for r in rows])
    converted = np.array([1.0 if r["orders"] else 0.0 for r in rows])
    assert converted.sum() > 1000
    assert _log_slope(lcp_s, converted) == pytest.approx(s.curve_slope_per_s, abs=0.05)


def test_blog_landings_do_not_depend_on_lcp() -> None:
    blog = _spec("guides", 60.0, 0.3, path="/blog/how-to")
    s = _scenario(blog, curve_slope_per_s=-0.2)
    rows = [r for r in _sessions(list(generate(s))).values()
            if r["lcp"] is not None and r["ua"] not in BOT_USER_AGENTS]
    lcp_s = np.array([r["lcp"] / 1000.0 for r in rows])
    converted = np.array([1.0 if r["orders"] else 0.0 for r in rows])
    assert abs(_log_slope(lcp_s, converted)) < 0.05


def test_order_lag_median_is_the_configured_one(shop: tuple[Scenario, Records]) -> None:
    """Session start to order: the funnel's two legs together (medians 4 + 2 min: about
    6.7 min, was 6.0 without a funnel; each leg: tests/unit/test_simulate_funnel.py)."""
    s, records = shop
    lags = [(min(r["orders"]) - r["ts"]) / MINUTE_MS
            for r in _sessions(records).values() if r["orders"]]
    rng = np.random.default_rng(5)
    legs = s.funnel.to_checkout.draw_ms(rng, 200_000) + s.funnel.to_order.draw_ms(rng, 200_000)
    expected = float(np.median(legs)) / MINUTE_MS
    assert expected == pytest.approx(6.7, abs=0.2)
    assert float(np.median(lags)) == pytest.approx(expected, rel=0.1)


def test_daily_cycle_is_visible() -> None:
    s = _scenario(_spec(rate=12.0), days=1.0, start_ms=DEFAULT_START_MS,
                  split_metrics_fraction=0.0, boomerang_fraction=0.0)
    starts = [r["ts"] for r in _sessions(list(generate(s))).values()]
    hours = np.bincount([(t - s.start_ms) // HOUR_MS for t in starts], minlength=24)
    assert hours[20] / hours[3] == pytest.approx(1.0 / 0.3, rel=0.25)
    assert int(np.argmax(hours)) in {19, 20, 21}
    assert int(np.argmin(hours)) in {2, 3, 4}


def test_scale_multiplies_the_traffic() -> None:
    s = _scenario(_spec(rate=10.0), days=0.05)
    one = truth(s)["campaigns"]["shop"]["sessions"]
    three = truth(replace(s, scale=3.0))["campaigns"]["shop"]["sessions"]
    expected = sum(human_rate(s, s.campaigns[0], s.start_ms + m * MINUTE_MS)
                   for m in range(s.minutes))
    assert one == pytest.approx(expected, rel=0.1)
    assert three / one == pytest.approx(3.0, rel=0.1)


def _monte_carlo_loss_per_hour(s: Scenario, inc: IncidentSpec) -> float:
    """Expected revenue lost per hour, recomputed from the model's definition."""
    spec = s.campaigns[0]
    rng = np.random.default_rng(12345)
    u = rng.random(400_000)
    mobile = u < spec.mobile_share
    tablet = ~mobile & (u < spec.mobile_share + 0.06)
    lcp = spec.lcp_median_ms * np.where(mobile, 1.4, np.where(tablet, 1.15, 1.0)) * np.exp(
        0.45 * rng.standard_normal(u.size))
    base = spec.conversion_rate * np.where(mobile, 0.7, np.where(tablet, 0.85, 1.0))

    def p(lcp_ms: np.ndarray) -> np.ndarray:
        curve = np.exp(s.curve_slope_per_s * (lcp_ms - spec.lcp_median_ms) / 1000.0)
        return np.minimum(base * (curve if spec.commerce else 1.0), 0.95)

    desktop = ~mobile & ~tablet
    on = {"desktop": desktop, "mobile": mobile, "tablet": tablet}
    hit = np.logical_or.reduce([on[d] for d in inc.devices]) if inc.devices else desktop | ~desktop
    loss = np.where(hit, p(lcp) - p(lcp * inc.lcp_factor) * inc.conversion_factor, 0.0)
    minutes = range((inc.start_ms - s.start_ms) // MINUTE_MS,
                    (inc.end_ms - s.start_ms) // MINUTE_MS)
    sessions = sum(human_rate(s, spec, s.start_ms + m * MINUTE_MS) for m in minutes)
    hours = (inc.end_ms - inc.start_ms) / HOUR_MS
    return float(loss.mean()) * sessions * spec.aov * 1.03 / hours


@pytest.mark.parametrize(("kind", "lcp_factor", "conversion_factor", "path", "devices",
                          "funnel"), [
    pytest.param("performance_conversion_loss", 2.0, 1.0, "/product/x", (), "payment",
                 id="slowdown"),
    pytest.param("conversion_drop", 1.0, 0.4, "/product/x", (), "payment", id="checkout-bug"),
    pytest.param("conversion_drop", 1.0, 0.4, "/product/x", (), "cart", id="cart-bug"),
    pytest.param("conversion_drop", 1.0, 0.0, "/product/x", (), "payment", id="checkout-broken"),
    pytest.param("conversion_drop", 1.0, 0.0, "/product/x", ("mobile",), "payment",
                 id="checkout-broken-on-phones"),
    pytest.param("conversion_drop", 1.0, 0.0, "/product/x", ("mobile",), "cart",
                 id="cart-broken-on-phones"),
    pytest.param("performance_conversion_loss", 2.0, 1.0, "/product/x", ("mobile", "tablet"),
                 "payment", id="slowdown-on-phones-and-tablets"),
    pytest.param("latency_regression", 2.5, 1.0, "/blog/y", (), "payment",
                 id="blog-slowdown-costs-nothing"),
])
def test_truth_revenue_lost_matches_a_monte_carlo_recomputation(
        *, kind: Any, lcp_factor: float, conversion_factor: float, path: str,
        devices: tuple[str, ...], funnel: Any) -> None:
    """At the payment the incident touches the sessions whose checkout falls in its hour,
    at the cart those started in it: about as many, as the traffic barely changes."""
    start = EVENING + 30 * MINUTE_MS
    inc = IncidentSpec("i1", kind, ("shop",), start, start + HOUR_MS, lcp_factor=lcp_factor,
                       conversion_factor=conversion_factor, devices=devices, funnel=funnel)
    s = _scenario(_spec(rate=60.0, cr=0.05, mobile=0.5, path=path), incidents=(inc,),
                  split_metrics_fraction=0.0, boomerang_fraction=0.0)
    facts = truth(s)["incidents"][0]
    expected = _monte_carlo_loss_per_hour(s, inc)
    if path.startswith("/blog"):
        assert facts["revenue_lost_per_hour_total"] == expected == 0.0
    else:
        assert facts["revenue_lost_per_hour_total"] == pytest.approx(expected, rel=0.1)
        assert facts["revenue_lost_per_hour"]["shop"] == facts["revenue_lost_per_hour_total"]
    assert facts["sessions"]["shop"] > (700 if devices else 2000)  # only those it affects
    assert facts["funnel"] == (funnel if conversion_factor != 1.0 else "cart")


def test_a_slowdown_really_lowers_conversion() -> None:
    start = EVENING + 40 * MINUTE_MS
    inc = IncidentSpec("i1", "performance_conversion_loss", ("shop",), start,
                       start + 60 * MINUTE_MS, lcp_factor=3.0)
    s = _scenario(_spec(cr=0.3), incidents=(inc,), curve_slope_per_s=-0.2)
    rows = _sessions(list(generate(s))).values()
    inside = [bool(r["orders"]) for r in rows if start <= r["ts"] < inc.end_ms]
    outside = [bool(r["orders"]) for r in rows if r["ts"] < start - 20 * MINUTE_MS]
    assert np.mean(inside) < 0.75 * np.mean(outside)


def test_site_wide_incident_covers_every_commerce_campaign() -> None:
    inc = IncidentSpec("site", "performance_conversion_loss", (), EVENING + HOUR_MS,
                       EVENING + 2 * HOUR_MS, lcp_factor=1.8, scope="site")
    s = _scenario(_spec(rate=10.0), _spec("other", 5.0), _spec("guides", 5.0, path="/blog/x"),
                  incidents=(inc,), days=0.1)
    facts = truth(s)["incidents"][0]
    assert facts["campaigns"] == ["shop", "other"]
    assert facts["scope"] == "site"
    assert all(v > 0 for v in facts["revenue_lost_per_hour"].values())


def test_bot_burst_sessions_carry_bot_agents_and_never_order() -> None:
    burst = TrapSpec("bots", "bot_burst", EVENING + HOUR_MS, EVENING + HOUR_MS + 30 * MINUTE_MS,
                     ("shop",), 3.0)
    s = _scenario(_spec(rate=20.0), traps=(burst,), background_bot_fraction=0.0)
    records = list(generate(s))
    sessions = _sessions(records)
    bots = {sid: r for sid, r in sessions.items() if r["ua"] in BOT_USER_AGENTS}
    assert {r["ua"] for r in bots.values()} == set(BOT_USER_AGENTS)
    assert all(burst.start_ms <= r["ts"] < burst.end_ms for r in bots.values())
    assert all("utm_campaign=shop" in r["url"] for r in bots.values())
    humans_in_burst = sum(1 for sid, r in sessions.items()
                          if sid not in bots and burst.start_ms <= r["ts"] < burst.end_ms)
    assert len(bots) / humans_in_burst == pytest.approx(3.0, rel=0.15)
    assert not any(r["session_id"] in bots for kind, r in records if kind == "order")
    assert truth(s)["traps"][0]["bot_sessions_in_bursts"] == len(bots)


def test_traffic_dip_cuts_sessions_not_conversion() -> None:
    dip = TrapSpec("dip", "traffic_dip", EVENING + HOUR_MS, EVENING + 2 * HOUR_MS, (), 0.3)
    s = _scenario(_spec(rate=60.0), traps=(dip,), days=0.125)
    rows = list(_sessions(list(generate(s))).values())
    inside = [r for r in rows if dip.start_ms <= r["ts"] < dip.end_ms]
    before = [r for r in rows if r["ts"] < dip.start_ms]
    assert len(inside) / len(before) == pytest.approx(0.3, rel=0.15)
    rate_in = np.mean([bool(r["orders"]) for r in inside])
    assert rate_in == pytest.approx(np.mean([bool(r["orders"]) for r in before]), rel=0.15)


def test_data_gap_receives_nothing() -> None:
    gap = TrapSpec("gap", "data_gap", EVENING + 30 * MINUTE_MS, EVENING + 33 * MINUTE_MS)
    s = _scenario(_spec(rate=30.0), _spec("other", 10.0), traps=(gap,), days=0.05)
    received = [r["received_at"] for _, r in generate(s)]
    assert not any(gap.start_ms <= t < gap.end_ms for t in received)
    assert any(gap.start_ms - MINUTE_MS <= t < gap.start_ms for t in received)
    assert truth(s)["records"]["dropped_in_gaps"] > 100


def test_paced_releases_records_no_faster_than_event_time_over_speed() -> None:
    now = [100.0]
    released: list[tuple[float, int]] = []

    def sleep(seconds: float) -> None:
        now[0] += seconds

    records: list[Record] = [("beacon", {"ts": 0, "received_at": t})
                             for t in (1_000, 1_000, 3_000, 9_000)]
    for _, r in paced(records, speed=2.0, start_wall_s=100.0, clock=lambda: now[0],
                      sleep=sleep):
        released.append((now[0], r["received_at"]))
    assert released == [(100.0, 1_000), (100.0, 1_000), (101.0, 3_000), (104.0, 9_000)]
    with pytest.raises(ValueError, match="speed"):
        list(paced(records, speed=0.0, start_wall_s=0.0, clock=lambda: 0.0))


def test_default_scenario_shape() -> None:
    s = default_scenario()
    names = [c.name for c in s.campaigns]
    rates = sorted(c.sessions_per_minute_peak for c in s.campaigns)
    assert len(names) >= 8
    assert NONE_CAMPAIGN in names
    assert any(not c.commerce for c in s.campaigns)
    assert rates[-1] > 4 * rates[-2]
    assert rates[0] < 0.1
    starts = sorted(i.start_ms for i in s.incidents)
    assert 6 <= len(starts) <= 9
    assert starts[0] - s.start_ms >= 12 * HOUR_MS
    assert all(b - a >= 3 * HOUR_MS for a, b in itertools.pairwise(starts))
    assert all(30 <= (i.end_ms - i.start_ms) / MINUTE_MS <= 120 for i in s.incidents)
    assert {i.kind for i in s.incidents} == {"performance_conversion_loss", "conversion_drop",
                                             "latency_regression"}
    assert any(i.scope == "site" for i in s.incidents)
    assert {t.kind for t in s.traps} == {"bot_burst", "traffic_dip", "data_gap"}
    expected_sessions = sum(human_rate(s, c, s.start_ms + m * 15 * MINUTE_MS) * 15
                            for c in s.campaigns for m in range(s.minutes // 15))
    assert 250_000 < expected_sessions < 450_000  # about 7 beacon records a session
    assert not default_scenario(days=0.1).incidents


def test_demo_scenario_slows_the_biggest_campaign_after_warm_up() -> None:
    s = demo_scenario(warmup_hours=2.0, incident_minutes=15.0)
    (inc,) = s.incidents
    biggest = max(s.campaigns, key=lambda c: c.sessions_per_minute_peak)
    assert inc.campaigns == (biggest.name,)
    assert inc.start_ms - s.start_ms == 2 * HOUR_MS
    assert inc.end_ms - inc.start_ms == 15 * MINUTE_MS
    assert s.end_ms > inc.end_ms + 30 * MINUTE_MS


def test_the_demo_checkout_stops_the_biggest_campaigns_orders_for_half_an_hour() -> None:
    s = demo_scenario(warmup_hours=2.0, incident="checkout", devices=("mobile",))
    (inc,) = s.incidents
    assert (inc.kind, inc.campaigns, inc.devices) == ("conversion_drop", ("spring_sale",),
                                                      ("mobile",))
    assert (inc.conversion_factor, inc.lcp_factor) == (0.0, 1.0)
    assert inc.end_ms - inc.start_ms == 30 * MINUTE_MS
    assert s.end_ms >= inc.end_ms + 60 * MINUTE_MS  # long enough to see it resolve
    with pytest.raises(ValueError, match="demo incident 'outage': known are slow-pages, "):
        demo_scenario(incident="outage")  # type: ignore[arg-type]


def test_main_writes_the_files_and_a_summary(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--seed", "3", "--days", "0.005", "--scale", "0.5", "--out",
                 str(tmp_path)]) == 0
    facts = orjson.loads((tmp_path / "truth.json").read_bytes())
    lines = (tmp_path / "beacons.jsonl").read_bytes().splitlines()
    assert len(lines) == facts["records"]["beacons"] > 0
    assert facts["scenario"]["seed"] == 3
    assert f"{len(lines)} beacons" in capsys.readouterr().err
    assert main(["--scale", "0", "--out", str(tmp_path)]) == 2


def test_an_incident_on_phones_leaves_the_other_devices_alone() -> None:
    """A checkout broken on phones only: no mobile session whose checkout falls in the hour
    (one started in its first 35 minutes: at most 25 to the checkout) orders, desktop
    sessions order as before; the truth file names the device."""
    start = EVENING + 30 * MINUTE_MS
    inc = IncidentSpec("i1", "conversion_drop", ("shop",), start, start + HOUR_MS,
                       conversion_factor=0.0, devices=("mobile",))
    s = _scenario(_spec(rate=60.0, cr=0.3, mobile=0.5), incidents=(inc,))
    rows = [r for r in _sessions(list(generate(s))).values()
            if start <= r["ts"] < inc.end_ms - 25 * MINUTE_MS]
    phones = [bool(r["orders"]) for r in rows if r["ua"] in USER_AGENTS[1]]
    others = [bool(r["orders"]) for r in rows if r["ua"] not in USER_AGENTS[1]]
    assert len(phones) > 500
    assert not any(phones)
    assert np.mean(others) > 0.15
    assert truth(s)["incidents"][0]["devices"] == ["mobile"]
    with pytest.raises(ValueError, match="unknown devices"):
        IncidentSpec("i2", "conversion_drop", ("shop",), start, start + HOUR_MS,
                     devices=("fridge",))


def test_a_daily_conversion_pattern_when_asked_for() -> None:
    """``conversion_daily_amplitude`` 0.4: sessions convert x1.4 at 20:00 UTC and x0.6 at
    08:00; by default (0) they convert alike at every hour, byte for byte as before."""
    base = _scenario(_spec(rate=30.0, cr=0.1), days=1.0, start_ms=DEFAULT_START_MS,
                     split_metrics_fraction=0.0, boomerang_fraction=0.0)
    rates = {}
    for amplitude in (0.0, 0.4):
        rows = _sessions(list(generate(replace(base, conversion_daily_amplitude=amplitude))))
        by_hour: dict[int, list[bool]] = {}
        for row in rows.values():
            by_hour.setdefault((row["ts"] - base.start_ms) // HOUR_MS, []).append(
                bool(row["orders"]))
        rates[amplitude] = [np.mean([x for h in hours for x in by_hour[h]])
                            for hours in ((18, 19, 20, 21), (6, 7, 8, 9))]
    peak, trough = rates[0.4]
    assert peak / trough == pytest.approx(1.383 / 0.617, rel=0.2)  # the slots' middles
    assert rates[0.0][0] / rates[0.0][1] == pytest.approx(1.0, rel=0.15)
