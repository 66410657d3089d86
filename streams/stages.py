"""What each agent does with a batch of raw records: decode, call pure code, say what to emit.

These functions are synchronous and do no I/O: they return the records to send and the
table changes to write, and the agents in ``streams/app.py`` do the sending. Tests drive
them directly with fake events.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import orjson

from detectors.buckets import minute_of
from detectors.incidents import IncidentManager
from detectors.monitor import SEPARATOR, Monitor
from detectors.verdicts import CampaignVerdict
from streams.errors import InvalidRecord
from streams.facts_codec import ShareFact, decode_facts, encode_shares
from streams.metrics import Metrics
from streams.pipeline import TickAssembler, apply_fact
from streams.records import SessionFact
from streams.session_stage import IDLE_S, SessionStage
from streams.stage_io import EventLike, Out, Topics, dead_letter
from streams.topics import campaign_partition
from streams.watermark import InputWatermarks

__all__ = ["CampaignStage", "EventLike", "IncidentStage", "Out", "SessionStage", "Topics",
           "dead_letter", "sharing_monitor"]


def sharing_monitor(partitions: int) -> Monitor:
    """A monitor of some of the ``partitions`` facts partitions that shares the site-wide
    slope with the workers holding the others (``detectors/site.py``)."""
    return Monitor(group_of=partial(campaign_partition, partitions=partitions))


def _watermarks() -> InputWatermarks:
    return InputWatermarks(idle_s=IDLE_S, clock=time.monotonic)


@dataclass
class CampaignStage:
    """Session facts -> per-campaign verdicts (key "site") and campaign-table changes."""

    monitor: Monitor
    topics: Topics
    metrics: Metrics
    partitions: dict[str, int] = field(default_factory=dict)
    latest: dict[str, CampaignVerdict] = field(default_factory=dict)
    watermarks: InputWatermarks = field(default_factory=_watermarks)
    seen: dict[str, set[str]] = field(default_factory=dict)  # bucket key -> counted fact ids
    repeats: int = 0  # facts recognised as already counted
    unproven_retracts: int = 0  # retracts of facts their bucket does not show: not applied
    _seen_changed: set[str] = field(default_factory=set)

    def batch(self, events: Sequence[EventLike]) -> Out:
        out = Out()
        for event in events:
            for fact in decode_facts(event.value or b""):
                if isinstance(fact, SessionFact):
                    self._apply(fact, event.message.partition)
                elif isinstance(fact, ShareFact):
                    self.monitor.receive_share(fact.partition, fact.share)
                else:
                    dead_letter(out, self.topics, event, fact[1], metrics=self.metrics,
                                raw=fact[0])
        watermark = self.watermarks.value()
        for verdict in [] if watermark is None else self.monitor.advance(watermark):
            self.latest[verdict.campaign] = verdict
            out.send(self.topics.verdicts, b"site", orjson.dumps(verdict.to_state(),
                     option=orjson.OPT_SERIALIZE_NUMPY), 0)
        for name in [n for n in self.latest if n not in self.monitor.models]:
            del self.latest[name]
        self._send_shares(out)
        out.changes.update(self._with_seen(self.monitor.drain_changes()))
        return out

    def _send_shares(self, out: Out) -> None:
        """This worker's slope shares (taken at a site refit) to every facts partition."""
        shares = self.monitor.drain_shares()
        if shares:
            value = encode_shares(shares)
            for partition in range(self.topics.facts_partitions):
                out.send(self.topics.facts, b"", value, partition)
        own, shared = self.monitor.site_sources
        self.metrics.set_site_curve(own, shared, self.monitor.site_conversions,
                                    self.monitor.site_fit)
        self.metrics.set_site_season(self.monitor.site_season,
                                     day_known=self.monitor.site_day_known)

    def _apply(self, fact: SessionFact, partition: int) -> None:
        if fact.kind == "heartbeat":
            # per (sessionizer, partition): partitions are read at different paces
            self.watermarks.observe((fact.session_id, partition), fact.watermark_ms)
            apply_fact(self.monitor, fact)
        else:
            # (other) takes the partition of its first fact: one owner per worker
            self.partitions.setdefault(self.monitor.name_of(fact.campaign), partition)
            self._apply_once(fact)

    def _apply_once(self, fact: SessionFact) -> None:
        """Apply a session, checkout, order or retract fact unless its bucket counted it.

        Facts are sent at least once: a sessionizer that crashed between sending facts and
        saving its state sends them again, and this stage re-reads the facts after its last
        commit when it restarts. The ids a bucket has counted are saved in the bucket's own
        table row, so a row and its ids are always recovered together. A retract counts as
        ``r:`` + the id of the fact it cancels; it is applied only if the bucket shows that
        fact among its ids (else the bucket never counted it, or was dropped and came back:
        its count is left as it is). The cancelled id stays, so a late repeat of the
        cancelled fact is still recognised. A retract read before its fact is listed all
        the same (its minute's bucket made if need be, unless the minute is past), so the
        fact is skipped when it comes: the two net out in either order.
        """
        minute = minute_of(fact.start_ms)
        key = f"{fact.campaign}{SEPARATOR}{minute}"
        ident = _ident(fact)
        seen = self.seen.get(key)
        if seen is not None and (ident in seen or f"r:{ident}" in seen):
            self.repeats += 1  # counted already, or cancelled before it came
            return
        if fact.kind == "retract" and (seen is None or ident[2:] not in seen):
            self.unproven_retracts += 1
            self._list_ahead(fact, key, minute, ident)
            return
        apply_fact(self.monitor, fact)
        model = self.monitor.models.get(fact.campaign)
        if model is not None and model.ring.get(minute_of(fact.start_ms)) is not None:
            self.seen.setdefault(key, set()).add(ident)
            self._seen_changed.add(key)

    def _list_ahead(self, fact: SessionFact, key: str, minute: int, ident: str) -> None:
        """Keep a retract whose fact this stage has not counted in its minute's bucket."""
        if self.monitor.name_of(fact.campaign) != fact.campaign:
            return  # counted under (other): ids are not kept there
        model = self.monitor.model(fact.campaign)
        done = model.last_matured_minute
        if done is not None and minute <= done:
            return  # a past minute: its fact, if it comes, is not counted either
        model.ring.bucket(minute)
        self.seen.setdefault(key, set()).add(ident)
        self._seen_changed.add(key)

    def _with_seen(self, changes: dict[str, Any]) -> dict[str, Any]:
        """Bucket rows as ``{"v": bucket, "ids": counted fact ids}``; other rows unchanged."""
        for key in self._seen_changed - changes.keys():
            name, _, minute = key.rpartition(SEPARATOR)
            bucket = self.monitor.models[name].ring.get(int(minute)) \
                if name in self.monitor.models else None
            changes[key] = None if bucket is None else bucket.to_state()
        self._seen_changed.clear()
        for key, value in changes.items():
            if _is_bucket_key(key):
                if value is None:
                    self.seen.pop(key, None)
                else:
                    changes[key] = {"v": value, "ids": sorted(self.seen.get(key, ()))}
        return changes

    def restore(self, items: Iterable[tuple[str, Any]]) -> None:
        """Rebuild the monitor and the counted ids from table rows (after a rebalance)."""
        plain: list[tuple[str, Any]] = []
        self.seen, self.partitions = {}, {}
        for key, value in items:
            wrapped = _is_bucket_key(key) and isinstance(value, dict)
            if wrapped:
                self.seen[key] = set(value["ids"])
            plain.append((key, value["v"] if wrapped else value))
        monitor = Monitor(self.monitor.params, self.monitor.group_of)
        monitor.shares = self.monitor.shares  # soft state, not in the table: kept
        monitor.restore(plain)
        self.monitor = monitor

    def partition_of(self, key: str) -> int | None:
        return self.partitions.get(key.rpartition(SEPARATOR)[0])

    def prune(self) -> None:
        """Forget the partitions of evicted campaigns (after their deletes were written)."""
        for name in [n for n in self.partitions if n not in self.monitor.models]:
            del self.partitions[name]


