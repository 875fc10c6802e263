"""The three small interfaces the pipeline is built from: source -> scorer -> sink."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class Prediction:
    """One model's verdict on one text."""

    label: str
    score: float  # probability of `label`
    probs: dict[str, float]
    truncated: bool = False  # the text was longer than the model's max_length


@runtime_checkable
class Scorer(Protocol):
    """Scores texts with one model package (an ONNX session, or torch in benchmarks)."""

    name: str  # model name, e.g. "sentiment-minilm"
    task: str  # "sentiment" | "topic" | ...
    version: str  # content-derived model version
    labels: Sequence[str]
    max_length: int

    def score(self, texts: Sequence[str]) -> list[Prediction]: ...


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


class Source(Protocol):
    def next_batch(self, max_items: int, max_wait_ms: int) -> Batch: ...

    def commit(self, batch: Batch) -> None: ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def close(self) -> None: ...


class Sink(Protocol):
    def write_batch(self, scored: Sequence[ScoredRow], bad: Sequence[BadRecord]) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class ScoredRow:
    record: SourceRecord
    item: NewsItem
    scorer_name: str
    task: str
    model_version: str
    prediction: Prediction
    scored_at: dt.datetime
