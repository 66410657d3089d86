"""What a lost conversion costs: the average order value times the orders a converting
session places (``CampaignModel.orders_per_conversion``), as the simulation's truth prices it."""

from __future__ import annotations

import dataclasses

import pytest

from detectors.campaign import CampaignModel
from detectors.campaign_state import model_from_state, model_to_state
from detectors.revenue import orders_per_conversion
from detectors.verdicts import CampaignVerdict
from tests.unit.test_pipeline import verdict

T0 = 1_741_003_200_000
MIN = 60_000


def shop(conversions: int, second_orders: int, value: float = 50.0) -> CampaignModel:
    """A campaign whose ``conversions`` sessions ordered once at ``value``, and
    ``second_orders`` of them (spread evenly) twice; plus orders of unknown sessions, which
    say nothing of a session's orders."""
    model = CampaignModel()
    every = conversions // second_orders if second_orders else 0
    for i in range(conversions):
        ts = T0 + i * MIN
        model.observe_session(ts - 5 * MIN, 2_000.0, True)
        model.observe_order(ts - 5 * MIN, ts, value, first_order=True, known_session=True)
        if every and i % every == 0:
            model.observe_order(ts - 5 * MIN, ts + 1, value, first_order=False,
                                known_session=True)
        model.observe_order(ts, ts, value, first_order=True, known_session=False)
    return model


def test_a_conversion_is_worth_the_orders_of_a_converting_session() -> None:
    model = shop(1_000, 100)
    assert model.average_order_value()[0] == pytest.approx(50.0, rel=0.01)
    # (1,100 + 20) / (1,000 + 20), up to the forgetting of the older orders
    assert model.orders_per_conversion() == pytest.approx(1_120 / 1_020, rel=2e-3)


def test_one_order_a_conversion_until_second_orders_are_seen() -> None:
    model = shop(50, 0)
    assert model.orders_per_conversion() == 1.0
    assert CampaignModel().orders_per_conversion() == 1.0
    assert orders_per_conversion(0.0, 3.0) == 1.0  # retractions cannot take it below one


def test_a_retracted_second_order_is_taken_off() -> None:
    model = shop(200, 40)
    before = model.orders_per_conversion()
    ts = T0 + 10 * MIN
    assert model.retract_order(ts - 5 * MIN, ts + 1, 50.0, first_order=False,
                               known_session=True)
    assert model.orders_per_conversion() < before


def test_the_orders_per_conversion_survive_the_state_and_older_rows_load() -> None:
    model = shop(500, 60)
    state = model_to_state(model)
    assert model_from_state(state).orders_per_conversion() == pytest.approx(
        model.orders_per_conversion())
    del state["so"]  # a row written before: one order a conversion until learned again
    older = model_from_state(state)
    assert older.orders_per_conversion() == 1.0


def test_a_verdict_carries_it_and_an_older_one_reads_as_its_order_value() -> None:
    v = dataclasses.replace(verdict("c", T0), average_order_value=80.0,
                            revenue_per_conversion=82.4)
    assert CampaignVerdict.from_state(v.to_state()).conversion_value == 82.4
    older = v.to_state()
    del older["revenue_per_conversion"]  # a verdict of a worker before it
    assert CampaignVerdict.from_state(older).conversion_value == 80.0


def test_the_tick_prices_at_it() -> None:
    """The verdict's figures: the model's order value, and what a conversion brings."""
    model = shop(400, 80)
    monitor_verdict = model.tick("c", T0 + 401 * MIN, None)
    assert monitor_verdict.average_order_value == pytest.approx(model.average_order_value()[0])
    value = model.average_order_value()[0]
    assert monitor_verdict.revenue_per_conversion == pytest.approx(
        value * model.orders_per_conversion())
    assert monitor_verdict.revenue_per_conversion > monitor_verdict.average_order_value * 1.1