@dataclass
class IncidentStage:
    """Verdicts of every campaign -> alerts (key campaign) and the incident state."""

    manager: IncidentManager
    topics: Topics
    metrics: Metrics
    assembler: TickAssembler = field(default_factory=TickAssembler)

    def batch(self, events: Sequence[EventLike]) -> Out:
        out = Out()
        for event in events:
            try:
                verdict = CampaignVerdict.from_state(orjson.loads(event.value or b""))
            except (orjson.JSONDecodeError, TypeError, KeyError, AttributeError) as exc:
                error = InvalidRecord(f"not a verdict: {exc}")
                dead_letter(out, self.topics, event, error, metrics=self.metrics)
                continue
            for tick, verdicts in self.assembler.add(verdict):
                out.alerts.extend(self.manager.process_tick(tick, verdicts))
        for alert in out.alerts:
            out.send(self.topics.alerts, alert.campaign.encode(), orjson.dumps(alert.to_dict()))
        if events:
            out.changes["site"] = self.manager.to_state()
        return out


def _ident(fact: SessionFact) -> str:
    """The id a bucket keeps for a counted fact: session id, ``c:`` session id of a checkout,
    ``o:`` order id, ``r:`` + the id of the fact a retract cancels (an order's if it has an
    ``order_id``, else a checkout's if it has a ``checkout_ms``, else a session's)."""
    retract = fact.kind == "retract"
    if fact.kind == "order" or (retract and fact.order_id is not None):
        ident = f"o:{fact.order_id}"
    elif fact.kind == "checkout" or (retract and fact.checkout_ms is not None):
        ident = f"c:{fact.session_id}"
    else:
        ident = fact.session_id
    return f"r:{ident}" if retract else ident


def _is_bucket_key(key: str) -> bool:
    """``campaign|<minute ms>`` (a minute bucket), not ``campaign|model``."""
    return key.rpartition(SEPARATOR)[2].lstrip("-").isdigit()


def nan_to_none(value: float) -> float | None:
    return None if math.isnan(value) else value
