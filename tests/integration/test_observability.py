"""Real Prometheus and Alertmanager watch a running worker through a performance incident.

One module-scoped scenario (2.5-4 minutes): Kafka, a real Alertmanager (routes and
inhibitions of ``deploy/alertmanager/alertmanager.yml``, receivers redirected to a local
aiohttp webhook), one ``revwatch worker`` delivering to that Alertmanager and to the webhook,
and a real Prometheus (the deploy scrape jobs and ``rules.yml``, 2 s scrape, 1 s evaluation).
The demo shop at half its traffic (2.5 h warm-up, a 20-minute slowdown of ``spring_sale``,
40 quiet minutes) is fed to Kafka at ``SPEED`` event seconds per wall second, in 15-minute
chunks that wait for the worker's verdicts to reach the previous chunk; a few beacons and
one unreadable body go through the collector, one unreadable record straight to Kafka.

Traffic is time-compressed, so Prometheus gets ``rules.yml`` with every ``for`` and range
window divided by ``SPEED`` (``for: 5m`` -> ``2s``); thresholds are the repo's. Feeding the
whole shop unpaced is not used: orders (a small topic) are then read far ahead of their
sessions' beacons, and the sessionizer expires them as orphans (see the report in
docs/OPERATIONS.md, "Observability").
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import statistics
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import orjson
import pytest

from streams.alertmanager import SEVERITIES
from streams.feed import FeedStats, feed
from streams.simulate import demo_scenario, generate
from streams.simulate_model import DAY_MS, DEFAULT_START_MS, HOUR_MS, Scenario
from tests.integration.prom_harness import (
    DASHBOARD,
    RULES,
    AmAlert,
    Daemon,
    Poller,
    WebhookServer,
    compress_rules,
    get_json,
    prom_query,
    prom_query_range,
    promtool_check_metrics,
    rule_alert_names,
    start_alertmanager,
    start_prometheus,
)
from tests.integration.worker_harness import (
    Message,
    Worker,
    metric_samples,
    produce,
    worker_settings,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

SPEED = 150.0  # event seconds per wall second (feed pacing and rule compression)
WARMUP_HOURS = 2.5
SCALE = 1.0  # the demo's traffic: at half of it the first 2.5 hours teach too flat a curve to page
LATENCY_REQUESTS = 200
CHUNK_MS = 15 * 60_000  # the feed stays within one chunk of the worker's verdicts
CHUNK_TIMEOUT_S = 20.0
CATCH_UP_TIMEOUT_S = 120.0
SETTLE_TIMEOUT_S = 45.0
CONTRACT_METRICS = (
    "revwatch_beacons_total", "revwatch_orders_total", "revwatch_campaign_sessions_per_minute",
    "revwatch_campaign_conversion_rate", "revwatch_campaign_conversion_rate_baseline",
    "revwatch_campaign_lcp_p75_seconds", "revwatch_campaign_lcp_p75_baseline_seconds",
    "revwatch_campaign_revenue_at_risk_per_hour", "revwatch_alerts_firing",
    "revwatch_event_lag_seconds")
ALERT_FIELDS = {"alert_id", "incident_id", "scope", "ts", "campaign", "kind", "state",
                "started_at", "revenue_at_risk_per_hour", "revenue_at_risk_per_hour_low",
                "revenue_at_risk_per_hour_high", "revenue_lost", "evidence", "summary"}


def scenario() -> Scenario:
    """The demo shop at its usual hour of day, shifted by whole days to start after now.

    Event time then runs ahead of the wall clock: event lag is 0 and Alertmanager sees
    ``startsAt``/``endsAt`` capped at the wall clock (streams/alertmanager.py).
    """
    base = DEFAULT_START_MS + 12 * HOUR_MS
    days = math.ceil((time.time() * 1000 - base) / DAY_MS)
    shop = demo_scenario(1, warmup_hours=WARMUP_HOURS, start_ms=base + days * DAY_MS)
    return replace(shop, scale=SCALE)


@dataclass
class Run:
    """Everything the scenario started and saw; the daemons stay up for the tests."""

    worker: Worker
    prometheus: Daemon
    alertmanager: Daemon
    webhook: WebhookServer
    began: float
    am_seen: dict[str, AmAlert] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    stats: FeedStats | None = None
    feed_s: float = 0.0
    settle_s: float = 0.0
    held_s: float = 0.0
    scrape: str = ""
    incident_scrape: str = ""
    progress: list[tuple[float, int]] = field(default_factory=list)  # (wall s, as_of ms)

    def watch_alertmanager(self) -> None:
        for alert in get_json(f"{self.alertmanager.url}/api/v2/alerts"):
            seen = self.am_seen.setdefault(alert["fingerprint"],
                                           AmAlert(alert["labels"], time.time()))
            if alert["annotations"] and alert["annotations"] not in seen.updates:
                seen.updates.append(alert["annotations"])
            seen.states.add(alert["status"]["state"])
            seen.inhibited_by.update(alert["status"].get("inhibitedBy") or [])

    def watch_metrics(self) -> None:
        """Keep the first scrape that shows every CONTRACT metric (alerts firing included)."""
        text = self.worker.metrics_text()
        as_of = self.worker.get("/campaigns").json()["as_of"]
        if as_of:
            self.progress.append((time.time(), as_of))
        if not self.incident_scrape or len(present(text)) > len(present(self.incident_scrape)):
            self.incident_scrape = text

    def timeline(self) -> str:
        rows = sorted(self.am_seen.values(), key=lambda a: a.first_seen)
        return "\n".join(
            f"  +{a.first_seen - self.began:6.1f}s {a.labels.get('alertname')} "
            f"{a.labels.get('campaign', '')} {a.labels.get('kind', '')} {sorted(a.states)} "
            f"inhibited_by={len(a.inhibited_by)}" for a in rows)

    def notifications(self) -> list[dict[str, Any]]:
        """Alertmanager's webhook notifications (to any receiver)."""
        return list(self.webhook.bodies("/am/"))

    def revwatch_posts(self) -> list[dict[str, Any]]:
        """The CONTRACT alert bodies the worker POSTed to REVWATCH_WEBHOOK_URL."""
        return list(self.webhook.bodies("/revwatch"))


