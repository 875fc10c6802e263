"""A fired alert: what the `alerts` table stores and what Kafka and the webhooks receive."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from stream.core.times import as_utc, format_duration

SHOWN_SAMPLES = 5  # items (title, link) carried to notifications: the first of `sample_ids`
DeliveryState = Literal["pending", "delivered", "failed"]


@dataclass(frozen=True)
class Sample:
    """An item behind an alert, for people reading the notification."""

    id: str
    title: str
    url: str
    source: str = ""
    # The item's story ('' before the stories job assigned it) and its representative title.
    story_id: str = ""
    story_title: str = ""


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

    @classmethod
    def from_row(cls, row: Sequence[Any], known: Mapping[str, Sample]) -> Alert:
        """The alert of a stored row (schema.ALERT_COLUMNS order); its samples are the `known`
        items among the first of its sample ids."""
        alert_id, rule, kind, severity, scope, start, end, value, threshold, count, ids, message, fired = row
        return cls(
            alert_id=str(alert_id),
            rule=str(rule),
            kind=str(kind),
            severity=str(severity),
            scope=str(scope),
            window_start=as_utc(start),
            window_end=as_utc(end),
            value=float(value),
            threshold=float(threshold),
            item_count=int(count),
            sample_ids=tuple(str(i) for i in ids),
            message=str(message),
            fired_at=as_utc(fired),
            samples=tuple(known[i] for i in ids[:SHOWN_SAMPLES] if i in known),
        )

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
            "samples": [
                {"id": s.id, "title": s.title, "url": s.url, "source": s.source, "story_id": s.story_id,
                 "story_title": s.story_title}
                for s in self.samples
            ],
            "message": self.message,
            "fired_at": self.fired_at.isoformat(),
        }


@dataclass(frozen=True)
class DeliveryStatus:
    """Where an alert's webhook delivery stands (schema.ALERT_DELIVERY_COLUMNS).

    `attempts` counts delivery rounds (one a cycle, each with the webhooks' own retries);
    `delivered_to` names the webhooks that accepted it, so a later round skips them."""

    delivery: DeliveryState
    attempts: int = 0
    delivered_to: tuple[str, ...] = ()
    last_error: str = ""


def make_alert_id(rule: str, scope: str, discriminator: str) -> str:
    """Deterministic, so an incident seen twice (two evaluators, a retry after a crash) is one row
    of the ReplacingMergeTree `alerts` table."""
    digest = hashlib.sha256(f"{rule}\x1f{scope}\x1f{discriminator}".encode()).hexdigest()
    return digest[:32]
