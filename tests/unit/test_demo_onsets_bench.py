"""bench/demo_onsets.py: the scenarios behind the onsets and first-alert minutes
docs/FUNNEL.md cites (no replay here; the scenarios and the seed ranges)."""

from __future__ import annotations

import pytest

from bench.demo_onsets import Seen, scenario, seeds, summary
from streams.simulate import demo_scenario


def test_phones_is_the_demo_slowdown_turned_into_phones_unable_to_pay() -> None:
    demo = demo_scenario(3, warmup_hours=5, incident_minutes=60)
    phones = scenario("phones", 3, 0.5, 5)
    (broken,) = phones.incidents
    (slowdown,) = demo.incidents
    assert (broken.kind, broken.conversion_factor, broken.lcp_factor, broken.devices) == (
        "conversion_drop", 0.0, 1.0, ("mobile",))
    assert (broken.start_ms, broken.end_ms, broken.campaigns) == (
        slowdown.start_ms, slowdown.end_ms, slowdown.campaigns)
    assert phones.scale == 0.5


def test_checkout_is_the_demo_checkout_incident() -> None:
    checkout = scenario("checkout", 2, 1.0, 4)
    assert checkout.incidents == demo_scenario(2, warmup_hours=4, incident="checkout").incidents


@pytest.mark.parametrize(("text", "expected"), [("1-3", [1, 2, 3]), ("7", [7]), ("12-12", [12])])
def test_seed_ranges(text: str, expected: list[int]) -> None:
    assert seeds(text) == expected


def test_slow_pages_is_the_default_demo() -> None:
    assert scenario("slow-pages", 7, 1.0, 4).incidents == demo_scenario(7).incidents


def test_the_summary_gives_the_ranges_medians_and_the_lost_figures_error() -> None:
    seen = [Seen("a", 0.5, 1.5), Seen("b", 1.0, 0.8), Seen("c", 1.2, 1.1), Seen("d")]
    assert summary(seen) == ("3 of 4 alerted: first price / truth 0.50-1.20, median 1.00; "
                             "lost / truth 0.80-1.50, median 1.10, median error 20.0%")
    assert summary([Seen("x")]) == "no seed alerted"
