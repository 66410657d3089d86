"""The records that cross topics: canonical beacons, orders and session facts (CONTRACT.md).

Records are frozen, slotted dataclasses read from JSON bytes with orjson. Readers validate
types and ranges and raise :class:`~streams.errors.InvalidRecord` with a reason a sender can
act on; unknown fields are kept in ``extra`` on beacons and ignored elsewhere.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

import orjson

from streams.errors import InvalidRecord

METRICS = ("lcp_ms", "fcp_ms", "ttfb_ms", "inp_ms", "load_ms", "cls")
DEVICES = frozenset({"mobile", "desktop", "tablet"})
MAX_TIMING_MS = 600_000.0  # ten minutes: a longer page timing is not a human page view
MAX_ID_LEN = 200
MAX_URL_LEN = 4096
MAX_REVENUE = 1e9  # one order; sums of many must stay finite
NONE_CAMPAIGN = "(none)"


@dataclass(frozen=True, slots=True)
class Beacon:
    """One record of one page view; several records of one ``beacon_id`` are merged."""

    beacon_id: str
    session_id: str
    ts: int
    page_url: str
    lcp_ms: float | None = None
    fcp_ms: float | None = None
    ttfb_ms: float | None = None
    inp_ms: float | None = None
    load_ms: float | None = None
    cls: float | None = None
    received_at: int | None = None
    campaign: str | None = None
    page_group: str | None = None
    device: str | None = None
    user_agent: str | None = None
    # the page's ``document.referrer`` (the collector keeps its origin only): a referrer of
    # the page's own origin says the page is not the session's landing
    referrer: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def to_json(self) -> bytes:
        """Canonical JSON (extra fields included, ``None`` dropped)."""
        row = zip(_BEACON_FIELDS, row_of_beacon(self), strict=True)
        data = {k: v for k, v in row if v is not None}
        return orjson.dumps({**self.extra, **data} if self.extra else data)  # extra not copied


_BEACON_FIELDS = tuple(f.name for f in fields(Beacon) if f.name != "extra")


@dataclass(frozen=True, slots=True)
class Order:
    """One order. Repeats of an ``order_id`` are counted once."""

    order_id: str
    session_id: str
    ts: int
    revenue: float
    currency: str | None = None
    campaign: str | None = None
    received_at: int | None = None

    def to_json(self) -> bytes:
        return orjson.dumps({k: v for k, v in asdict(self).items() if v is not None})


FactKind = Literal["session", "checkout", "order", "retract", "heartbeat"]
FACT_KINDS = ("session", "checkout", "order", "retract", "heartbeat")


@dataclass(frozen=True, slots=True, init=False)
class SessionFact:
    """What the sessionizer tells the campaign stage (topic ``revwatch-session-facts``).

    ``session``: a human session started (once per session), with its landing LCP.
    ``checkout``: the session reached the shop's checkout at ``checkout_ms`` (once per
    session, after its ``session`` fact, with that fact's fields; docs/FUNNEL.md).
    ``order``: an order of a session; ``first_order`` marks the conversion; ``known_session``
    is false for an order whose session never showed a beacon (revenue only);
    ``checkout_ms`` is its session's checkout (None for an unknown session).
    ``retract``: cancels a ``session`` (``order_id`` and ``checkout_ms`` None), ``checkout``
    (``order_id`` None, ``checkout_ms`` set) or ``order`` fact sent earlier, with that fact's
    fields; sent when a late landing page moves an emitted session to another campaign (the
    session, its checkout and its orders then follow under the new campaign).
    ``heartbeat``: carries only the watermark, so quiet partitions still tick.
    """

    kind: FactKind
    campaign: str
    watermark_ms: int
    session_id: str = ""
    start_ms: int = 0
    lcp_ms: float | None = None
    commerce: bool = True
    device: str | None = None
    order_id: str | None = None
    order_ts_ms: int | None = None
    revenue: float = 0.0
    first_order: bool = False
    known_session: bool = True
    checkout_ms: int | None = None

    # The dataclass's own signature, written out so that mypyc compiles it (docs/PERFORMANCE.md).
    def __init__(  # noqa: PLR0917 (the dataclass's positional signature)
        self, kind: FactKind, campaign: str, watermark_ms: int, session_id: str = "",
        start_ms: int = 0, lcp_ms: float | None = None, commerce: bool = True,
        device: str | None = None, order_id: str | None = None, order_ts_ms: int | None = None,
        revenue: float = 0.0, first_order: bool = False, known_session: bool = True,
        checkout_ms: int | None = None,
    ) -> None:
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "campaign", campaign)
        object.__setattr__(self, "watermark_ms", watermark_ms)
        object.__setattr__(self, "session_id", session_id)
        object.__setattr__(self, "start_ms", start_ms)
        object.__setattr__(self, "lcp_ms", lcp_ms)
        object.__setattr__(self, "commerce", commerce)
        object.__setattr__(self, "device", device)
        object.__setattr__(self, "order_id", order_id)
        object.__setattr__(self, "order_ts_ms", order_ts_ms)
        object.__setattr__(self, "revenue", revenue)
        object.__setattr__(self, "first_order", first_order)
        object.__setattr__(self, "known_session", known_session)
        object.__setattr__(self, "checkout_ms", checkout_ms)

    def to_json(self) -> bytes:
        return orjson.dumps(self.as_dict())

    def as_dict(self) -> dict[str, object]:
        """``dataclasses.asdict(self)`` (flat), without its recursion and copies; orjson
        cannot take the compiled class itself (it crashes on mypyc's native attributes)."""
        return {"kind": self.kind, "campaign": self.campaign, "watermark_ms": self.watermark_ms,
                "session_id": self.session_id, "start_ms": self.start_ms,
                "lcp_ms": self.lcp_ms, "commerce": self.commerce, "device": self.device,
                "order_id": self.order_id, "order_ts_ms": self.order_ts_ms,
                "revenue": self.revenue, "first_order": self.first_order,
                "known_session": self.known_session, "checkout_ms": self.checkout_ms}

    @classmethod
    def from_json(cls, raw: bytes) -> SessionFact:
        return cls.from_dict(_load_object(raw))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SessionFact:
        """A checked fact from its JSON object; :class:`InvalidRecord` if it is none."""
        if any(isinstance(data.get(key), bool) for key in _FACT_INTS):
            # before the class: compiled, it stores a bool given for an int as that int
            msg = "not a session fact: a field has the wrong type"
            raise InvalidRecord(msg)
        try:
            fact = cls(**data)
        except TypeError as exc:
            msg = f"not a session fact: {exc}"
            raise InvalidRecord(msg) from None
        fact.check()
        return fact

    def check(self) -> None:
        """Reject a fact whose fields have the wrong types (it would crash the monitor)."""
        ints = (self.watermark_ms, self.start_ms,
                *(v for v in (self.order_ts_ms, self.checkout_ms) if v is not None))
        ok = (self.kind in FACT_KINDS
              and isinstance(self.campaign, str) and isinstance(self.session_id, str)
              and all(isinstance(v, int) and not isinstance(v, bool) for v in ints)
              and (self.lcp_ms is None or _is_number(self.lcp_ms))
              and _is_number(self.revenue))
        if not ok:
            msg = "not a session fact: a field has the wrong type"
            raise InvalidRecord(msg)
        if self.kind == "checkout" and self.checkout_ms is None:
            msg = "not a session fact: a checkout fact needs 'checkout_ms'"
            raise InvalidRecord(msg, field="checkout_ms")


_FACT_INTS = ("watermark_ms", "start_ms", "order_ts_ms", "checkout_ms")


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) \
        and math.isfinite(value)


