"""What a campaign model stores: everything it has learned, without its minute buckets.

The buckets are stored apart, one table row each (``detectors/monitor.py``); these two
functions give and take the rest as plain JSON-able data.

The curve is stored twice: by device stratum under ``"css"``/``"ccs"`` (what this code
reads), and folded over the strata under ``"cs"``/``"cc"`` (``N_BINS`` long, what a worker
from before the strata reads, so a rollback keeps a pooled curve instead of failing on a
vector four times too long). A row without ``"css"`` (written before the strata) is read
into stratum 0 (unknown device).
"""

from __future__ import annotations

import math
from typing import Any

from detectors.baseline import EwStats, SeasonalBaseline
from detectors.campaign import CampaignModel, CampaignParams
from detectors.conv_season import ConversionSeason
from detectors.ewcounts import EwVector
from detectors.held import HeldMinutes
from detectors.lag import LagModel
from detectors.latency import LatencyCusum, LatencyVerdict
from detectors.shortfall import ShortfallLedger
from detectors.strata import fold_strata, padded_curve


def model_to_state(model: CampaignModel) -> dict[str, Any]:
    """Everything a campaign has learned, without its minute buckets (stored apart)."""
    lat = model.latency
    return {
        "lb": lat.baseline.to_state(), "lv": lat.variance.to_state(),
        "cusum": lat.cusum.to_state(), "lag": model.lag.to_state(),
        "cb": model.conv_base.to_state(), "orders": model.orders.to_state(),
        "cz": model.season.to_state(), "hd": model.held.to_state(),
        **_curve_to_state("cs", model.curve_sessions),
        **_curve_to_state("cc", model.curve_conversions),
        "llm": lat.last_minute, "lmm": model.last_matured_minute,
        "seen": model.last_seen_ms,
        "lat": _verdict_to_list(lat.last),
        "ck": [[minute, stat, started, _verdict_to_list(verdict)]
               for minute, ((stat, started), verdict) in lat.checkpoints.items()],
        "rf": lat.rescore_from,
        "la": model.last_alarm_ms,
        "fn": None if model.funnel is None else model.funnel.to_state(),
        "rc": None if model.reach is None else model.reach.to_state(),
        "sf": model.shortfall.to_state(),
        "so": model.session_orders.to_state(),
    }


def model_from_state(state: dict[str, Any], params: CampaignParams | None = None
                     ) -> CampaignModel:
    """Rebuild a model from :func:`model_to_state` (buckets are restored separately)."""
    model = CampaignModel(params)
    lat = model.latency
    lat.baseline = SeasonalBaseline.from_state(state["lb"])
    lat.variance = EwStats.from_state(state["lv"])
    lat.cusum = LatencyCusum.from_state(state["cusum"])
    model.lag = LagModel.from_state(state["lag"])
    model.conv_base = EwVector.from_state(state["cb"])
    if "cz" in state:  # absent in rows written before the hour-of-day factors: none learned
        model.season = ConversionSeason.from_state(state["cz"])
    if state.get("hd") is not None:  # none outside a run, or in rows written before
        model.held = HeldMinutes.from_state(state["hd"], model.params)
    model.curve_sessions = _curve_from_state(state, "cs")
    model.curve_conversions = _curve_from_state(state, "cc")
    model.orders = EwVector.from_state(state["orders"])
    if "so" in state:  # absent in rows written before: one order a conversion until learned
        model.session_orders = EwVector.from_state(state["so"])
    lat.last_minute = state["llm"]
    model.last_matured_minute = state["lmm"]
    model.last_seen_ms = int(state["seen"])
    lat.last = _verdict_from_list(state["lat"])
    lat.checkpoints = {  # absent in states written before the re-scoring: none kept
        int(minute): ((float(stat), started), _verdict_from_list(verdict))
        for minute, stat, started, verdict in state.get("ck", [])}
    lat.rescore_from = state.get("rf")
    model.last_alarm_ms = state["la"] if "la" in state else _assumed_alarm(model)
    model.shortfall = ShortfallLedger.from_state(state.get("sf"))  # absent: written before
    if state.get("fn") is not None:  # none yet, or a row written before the checkout funnel
        model.checkout_funnel().restore(state["fn"])
    if model.reach is not None and state.get("rc") is not None:  # absent: written before
        model.reach.restore(state["rc"])
    return model


def _assumed_alarm(model: CampaignModel) -> int | None:
    """A row written before ``"la"``: a CUSUM above 0 may belong to an open episode, so its
    slow pages are priced as before for ``price_hold_minutes`` from the model's last tick."""
    return model.last_tick_ms() if model.latency.last.statistic > 0 else None


def _verdict_to_list(lat: LatencyVerdict) -> list[Any]:
    return [lat.statistic, lat.threshold, lat.is_regression, lat.started_ms,
            None if math.isnan(lat.shift) else lat.shift]


def _verdict_from_list(data: list[Any]) -> LatencyVerdict:
    stat, threshold, regressed, started, shift = data
    return LatencyVerdict(float(stat), float(threshold), bool(regressed), started,
                          math.nan if shift is None else float(shift))


def _curve_to_state(key: str, vector: EwVector) -> dict[str, Any]:
    stored = vector.to_state()
    return {key + "s": stored, key: {**stored, "v": fold_strata(vector.values).tolist()}}


def _curve_from_state(state: dict[str, Any], key: str) -> EwVector:
    if key + "s" in state:
        return EwVector.from_state(state[key + "s"])
    vector = EwVector.from_state(state[key])  # written before the strata
    vector.values = padded_curve(vector.values)
    return vector
