"""Exported packages scored by the runtime scorer land in the real (chdb) store as the stream writes them."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from stream.consumer.scoring import score_items
from stream.consumer.sink import ClickHouseSink
from stream.core.records import NewsItem, SourceRecord
from stream.core.scorer import OnnxScorer
from stream.core.store import Store

pytestmark = pytest.mark.integration


def test_scores_from_packages_round_trip_through_the_store(tiny_packages: list[Path], store: Store) -> None:
    scorers = [OnnxScorer.open(p, device="cpu") for p in tiny_packages]
    now = dt.datetime(2026, 11, 20, 8, 0, tzinfo=dt.UTC)
    texts = ["Markets rally as rates hold", "医院候诊时间越来越长", "x " * 400]
    items = [
        (SourceRecord("news", 0, i, None, None, b"{}"),
         NewsItem(f"id-{i}", "wire", f"https://news.example/{i}", "", text, "en", now))
        for i, text in enumerate(texts)
    ]
    scored = score_items(items, scorers)
    rows = scored.rows
    assert scored.bad == [] and len(rows) == len(texts) * len(scorers)
    ClickHouseSink(store, dlq=None).write_batch(rows, scored.entities, [])

    stored = store.rows(
        f"SELECT id, task, model_name, model_version, label, score, probs, truncated "
        f"FROM {store.database}.scored FINAL ORDER BY task, id"
    )
    assert len(stored) == len(rows)
    by_key = {(r[0], r[1]): r for r in stored}
    for scorer in scorers:
        [(head, labels)] = scorer.heads.items()
        predictions = [a.predictions[head] for a in scorer.analyze(texts)]
        for i, prediction in enumerate(predictions):
            _, task, name, version, label, score, probs, truncated = by_key[(f"id-{i}", head)]
            assert (task, name, version, label) == (head, scorer.name, scorer.version, prediction.label)
            assert score == pytest.approx(prediction.score, abs=1e-6)
            assert set(probs) == set(labels)
            assert sum(probs.values()) == pytest.approx(1.0, abs=1e-5)
            assert truncated == (i == 2)