def _load_object(raw: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        msg = f"not valid JSON: {exc.msg}"
        raise InvalidRecord(msg) from None
    if not isinstance(data, dict):
        msg = f"expected a JSON object, got {type(data).__name__}"
        raise InvalidRecord(msg)
    return data


def _req_str(data: dict[str, Any], name: str, max_len: int = MAX_ID_LEN) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value:
        msg = f"'{name}' must be a non-empty string"
        raise InvalidRecord(msg, field=name)
    if len(value) > max_len:
        msg = f"'{name}' is longer than {max_len} characters"
        raise InvalidRecord(msg, field=name)
    return value


def _opt_str(data: dict[str, Any], name: str, max_len: int = MAX_ID_LEN) -> str | None:
    value = data.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > max_len:
        msg = f"'{name}' must be a string of at most {max_len} characters"
        raise InvalidRecord(msg, field=name)
    return value


def _req_ts(data: dict[str, Any], name: str) -> int:
    value = data.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        msg = f"'{name}' must be epoch milliseconds (a number)"
        raise InvalidRecord(msg, field=name)
    if not 946_684_800_000 <= value <= 4_102_444_800_000:  # 2000-01-01 .. 2100-01-01
        msg = f"'{name}' is not a plausible epoch-ms timestamp: {value!r}"
        raise InvalidRecord(msg, field=name)
    return int(value)


def _opt_ts(data: dict[str, Any], name: str) -> int | None:
    return None if data.get(name) is None else _req_ts(data, name)


def read_metric(data: dict[str, Any], name: str) -> float | None:
    """A metric is a finite number >= 0 (CLS unitless, the rest ms) or null."""
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        msg = f"'{name}' must be a number or null"
        raise InvalidRecord(msg, field=name)
    if value < 0 or (name != "cls" and value > MAX_TIMING_MS):
        msg = f"'{name}' is out of range: {value!r}"
        raise InvalidRecord(msg, field=name)
    return float(value)


_KNOWN_BEACON_KEYS = frozenset({"beacon_id", "session_id", "ts", "page_url", "received_at",
                                "campaign", "page_group", "device", "user_agent", "referrer",
                                *METRICS})
_MIN_TS, _MAX_TS = 946_684_800_000, 4_102_444_800_000  # 2000-01-01 .. 2100-01-01
_INF = math.inf


# The fields of a :class:`Beacon` but ``extra``, in field order: what the sessionizer reads.
BeaconRow = tuple[str, str, int, str, float | None, float | None, float | None, float | None,
                  float | None, float | None, int | None, str | None, str | None, str | None,
                  str | None, str | None]


def beacon_from_dict(data: dict[str, Any]) -> Beacon:
    """Validate a canonical beacon object (see :func:`beacon_row`)."""
    row = beacon_row(data)
    extra = {} if _KNOWN_BEACON_KEYS.issuperset(data) else \
        {k: v for k, v in data.items() if k not in _KNOWN_BEACON_KEYS}
    return Beacon(*row, extra)


def beacon_row(data: dict[str, Any]) -> BeaconRow:
    """The fields :func:`beacon_from_dict` gives, but ``extra``, as a tuple (no object built).

    The common case (well-typed, in-range fields) is checked inline with exact type tests;
    anything else goes through :func:`_beacon_checked`, which gives the same result or the
    reason the record is refused. The replay reads beacons with this: a ``Beacon`` costs
    more to build than to validate, and the sessionizer only reads its fields.
    """
    get: Callable[[str], Any] = data.get
    device, campaign, group, agent = get("device"), get("campaign"), get("page_group"), \
        get("user_agent")
    bid, sid, ts, url = get("beacon_id"), get("session_id"), get("ts"), get("page_url")
    received, referrer = get("received_at"), get("referrer")
    if not ((device is None or (type(device) is str and device in DEVICES))
            and type(bid) is str and 0 < len(bid) <= MAX_ID_LEN
            and type(sid) is str and 0 < len(sid) <= MAX_ID_LEN
            and type(ts) is int and _MIN_TS <= ts <= _MAX_TS
            and type(url) is str and 0 < len(url) <= MAX_URL_LEN
            and (received is None or (type(received) is int
                                      and _MIN_TS <= received <= _MAX_TS))
            and (campaign is None or (type(campaign) is str and len(campaign) <= MAX_ID_LEN))
            and (group is None or (type(group) is str and len(group) <= MAX_ID_LEN))
            and (agent is None or (type(agent) is str and len(agent) <= 1000))):
        return row_of_beacon(_beacon_checked(data))
    lcp, fcp, ttfb, inp, load, cls = (
        get("lcp_ms"), get("fcp_ms"), get("ttfb_ms"), get("inp_ms"), get("load_ms"), get("cls"))
    if not ((lcp is None or (type(lcp) is float and 0.0 <= lcp <= MAX_TIMING_MS))
            and (fcp is None or (type(fcp) is float and 0.0 <= fcp <= MAX_TIMING_MS))
            and (ttfb is None or (type(ttfb) is float and 0.0 <= ttfb <= MAX_TIMING_MS))
            and (inp is None or (type(inp) is float and 0.0 <= inp <= MAX_TIMING_MS))
            and (load is None or (type(load) is float and 0.0 <= load <= MAX_TIMING_MS))
            and (cls is None or (type(cls) is float and 0.0 <= cls < _INF))):
        return _row_of_odd_metrics(data)
    return (bid, sid, ts, url, lcp, fcp, ttfb, inp, load, cls, received,
            campaign or None, group or None, device, agent or None, referrer_of(referrer))


def _row_of_odd_metrics(data: dict[str, Any]) -> BeaconRow:
    """:func:`beacon_row` when a metric is an int or invalid (the fields but the metrics are
    known to be valid): ints become floats, anything else goes to :func:`_beacon_checked`."""
    metrics = tuple(data.get(name) for name in METRICS)
    if not all(v is None or _metric_ok(v, _INF if name == "cls" else MAX_TIMING_MS)
               for name, v in zip(METRICS, metrics, strict=True)):
        return row_of_beacon(_beacon_checked(data))
    lcp, fcp, ttfb, inp, load, cls = (None if v is None else float(v) for v in metrics)
    get = data.get
    return (data["beacon_id"], data["session_id"], data["ts"], data["page_url"], lcp, fcp,
            ttfb, inp, load, cls, get("received_at"), get("campaign") or None,
            get("page_group") or None, get("device"), get("user_agent") or None,
            referrer_of(get("referrer")))


def referrer_of(value: Any) -> str | None:
    """A beacon's ``referrer``: a non-empty string of at most ``MAX_URL_LEN``, else None.

    Anything else is ignored, not refused: before revwatch read it, a ``referrer`` was an
    unknown field, kept and ignored (CONTRACT.md), so no beacon is lost over it now.
    """
    return value if type(value) is str and 0 < len(value) <= MAX_URL_LEN else None


def _metric_ok(value: Any, limit: float) -> bool:
    """An int or float from 0 to ``limit`` (not NaN, not infinite)."""
    kind = type(value)
    return (kind is float or kind is int) and 0.0 <= value <= limit and value != _INF


def row_of_beacon(beacon: Beacon) -> BeaconRow:
    """A beacon's fields but ``extra``, in field order."""
    return (beacon.beacon_id, beacon.session_id, beacon.ts, beacon.page_url, beacon.lcp_ms,
            beacon.fcp_ms, beacon.ttfb_ms, beacon.inp_ms, beacon.load_ms, beacon.cls,
            beacon.received_at, beacon.campaign, beacon.page_group, beacon.device,
            beacon.user_agent, beacon.referrer)


def _beacon_checked(data: dict[str, Any]) -> Beacon:
    """Validate a canonical beacon object field by field (the reference path)."""
    device = _opt_str(data, "device")
    if device is not None and device not in DEVICES:
        msg = f"'device' must be one of {sorted(DEVICES)}"
        raise InvalidRecord(msg, field="device")
    return Beacon(
        beacon_id=_req_str(data, "beacon_id"),
        session_id=_req_str(data, "session_id"),
        ts=_req_ts(data, "ts"),
        page_url=_req_str(data, "page_url", MAX_URL_LEN),
        lcp_ms=read_metric(data, "lcp_ms"),
        fcp_ms=read_metric(data, "fcp_ms"),
        ttfb_ms=read_metric(data, "ttfb_ms"),
        inp_ms=read_metric(data, "inp_ms"),
        load_ms=read_metric(data, "load_ms"),
        cls=read_metric(data, "cls"),
        received_at=_opt_ts(data, "received_at"),
        campaign=_opt_str(data, "campaign"),
        page_group=_opt_str(data, "page_group"),
        device=device,
        user_agent=_opt_str(data, "user_agent", 1000),
        referrer=referrer_of(data.get("referrer")),
        extra={k: v for k, v in data.items() if k not in _KNOWN_BEACON_KEYS},
    )


def order_from_dict(data: dict[str, Any]) -> Order:
    """Validate an order object."""
    revenue = data.get("revenue")
    if isinstance(revenue, bool) or not isinstance(revenue, int | float) \
            or not math.isfinite(revenue) or not 0 <= revenue <= MAX_REVENUE:
        msg = f"'revenue' must be a number from 0 to {MAX_REVENUE:.0e}"
        raise InvalidRecord(msg, field="revenue")
    currency = _opt_str(data, "currency", 3)
    if currency is not None and not (len(currency) == 3 and currency.isalpha()):
        msg = "'currency' must be an ISO 4217 code"
        raise InvalidRecord(msg, field="currency")
    return Order(
        order_id=_req_str(data, "order_id"),
        session_id=_req_str(data, "session_id"),
        ts=_req_ts(data, "ts"),
        revenue=float(revenue),
        currency=currency.upper() if currency else None,
        campaign=_opt_str(data, "campaign"),
        received_at=_opt_ts(data, "received_at"),
    )


def parse_beacon(raw: bytes) -> Beacon:
    """Read one canonical beacon from JSON bytes (a ``rum-beacons`` value)."""
    return beacon_from_dict(_load_object(raw))


def parse_order(raw: bytes) -> Order:
    """Read one order event from JSON bytes (an ``orders`` value)."""
    return order_from_dict(_load_object(raw))
