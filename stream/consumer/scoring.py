"""The score stage: every item through every model package; a text a model chokes on is a bad record."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Sequence

from stream.consumer.metrics import MODEL_SECONDS, TRUNCATED
from stream.core.interfaces import Scorer
from stream.core.records import BadRecord, NewsItem, ScoredRow, SourceRecord

log = logging.getLogger(__name__)


def score_items(
    items: Sequence[tuple[SourceRecord, NewsItem]], scorers: Sequence[Scorer]
) -> tuple[list[ScoredRow], list[BadRecord]]:
    """Rows for every (item, model); items that make a model fail come back as bad records."""
    if not items:
        return [], []
    try:
        return _score(items, scorers), []
    except Exception as exc:  # a model error on one text must not stop the stream
        log.warning("batch scoring failed (%s); scoring items one by one", exc)
    rows: list[ScoredRow] = []
    bad: list[BadRecord] = []
    for pair in items:
        try:
            rows.extend(_score([pair], scorers))
        except Exception as exc:
            bad.append(BadRecord(record=pair[0], kind="score_error", error=f"{type(exc).__name__}: {exc}"))
    return rows, bad


def _score(items: Sequence[tuple[SourceRecord, NewsItem]], scorers: Sequence[Scorer]) -> list[ScoredRow]:
    texts = [item.model_text for _, item in items]
    rows: list[ScoredRow] = []
    for scorer in scorers:
        started = time.perf_counter()
        predictions = scorer.score(texts)
        MODEL_SECONDS.labels(scorer.version).observe(time.perf_counter() - started)
        if len(predictions) != len(texts):
            raise RuntimeError(f"{scorer.name} returned {len(predictions)} predictions for {len(texts)} texts")
        now = dt.datetime.now(dt.UTC)
        truncated = 0
        for (record, item), prediction in zip(items, predictions, strict=True):
            truncated += prediction.truncated
            rows.append(ScoredRow(record, item, scorer.name, scorer.task, scorer.version, prediction, now))
        if truncated:
            TRUNCATED.labels(scorer.version).inc(truncated)
    return rows
