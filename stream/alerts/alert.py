"""A fired alert: what the `alerts` table stores and what Kafka and the webhooks receive."""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field
from typing import Any

from stream.core.times import format_duration


@dataclass(frozen=True)
class Sample:
    """An item behind an alert, for people reading the notification."""

    id: str
    title: str
    url: str
    source: str = ""


@dataclass(frozen=True)
class Alert:
    alert_id: str
    rule: str
    kind: str
    severity: str
    scope: str
    window_start: dt.datetime
    window_end: dt.datetime
    value: float
    threshold: float
    item_count: int
    sample_ids: tuple[str, ...]
    message: str
    fired_at: dt.datetime
    samples: tuple[Sample, ...] = field(default=(), compare=False)

    @property
    def window(self) -> dt.timedelta:
        return self.window_end - self.window_start

    def row(self) -> list[Any]:
        """The values in schema.ALERT_COLUMNS order."""
        return [
            self.alert_id,
            self.rule,
            self.kind,
            self.severity,
            self.scope,
            self.window_start,
            self.window_end,
            float(self.value),
            float(self.threshold),
            int(self.item_count),
            list(self.sample_ids),
            self.message,
            self.fired_at,
        ]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the Kafka message and the generic webhook body."""
        return {
            "alert_id": self.alert_id,
            "rule": self.rule,
            "kind": self.kind,
            "severity": self.severity,
            "scope": self.scope,
            "window": format_duration(self.window),
            "window_start": self.window_start.isoformat(),
            "window_end": self.window_end.isoformat(),
            "value": self.value,
            "threshold": self.threshold,
            "item_count": self.item_count,
            "sample_ids": list(self.sample_ids),
            "samples": [{"id": s.id, "title": s.title, "url": s.url, "source": s.source} for s in self.samples],
            "message": self.message,
            "fired_at": self.fired_at.isoformat(),
        }


def make_alert_id(rule: str, scope: str, discriminator: str) -> str:
    """Deterministic, so an incident seen twice (two evaluators, a retry after a crash) is one row
    of the ReplacingMergeTree `alerts` table."""
    digest = hashlib.sha256(f"{rule}\x1f{scope}\x1f{discriminator}".encode()).hexdigest()
    return digest[:32]
