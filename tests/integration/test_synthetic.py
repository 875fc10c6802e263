"""Synthetic rows land in the real store with the layout the pipeline writes."""

from __future__ import annotations

import datetime as dt

import pytest

from dashboards.synthetic import TOPICS, Surge, SyntheticSpec, write_synthetic
from stream.core.store import Store

pytestmark = pytest.mark.integration

END = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)
START = END - dt.timedelta(days=2)


def test_rows_versions_and_duplicates(store: Store) -> None:
    spec = SyntheticSpec(start=START, end=END, items=400, seed=3, duplicate_share=0.1)
    summary = write_synthetic(store, spec)
    db = store.database
    assert len(summary.items) == 400
    per_version = dict(store.rows(f"SELECT model_version, count() FROM {db}.scored FINAL GROUP BY 1"))
    assert per_version["sentiment-synth-2"] == 400
    assert per_version["topic-synth-1"] == 400
    replayed = summary.count(until=START + (END - START) * spec.replayed_share)
    assert per_version["sentiment-synth-1"] == replayed > 0
    # re-delivered rows are in the table but FINAL counts each item once
    raw = store.scalar(f"SELECT count() FROM {db}.scored")
    assert raw == summary.scored_rows + summary.duplicate_rows and summary.duplicate_rows > 0
    # the newer model scored last, so "latest by max(scored_at)" picks it
    latest = store.scalar(f"SELECT model_version FROM {db}.scored WHERE task = 'sentiment' "
                          "GROUP BY model_version ORDER BY max(scored_at) DESC LIMIT 1")
    assert latest == "sentiment-synth-2"
    labels = dict(store.rows(
        f"SELECT label, count() FROM {db}.scored FINAL WHERE model_version = 'sentiment-synth-2' GROUP BY 1"
    ))
    assert set(labels) == {"negative", "positive"}
    assert labels["negative"] == summary.count(sentiment="negative")
    topics = {r[0] for r in store.rows(f"SELECT DISTINCT label FROM {db}.scored FINAL WHERE task = 'topic'")}
    assert topics == set(TOPICS)
    sources = store.rows(f"SELECT lang, uniqExact(source) FROM {db}.scored FINAL GROUP BY lang ORDER BY lang")
    assert [lang for lang, _ in sources] == ["en", "zh"] and all(n >= 2 for _, n in sources)
    # an item's sentiment and topic rows join on id
    joined = store.scalar(f"""
        SELECT count() FROM (SELECT id FROM {db}.scored FINAL WHERE model_version = 'sentiment-synth-2') AS s
        INNER JOIN (SELECT id FROM {db}.scored FINAL WHERE task = 'topic') AS t USING id""")
    assert joined == 400
    published = store.rows(f"SELECT min(published_at), max(published_at) FROM {db}.scored")[0]
    assert published[0].replace(tzinfo=dt.UTC) >= START and published[1].replace(tzinfo=dt.UTC) < END


def test_dead_letters_stats_and_surge(store: Store) -> None:
    surge_at = END - dt.timedelta(hours=1)
    spec = SyntheticSpec(start=START, end=END, items=300, seed=5, dead_letter_share=0.05, neutral_share=0.1,
                         surges=(Surge("labour", surge_at, items=30, negative_share=0.9),))
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

    in_surge = summary.count(topic="labour", since=surge_at)
    negative = summary.count(topic="labour", sentiment="negative", since=surge_at)
    assert in_surge >= 30 and negative / in_surge > 0.6
    assert summary.count(sentiment="neutral") > 0
    alert = store.rows(f"SELECT rule, scope, item_count, value, length(sample_ids) FROM {db}.alerts FINAL")
    assert alert == [("negative_surge", "topic=labour", in_surge, pytest.approx(negative / in_surge), 5)]


def test_same_seed_same_rows(store: Store) -> None:
    spec = SyntheticSpec(start=START, end=END, items=50, seed=11, write_alerts=False)
    first = write_synthetic(store, spec)
    store.command(f"TRUNCATE TABLE {store.database}.scored")
    second = write_synthetic(store, spec)
    assert first.items == second.items
    assert first.scored_rows == second.scored_rows
