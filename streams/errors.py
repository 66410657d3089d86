"""Errors raised by revwatch.

    RevwatchError                 root: catch this to catch everything of ours
    ├── InvalidRecord             a beacon, order or fact that cannot be read (-> dead letter, 400)
    ├── SettingsError             a bad REVWATCH_* value; start-up stops naming the variable
    ├── BrokerError               the local broker could not be installed, started or reached
    ├── InputFileError            a replay input line that cannot be read (names file and line)
    └── DeliveryError             a receiver answered an alert with an error (streams/delivery.py)
"""

from __future__ import annotations

import time
from typing import Any


class RevwatchError(Exception):
    """Root of every error revwatch raises on purpose."""


class InvalidRecord(RevwatchError):
    """A record that cannot be read. ``reason`` is safe to show to the sender."""

    def __init__(self, reason: str, *, field: str | None = None) -> None:
        self.reason = reason
        self.field = field
        super().__init__(reason)

    def to_dead_letter(self, topic: str, raw: bytes | None,
                       received_at_ms: int | None = None) -> dict[str, Any]:
        """The dead-letter value: ``{"error", "topic", "raw", "received_at"}`` (CONTRACT.md)."""
        if received_at_ms is None:
            received_at_ms = int(time.time() * 1000)
        return {
            "error": self.reason,
            "topic": topic,
            "raw": (raw or b"").decode("utf-8", errors="replace"),
            "received_at": received_at_ms,
        }


class SettingsError(RevwatchError):
    """A bad setting. ``variable`` names the environment variable."""

    def __init__(self, variable: str, message: str) -> None:
        self.variable = variable
        super().__init__(f"{variable}: {message}")


class BrokerError(RevwatchError):
    """The local development broker failed; the message says what to do."""


class InputFileError(RevwatchError):
    """A line of an input file that cannot be read."""

    def __init__(self, path: str, line: int, reason: str) -> None:
        self.path = path
        self.line = line
        self.reason = reason
        super().__init__(f"{path}:{line}: {reason}")
