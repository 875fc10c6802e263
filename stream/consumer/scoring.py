"""The score stage: every item through every model package; a text a model chokes on is a bad record.

A model that fails on (nearly) everything is not bad input: when more than `max_failure_share`
of a batch of at least MIN_ITEMS_FOR_SHARE texts fails, or when the models fail on a plain
probe text as well, score_items raises ModelUnavailable and nothing becomes a dead letter.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Sequence

from stream.consumer.metrics import MODEL_SECONDS, TRUNCATED
from stream.core.errors import ModelUnavailable
from stream.core.interfaces import Scorer
from stream.core.items import error_text
from stream.core.records import BadRecord, NewsItem, ScoredRow, SourceRecord

log = logging.getLogger(__name__)

# Below this many texts a share says little; the probe text decides alone.
MIN_ITEMS_FOR_SHARE = 4
PROBE_TEXT = "The markets opened higher today."


def score_items(
    items: Sequence[tuple[SourceRecord, NewsItem]], scorers: Sequence[Scorer], max_failure_share: float = 0.5
) -> tuple[list[ScoredRow], list[BadRecord]]:
    """Rows for every (item, model); items that make a model fail come back as bad records.
    Raises ModelUnavailable when the failures point at the models rather than the texts."""
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
            bad.append(BadRecord(record=pair[0], kind="score_error", error=error_text(f"{type(exc).__name__}: {exc}")))
    if bad:
        _check_models(len(items), bad, scorers, max_failure_share)
    return rows, bad


def _check_models(n: int, bad: list[BadRecord], scorers: Sequence[Scorer], max_share: float) -> None:
    if n >= MIN_ITEMS_FOR_SHARE and len(bad) / n > max_share:
        raise ModelUnavailable(f"the models failed on {len(bad)} of {n} texts ({bad[0].error})")
    for scorer in scorers:
        try:
            scorer.score([PROBE_TEXT])
        except Exception as exc:
            raise ModelUnavailable(
                f"model {scorer.version} fails on a plain text too: {type(exc).__name__}: {exc}"
            ) from exc


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
