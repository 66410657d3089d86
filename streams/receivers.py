"""Which alert receivers a worker delivers to, from the settings.

``REVWATCH_ALERTMANAGER_URL`` (base URL, e.g. ``http://127.0.0.1:9093``) and
``REVWATCH_WEBHOOK_URL`` each add a receiver; with neither, alerts still go to the
``alerts`` topic.
"""

from __future__ import annotations

from detectors.severity import PAGE_FACTOR
from streams.delivery import AlertmanagerReceiver, Receiver, WebhookReceiver
from streams.settings import Settings


def receivers_from_settings(settings: Settings) -> list[Receiver]:
    receivers: list[Receiver] = []
    if settings.alertmanager_url:
        receivers.append(AlertmanagerReceiver(
            settings.alertmanager_url, currency=settings.currency,
            page_revenue_per_hour=settings.min_revenue_per_hour * PAGE_FACTOR))
    if settings.webhook_url:
        receivers.append(WebhookReceiver(settings.webhook_url))
    return receivers
