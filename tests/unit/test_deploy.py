"""deploy/: Prometheus config and rules (promtool), Alertmanager routing (amtool), the Grafana
dashboard, compose.yaml and the Dockerfile are valid and agree with the code.

promtool and amtool come from the Debian packages ``prometheus`` and
``prometheus-alertmanager``; a missing tool fails the test with the install command.
There is no Docker engine here, so compose.yaml is checked as data, not run.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from streams.app import create_app
from streams.settings import Settings
from streams.topics import revwatch_topics

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PROMETHEUS_YML = DEPLOY / "prometheus" / "prometheus.yml"
RULES_YML = DEPLOY / "prometheus" / "rules.yml"
ALERTMANAGER_YML = DEPLOY / "alertmanager" / "alertmanager.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "revwatch.json"
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h",
                     "$campaign": ".*"}
STANDARD_SERIES = {"up", "ALERTS"}
PROMQL_WORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}


def tool(name: str, package: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} missing: apt-get install -y {package}"
    return path


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False,
                          cwd=ROOT)


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in dashboard()["panels"] for t in p.get("targets", [])]


def as_promql(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def metric_names(expr: str) -> set[str]:
    """Series names an expression selects (label matchers, groupings, ranges removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', as_promql(expr))
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = re.findall(r"(?<![\w:.])([A-Za-z_:][\w:]*)\b(?!\s*\()", text)
    return {n for n in names if n.lower() not in PROMQL_WORDS}


def exposed_names(registry: CollectorRegistry) -> set[str]:
    suffixes = {"counter": ["_total"], "gauge": [""], "histogram": ["_bucket", "_sum", "_count"],
                "summary": ["_sum", "_count", ""]}
    return {family.name + suffix for family in registry.collect()
            for suffix in suffixes.get(family.type, [""])}


def known_series() -> set[str]:
    """Every series a worker exports, recorded by rules, or standard.

    The exported ones are read from the registry a worker's ``/metrics`` serves (our
    metrics and :class:`streams.faust_sensor.FaustCollector`'s ``revwatch_faust_*``), not
    from Faust's own Prometheus sensor, whose series the worker no longer exports.
    """
    with tempfile.TemporaryDirectory() as data_dir:
        registry = create_app(dataclasses.replace(Settings(), data_dir=Path(data_dir))).registry
    recorded = {r["record"] for g in load_yaml(RULES_YML)["groups"] for r in g["rules"]
                if "record" in r}
    return exposed_names(registry) | recorded | STANDARD_SERIES


def test_known_series_are_what_a_worker_exports() -> None:
    known = known_series()
    assert {"revwatch_campaign_sessions_per_minute", "revwatch_faust_total_events_total",
            "revwatch_faust_topic_partition_end_offset",
            "revwatch_faust_topic_partition_offset_commited"} <= known
    # Faust's Prometheus sensor series that the lean collector does not export
    assert not {"revwatch_faust_http_latency_bucket", "revwatch_faust_events_runtime_ms_bucket",
                "revwatch_faust_consumer_commit_latency_bucket"} & known


# --- Prometheus ---------------------------------------------------------------------


def test_promtool_check_config() -> None:
    result = run(tool("promtool", "prometheus"), "check", "config", str(PROMETHEUS_YML))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout


def test_promtool_check_rules() -> None:
    result = run(tool("promtool", "prometheus"), "check", "rules", str(RULES_YML))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rule_unit_tests_pass() -> None:
    result = run(tool("promtool", "prometheus"), "test", "rules",
                 str(DEPLOY / "prometheus" / "rules_test.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alerting_rule_is_unit_tested_and_labelled() -> None:
    rules = [r for g in load_yaml(RULES_YML)["groups"] for r in g["rules"] if "alert" in r]
    tested = {case["alertname"] for t in load_yaml(DEPLOY / "prometheus" / "rules_test.yml")
              ["tests"] for case in t.get("alert_rule_test", [])}
    assert {r["alert"] for r in rules} <= tested
    for rule in rules:
        assert rule["labels"]["severity"] in {"page", "ticket"}, rule["alert"]
        assert rule["labels"]["team"] in {"oncall", "marketing"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]


def test_rules_use_only_exported_series() -> None:
    known = known_series()
    for group in load_yaml(RULES_YML)["groups"]:
        for rule in group["rules"]:
            unknown = metric_names(rule["expr"]) - known
            assert not unknown, (rule.get("alert") or rule.get("record"), unknown)


def test_scrape_targets_match_compose_workers() -> None:
    jobs = {job["job_name"]: job for job in load_yaml(PROMETHEUS_YML)["scrape_configs"]}
    targets = set(jobs["revwatch"]["static_configs"][0]["targets"])
    services = load_yaml(DEPLOY / "compose.yaml")["services"]
    workers = {f"{name}:{svc['environment']['REVWATCH_WEB_PORT']}"
               for name, svc in services.items() if name.startswith("worker-")}
    assert targets == workers == {"worker-1:6066", "worker-2:6067"}


# --- Alertmanager -------------------------------------------------------------------


def test_amtool_check_config() -> None:
    result = run(tool("amtool", "prometheus-alertmanager"), "check-config", str(ALERTMANAGER_YML))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 inhibit rules" in result.stdout


@pytest.mark.parametrize(
    ("labels", "receivers"),
    [
        pytest.param(["service=revwatch", "kind=performance_conversion_loss"], "oncall",
                     id="slow-pages-to-oncall"),
        pytest.param(["service=revwatch", "kind=latency_regression"], "oncall",
                     id="latency-to-oncall"),
        pytest.param(["service=revwatch", "kind=conversion_drop"], "oncall,marketing",
                     id="conversion-drop-to-both"),
        pytest.param(["alertname=RevwatchRevenueAtRiskHigh", "team=marketing"], "marketing",
                     id="rule-marketing"),
        pytest.param(["alertname=RevwatchWorkerDown", "team=oncall"], "oncall",
                     id="rule-oncall"),
        pytest.param(["alertname=Unrelated"], "oncall", id="default"),
    ],
)
def test_alertmanager_routes(labels: list[str], receivers: str) -> None:
    result = run(tool("amtool", "prometheus-alertmanager"), "config", "routes", "test",
                 f"--config.file={ALERTMANAGER_YML}", f"--verify.receivers={receivers}", *labels)
    assert result.returncode == 0, result.stdout + result.stderr


def test_alertmanager_groups_by_incident() -> None:
    route = load_yaml(ALERTMANAGER_YML)["route"]
    assert route["group_by"] == ["incident_id"]
    revwatch_routes = [r for r in route["routes"] if 'service="revwatch"' in r["matchers"]]
    assert revwatch_routes
    assert all("group_by" not in r for r in revwatch_routes)  # inherit incident grouping


# --- Grafana ------------------------------------------------------------------------


def test_dashboard_identity_and_variable() -> None:
    dash = dashboard()
    assert dash["uid"] == "revwatch-overview"
    assert dash["title"]
    assert dash["schemaVersion"] >= 39
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["campaign"]["definition"] == (
        "label_values(revwatch_campaign_sessions_per_minute, campaign)")
    assert variables["campaign"]["query"]["query"] == variables["campaign"]["definition"]
    assert variables["campaign"]["includeAll"]
    assert variables["datasource"]["type"] == "datasource"


def test_dashboard_panels_are_complete_and_laid_out() -> None:
    cells: set[tuple[int, int]] = set()
    ids = []
    for panel in dashboard()["panels"]:
        ids.append(panel["id"])
        grid = panel["gridPos"]
        assert grid["x"] >= 0, panel["title"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        area = {(grid["x"] + i, grid["y"] + j) for i in range(grid["w"]) for j in range(grid["h"])}
        assert not area & cells, f"{panel['title']} overlaps another panel"
        cells |= area
        if panel["type"] == "row":
            continue
        assert panel["type"] in {"timeseries", "table", "stat", "bargauge"}, panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"]
            assert target["expr"].strip(), panel["title"]
    assert len(ids) == len(set(ids))


def test_dashboard_covers_what_users_need() -> None:
    titles = " | ".join(p["title"].lower() for p in dashboard()["panels"])
    for words in ["campaign health", "revenue at risk", "conversion rate vs baseline",
                  "p75 lcp vs baseline", "firing alerts", "event lag", "beacons per second",
                  "dead letters", "faust events", "revenue per hour vs normal",
                  "revenue lost in this range"]:
        assert words in titles, words
    table = next(p for p in dashboard()["panels"] if p["title"] == "Campaign health now")
    used = set().union(*(metric_names(t["expr"]) for t in table["targets"]))
    assert {"revwatch_campaign_sessions_per_minute", "revwatch_campaign_conversion_rate",
            "revwatch_campaign_conversion_rate_baseline", "revwatch_campaign_lcp_p75_seconds",
            "revwatch_campaign_lcp_p75_baseline_seconds",
            "revwatch_campaign_revenue_at_risk_per_hour",
            "revwatch_campaign_revenue_at_risk_per_hour_low",
            "revwatch_campaign_revenue_at_risk_per_hour_high", "revwatch_campaign_revenue_per_hour",
            "revwatch_campaign_revenue_per_hour_baseline"} <= used
    # every query's value is a named column
    organize = next(t for t in table["transformations"] if t["id"] == "organize")["options"]
    for target in table["targets"]:
        assert f"Value #{target['refId']}" in organize["renameByName"], target["refId"]


def test_dashboard_queries_parse_with_promtool(tmp_path: Path) -> None:
    exprs = dashboard_exprs()
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": as_promql(e)} for i, e in enumerate(exprs)]}]}
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump(rules))
    result = run(tool("promtool", "prometheus"), "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in result.stdout


def test_dashboard_uses_only_exported_series() -> None:
    known = known_series()
    used = set().union(*(metric_names(e) for e in dashboard_exprs()))
    assert used, "no series found: the extraction is broken"
    assert not used - known


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        pytest.param('sum by (campaign) (rate(a_total{x="b c"}[$__rate_interval]))', {"a_total"},
                     id="grouping-and-range"),
        pytest.param("x and on (campaign) avg_over_time(rec:y:sum[30m]) > 2", {"x", "rec:y:sum"},
                     id="recorded"),
        pytest.param("absent(up{job=\"revwatch\"})", {"up"}, id="function"),
    ],
)
def test_metric_name_extraction(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_grafana_provisioning_points_at_the_dashboard() -> None:
    datasources = load_yaml(DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml")
    source = datasources["datasources"][0]
    assert (source["type"], source["url"]) == ("prometheus", "http://prometheus:9090")
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert variables["datasource"]["current"]["value"] == source["uid"]
    providers = load_yaml(DEPLOY / "grafana" / "provisioning" / "dashboards" / "revwatch.yml")
    path = providers["providers"][0]["options"]["path"]
    mounts = load_yaml(DEPLOY / "compose.yaml")["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{path}:ro" in mounts


# --- compose and Dockerfile ---------------------------------------------------------


def test_compose_services_and_settings() -> None:
    compose = load_yaml(DEPLOY / "compose.yaml")
    services = compose["services"]
    assert set(services) == {"kafka", "topic-init", "worker-1", "worker-2", "prometheus",
                             "alertmanager", "grafana"}
    assert services["kafka"]["image"] == "apache/kafka:3.9.1"
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    fields = {f"REVWATCH_{name.upper()}" for name in Settings.__dataclass_fields__}
    for name in ("worker-1", "worker-2"):
        worker = services[name]
        assert worker["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
        assert worker["environment"]["REVWATCH_BROKER"] == "kafka://kafka:9092"
        assert set(worker["environment"]) <= fields, set(worker["environment"]) - fields
        assert worker["depends_on"]["topic-init"]["condition"] == "service_completed_successfully"
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (DEPLOY / source).exists(), volume
            else:
                assert source in compose["volumes"], volume


def test_compose_creates_every_topic_with_its_partitions() -> None:
    script = load_yaml(DEPLOY / "compose.yaml")["services"]["topic-init"]["command"][0]
    loop = re.search(r"for spec in ([^;]+);", script)
    assert loop, script
    created = {}
    for spec in loop.group(1).split():
        name, count = spec.split(":")
        created[name] = int(count)
    assert created == revwatch_topics(Settings())


def test_dockerfile() -> None:
    lines = [line.strip() for line in (DEPLOY / "Dockerfile").read_text().splitlines()]
    assert "FROM python:3.11-slim" in lines
    assert any(line.startswith("RUN pip install .") for line in lines)
    assert 'ENTRYPOINT ["revwatch"]' in lines
    assert 'CMD ["worker"]' in lines
    for line in lines:
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), source
