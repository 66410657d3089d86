"""Settings: the only module that reads the environment (``REVWATCH_*``).

Build once at start-up with :meth:`Settings.from_env` and pass it down; tests construct
:class:`Settings` directly. A bad value raises :class:`~streams.errors.SettingsError` naming
the variable.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from streams.errors import SettingsError
from streams.urls import origin_of


@dataclass(frozen=True, slots=True)
class Settings:
    """Every setting, with the contract's defaults. Env name: ``REVWATCH_`` + upper name."""

    broker: str = "kafka://127.0.0.1:9092"
    web_port: int = 6066
    web_host: str = "127.0.0.1"
    data_dir: Path = Path("./.revwatch")
    app_id: str = "revwatch"
    log_level: str = "warning"
    # topics
    beacons_topic: str = "rum-beacons"
    orders_topic: str = "orders"
    alerts_topic: str = "alerts"
    dead_letter_topic: str = "revwatch-dead-letter"
    facts_topic: str = "revwatch-session-facts"
    verdicts_topic: str = "revwatch-verdicts"
    partitions: int = 8
    # sessions and time
    session_timeout_minutes: float = 30.0
    order_grace_minutes: float = 60.0
    allowed_lateness_seconds: float = 30.0
    lcp_wait_seconds: float = 60.0
    # collector
    max_body_bytes: int = 65_536
    cors_origins: tuple[str, ...] = ()
    allowed_query_params: tuple[str, ...] = ()
    rate_limit_per_minute: int = 600
    buffer_max_records: int = 100_000
    non_commerce_groups: tuple[str, ...] = ("blog", "content", "help")
    # the page groups of the shop's checkout (docs/FUNNEL.md): a beacon's page_group, else its
    # URL's first path segment
    checkout_groups: tuple[str, ...] = ("checkout",)
    # the shop's origins when it has several (www. and the apex, a checkout host): a page
    # reached from one of them is no landing; a page's own origin always counts
    site_origins: tuple[str, ...] = ()
    # detection and reporting
    currency: str = "USD"
    max_campaign_labels: int = 50
    false_alarms_per_campaign_day: float = 0.02
    min_revenue_per_hour: float = 100.0
    conversion_stake_power: float = 0.5  # 0: same conversion level for every campaign
    # delivery
    alertmanager_url: str = ""
    webhook_url: str = ""
    delivery_queue_max: int = 1_000

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read every ``REVWATCH_<NAME>`` that is set; the rest keep their defaults."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            variable = f"REVWATCH_{f.name.upper()}"
            if variable in env:
                values[f.name] = _convert(variable, env[variable], f)
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Reject values no worker can run with."""
        checks = [
            ("broker", self.broker.startswith("kafka://"), "must look like kafka://host:port"),
            ("web_port", 0 <= self.web_port <= 65535, "must be a port number"),
            ("partitions", self.partitions >= 1, "must be >= 1"),
            ("max_body_bytes", self.max_body_bytes >= 1024, "must be >= 1024"),
            ("session_timeout_minutes", self.session_timeout_minutes > 0, "must be > 0"),
            ("max_campaign_labels", self.max_campaign_labels >= 1, "must be >= 1"),
            ("conversion_stake_power", 0 <= self.conversion_stake_power <= 2,
             "must be in [0, 2]"),
            ("currency", len(self.currency) == 3 and self.currency.isalpha(),
             "must be an ISO 4217 code"),
            ("site_origins", all(origin_of(o) for o in self.site_origins),
             "must be origins like https://shop.example, comma-separated"),
        ]
        for name, ok, message in checks:
            if not ok:
                variable = f"REVWATCH_{name.upper()}"
                raise SettingsError(variable, message)

    @property
    def broker_host_port(self) -> str:
        """``host:port`` of the first broker, for kafka-python and aiokafka."""
        return self.broker.removeprefix("kafka://").split(";")[0].split(",")[0]

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    def to_env(self) -> dict[str, str]:
        """The ``REVWATCH_*`` variables that rebuild these settings in a child process."""
        env: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            text = ",".join(value) if isinstance(value, tuple) else str(value)
            env[f"REVWATCH_{f.name.upper()}"] = text
        return env


def _convert(variable: str, text: str, f: dataclasses.Field[Any]) -> Any:
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    try:
        if kind == "int":
            return int(text)
        if kind == "float":
            return float(text)
        if kind == "Path":
            return Path(text)
        if kind.startswith("tuple"):
            return tuple(part.strip() for part in text.split(",") if part.strip())
    except ValueError:
        raise SettingsError(variable, f"expected {kind}, got {text!r}") from None
    return text

