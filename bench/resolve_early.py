"""Episodes that said "resolved" while their incident was still going on.

Reads the ``episodes`` of ``bench/quality.py`` outputs (per seed or merged) and lists every
episode matched to a true incident whose ``resolved`` alert came before the incident's end.

    .venv/bin/python bench/resolve_early.py /tmp/res/seed-*.json
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

MINUTE = 60_000


def early(episodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for ep in episodes:
        if not ep["resolved"]:
            continue
        for inc in ep["incidents"]:
            if inc["start_ms"] <= ep["last_ts"] < inc["end_ms"]:
                out.append({"seed": ep["seed"], "incident": inc["id"], "campaign": ep["campaign"],
                            "kind": ep["kind"],
                            "resolved_minute": (ep["last_ts"] - inc["start_ms"]) / MINUTE,
                            "incident_minutes": (inc["end_ms"] - inc["start_ms"]) / MINUTE})
    return out


def main(paths: list[str]) -> int:
    episodes: list[dict[str, Any]] = []
    for path in paths:
        episodes.extend(json.loads(Path(path).read_text()).get("episodes", []))
    rows = early(episodes)
    for row in sorted(rows, key=lambda r: (r["seed"], r["incident"], r["campaign"])):
        print(f"seed {row['seed']:>3} {row['incident']:<26} {row['campaign']:<18} "
              f"{row['kind']:<28} resolved at minute {row['resolved_minute']:.0f} "
              f"of {row['incident_minutes']:.0f}")
    incidents = {(r["seed"], r["incident"]) for r in rows}
    print(f"{len(rows)} episodes resolved before their incident's end, "
          f"{len(incidents)} incidents, over {len({e['seed'] for e in episodes})} seeds")
    for kind, lags in sorted(resolve_lags(episodes).items()):
        print(f"{kind}: resolved a median {statistics.median(lags):.0f} minutes after the "
              f"incident's end (range {min(lags):.0f} to {max(lags):.0f}, {len(lags)} episodes)")
    return 0


def resolve_lags(episodes: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Minutes from each incident's end to the last resolve of its episodes, by true kind
    (the incident id's prefix: ``checkout``, ``perf``...)."""
    last: dict[tuple[int, str], float] = {}
    for ep in episodes:
        if not ep["resolved"]:
            continue
        for inc in ep["incidents"]:
            key = (ep["seed"], inc["id"])
            lag = (ep["last_ts"] - inc["end_ms"]) / MINUTE
            last[key] = max(last.get(key, lag), lag)
    out: dict[str, list[float]] = {}
    for (_, incident), lag in last.items():
        out.setdefault(incident.split("-")[0], []).append(lag)
    return out


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
