"""The records that flow through the pipeline: raw messages, news items, rejects, predictions, rows.

The stage interfaces that pass them along are in `stream.core.interfaces`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Prediction:
    """One model's verdict on one text."""

    label: str
    score: float  # probability of `label`
    probs: dict[str, float]
    truncated: bool = False  # the text was longer than the model's max_length


@dataclass(frozen=True)
class Entity:
    """A named entity found in an item's model text (`NewsItem.model_text`): characters
    [start, end) of it, as written there, and the normalized form that watch lists and
    dashboards group by (`stream.core.items.normalize_entity`)."""

    text: str
    normalized: str
    type: str  # PER | LOC | ORG
    start: int
    end: int
    score: float  # mean probability of the entity's token labels


@dataclass(frozen=True)
class Analysis:
    """Everything one model package says about one text, from one encoder pass."""

    predictions: dict[str, Prediction]  # head (task) name -> verdict, e.g. "sentiment", "category"
    entities: tuple[Entity, ...] | None = None  # None: the package has no entity head
    truncated: bool = False  # the model saw less than the whole text


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


# What the dead-letter topic made of a BadRecord (its dead_letters row says it; "" = no topic).
DLQ_SENT, DLQ_TRUNCATED, DLQ_FAILED = "sent", "truncated", "failed"


@dataclass(frozen=True)
class BadRecord:
    """A message that could not become a NewsItem; it goes to the dead-letter path."""

    record: SourceRecord
    # invalid_utf8 | invalid_json | not_object | bad_field | no_text | too_large | bad_date | invalid_input
    # (parsing), score_error (a model failed on this text), store_rejected (the store refused its row)
    kind: str
    error: str
    dlq_status: str = ""  # "" or DLQ_SENT | DLQ_TRUNCATED (sent as a prefix) | DLQ_FAILED (given up)
    dlq_error: str = ""


@dataclass
class Batch:
    """What one turn of the loop handles: the items, the rejects, and the offsets to commit."""

    items: list[tuple[SourceRecord, NewsItem]] = field(default_factory=list)
    bad: list[BadRecord] = field(default_factory=list)
    # (topic, partition) -> next offset to read once this batch is durable
    next_offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    # (topic, partition) -> the batch's first offset there (where to read again if it is dropped)
    first_offsets: dict[tuple[str, int], int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.items) + len(self.bad)

    def add(self, record: SourceRecord, verdict: NewsItem | BadRecord) -> None:
        """One message read: its item or its reject, and the partition's next offset."""
        if isinstance(verdict, BadRecord):
            self.bad.append(verdict)
        else:
            self.items.append((record, verdict))
        self.next_offsets[(record.topic, record.partition)] = record.offset + 1
        self.first_offsets.setdefault((record.topic, record.partition), record.offset)

    def drop(self, partitions: Collection[tuple[str, int]]) -> None:
        """Forget what was read from `partitions`: none of it is written or committed."""
        self.items = [(r, i) for r, i in self.items if (r.topic, r.partition) not in partitions]
        self.bad = [b for b in self.bad if (b.record.topic, b.record.partition) not in partitions]
        for tp in partitions:
            self.next_offsets.pop(tp, None)
            self.first_offsets.pop(tp, None)


@dataclass(frozen=True)
class ScoredRow:
    record: SourceRecord
    item: NewsItem
    scorer_name: str
    task: str
    model_version: str
    prediction: Prediction
    scored_at: dt.datetime


@dataclass(frozen=True)
class EntityRow:
    """The entities one package found in one item (possibly none), with the item's sentiment."""

    record: SourceRecord
    item: NewsItem
    model_version: str
    sentiment: str  # the same package's sentiment label, "" when it has no sentiment head
    entities: tuple[Entity, ...]
    scored_at: dt.datetime
