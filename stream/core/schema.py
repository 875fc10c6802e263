"""ClickHouse schema for yuqing, as ordered idempotent migrations.

Design (README "Storage" explains it for users):
* ``scored`` is a ReplacingMergeTree keyed by ``(task, model_version, id)`` and partitioned by
  ``(task, model_version)``: nothing in the key or the partition depends on a value that can
  differ between two deliveries of one item (a defaulted ``published_at``, ``scored_at``, the
  label), so every delivery of an (id, model_version) collapses to one row, and a batch or a
  backfill spanning years writes one partition per model version.  Reads use ``FINAL`` so that
  rows not yet merged are never counted twice; time ranges filter ``published_at`` (minmax index).
* There is no per-minute aggregate: one keyed by time or label counts an item once per value it
  was ever delivered with, so every reader counts from ``scored FINAL``.
* ``dead_letters`` and ``alerts`` are ReplacingMergeTrees keyed by what makes them unique
  (source offset; alert id) for the same reason.
* An alert is written again after each webhook delivery round with its status (``delivery``,
  ``attempts``, ...); the version is ``attempts``, so ``alerts FINAL`` is one row per incident
  with the latest round's status.
* Migrations run in order and each statement is idempotent; a migration that changes a table's
  keys rebuilds it with ``CREATE OR REPLACE TABLE ... AS SELECT`` (the copy swaps in atomically),
  so ``yuqing db init`` can be re-run after a failure at any point.
"""

from __future__ import annotations

from dataclasses import dataclass

