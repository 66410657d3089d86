"""Several workers' monitors in one process, for ``bench/quality.py --workers N``.

With N workers each campaign agent holds the campaigns of the facts partitions it was
given (the facts are keyed by campaign, so the Kafka default partitioner, murmur2 of the
key, decides), and each fits the site-wide latency-to-conversion curve on its own
campaigns only. :class:`SplitMonitor` reproduces that offline: one :class:`Monitor` per
worker, each campaign's facts routed to the worker that owns its partition, every
monitor ticked by the same heartbeats. It has the methods the pipeline calls on a
monitor (``apply_fact`` and ``Pipeline._tick``).

With ``share=True`` the monitors share the site slope as the workers do: each knows its
campaigns' facts partitions, and the shares each takes at a refit reach every other monitor
right after the tick that took them (over Kafka they arrive a little later).
"""

from __future__ import annotations

from detectors.campaign import CampaignVerdict
from detectors.monitor import Monitor, MonitorParams
from streams.topics import campaign_partition as partition_of


class SplitMonitor:
    """``workers`` monitors; partition ``p`` belongs to worker ``p % workers``."""

    def __init__(self, workers: int, partitions: int, params: MonitorParams | None = None,
                 *, share: bool = False) -> None:
        if not 1 <= workers <= partitions:
            msg = f"workers must be in 1..{partitions}, got {workers}"
            raise ValueError(msg)
        self.partitions = partitions
        group_of = (lambda name: partition_of(name, partitions)) if share else None
        self.monitors = [Monitor(params, group_of) for _ in range(workers)]

    def owner(self, campaign: str) -> Monitor:
        return self.monitors[partition_of(campaign, self.partitions) % len(self.monitors)]

    def observe_session(self, campaign: str, *args: object, **kwargs: object) -> None:
        self.owner(campaign).observe_session(campaign, *args, **kwargs)  # type: ignore[arg-type]

    def observe_order(self, campaign: str, *args: object, **kwargs: object) -> None:
        self.owner(campaign).observe_order(campaign, *args, **kwargs)  # type: ignore[arg-type]

    def retract_session(self, campaign: str, *args: object, **kwargs: object) -> bool:
        return self.owner(campaign).retract_session(campaign, *args, **kwargs)  # type: ignore[arg-type]

    def retract_order(self, campaign: str, *args: object, **kwargs: object) -> bool:
        return self.owner(campaign).retract_order(campaign, *args, **kwargs)  # type: ignore[arg-type]

    def advance(self, watermark_ms: int) -> list[CampaignVerdict]:
        verdicts = [v for monitor in self.monitors for v in monitor.advance(watermark_ms)]
        for sender in self.monitors:
            for group, share in sender.drain_shares().items():
                for monitor in self.monitors:
                    if monitor is not sender:
                        monitor.receive_share(group, share)
        return sorted(verdicts, key=lambda v: (v.tick_ms, v.campaign))