def present(scrape: str) -> list[str]:
    """The CONTRACT metric names that have a sample in ``scrape``."""
    return [m for m in CONTRACT_METRICS if metric_samples(scrape, m)]


def measure_campaigns(run: Run, delay_s: float) -> None:
    """After ``delay_s``, GET /campaigns ``LATENCY_REQUESTS`` times back to back."""
    time.sleep(delay_s)
    for _ in range(LATENCY_REQUESTS):
        began = time.perf_counter()
        reply = run.worker.get("/campaigns", timeout_s=10)
        run.latencies_ms.append((time.perf_counter() - began) * 1000)
        assert reply.status == 200, reply


async def traffic(run: Run, shop: Scenario) -> None:
    """Collector beacons and a bad body, a bad Kafka record, then the paced shop."""
    s = run.worker.settings
    now = int(time.time() * 1000)
    good = [{"beacon_id": f"probe-{i}:1", "session_id": f"probe-{i}", "ts": now,
             "page_url": "https://shop.example/?utm_campaign=collector_probe",
             "lcp_ms": 1800.0} for i in range(3)]
    reply = run.worker.request("POST", "/beacon", orjson.dumps(good),
                               {"Content-Type": "application/json"})
    assert reply.status == 204, f"POST /beacon answered {reply.status}: {reply.body!r}"
    bad = run.worker.request("POST", "/beacon", b"{", {"Content-Type": "application/json"})
    assert bad.status == 400, f"an unreadable body got {bad.status}"
    await produce(run.worker.bootstrap, [Message.of(s.beacons_topic, b"not json", key="bad")])
    began = time.monotonic()
    run.stats = FeedStats()
    chunks = itertools.groupby(generate(shop), key=lambda r: (arrival_ms(r) - shop.start_ms)
                               // CHUNK_MS)
    for index, chunk in chunks:
        await keep_step(run, shop.start_ms + (index - 1) * CHUNK_MS)
        part = await feed(run.worker.bootstrap, chunk, beacons_topic=s.beacons_topic,
                          orders_topic=s.orders_topic, speed=SPEED)
        run.stats.beacons += part.beacons
        run.stats.orders += part.orders
        run.stats.last_event_ms = max(run.stats.last_event_ms, part.last_event_ms)
    run.feed_s = time.monotonic() - began


def arrival_ms(record: tuple[str, dict[str, Any]]) -> int:
    return int(record[1].get("received_at") or record[1]["ts"])


async def keep_step(run: Run, until_ms: int) -> None:
    """Hold the feed until the worker's verdicts reach ``until_ms`` (bounded).

    A worker that falls behind later catches up faster than ``SPEED``, which would shrink
    the incident in wall time below the rules' ``for``; and orders read far ahead of
    their beacons are expired as orphans (docs/OPERATIONS.md, "Observability").
    """
    began = time.monotonic()
    while time.monotonic() - began < CHUNK_TIMEOUT_S:
        as_of = run.worker.get("/campaigns").json()["as_of"]
        if as_of is None or as_of >= until_ms:
            break
        await asyncio.sleep(0.25)
    run.held_s += time.monotonic() - began


def settled(run: Run) -> bool:
    """Resolved alert posted by the worker and notified by Alertmanager, a rule alert seen."""
    resolved_posts = [a for a in run.revwatch_posts() if a.get("state") == "resolved"]
    resolved_notes = [n for n in run.notifications() if n.get("status") == "resolved"
                      and any(a["labels"].get("service") == "revwatch" for a in n["alerts"])]
    rules = rule_alert_names(RULES.read_text())
    rule_seen = any(a.labels.get("alertname") in rules for a in run.am_seen.values())
    return bool(resolved_posts and resolved_notes and rule_seen)


def caught_up(run: Run, shop: Scenario) -> bool:
    """The worker's verdicts reached the last minutes of the scenario."""
    return bool(run.progress) and run.progress[-1][1] >= shop.end_ms - 10 * 60_000


def wait_for(condition: Callable[[], bool], timeout_s: float, worker: Worker) -> None:
    """Wait (bounded) for ``condition``; the tests then say what is missing."""
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        worker.assert_alive()
        time.sleep(0.5)


@pytest.fixture(scope="module")
def run(request: pytest.FixtureRequest, kafka_bootstrap: str,
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    tmp = tmp_path_factory.mktemp("observability")
    shop = scenario()
    with contextlib.ExitStack() as stack:
        webhook = WebhookServer()
        webhook.start()
        stack.callback(webhook.stop)
        am = start_alertmanager(tmp / "alertmanager", webhook.url)
        stack.callback(am.stop)
        settings = worker_settings(kafka_bootstrap, "obs", tmp / "worker",
                                   alertmanager_url=am.url,
                                   webhook_url=f"{webhook.url}/revwatch")
        worker = Worker(settings, tmp / "worker" / "worker.log")
        worker.start()
        stack.callback(worker.stop)
        worker.wait_ready()
        prom = start_prometheus(
            tmp / "prometheus", worker=f"127.0.0.1:{settings.web_port}",
            alertmanager=f"127.0.0.1:{am.port}",
            rules_text=compress_rules(RULES.read_text(), SPEED))
        stack.callback(prom.stop)
        result = Run(worker, prom, am, webhook, began=time.time())
        watcher = Poller(result.watch_alertmanager, 0.5)
        watcher.start()
        stack.callback(watcher.stop)
        scraper = Poller(result.watch_metrics, 2.0)
        scraper.start()
        stack.callback(scraper.stop)
        warmup_s = WARMUP_HOURS * 3600 / SPEED
        prober = threading.Thread(target=measure_campaigns, args=(result, warmup_s - 10),
                                  daemon=True)
        prober.start()
        asyncio.run(traffic(result, shop))
        prober.join(timeout=60)
        began = time.monotonic()
        wait_for(lambda: caught_up(result, shop), CATCH_UP_TIMEOUT_S, worker)
        wait_for(lambda: settled(result), SETTLE_TIMEOUT_S, worker)
        result.settle_s = time.monotonic() - began
        time.sleep(3)  # a few more scrapes and evaluations after the last update
        result.scrape = worker.metrics_text()
        print(f"\nAlertmanager alerts, first seen after the start:\n{result.timeline()}\n"
              f"the feed waited {result.held_s:.0f} s for the worker")
        failed_before = request.session.testsfailed
        yield result
        if request.session.testsfailed > failed_before:
            print(f"\n{worker.describe(lines=80)}\nwatcher errors: {watcher.errors[:5]}\n"
                  f"alertmanager log:\n{am.log_tail()}\nprometheus log:\n{prom.log_tail()}")


def test_prometheus_scrapes_the_worker(run: Run) -> None:
    up = prom_query(run.prometheus.url, 'up{job="revwatch"}')
    assert [s["value"][1] for s in up] == ["1"], f"up{{job=revwatch}}: {up}"
    targets = get_json(f"{run.prometheus.url}/api/v1/targets")["data"]["activeTargets"]
    health = {t["labels"]["job"]: t["health"] for t in targets}
    assert health == {"revwatch": "up", "alertmanager": "up", "prometheus": "up"}, targets


def test_live_scrapes_pass_promtool_check_metrics(run: Run) -> None:
    assert run.incident_scrape, "no /metrics scrape was taken during the run"
    problems = {"during the incident": promtool_check_metrics(run.incident_scrape),
                "at the end": promtool_check_metrics(run.scrape)}
    assert not any(problems.values()), f"promtool check metrics: {problems}"


def test_every_contract_metric_is_exported_and_stored(run: Run) -> None:
    missing = sorted(set(CONTRACT_METRICS) - set(present(run.incident_scrape)))
    assert not missing, f"CONTRACT metrics in no live /metrics scrape of the run: {missing}"
    stored = [m for m in CONTRACT_METRICS if not prom_query_range(
        run.prometheus.url, f'{m}{{job="revwatch"}}', run.began, time.time())]
    assert not stored, f"CONTRACT metrics Prometheus did not store: {stored}"


def dashboard_queries() -> list[tuple[str, str]]:
    """(panel title / refId, PromQL with the template variables substituted)."""
    board = orjson.loads(DASHBOARD.read_bytes())
    out = []
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            expr = (target["expr"].replace("${campaign}", ".*").replace("$campaign", ".*")
                    .replace("$__rate_interval", "1m").replace("$__range", "1h"))
            assert "$" not in expr, f"unsubstituted variable in {panel['title']}: {expr}"
            out.append((f"{panel['title']} / {target['refId']}", expr))
    return out


def test_every_dashboard_query_returns_data(run: Run) -> None:
    queries = dashboard_queries()
    assert len(queries) >= 15, f"the dashboard has only {len(queries)} queries"
    empty = [title for title, expr in queries
             if not prom_query_range(run.prometheus.url, expr, run.began, time.time())]
    assert not empty, f"dashboard queries without data over the run: {empty}"


def test_counters_count_the_traffic(run: Run) -> None:
    assert run.stats is not None, "the feed did not finish"
    fed = {"revwatch_orders_total": run.stats.orders,
           "revwatch_beacons_total": run.stats.beacons, "revwatch_sessions_total": 1}
    counted = {name: sum(metric_samples(run.scrape, name).values()) for name in fed}
    short = {name: (counted[name], least) for name, least in fed.items()
             if counted[name] < least}
    assert not short, f"(counted, at least expected) after the feed: {short}"


def test_a_prometheus_rule_fires_and_reaches_alertmanager(run: Run) -> None:
    names = rule_alert_names(RULES.read_text())
    reached = {a.labels["alertname"]: a for a in run.am_seen.values()
               if a.labels.get("alertname") in names}
    assert reached, ("no alert of rules.yml reached Alertmanager; seen: "
                     f"{sorted({a.labels.get('alertname', '?') for a in run.am_seen.values()})}")
    campaign_rules = {"RevwatchRevenueAtRiskHigh", "RevwatchLcpAboveBaseline"}
    assert campaign_rules & reached.keys(), f"no incident rule fired: {sorted(reached)}"
    for name in campaign_rules & reached.keys():
        assert reached[name].labels.get("campaign") == "spring_sale", reached[name].labels
        assert {"severity", "team"} <= reached[name].labels.keys(), reached[name].labels
    inhibited = [name for name in campaign_rules & reached.keys()
                 if "suppressed" in reached[name].states and reached[name].inhibited_by]
    assert inhibited, ("no campaign rule alert was inhibited by the revwatch alert on the "
                       f"same campaign: {[(n, reached[n].states) for n in reached]}")
    fired = prom_query_range(run.prometheus.url, 'ALERTS{alertstate="firing"}', run.began,
                             time.time())
    assert {s["metric"]["alertname"] for s in fired} >= campaign_rules & reached.keys()


def revwatch_in_am(run: Run) -> list[AmAlert]:
    return [a for a in run.am_seen.values() if a.labels.get("service") == "revwatch"]


def test_revwatch_alert_reaches_alertmanager_with_labels_and_figures(run: Run) -> None:
    alerts = [a for a in revwatch_in_am(run) if a.labels.get("campaign") == "spring_sale"]
    assert alerts, f"no revwatch alert on spring_sale in Alertmanager: {list(run.am_seen)}"
    kinds = {a.labels["kind"] for a in alerts}
    assert "performance_conversion_loss" in kinds, kinds
    alert = next(a for a in alerts if a.labels["kind"] == "performance_conversion_loss")
    assert {"campaign", "kind", "severity", "incident_id", "alertname"} <= alert.labels.keys()
    assert alert.labels["alertname"] == "RevwatchPerformanceConversionLoss"
    assert alert.labels["severity"] == "page", alert.labels  # thousands/h at risk
    assert alert.updates, "the alert carried no annotations"
    for notes in alert.updates:
        assert notes["summary"], notes
        assert "Revenue at risk" in notes["description"], notes
        low, high = (float(notes[f"revenue_at_risk_per_hour_{b}"]) for b in ("low", "high"))
        assert low <= float(notes["revenue_at_risk_per_hour"]) <= high, notes
        assert notes["currency"] == "USD", notes
    assert alert.peak("revenue_at_risk_per_hour") >= 500, alert.updates
    assert alert.peak("revenue_lost") > 0, alert.updates
    for notes in alert.updates:  # what was lost, with its interval
        low, high = (float(notes[f"revenue_lost_{b}"]) for b in ("low", "high"))
        assert low <= float(notes["revenue_lost"]) <= high, notes
    assert "lost (90% interval" in alert.updates[-1]["description"], alert.updates[-1]
    assert "active" in alert.states, alert.states
    others = [a.labels for a in revwatch_in_am(run) if a.labels.get("campaign") != "spring_sale"
              and a.labels["kind"] != "latency_regression"]
    assert not others, f"revwatch paged for campaigns without an incident: {others}"


def test_revwatch_alert_resolves_in_alertmanager(run: Run) -> None:
    resolved = [a for n in run.notifications() if n["status"] == "resolved"
                for a in n["alerts"] if a["labels"].get("service") == "revwatch"
                and a["labels"].get("campaign") == "spring_sale"]
    assert resolved, f"no resolved notification for spring_sale: {run.notifications()}"
    assert all(a["status"] == "resolved" for a in resolved), resolved
    active = get_json(f"{run.alertmanager.url}/api/v2/alerts",
                      {"filter": 'service="revwatch"', "active": "true"})
    still = [a["labels"] for a in active if a["labels"].get("campaign") == "spring_sale"]
    assert not still, f"spring_sale is still active in Alertmanager: {still}"
    firing = [n for n in run.notifications() if n["status"] == "firing"
              and any(a["labels"].get("service") == "revwatch"
                      and a["labels"].get("campaign") == "spring_sale" for a in n["alerts"])]
    assert firing, "Alertmanager never notified the firing spring_sale alert"
    assert list(firing[0]["groupLabels"]) == ["incident_id"], firing[0]["groupLabels"]
    assert firing[0]["receiver"] == "oncall", firing[0]["receiver"]


def test_webhook_receives_contract_alert_json(run: Run) -> None:
    posts = [a for a in run.revwatch_posts() if a.get("campaign") == "spring_sale"]
    assert posts, "the worker POSTed no alert for spring_sale to REVWATCH_WEBHOOK_URL"
    for body in posts:
        assert set(body) >= ALERT_FIELDS, sorted(ALERT_FIELDS - set(body))
    states = [p["state"] for p in posts if p["kind"] == "performance_conversion_loss"]
    assert states, "no performance_conversion_loss update was POSTed"
    assert states[0] == "firing", states
    assert states[-1] == "resolved", states
    episode = {p["alert_id"] for p in posts if p["kind"] == "performance_conversion_loss"}
    assert len(episode) == 1, episode
    for body in posts:  # revwatch's extension: the 90% interval of what was lost
        assert body["revenue_lost_low"] <= body["revenue_lost"] <= body["revenue_lost_high"], body
    resolved = next(p for p in posts if p["alert_id"] in episode and p["state"] == "resolved")
    assert resolved["revenue_lost_low"] < resolved["revenue_lost_high"], resolved
    assert "lost (90%: $" in resolved["summary"], resolved["summary"]
    # who is woken: the webhook says what Alertmanager routed the same episode on
    said = [p["evidence"]["severity"] for p in posts if p["alert_id"] in episode]
    assert said == sorted(said, key=SEVERITIES.index), said  # it only escalates
    routed = {a.labels["severity"] for a in revwatch_in_am(run)
              if a.labels.get("alert_id") in episode}
    assert routed, f"the episode never reached Alertmanager: {list(run.am_seen)}"
    assert said[-1] == max(routed, key=SEVERITIES.index) == "page", (said, routed)


def test_campaigns_endpoint_is_fast_enough_to_poll_every_second(run: Run) -> None:
    lat = sorted(run.latencies_ms)
    assert len(lat) == LATENCY_REQUESTS, f"only {len(lat)} GET /campaigns completed"
    p50, p99 = statistics.median(lat), lat[math.ceil(0.99 * len(lat)) - 1]
    print(f"\nGET /campaigns over {len(lat)} sequential requests during the run: "
          f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {lat[-1]:.1f} ms; feed {run.feed_s:.0f} s, "
          f"settle {run.settle_s:.0f} s, {run.stats}")
    assert p99 < 1000, f"p99 {p99:.0f} ms: too slow to poll every second"
    body = orjson.loads(urllib.request.urlopen(f"{run.worker.base_url}/campaigns",
                                               timeout=10).read())
    rows = {c["campaign"]: c for c in body["campaigns"]}
    assert "spring_sale" in rows, body
    for row in rows.values():  # the money fields of every row agree with each other
        assert row["revenue_at_risk_per_hour_low"] <= row["revenue_at_risk_per_hour"] \
            <= row["revenue_at_risk_per_hour_high"], row
        if row["revenue_per_hour"] is not None:
            assert row["revenue_per_hour"] == pytest.approx(
                row["sessions_per_minute"] * 60 * row["conversion_rate"]
                * row["revenue_per_conversion"], rel=0.01, abs=0.05), row
            assert row["revenue_per_conversion"] >= row["average_order_value"], row


def test_prometheus_stores_the_money_with_its_interval(run: Run) -> None:
    """The revenue at risk's 90% interval and the revenue per hour, as Prometheus stored
    them from the worker's scrapes: no sample outside its interval, the incident's interval
    reaching paging money, and spring_sale's revenue per hour now and normally."""
    def stored(expr: str) -> list[dict[str, Any]]:
        return prom_query_range(run.prometheus.url, expr, run.began, time.time())

    risk = 'revwatch_campaign_revenue_at_risk_per_hour{job="revwatch"}'
    assert not stored(f"{risk} < revwatch_campaign_revenue_at_risk_per_hour_low")
    assert not stored(f"{risk} > revwatch_campaign_revenue_at_risk_per_hour_high")
    high = stored('revwatch_campaign_revenue_at_risk_per_hour_high{campaign="spring_sale"}')
    assert high, "no upper bound stored for spring_sale"
    assert max(float(v) for series in high for _, v in series["values"]) >= 500, high
    for name in ("revwatch_campaign_revenue_per_hour",
                 "revwatch_campaign_revenue_per_hour_baseline"):
        series = stored(f'{name}{{campaign="spring_sale"}}')
        assert series, name
        assert max(float(v) for s in series for _, v in s["values"]) > 0, (name, series)


def test_prometheus_counts_what_the_episodes_say_was_lost(run: Run) -> None:
    """``revwatch_campaign_revenue_lost_total`` as Prometheus stored it: spring_sale's
    counter ends at what its episodes' last updates say was lost (the resolve line's
    "~$N lost"), and the dashboard's "Revenue lost in this range" reads it."""
    posts = [p for p in run.revwatch_posts() if p.get("campaign") == "spring_sale"]
    last: dict[str, dict[str, Any]] = {}
    for post in posts:
        last[post["alert_id"]] = post
    assert any(p["state"] == "resolved" and p["revenue_lost"] > 0 for p in last.values()), last
    series = prom_query_range(run.prometheus.url,
                              'revwatch_campaign_revenue_lost_total{campaign="spring_sale"}',
                              run.began, time.time())
    assert series, "no revenue lost counted for spring_sale"
    counted = sum(max(float(v) for _, v in s["values"]) for s in series)
    said = sum(p["revenue_lost"] for p in last.values())
    assert counted == pytest.approx(said, rel=0.02), (counted, said)
