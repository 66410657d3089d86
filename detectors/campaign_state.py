"""What a campaign model stores: everything it has learned, without its minute buckets.

The buckets are stored apart, one table row each (``detectors/monitor.py``); these two
functions give and take the rest as plain JSON-able data.
"""

from __future__ import annotations

import math
from typing import Any

from detectors.baseline import EwStats, SeasonalBaseline
from detectors.campaign import CampaignModel, CampaignParams
from detectors.ewcounts import EwVector
from detectors.lag import LagModel
from detectors.latency import LatencyCusum, LatencyVerdict


def model_to_state(model: CampaignModel) -> dict[str, Any]:
    """Everything a campaign has learned, without its minute buckets (stored apart)."""
    lat = model.last_latency
    return {
        "lb": model.latency_baseline.to_state(), "lv": model.latency_var.to_state(),
        "cusum": model.cusum.to_state(), "lag": model.lag.to_state(),
        "cb": model.conv_base.to_state(), "cs": model.curve_sessions.to_state(),
        "cc": model.curve_conversions.to_state(), "orders": model.orders.to_state(),
        "llm": model.last_latency_minute, "lmm": model.last_matured_minute,
        "seen": model.last_seen_ms,
        "lat": [lat.statistic, lat.threshold, lat.is_regression, lat.started_ms,
                None if math.isnan(lat.shift) else lat.shift],
    }


def model_from_state(state: dict[str, Any], params: CampaignParams | None = None
                     ) -> CampaignModel:
    """Rebuild a model from :func:`model_to_state` (buckets are restored separately)."""
    model = CampaignModel(params)
    model.latency_baseline = SeasonalBaseline.from_state(state["lb"])
    model.latency_var = EwStats.from_state(state["lv"])
    model.cusum = LatencyCusum.from_state(state["cusum"])
    model.lag = LagModel.from_state(state["lag"])
    model.conv_base = EwVector.from_state(state["cb"])
    model.curve_sessions = EwVector.from_state(state["cs"])
    model.curve_conversions = EwVector.from_state(state["cc"])
    model.orders = EwVector.from_state(state["orders"])
    model.last_latency_minute = state["llm"]
    model.last_matured_minute = state["lmm"]
    model.last_seen_ms = int(state["seen"])
    stat, threshold, regressed, started, shift = state["lat"]
    model.last_latency = LatencyVerdict(float(stat), float(threshold), bool(regressed), started,
                                        math.nan if shift is None else float(shift))
    return model
