"""Synthetic rows land in the real store with the layout the pipeline writes."""

from __future__ import annotations

import datetime as dt

import pytest

from dashboards.synthetic import CATEGORIES, RISKS, Surge, SyntheticSpec, write_bulk_scored, write_synthetic
from stream.core.items import normalize_entity
from stream.core.store import Store

pytestmark = pytest.mark.integration

END = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)
START = END - dt.timedelta(days=2)


def test_rows_versions_and_duplicates(store: Store) -> None:
    spec = SyntheticSpec(start=START, end=END, items=400, seed=3, duplicate_share=0.1)
    summary = write_synthetic(store, spec)
    db = store.database
    assert len(summary.items) == 400
    per_version = dict(store.rows(f"SELECT (task, model_version), count() FROM {db}.scored FINAL GROUP BY 1"))
    assert per_version[("sentiment", "analysis-synth-2")] == 400
    assert per_version[("category", "analysis-synth-2")] == 400
    assert per_version[("risk", "risk-synth-1")] == 400
    replayed = summary.count(until=START + (END - START) * spec.replayed_share)
    assert per_version[("sentiment", "sentiment-synth-1")] == replayed > 0
    assert "topic" not in {task for task, _ in per_version}
    # re-delivered rows are in the tables but FINAL counts each item once
    raw = store.scalar(f"SELECT count() FROM {db}.scored")
    assert raw == summary.scored_rows + summary.duplicate_rows and summary.duplicate_rows > 0
    for table in ("items", "entities"):
        raw, final = store.rows(f"SELECT count(), (SELECT count() FROM {db}.{table} FINAL) FROM {db}.{table}")[0]
        assert raw > final
    assert store.scalar(f"SELECT count() FROM {db}.items FINAL") == 400
    # the newer model scored last, so "latest by max(scored_at)" picks it
    latest = store.scalar(f"SELECT model_version FROM {db}.scored WHERE task = 'sentiment' "
                          "GROUP BY model_version ORDER BY max(scored_at) DESC LIMIT 1")
    assert latest == "analysis-synth-2"
    labels = dict(store.rows(
        f"SELECT label, count() FROM {db}.scored FINAL WHERE task = 'sentiment' AND model_version = "
        "'analysis-synth-2' GROUP BY 1"
    ))
    assert set(labels) == {"negative", "neutral", "positive"}
    assert labels["negative"] == summary.count(sentiment="negative")
    assert 0.1 < labels["neutral"] / 400 < 0.3
    # the old two-label model never says neutral
    old = {r[0] for r in store.rows(f"SELECT DISTINCT label FROM {db}.scored "
                                    "WHERE model_version = 'sentiment-synth-1'")}
    assert old == {"negative", "positive"}
    risks = {r[0] for r in store.rows(f"SELECT DISTINCT label FROM {db}.scored FINAL WHERE task = 'risk'")}
    categories = {r[0] for r in store.rows(f"SELECT DISTINCT label FROM {db}.scored FINAL WHERE task = 'category'")}
    assert risks <= set(RISKS) and len(risks) >= 6
    assert categories == set(CATEGORIES)
    sources = store.rows(f"SELECT lang, uniqExact(source) FROM {db}.scored FINAL GROUP BY lang ORDER BY lang")
    assert [lang for lang, _ in sources] == ["en", "zh"] and all(n >= 2 for _, n in sources)
    # an item's heads join on id, and so does its text
    joined = store.scalar(f"""
        SELECT count() FROM (SELECT id FROM {db}.scored FINAL WHERE model_version = 'analysis-synth-2'
                                                                AND task = 'sentiment') AS s
        INNER JOIN (SELECT id FROM {db}.scored FINAL WHERE task = 'risk') AS r USING id
        INNER JOIN (SELECT id, title FROM {db}.items FINAL) AS x USING id""")
    assert joined == 400
    published = store.rows(f"SELECT min(published_at), max(published_at) FROM {db}.scored")[0]
    assert published[0].replace(tzinfo=dt.UTC) >= START and published[1].replace(tzinfo=dt.UTC) < END


def test_entities_point_into_the_text_and_recur(store: Store) -> None:
    summary = write_synthetic(store, SyntheticSpec(start=START, end=END, items=300, seed=4))
    db = store.database
    # every stored entity is the text at its offsets (characters of title + "\n" + text)
    rows = store.rows(f"""
        SELECT m.text, m.normalized, m.type, substringUTF8(concat(x.title, '\n', x.text), m.start + 1, m.end - m.start)
        FROM {db}.entity_mentions AS m INNER JOIN (SELECT id, title, text FROM {db}.items FINAL) AS x USING id""")
    assert len(rows) == sum(len(it.entities) for it in summary.items) > 600
    assert all(text == found and normalized == normalize_entity(text) for text, normalized, _, found in rows)
    assert {kind for _, _, kind, _ in rows} == {"PER", "LOC", "ORG"}
    # in both languages, and a few names recur across many items
    top = store.rows(f"SELECT normalized, type, uniqExact(id) AS n FROM {db}.entity_mentions "
                     "GROUP BY normalized, type ORDER BY n DESC LIMIT 3")
    assert all(n >= 20 for _, _, n in top)
    assert {it.lang for it in summary.items if it.entities} == {"en", "zh"}
    assert any(e.normalized == "maria chen" for it in summary.items for e in it.entities)
    # the entities row carries the same package's sentiment
    mismatched = store.scalar(f"""
        SELECT count() FROM (SELECT id, sentiment FROM {db}.entities FINAL) AS e
        INNER JOIN (SELECT id, label FROM {db}.scored FINAL WHERE task = 'sentiment'
                    AND model_version = 'analysis-synth-2') AS s USING id WHERE e.sentiment != s.label""")
    assert mismatched == 0


