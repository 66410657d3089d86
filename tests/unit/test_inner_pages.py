"""Pages reached from the site itself (referrer of the page's own origin) are not landings.

A session first seen on such a page has had its real landing page delayed or lost: its
landing LCP is unknown, so its session fact carries none (the page it was first seen on is
a later page, with another campaign's LCP if its landing named one).
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from streams.errors import SettingsError
from streams.records import Beacon, beacon_from_dict, beacon_row
from streams.session_state import SessionState
from streams.sessions import Sessionizer, SessionParams
from streams.settings import Settings
from tests.unit.test_sessions import MIN, SHOP, T0, beacon, only, run

GOOGLE = "https://www.google.com"
LANDING = f"{SHOP}/p/1?utm_campaign=spring"


def test_a_page_reached_from_the_site_gives_no_landing_lcp() -> None:
    [session] = run(Sessionizer(), beacon("p2", ts=T0 + 20_000, url=f"{SHOP}/cart",
                                          lcp_ms=900.0, referrer=SHOP))
    assert (session.campaign, session.lcp_ms, session.start_ms) == ("(none)", None, T0 + 20_000)


def test_its_landing_arriving_later_relands_it_with_the_landing_lcp() -> None:
    sz = Sessionizer()
    [first] = run(sz, beacon("p2", ts=T0 + 20_000, url=f"{SHOP}/cart", lcp_ms=900.0,
                             referrer=SHOP))
    facts = run(sz, beacon("p1", ts=T0, url=LANDING, lcp_ms=2100.0, referrer=GOOGLE,
                           received_at=T0 + 5 * MIN))
    [retract] = only(facts, "retract")
    [again] = only(facts, "session")
    assert (first.campaign, first.lcp_ms) == ("(none)", None)
    assert (retract.campaign, retract.lcp_ms) == ("(none)", None)
    assert (again.campaign, again.lcp_ms, again.start_ms) == ("spring", 2100.0, T0)


@pytest.mark.parametrize("referrer", [
    pytest.param(None, id="none"),
    pytest.param(GOOGLE, id="search-engine"),
    pytest.param("https://www.shop.example", id="another-host-of-the-shop"),
    pytest.param("http://shop.example", id="another-scheme"),
    pytest.param("not a url", id="no-origin"),
])
def test_a_landing_from_elsewhere_keeps_its_lcp_at_once(referrer: str | None) -> None:
    [session] = run(Sessionizer(), beacon(url=LANDING, lcp_ms=2100.0, referrer=referrer))
    assert (session.campaign, session.lcp_ms) == ("spring", 2100.0)


@pytest.mark.parametrize("referrer", [f"{SHOP}/p/1?x=1", "HTTPS://Shop.Example:443/"])
def test_the_page_own_origin_in_any_spelling_is_inner(referrer: str) -> None:
    [session] = run(Sessionizer(), beacon(url=f"{SHOP}/cart", lcp_ms=900.0, referrer=referrer))
    assert session.lcp_ms is None


def _state_landed_inner() -> SessionState:
    sz = Sessionizer()
    run(sz, beacon("p2", url=f"{SHOP}/cart", lcp_ms=900.0, referrer=SHOP),
        beacon("p3", ts=T0 + 30_000, url=f"{SHOP}/p/9", referrer=GOOGLE))
    state = sz.session("s1")
    assert state is not None
    assert (state.landing, state.landing_inner) == ("p2", True)
    return state


def test_the_mark_survives_a_state_round_trip() -> None:
    state = _state_landed_inner()
    again = SessionState.from_state(orjson.loads(orjson.dumps(state.to_state())))
    assert again == state
    assert again.landing_inner


def test_a_row_written_before_referrers_loads_as_a_landing_from_elsewhere() -> None:
    data: dict[str, Any] = _state_landed_inner().to_state()
    del data["li"]
    old = SessionState.from_state(data)
    assert (old.landing, old.landing_inner, old.pages["p2"][1]) == ("p2", False, 900.0)


def test_a_restored_session_relands_as_the_one_it_was() -> None:
    first = Sessionizer()
    run(first, beacon("p2", url=f"{SHOP}/cart", lcp_ms=900.0, referrer=SHOP))
    changed, _ = first.drain_changes()
    second = Sessionizer()
    second.restore(orjson.loads(orjson.dumps(changed)).items(), first.snapshot_watermark())
    landing = beacon("p1", ts=T0 - 20_000, url=LANDING, referrer=SHOP, lcp_ms=2100.0)
    facts = run(first, landing)
    assert run(second, landing) == facts
    assert [(f.kind, f.lcp_ms) for f in facts] == [("retract", None), ("session", None)]


def test_a_late_landing_that_is_itself_inner_gives_no_lcp() -> None:
    """A link within the shop carrying utm parameters names a campaign but is no landing."""
    sz = Sessionizer()
    run(sz, beacon("p2", ts=T0 + 20_000, url=f"{SHOP}/cart", lcp_ms=900.0))
    facts = run(sz, beacon("p1", ts=T0, url=LANDING, lcp_ms=2100.0, referrer=SHOP,
                           received_at=T0 + 5 * MIN))
    [retract] = only(facts, "retract")
    [again] = only(facts, "session")
    assert (retract.campaign, retract.lcp_ms) == ("(none)", 900.0)
    assert (again.campaign, again.lcp_ms, again.start_ms) == ("spring", None, T0)


def test_the_canonical_beacon_carries_its_referrer() -> None:
    data = {"beacon_id": "b", "session_id": "s", "ts": T0, "page_url": f"{SHOP}/cart",
            "referrer": SHOP}
    assert beacon_row(data)[-1] == SHOP
    parsed = beacon_from_dict(data)
    assert (parsed.referrer, parsed.extra) == (SHOP, {})
    assert orjson.loads(parsed.to_json())["referrer"] == SHOP
    assert beacon_row({**data, "referrer": ""})[-1] is None


@pytest.mark.parametrize("bad", [42, {"url": SHOP}, "x" * 5000])
def test_a_referrer_that_is_not_a_url_string_is_ignored_not_refused(bad: object) -> None:
    """Before revwatch read it, a referrer was an unknown field, kept and ignored."""
    data = {"beacon_id": "b", "session_id": "s", "ts": T0, "page_url": f"{SHOP}/",
            "referrer": bad, "lcp_ms": 900.0}
    assert beacon_row(data)[-1] is None
    parsed = beacon_from_dict(data)
    assert (parsed.referrer, parsed.lcp_ms) == (None, 900.0)
    assert beacon_row({**data, "lcp_ms": 900})[-1] is None  # the odd-metrics path too


def test_beacon_keeps_referrer_last_before_extra() -> None:
    b = Beacon("b", "s", T0, f"{SHOP}/", referrer=SHOP)
    assert beacon_row(orjson.loads(b.to_json()))[-1] == SHOP


SITE = ("https://shop.example", "https://WWW.shop.example:443/")


@pytest.mark.parametrize(("site", "inner"), [((), False), (SITE, True)])
def test_the_shop_other_origins_count_when_named(site: tuple[str, ...], inner: bool) -> None:
    sz = Sessionizer(SessionParams.from_settings(Settings(site_origins=site)))
    [session] = run(sz, beacon(url=f"{SHOP}/cart", lcp_ms=900.0,
                               referrer="https://www.shop.example"))
    assert (session.lcp_ms is None) == inner


def test_a_named_origin_does_not_make_every_referrer_inner() -> None:
    sz = Sessionizer(SessionParams(site_origins=frozenset(SITE)))
    [session] = run(sz, beacon(url="https://other.example/p", lcp_ms=900.0, referrer=SHOP))
    assert session.lcp_ms == 900.0  # the page is not on one of the shop's origins


def test_site_origins_that_are_not_origins_are_refused_by_name() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"REVWATCH_SITE_ORIGINS": "https://shop.example,shop.example"})
    assert "REVWATCH_SITE_ORIGINS" in str(caught.value)
    assert Settings.from_env({"REVWATCH_SITE_ORIGINS": "https://a.example, https://b.example"}
                             ).site_origins == ("https://a.example", "https://b.example")
    with pytest.raises(ValueError, match="site_origins"):
        SessionParams(site_origins=frozenset({"/path"}))
