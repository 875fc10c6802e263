"""Overview: how opinion moves, where negativity concentrates, what fired."""

from __future__ import annotations

from typing import Any

from dashboards import grafana as g
from dashboards.queries import SENTIMENT, latest_versions, sentiment_with_topic, table

UID = "yuqing-overview"


def build(database: str) -> dict[str, Any]:
    items = g.stat_panel(
        "Items",
        f"""
SELECT uniqExactMerge(items) AS items
FROM {table('scored_minute')}
WHERE {SENTIMENT} AND $__timeFilter(minute)""",
        description="Distinct items scored by the selected sentiment model, by publication time.",
    ).span(6).height(4)
    negative_share = g.stat_panel(
        "Negative share",
        f"""
SELECT sumIf(n, label = 'negative') / greatest(sum(n), 1) AS negative_share
FROM (
    SELECT label, uniqExactMerge(items) AS n
    FROM {table('scored_minute')}
    WHERE {SENTIMENT} AND $__timeFilter(minute)
    GROUP BY label
)""",
        description="Share of items the sentiment model labels negative.",
        unit="percentunit",
        thresholds=((None, "green"), (0.4, "orange"), (0.5, "red")),
        decimals=1,
    ).span(6).height(4)
    alerts_fired = g.stat_panel(
        "Alerts fired",
        f"""
SELECT count() AS alerts
FROM {table('alerts')} FINAL
WHERE $__timeFilter(fired_at)""",
        description="Alerts fired in the time range (see the table below).",
        thresholds=((None, "green"), (1, "red")),
    ).span(6).height(4)
    dead_letters = g.stat_panel(
        "Dead letters",
        f"""
SELECT count() AS dead_letters
FROM {table('dead_letters')} FINAL
WHERE $__timeFilter(received_at)""",
        description="Messages rejected by the pipeline (details on the Pipeline health dashboard).",
        thresholds=((None, "green"), (1, "orange")),
    ).span(6).height(4)

    by_sentiment = g.timeseries_panel(
        "Items by sentiment",
        f"""
SELECT $__timeInterval(minute) AS time, label AS sentiment, uniqExactMerge(items) AS items
FROM {table('scored_minute')}
WHERE {SENTIMENT} AND $__timeFilter(minute)
GROUP BY time, sentiment
ORDER BY time""",
        description="Distinct items per interval, stacked by sentiment label (publication time).",
        bars=True,
        stacked=True,
        min_interval="1m",
        display_name="${__field.labels.sentiment}",
        colors=g.SENTIMENT_COLORS,
    ).span(16).height(9)
    share_by_topic = g.barchart_panel(
        "Negative share by topic",
        f"""
SELECT concat(t.label, ' (', toString(count()), ')') AS topic,
       countIf(s.label = 'negative') / count() AS negative_share
FROM {sentiment_with_topic()}
GROUP BY t.label
ORDER BY negative_share DESC""",
        description="Per topic (item count in brackets): share of its items labelled negative.",
        x_field="topic",
        unit="percentunit",
        max_value=1,
    ).span(8).height(9)

    top_sources = g.barchart_panel(
        "Top sources",
        f"""
SELECT source,
       sumIf(n, label = 'negative') AS negative,
       sumIf(n, label = 'positive') AS positive,
       sumIf(n, label NOT IN ('negative', 'positive')) AS other
FROM (
    SELECT source, label, uniqExactMerge(items) AS n
    FROM {table('scored_minute')}
    WHERE {SENTIMENT} AND $__timeFilter(minute)
    GROUP BY source, label
)
GROUP BY source
ORDER BY sum(n) DESC
LIMIT 10""",
        description="The ten sources with most items, split by sentiment.",
        x_field="source",
        stacked=True,
        colors={"negative": "red", "positive": "green", "other": "blue"},
    ).span(8).height(10)
    latest_negative = g.table_panel(
        "Latest negative items",
        f"""
SELECT s.published_at AS time, s.source AS source, t.label AS topic, round(s.score, 3) AS score,
       s.title AS title, s.url AS url
FROM {sentiment_with_topic("label = 'negative'", "id, published_at, source, title, url, score")}
ORDER BY time DESC
LIMIT 100""",
        description="The most recent items labelled negative, with the model's confidence.",
        widths={"time": 160, "source": 150, "topic": 120, "score": 70},
    ).span(16).height(10)

    fired = g.table_panel(
        "Fired alerts",
        f"""
SELECT fired_at AS time, rule, severity, scope, round(value, 3) AS value, threshold, item_count AS items,
       message
FROM {table('alerts')} FINAL
WHERE $__timeFilter(fired_at)
ORDER BY fired_at DESC
LIMIT 100""",
        description="Alerts written by `yuqing alerts` (negative surge, volume spike, ...).",
        widths={"time": 160, "rule": 140, "severity": 80, "scope": 180, "value": 70, "threshold": 80, "items": 60},
    ).span(24).height(8)

    board = (
        g.new_dashboard(
            UID,
            "yuqing · Overview",
            description="Public-opinion overview: sentiment over time, negativity by topic and source, alerts.",
            tags=["overview"],
            time_from="now-24h",
        )
        .with_variable(g.datasource_variable())
        .with_variable(g.database_constant(database))
        .with_variable(g.sql_variable("sentiment_model", "Sentiment model", latest_versions("sentiment"),
                                      description="Sentiment model version (default: the latest)."))
        .with_variable(g.sql_variable("topic_model", "Topic model", latest_versions("topic"),
                                      description="Topic model version (default: the latest)."))
    )
    for panel in (items, negative_share, alerts_fired, dead_letters, by_sentiment, share_by_topic,
                  top_sources, latest_negative, fired):
        board = board.with_panel(panel)
    return g.as_json(board)