def test_bulk_rows_have_the_same_layout(store: Store) -> None:
    written = write_bulk_scored(store, SyntheticSpec(start=START, end=END, items=2000, seed=9, duplicate_share=0.1))
    db = store.database
    per_task = dict(store.rows(f"SELECT (task, model_version), count() FROM {db}.scored FINAL GROUP BY 1"))
    assert per_task[("sentiment", "analysis-synth-2")] == per_task[("category", "analysis-synth-2")] == 2000
    assert per_task[("risk", "risk-synth-1")] == 2000 and 0 < per_task[("sentiment", "sentiment-synth-1")] < 2000
    assert written == store.scalar(f"SELECT count() FROM {db}.scored") > sum(per_task.values())
    labels = {r[0] for r in store.rows(f"SELECT DISTINCT label FROM {db}.scored WHERE task = 'sentiment' "
                                       "AND model_version = 'analysis-synth-2'")}
    assert labels == {"negative", "neutral", "positive"}
    assert store.scalar(f"SELECT count() FROM {db}.items FINAL") == 2000
    assert store.scalar(f"SELECT count() FROM {db}.entities FINAL") == 2000
    # the offsets point at the names, and the normalized form is the one normalizer's
    rows = store.rows(f"""
        SELECT m.text, m.normalized, substringUTF8(concat(x.title, '\n', x.text), m.start + 1, m.end - m.start)
        FROM {db}.entity_mentions AS m INNER JOIN (SELECT id, title, text FROM {db}.items FINAL) AS x USING id""")
    assert len(rows) == 6000
    assert all(text and text == found and normalized == normalize_entity(text) for text, normalized, found in rows)


def test_dead_letters_stats_and_surge(store: Store) -> None:
    surge_at = END - dt.timedelta(hours=1)
    spec = SyntheticSpec(start=START, end=END, items=300, seed=5, dead_letter_share=0.05, neutral_share=0.1,
                         surges=(Surge("labour", surge_at, items=30, negative_share=0.9),))
    assert spec.surges[0].risk == "social"
    summary = write_synthetic(store, spec)
    db = store.database
    kinds = dict(store.rows(f"SELECT error_kind, count() FROM {db}.dead_letters FINAL GROUP BY 1"))
    assert sum(kinds.values()) == summary.dead_letters > 0
    assert set(kinds) <= {"invalid_json", "bad_field", "no_text", "bad_date", "too_large", "invalid_utf8"}
    # dead letters sit at offsets of their own, after the good messages of their partition
    clash = store.scalar(f"""
        SELECT count() FROM {db}.dead_letters AS d
        INNER JOIN (SELECT DISTINCT kafka_partition, kafka_offset FROM {db}.scored) AS s
        ON d.kafka_partition = s.kafka_partition AND d.kafka_offset = s.kafka_offset""")
    assert clash == 0

    stats = store.rows(f"""
        SELECT kafka_partition, min(lag), max(end_offset), countIf(end_offset < committed_offset),
               groupArray(end_offset) = arraySort(groupArray(end_offset))
        FROM (SELECT * FROM {db}.pipeline_stats ORDER BY ts) GROUP BY kafka_partition ORDER BY 1""")
    assert [row[0] for row in stats] == [0, 1, 2]
    for _, min_lag, _, inverted, monotone in stats:
        assert min_lag >= 0 and inverted == 0 and monotone
    # stats writes report arrivals up to the last write: offsets and item counts add up to them
    last = store.scalar(f"SELECT max(ts) FROM {db}.pipeline_stats").replace(tzinfo=dt.UTC)
    arrived = sum(it.ingested_at < last for it in summary.items)
    dead_arrived = store.scalar(f"SELECT count() FROM {db}.dead_letters WHERE kafka_timestamp < {{t:DateTime64(3)}}",
                                {"t": last})
    assert sum(row[2] for row in stats) == arrived + dead_arrived
    # per write, the consumer-wide counts repeat on each of its partitions: counted once they add up
    consumed = store.scalar(f"SELECT sum(items) FROM (SELECT ts, consumer, any(items) AS items "
                            f"FROM {db}.pipeline_stats GROUP BY ts, consumer)")
    assert consumed == arrived
    lag_in_surge = store.scalar(f"SELECT max(lag) FROM {db}.pipeline_stats WHERE ts >= {{t:DateTime64(3)}}",
                                {"t": surge_at})
    assert lag_in_surge >= 20

    in_surge = summary.count(risk="social", since=surge_at)
    neutral = summary.count(risk="social", sentiment="neutral", since=surge_at)
    negative = summary.count(risk="social", sentiment="negative", since=surge_at)
    assert in_surge >= 30 and negative / (in_surge - neutral) > 0.6
    assert summary.count(sentiment="neutral") > 0
    # counted as the rule counts: neutral items left out
    alert = store.rows(f"SELECT rule, scope, item_count, value, length(sample_ids) FROM {db}.alerts FINAL")
    assert alert == [("negative_surge", "risk=social", in_surge - neutral,
                      pytest.approx(negative / (in_surge - neutral)), 5)]


def test_same_seed_same_rows(store: Store) -> None:
    spec = SyntheticSpec(start=START, end=END, items=50, seed=11, write_alerts=False)
    first = write_synthetic(store, spec)
    for table in ("items", "scored", "entities"):
        store.command(f"TRUNCATE TABLE {store.database}.{table}")
    second = write_synthetic(store, spec)
    assert first.items == second.items
    assert first.scored_rows == second.scored_rows
