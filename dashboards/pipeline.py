"""Pipeline health: throughput, consumer lag, dead letters, end-to-end delay."""

from __future__ import annotations

from typing import Any

from dashboards import grafana as g
from dashboards.queries import in_selection, table

UID = "yuqing-pipeline"
GROUPS = in_selection("group_id", "group")

# The consumer writes one pipeline_stats row per partition per stats write, each carrying the
# consumer-wide item and dead-letter counts since the previous write: count them once per write.
STATS_WRITES = f"""
(
    SELECT ts, consumer, any(items) AS items, any(dead_letters) AS dead_letters, max(batch_seconds) AS batch_seconds
    FROM {table('pipeline_stats')}
    WHERE $__timeFilter(ts) AND {GROUPS}
    GROUP BY ts, consumer
)"""
# Lag as last reported per partition.
LATEST_LAG = f"""
(
    SELECT group_id, kafka_topic, kafka_partition, argMax(lag, ts) AS lag
    FROM {table('pipeline_stats')}
    WHERE $__timeFilter(ts) AND {GROUPS}
    GROUP BY group_id, kafka_topic, kafka_partition
)"""


def build(database: str) -> dict[str, Any]:
    throughput_now = g.stat_panel(
        "Consumed",
        f"""
SELECT sum(items) / greatest(dateDiff('second', $__fromTime, $__toTime), 1) AS items_per_s
FROM {STATS_WRITES}""",
        description="Items consumed per second, averaged over the time range.",
        unit="reqps",
        decimals=2,
    ).span(6).height(4)
    lag_now = g.stat_panel(
        "Consumer lag",
        f"""
SELECT sum(lag) AS lag FROM {LATEST_LAG}""",
        description="Messages not yet consumed, summed over partitions (last report of each).",
        thresholds=((None, "green"), (1000, "orange"), (10000, "red")),
    ).span(6).height(4)
    dead_now = g.stat_panel(
        "Dead letters",
        f"""
SELECT count() AS dead_letters
FROM {table('dead_letters')} FINAL
WHERE $__timeFilter(received_at)""",
        description="Messages rejected in the time range (bad JSON, missing fields, ...).",
        thresholds=((None, "green"), (1, "orange"), (100, "red")),
    ).span(6).height(4)
    delay_now = g.stat_panel(
        "Delay p95",
        f"""
SELECT quantile(0.95)(dateDiff('millisecond', ingested_at, scored_at)) / 1000 AS delay_s
FROM {table('scored')} FINAL
WHERE task = 'sentiment' AND $__timeFilter(scored_at)""",
        description="95th percentile of ingest-to-score delay (seconds), sentiment rows scored in the range.",
        unit="s",
        thresholds=((None, "green"), (30, "orange"), (300, "red")),
        decimals=1,
    ).span(6).height(4)

    consumed = g.timeseries_panel(
        "Throughput",
        f"""
SELECT $__timeInterval(ts) AS time, sum(items) / $__interval_s AS consumed_per_s,
       sum(dead_letters) / $__interval_s AS dead_letters_per_s
FROM {STATS_WRITES}
GROUP BY time
ORDER BY time""",
        description="Items consumed and dead-lettered per second, from the consumers' own stats.",
        unit="reqps",
        colors={"dead_letters_per_s": "red"},
    ).span(12).height(8)
    scored = g.timeseries_panel(
        "Scored rows by task",
        f"""
SELECT $__timeInterval(scored_at) AS time, task, count() AS rows
FROM {table('scored')} FINAL
WHERE $__timeFilter(scored_at)
GROUP BY time, task
ORDER BY time""",
        description="Rows written per interval and task, by scoring time (replays show up here too).",
        bars=True,
        stacked=True,
        display_name="${__field.labels.task}",
    ).span(12).height(8)

    lag = g.timeseries_panel(
        "Consumer lag by partition",
        f"""
SELECT $__timeInterval(ts) AS time, concat(kafka_topic, '/', toString(kafka_partition)) AS partition,
       max(lag) AS lag
FROM {table('pipeline_stats')}
WHERE $__timeFilter(ts) AND {GROUPS}
GROUP BY time, partition
ORDER BY time""",
        description="Largest reported lag per partition and interval (messages behind the log end).",
        display_name="${__field.labels.partition}",
    ).span(12).height(8)
    dead_by_kind = g.timeseries_panel(
        "Dead letters by kind",
        f"""
SELECT $__timeInterval(received_at) AS time, error_kind AS kind, count() AS dead_letters
FROM {table('dead_letters')} FINAL
WHERE $__timeFilter(received_at)
GROUP BY time, kind
ORDER BY time""",
        description="Rejected messages per interval by reason.",
        bars=True,
        stacked=True,
        display_name="${__field.labels.kind}",
    ).span(12).height(8)

    delay = g.timeseries_panel(
        "End-to-end delay",
        f"""
SELECT $__timeInterval(scored_at) AS time,
       quantile(0.5)(dateDiff('millisecond', published_at, scored_at)) / 1000 AS published_to_scored_p50,
       quantile(0.95)(dateDiff('millisecond', published_at, scored_at)) / 1000 AS published_to_scored_p95,
       quantile(0.95)(dateDiff('millisecond', ingested_at, scored_at)) / 1000 AS ingested_to_scored_p95
FROM {table('scored')} FINAL
WHERE task = 'sentiment' AND $__timeFilter(scored_at)
GROUP BY time
ORDER BY time""",
        description="Seconds from publication (feed time) and from ingestion (Kafka time) to scoring.",
        unit="s",
    ).span(12).height(8)
    batch = g.timeseries_panel(
        "Batch duration",
        f"""
SELECT $__timeInterval(ts) AS time, avg(batch_seconds) AS mean_batch_s, max(batch_seconds) AS max_batch_s
FROM {STATS_WRITES}
GROUP BY time
ORDER BY time""",
        description="Seconds per consumer batch (read, score, write); rising values mean the store or model is slow.",
        unit="s",
    ).span(12).height(8)

    latest_dead = g.table_panel(
        "Latest dead letters",
        f"""
SELECT received_at AS time, error_kind AS kind, kafka_topic AS topic, kafka_partition AS partition,
       kafka_offset AS offset, error, substring(toValidUTF8(raw), 1, 200) AS raw
FROM {table('dead_letters')} FINAL
WHERE $__timeFilter(received_at)
ORDER BY received_at DESC
LIMIT 100""",
        description="The most recent rejected messages (first 200 bytes of each).",
        widths={"time": 160, "kind": 110, "topic": 100, "partition": 80, "offset": 90},
    ).span(24).height(9)

    board = (
        g.new_dashboard(
            UID,
            "yuqing · Pipeline health",
            description="Consumers' throughput and lag, dead letters, batch time and end-to-end delay.",
            tags=["pipeline"],
            time_from="now-24h",
            refresh="30s",
        )
        .with_variable(g.datasource_variable())
        .with_variable(g.database_constant(database))
        .with_variable(g.sql_variable("group", "Consumer group", f"""
SELECT DISTINCT group_id FROM {table('pipeline_stats')} ORDER BY group_id""", multi=True))
    )
    for panel in (throughput_now, lag_now, dead_now, delay_now, consumed, scored, lag, dead_by_kind, delay,
                  batch, latest_dead):
        board = board.with_panel(panel)
    return g.as_json(board)
