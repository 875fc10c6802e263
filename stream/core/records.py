"""The records that flow through the pipeline: raw messages, news items, rejects, predictions, rows.

The stage interfaces that pass them along are in `stream.core.interfaces`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Prediction:
    """One model's verdict on one text."""

    label: str
    score: float  # probability of `label`
    probs: dict[str, float]
    truncated: bool = False  # the text was longer than the model's max_length


@dataclass(frozen=True)
class SourceRecord:
    """One raw message with where it came from; `value` is the undecoded payload."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    key: bytes | None
    value: bytes


@dataclass(frozen=True)
class NewsItem:
    """A validated news item (the input contract in README)."""

    id: str
    source: str
    url: str
    title: str
    text: str
    lang: str
    published_at: dt.datetime

    @property
    def model_text(self) -> str:
        return f"{self.title}\n{self.text}".strip() if self.title and self.text else self.title or self.text


@dataclass(frozen=True)
class BadRecord:
    """A message that could not become a NewsItem; it goes to the dead-letter path."""

    record: SourceRecord
    kind: str  # invalid_utf8 | invalid_json | not_object | bad_field | no_text | too_large | bad_date
    error: str


@dataclass
class Batch:
    """What one turn of the loop handles: the items, the rejects, and the offsets to commit."""

    items: list[tuple[SourceRecord, NewsItem]] = field(default_factory=list)
    bad: list[BadRecord] = field(default_factory=list)
    # (topic, partition) -> next offset to read once this batch is durable
    next_offsets: dict[tuple[str, int], int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.items) + len(self.bad)

    def add(self, record: SourceRecord, verdict: NewsItem | BadRecord) -> None:
        """One message read: its item or its reject, and the partition's next offset."""
        if isinstance(verdict, BadRecord):
            self.bad.append(verdict)
        else:
            self.items.append((record, verdict))
        self.next_offsets[(record.topic, record.partition)] = record.offset + 1


@dataclass(frozen=True)
class ScoredRow:
    record: SourceRecord
    item: NewsItem
    scorer_name: str
    task: str
    model_version: str
    prediction: Prediction
    scored_at: dt.datetime
