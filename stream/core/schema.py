"""ClickHouse schema for yuqing, as ordered idempotent migrations.

Design (README "Storage" explains it for users):
* ``scored`` is a ReplacingMergeTree whose sorting key ends in ``id`` and starts with
  ``(task, model_version, toStartOfHour(published_at))``: a re-delivered (id, model_version)
  collapses to one row, and a dashboard's time range prunes by partition (month) and by
  the primary index (hour) inside one model version.  Reads use ``FINAL`` so that rows not yet
  merged are never counted twice.
* ``scored_minute`` is fed by a materialized view and keeps ``uniqExactState(id)`` per minute,
  so re-delivered rows do not inflate the per-minute counts either.
* ``dead_letters`` and ``alerts`` are ReplacingMergeTrees keyed by what makes them unique
  (source offset; alert id) for the same reason.
"""

from __future__ import annotations

from dataclasses import dataclass

SCORED_COLUMNS: tuple[str, ...] = (
    "id",
    "source",
    "url",
    "title",
    "text",
    "lang",
    "published_at",
    "ingested_at",
    "kafka_topic",
    "kafka_partition",
    "kafka_offset",
    "task",
    "model_name",
    "model_version",
    "label",
    "score",
    "probs",
    "truncated",
    "scored_at",
)

DEAD_LETTER_COLUMNS: tuple[str, ...] = (
    "kafka_topic",
    "kafka_partition",
    "kafka_offset",
    "kafka_timestamp",
    "error_kind",
    "error",
    "raw",
    "received_at",
)

ALERT_COLUMNS: tuple[str, ...] = (
    "alert_id",
    "rule",
    "kind",
    "severity",
    "scope",
    "window_start",
    "window_end",
    "value",
    "threshold",
    "item_count",
    "sample_ids",
    "message",
    "fired_at",
)

PIPELINE_STATS_COLUMNS: tuple[str, ...] = (
    "ts",
    "consumer",
    "group_id",
    "kafka_topic",
    "kafka_partition",
    "committed_offset",
    "end_offset",
    "lag",
    "items",
    "dead_letters",
    "batch_seconds",
)


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]


def _ttl(column: str, ttl_days: int) -> str:
    return f"TTL toDateTime({column}) + INTERVAL {ttl_days} DAY" if ttl_days > 0 else ""


def migrations(db: str, ttl_days: int = 0) -> list[Migration]:
    """All migrations in order; each statement is idempotent (IF NOT EXISTS)."""
    scored_ttl = _ttl("published_at", ttl_days)
    return [
        Migration(
            1,
            "scored items, dead letters, alerts, per-minute aggregate, pipeline stats",
            (
                f"CREATE DATABASE IF NOT EXISTS {db}",
                f"""CREATE TABLE IF NOT EXISTS {db}.scored (
                    id String,
                    source LowCardinality(String),
                    url String,
                    title String,
                    text String,
                    lang LowCardinality(String),
                    published_at DateTime64(3, 'UTC'),
                    ingested_at DateTime64(3, 'UTC'),
                    kafka_topic LowCardinality(String),
                    kafka_partition UInt32,
                    kafka_offset UInt64,
                    task LowCardinality(String),
                    model_name LowCardinality(String),
                    model_version LowCardinality(String),
                    label LowCardinality(String),
                    score Float32,
                    probs Map(LowCardinality(String), Float32),
                    truncated Bool,
                    scored_at DateTime64(3, 'UTC'),
                    INDEX idx_source source TYPE set(1000) GRANULARITY 4,
                    INDEX idx_label label TYPE set(64) GRANULARITY 4
                ) ENGINE = ReplacingMergeTree(scored_at)
                PARTITION BY toYYYYMM(published_at)
                ORDER BY (task, model_version, toStartOfHour(published_at), id)
                {scored_ttl}""",
                f"""CREATE TABLE IF NOT EXISTS {db}.scored_minute (
                    minute DateTime('UTC'),
                    task LowCardinality(String),
                    model_version LowCardinality(String),
                    source LowCardinality(String),
                    lang LowCardinality(String),
                    label LowCardinality(String),
                    items AggregateFunction(uniqExact, String)
                ) ENGINE = AggregatingMergeTree
                PARTITION BY toYYYYMM(minute)
                ORDER BY (task, model_version, minute, source, lang, label)
                {_ttl("minute", ttl_days)}""",
                f"""CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.scored_minute_mv TO {db}.scored_minute AS
                SELECT toStartOfMinute(published_at) AS minute, task, model_version, source, lang, label,
                       uniqExactState(id) AS items
                FROM {db}.scored
                GROUP BY minute, task, model_version, source, lang, label""",
                f"""CREATE TABLE IF NOT EXISTS {db}.dead_letters (
                    kafka_topic LowCardinality(String),
                    kafka_partition UInt32,
                    kafka_offset UInt64,
                    kafka_timestamp DateTime64(3, 'UTC'),
                    error_kind LowCardinality(String),
                    error String,
                    raw String,
                    received_at DateTime64(3, 'UTC')
                ) ENGINE = ReplacingMergeTree(received_at)
                PARTITION BY toYYYYMM(kafka_timestamp)
                ORDER BY (kafka_topic, kafka_partition, kafka_offset)""",
                f"""CREATE TABLE IF NOT EXISTS {db}.alerts (
                    alert_id String,
                    rule LowCardinality(String),
                    kind LowCardinality(String),
                    severity LowCardinality(String),
                    scope String,
                    window_start DateTime64(3, 'UTC'),
                    window_end DateTime64(3, 'UTC'),
                    value Float64,
                    threshold Float64,
                    item_count UInt64,
                    sample_ids Array(String),
                    message String,
                    fired_at DateTime64(3, 'UTC')
                ) ENGINE = ReplacingMergeTree(fired_at)
                PARTITION BY toYYYYMM(window_end)
                ORDER BY (rule, scope, alert_id)""",
                f"""CREATE TABLE IF NOT EXISTS {db}.pipeline_stats (
                    ts DateTime64(3, 'UTC'),
                    consumer LowCardinality(String),
                    group_id LowCardinality(String),
                    kafka_topic LowCardinality(String),
                    kafka_partition UInt32,
                    committed_offset Int64,
                    end_offset Int64,
                    lag Int64,
                    items UInt32,
                    dead_letters UInt32,
                    batch_seconds Float32
                ) ENGINE = MergeTree
                PARTITION BY toYYYYMM(ts)
                ORDER BY (group_id, kafka_topic, kafka_partition, ts)
                TTL toDateTime(ts) + INTERVAL 30 DAY""",
            ),
        ),
    ]


def migrations_table(db: str) -> str:
    return (
        f"CREATE TABLE IF NOT EXISTS {db}.schema_migrations "
        "(version UInt32, description String, applied_at DateTime64(3, 'UTC')) "
        "ENGINE = ReplacingMergeTree(applied_at) ORDER BY version"
    )
