"""The store as a Sink: scored rows and dead letters in one write (and the dead-letter topic)."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Sequence
from typing import Any

from kafka.errors import KafkaError

from stream.consumer.metrics import INSERT_SECONDS
from stream.core.errors import KafkaUnavailable
from stream.core.records import BadRecord, ScoredRow
from stream.core.schema import DEAD_LETTER_COLUMNS, PIPELINE_STATS_COLUMNS, SCORED_COLUMNS
from stream.core.store import Store
from stream.kafka.dlq import DeadLetterTopic

log = logging.getLogger(__name__)


def _ms_to_dt(ms: int | None) -> dt.datetime:
    if ms is None or ms < 0:
        return dt.datetime.now(dt.UTC)
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


def scored_values(row: ScoredRow) -> list[Any]:
    item, rec, pred = row.item, row.record, row.prediction
    return [
        item.id,
        item.source,
        item.url,
        item.title,
        item.text,
        item.lang,
        item.published_at,
        _ms_to_dt(rec.timestamp_ms),
        rec.topic,
        rec.partition,
        rec.offset,
        row.task,
        row.scorer_name,
        row.model_version,
        pred.label,
        pred.score,
        pred.probs,
        pred.truncated,
        row.scored_at,
    ]


def dead_letter_values(bad: BadRecord, now: dt.datetime) -> list[Any]:
    rec = bad.record
    return [
        rec.topic,
        rec.partition,
        rec.offset,
        _ms_to_dt(rec.timestamp_ms),
        bad.kind,
        bad.error,
        rec.value,
        now,
    ]


class ClickHouseSink:
    """Writes scored rows and dead letters; raises StoreError (retryable) when the store fails."""

    def __init__(self, store: Store, dlq: DeadLetterTopic | None) -> None:
        self.store = store
        self.dlq = dlq

    def write_batch(self, scored: Sequence[ScoredRow], bad: Sequence[BadRecord]) -> None:
        started = time.perf_counter()
        if bad:
            try:
                if self.dlq is not None:
                    self.dlq.send(bad)
            except KafkaError as exc:
                raise KafkaUnavailable(f"dead-letter topic write failed: {exc}") from exc
            now = dt.datetime.now(dt.UTC)
            self.store.insert("dead_letters", [dead_letter_values(b, now) for b in bad], DEAD_LETTER_COLUMNS)
        if scored:
            self.store.insert("scored", [scored_values(r) for r in scored], SCORED_COLUMNS)
        INSERT_SECONDS.observe(time.perf_counter() - started)

    def write_stats(self, rows: list[list[Any]]) -> None:
        self.store.insert("pipeline_stats", rows, PIPELINE_STATS_COLUMNS)

    def close(self) -> None:
        if self.dlq is not None:
            self.dlq.close()
