"""The score stage: every item through every model package; a text a model chokes on is a bad record.

Each package analyzes a batch in one call (one encoder pass per text fills all its heads): an item
gets one ScoredRow per sequence head (task = head name) and, from a package with an entity head,
one EntityRow holding its whole entity set, possibly empty, so that a re-delivery replaces it.

A model that fails on (nearly) everything is not bad input: when more than `max_failure_share`
of a batch of at least MIN_ITEMS_FOR_SHARE texts fails, or when the models fail on a plain
probe text as well, score_items raises ModelUnavailable and nothing becomes a dead letter.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from stream.consumer.metrics import MODEL_SECONDS, TRUNCATED
from stream.core.errors import ModelUnavailable
from stream.core.interfaces import Scorer
from stream.core.items import error_text
from stream.core.records import Analysis, BadRecord, EntityRow, NewsItem, ScoredRow, SourceRecord

log = logging.getLogger(__name__)

# Below this many texts a share says little; the probe text decides alone.
MIN_ITEMS_FOR_SHARE = 4
PROBE_TEXT = "The markets opened higher today."
SENTIMENT_HEAD = "sentiment"  # the head whose label an EntityRow carries


@dataclass
class Scored:
    """What the score stage made of a batch's valid items."""

    rows: list[ScoredRow] = field(default_factory=list)
    entities: list[EntityRow] = field(default_factory=list)
    bad: list[BadRecord] = field(default_factory=list)

    def extend(self, other: Scored) -> None:
        self.rows.extend(other.rows)
        self.entities.extend(other.entities)
        self.bad.extend(other.bad)


def score_items(
    items: Sequence[tuple[SourceRecord, NewsItem]], scorers: Sequence[Scorer], max_failure_share: float = 0.5
) -> Scored:
    """Rows and entity sets for every (item, model); items that make a model fail come back as bad
    records.  Raises ModelUnavailable when the failures point at the models rather than the texts."""
    if not items:
        return Scored()
    try:
        return _score(items, scorers)
    except Exception as exc:  # a model error on one text must not stop the stream
        log.warning("batch scoring failed (%s); scoring items one by one", exc)
    out = Scored()
    for pair in items:
        try:
            out.extend(_score([pair], scorers))
        except Exception as exc:
            out.bad.append(
                BadRecord(record=pair[0], kind="score_error", error=error_text(f"{type(exc).__name__}: {exc}"))
            )
    if out.bad:
        _check_models(len(items), out.bad, scorers, max_failure_share)
    return out


def _check_models(n: int, bad: list[BadRecord], scorers: Sequence[Scorer], max_share: float) -> None:
    if n >= MIN_ITEMS_FOR_SHARE and len(bad) / n > max_share:
        raise ModelUnavailable(f"the models failed on {len(bad)} of {n} texts ({bad[0].error})")
    for scorer in scorers:
        try:
            _analyze(scorer, [PROBE_TEXT])
        except Exception as exc:
            raise ModelUnavailable(
                f"model {scorer.version} fails on a plain text too: {type(exc).__name__}: {exc}"
            ) from exc


def _analyze(scorer: Scorer, texts: list[str]) -> list[Analysis]:
    """The scorer's analyses, checked: one per text, each with every head the package declares."""
    analyses = scorer.analyze(texts)
    if len(analyses) != len(texts):
        raise RuntimeError(f"{scorer.name} returned {len(analyses)} analyses for {len(texts)} texts")
    for analysis in analyses:
        if missing := [head for head in scorer.heads if head not in analysis.predictions]:
            raise RuntimeError(f"{scorer.name} returned no {', '.join(missing)} prediction")
    return analyses


def _score(items: Sequence[tuple[SourceRecord, NewsItem]], scorers: Sequence[Scorer]) -> Scored:
    texts = [item.model_text for _, item in items]
    out = Scored()
    for scorer in scorers:
        started = time.perf_counter()
        analyses = _analyze(scorer, texts)
        MODEL_SECONDS.labels(scorer.version).observe(time.perf_counter() - started)
        now = dt.datetime.now(dt.UTC)
        truncated = 0
        for (record, item), analysis in zip(items, analyses, strict=True):
            truncated += analysis.truncated
            for head in scorer.heads:
                prediction = analysis.predictions[head]
                out.rows.append(ScoredRow(record, item, scorer.name, head, scorer.version, prediction, now))
            if analysis.entities is not None:
                sentiment = analysis.predictions.get(SENTIMENT_HEAD)
                out.entities.append(
                    EntityRow(record, item, scorer.version, sentiment.label if sentiment else "",
                              analysis.entities, now)
                )
        if truncated:
            TRUNCATED.labels(scorer.version).inc(truncated)
    return out