# ``scored`` holds one row per (item, head): the verdict, and what readers filter by.  The item's
# text is kept once, in ``items`` (migration ITEMS_ONCE).
SCORED_COLUMNS: tuple[str, ...] = (
    "id",
    "source",
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

# ``items``: one row per item id, whatever the number of heads or model versions that scored it.
ITEM_COLUMNS: tuple[str, ...] = (
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
    "stored_at",
)

# ``entities``: one row per (item, model version) with every entity the package found, as
# parallel arrays; a re-delivery replaces the whole set, so no stale entity survives it.
ENTITY_COLUMNS: tuple[str, ...] = (
    "id",
    "model_version",
    "source",
    "lang",
    "published_at",
    "sentiment",
    "entity_text",
    "entity_normalized",
    "entity_type",
    "entity_start",
    "entity_end",
    "entity_score",
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
    "dlq_status",
    "dlq_error",
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

# Where an alert's webhook delivery stands; every row of `alerts` carries it, the newest round wins.
ALERT_DELIVERY_COLUMNS: tuple[str, ...] = (
    "delivery",
    "attempts",
    "delivered_to",
    "last_error",
    "updated_at",
)

ITEM_STORY_COLUMNS: tuple[str, ...] = (
    "id",
    "story_id",
    "duplicate_of",
    "similarity",
    "published_at",
    "source",
    "lang",
    "title",
    "embedder",
    "embedding",
    "assigned_at",
)

STORY_COLUMNS: tuple[str, ...] = (
    "story_id",
    "first_seen",
    "last_seen",
    "size",
    "duplicates",
    "sources",
    "languages",
    "titles",
    "sentiment",
    "top_entities",
    "updated_at",
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


# The column list of ``scored`` up to migration ITEMS_ONCE (which moved url, title and text to
# ``items``), shared by every layout of the table before it.
_SCORED_COLUMNS_SQL = """id String,
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
                    scored_at DateTime64(3, 'UTC'),"""


# The column list of ``scored`` since migration ITEMS_ONCE.
_SCORED_HEAD_COLUMNS_SQL = ",\n".join(
    line for line in _SCORED_COLUMNS_SQL.split(",\n") if line.split()[:1] not in (["url"], ["title"], ["text"])
)


# The columns and plain indexes of ``item_stories``, shared by every layout of the table.
_ITEM_STORY_COLUMNS_SQL = """id String,
                    story_id String,
                    duplicate_of String,
                    similarity Float32,
                    published_at DateTime64(3, 'UTC'),
                    source LowCardinality(String),
                    lang LowCardinality(String),
                    title String,
                    embedder LowCardinality(String),
                    embedding Array(Float32) CODEC(ZSTD(3)),
                    assigned_at DateTime64(3, 'UTC'),
                    INDEX idx_published published_at TYPE minmax GRANULARITY 1,
                    INDEX idx_story story_id TYPE bloom_filter GRANULARITY 4"""

# Every stored embedding has this many dimensions: the vector index of ``item_stories`` (migration
# STORY_VECTORS) is built for it and refuses rows of another length.
EMBEDDING_DIM = 512


# The incident columns of ``alerts``, shared by every layout of the table.
_ALERT_COLUMNS_SQL = """alert_id String,
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
                    fired_at DateTime64(3, 'UTC')"""


# The columns of ``dead_letters`` as migration 1 made them, shared by every layout of the table.
_DEAD_LETTER_COLUMNS_SQL = """kafka_topic LowCardinality(String),
                    kafka_partition UInt32,
                    kafka_offset UInt64,
                    kafka_timestamp DateTime64(3, 'UTC'),
                    error_kind LowCardinality(String),
                    error String,
                    raw String,
                    received_at DateTime64(3, 'UTC')"""


@dataclass(frozen=True)
class Copy:
    """A statement that moves existing rows, run only while `when` (a scalar query) returns a
    non-zero count: once the rows are moved the source layout is gone, so a re-run after a failure
    must skip it.  A new cluster has nothing to copy (`stream.core.cluster_schema` skips these)."""

    sql: str
    when: str


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    statements: tuple[str | Copy, ...]


def _ttl(column: str, ttl_days: int) -> str:
    return f"TTL toDateTime({column}) + INTERVAL {ttl_days} DAY" if ttl_days > 0 else ""


# The migration that adds the dead-letter topic's delivery status to ``dead_letters``.
DEAD_LETTER_DELIVERY = 2
# The migration that re-keys ``scored`` by (task, model_version, id).
SCORED_BY_ID = 3
# The migration that adds the delivery status to ``alerts``.
ALERT_DELIVERY = 4
# The migration that adds stories: ``item_stories`` (one row per item) and ``stories``.
STORIES = 5
# The migration that adds an HNSW vector index (cosine) on ``item_stories.embedding``.
STORY_VECTORS = 6
# The migration that keeps an item's text once (``items``) and adds ``entities``.
ITEMS_ONCE = 7


def _scored_select_renaming_topic() -> str:
    """SCORED_COLUMNS, with the risk-topic task's old name ``topic`` read as ``risk``."""
    return ", ".join("if(task = 'topic', 'risk', task) AS task" if c == "task" else c for c in SCORED_COLUMNS)


def migrations(db: str, ttl_days: int = 0) -> list[Migration]:
    """All migrations in order; each statement is idempotent (IF NOT EXISTS, IF EXISTS, OR REPLACE)."""
    scored_ttl = _ttl("published_at", ttl_days)
    return [
        Migration(
            1,
            "scored items, dead letters, alerts, per-minute aggregate, pipeline stats",
            (
                f"CREATE DATABASE IF NOT EXISTS {db}",
                f"""CREATE TABLE IF NOT EXISTS {db}.scored (
                    {_SCORED_COLUMNS_SQL}
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
                    {_DEAD_LETTER_COLUMNS_SQL}
                ) ENGINE = ReplacingMergeTree(received_at)
                PARTITION BY toYYYYMM(kafka_timestamp)
                ORDER BY (kafka_topic, kafka_partition, kafka_offset)""",
                f"""CREATE TABLE IF NOT EXISTS {db}.alerts (
                    {_ALERT_COLUMNS_SQL}
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
        Migration(
            DEAD_LETTER_DELIVERY,
            "dead letters carry what the dead-letter topic made of them (dlq_status, dlq_error)",
            (
                # dlq_status: sent | truncated (a prefix, headers give size and sha256) | failed
                # (given up, dlq_error says why) | '' (no topic: a file source, or rows from before).
                f"""CREATE OR REPLACE TABLE {db}.dead_letters (
                    {_DEAD_LETTER_COLUMNS_SQL},
                    dlq_status LowCardinality(String) DEFAULT '',
                    dlq_error String DEFAULT ''
                ) ENGINE = ReplacingMergeTree(received_at)
                PARTITION BY toYYYYMM(kafka_timestamp)
                ORDER BY (kafka_topic, kafka_partition, kafka_offset)
                AS SELECT {', '.join(DEAD_LETTER_COLUMNS[:-2])}, '', '' FROM {db}.dead_letters""",
            ),
        ),
        Migration(
            SCORED_BY_ID,
            "scored keyed by (task, model_version, id); the per-minute aggregate dropped",
            (
                f"DROP VIEW IF EXISTS {db}.scored_minute_mv",
                f"DROP TABLE IF EXISTS {db}.scored_minute",
                # The rows of the old layout are copied as they are: the new key collapses the
                # copies an old key kept apart (same id and version, another published_at).
                f"""CREATE OR REPLACE TABLE {db}.scored (
                    {_SCORED_COLUMNS_SQL}
                    INDEX idx_published published_at TYPE minmax GRANULARITY 1,
                    INDEX idx_source source TYPE set(1000) GRANULARITY 4,
                    INDEX idx_label label TYPE set(64) GRANULARITY 4
                ) ENGINE = ReplacingMergeTree(scored_at)
                PARTITION BY (task, model_version)
                ORDER BY (task, model_version, id)
                {scored_ttl}
                AS SELECT * FROM {db}.scored""",
            ),
        ),
        Migration(
            ALERT_DELIVERY,
            "alerts carry their webhook delivery status (delivery, attempts, delivered_to, last_error)",
            (
                # One row per delivery round of an alert, all with the incident's key; the version
                # is the round count, so the latest round's status wins under FINAL and the fire
                # row (0 rounds) loses to any outcome.  Alerts from before are taken as delivered.
                f"""CREATE OR REPLACE TABLE {db}.alerts (
                    {_ALERT_COLUMNS_SQL},
                    delivery LowCardinality(String) DEFAULT 'delivered',
                    attempts UInt32 DEFAULT 0,
                    delivered_to Array(String) DEFAULT [],
                    last_error String DEFAULT '',
                    updated_at DateTime64(3, 'UTC') DEFAULT fired_at
                ) ENGINE = ReplacingMergeTree(attempts)
                PARTITION BY toYYYYMM(window_end)
                ORDER BY (rule, scope, alert_id)
                AS SELECT {', '.join(ALERT_COLUMNS)}, 'delivered', 0, [], '', fired_at FROM {db}.alerts""",
            ),
        ),
        Migration(
            STORIES,
            "stories: item_stories (story and near-duplicate of every item) and stories (one row per story)",
            (
                # Keyed by id alone: a story is about the item, not a model version.  The first
                # assignment of an id wins (the job never re-assigns), so the version column only
                # makes re-writes of the same assignment collapse.
                f"""CREATE TABLE IF NOT EXISTS {db}.item_stories (
                    {_ITEM_STORY_COLUMNS_SQL}
                ) ENGINE = ReplacingMergeTree(assigned_at)
                ORDER BY id""",
                # One row per story, re-written whenever the story changes; the latest wins.
                f"""CREATE TABLE IF NOT EXISTS {db}.stories (
                    story_id String,
                    first_seen DateTime64(3, 'UTC'),
                    last_seen DateTime64(3, 'UTC'),
                    size UInt32,
                    duplicates UInt32,
                    sources Array(String),
                    languages Array(String),
                    titles Map(LowCardinality(String), String),
                    sentiment Map(LowCardinality(String), UInt32),
                    top_entities Array(String),
                    updated_at DateTime64(3, 'UTC'),
                    INDEX idx_last_seen last_seen TYPE minmax GRANULARITY 1
                ) ENGINE = ReplacingMergeTree(updated_at)
                ORDER BY story_id""",
            ),
        ),
        Migration(
            STORY_VECTORS,
            "item_stories: an HNSW vector index (cosine) on embedding, for `yuqing similar`",
            (
                # Nearest items by cosine (ORDER BY cosineDistance(embedding, v) LIMIT n) read the
                # index instead of every embedding.  The index fixes the length of every array
                # (EMBEDDING_DIM): an embedder of another size cannot write here.
                f"""CREATE OR REPLACE TABLE {db}.item_stories (
                    {_ITEM_STORY_COLUMNS_SQL},
                    INDEX idx_embedding embedding TYPE vector_similarity('hnsw', 'cosineDistance', {EMBEDDING_DIM})
                        GRANULARITY 100000000
                ) ENGINE = ReplacingMergeTree(assigned_at)
                ORDER BY id
                AS SELECT * FROM {db}.item_stories""",
            ),
        ),
        Migration(
            ITEMS_ONCE,
            "items: an item's text once; scored without url/title/text, task topic renamed risk; entities",
            (
                # Keyed by id alone: every delivery and every head of an item share its one text row
                # (the latest delivery wins).
                f"""CREATE TABLE IF NOT EXISTS {db}.items (
                    id String,
                    source LowCardinality(String),
                    url String,
                    title String,
                    text String CODEC(ZSTD(3)),
                    lang LowCardinality(String),
                    published_at DateTime64(3, 'UTC'),
                    ingested_at DateTime64(3, 'UTC'),
                    kafka_topic LowCardinality(String),
                    kafka_partition UInt32,
                    kafka_offset UInt64,
                    stored_at DateTime64(3, 'UTC'),
                    INDEX idx_published published_at TYPE minmax GRANULARITY 1
                ) ENGINE = ReplacingMergeTree(stored_at)
                ORDER BY id
                {scored_ttl}""",
                Copy(
                    f"""INSERT INTO {db}.items
                    SELECT id, argMax(source, scored_at), argMax(url, scored_at), argMax(title, scored_at),
                           argMax(text, scored_at), argMax(lang, scored_at), argMax(published_at, scored_at),
                           argMax(ingested_at, scored_at), argMax(kafka_topic, scored_at),
                           argMax(kafka_partition, scored_at), argMax(kafka_offset, scored_at), max(scored_at)
                    FROM {db}.scored GROUP BY id""",
                    when=f"SELECT count() FROM system.columns WHERE database = '{db}' AND table = 'scored' "
                    "AND name = 'text'",
                ),
                f"""CREATE OR REPLACE TABLE {db}.scored (
                    {_SCORED_HEAD_COLUMNS_SQL}
                    INDEX idx_published published_at TYPE minmax GRANULARITY 1,
                    INDEX idx_source source TYPE set(1000) GRANULARITY 4,
                    INDEX idx_label label TYPE set(64) GRANULARITY 4
                ) ENGINE = ReplacingMergeTree(scored_at)
                PARTITION BY (task, model_version)
                ORDER BY (task, model_version, id)
                {scored_ttl}
                AS SELECT {_scored_select_renaming_topic()} FROM {db}.scored""",
                # One row per (model_version, id): the whole entity set of one scoring, so a
                # re-delivery replaces it; `entity_mentions` is the same, one row per entity.
                f"""CREATE TABLE IF NOT EXISTS {db}.entities (
                    id String,
                    model_version LowCardinality(String),
                    source LowCardinality(String),
                    lang LowCardinality(String),
                    published_at DateTime64(3, 'UTC'),
                    sentiment LowCardinality(String),
                    entity_text Array(String),
                    entity_normalized Array(String),
                    entity_type Array(LowCardinality(String)),
                    entity_start Array(UInt32),
                    entity_end Array(UInt32),
                    entity_score Array(Float32),
                    scored_at DateTime64(3, 'UTC'),
                    INDEX idx_published published_at TYPE minmax GRANULARITY 1,
                    INDEX idx_normalized entity_normalized TYPE bloom_filter GRANULARITY 4
                ) ENGINE = ReplacingMergeTree(scored_at)
                PARTITION BY model_version
                ORDER BY (model_version, id)
                {scored_ttl}""",
                f"""CREATE VIEW IF NOT EXISTS {db}.entity_mentions AS
                SELECT id, model_version, source, lang, published_at, sentiment,
                       entity_text AS text, entity_normalized AS normalized, entity_type AS type,
                       entity_start AS start, entity_end AS end, entity_score AS score
                FROM {db}.entities FINAL
                ARRAY JOIN entity_text, entity_normalized, entity_type, entity_start, entity_end, entity_score""",
            ),
        ),
    ]


def migrations_table(db: str) -> str:
    return (
        f"CREATE TABLE IF NOT EXISTS {db}.schema_migrations "
        "(version UInt32, description String, applied_at DateTime64(3, 'UTC')) "
        "ENGINE = ReplacingMergeTree(applied_at) ORDER BY version"
    )
