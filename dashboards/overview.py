"""Overview: how opinion moves, where negativity concentrates, what fired."""

from __future__ import annotations

from typing import Any

from dashboards import grafana as g
from dashboards import story
from dashboards.queries import (
    SENTIMENT,
    counted,
    sentiment_with_topic,
    story_items,
    story_titles,
    table,
)

UID = "yuqing-overview"
TOP_STORIES = 20


def build(database: str) -> dict[str, Any]:
    items = g.stat_panel(
        "Items",
        f"""
SELECT count() AS items
FROM {table('scored')} FINAL
WHERE {SENTIMENT} AND $__timeFilter(published_at)""",
        description="Distinct items scored by the selected sentiment model, by publication time.",
    ).span(6).height(4)
    negative_share = g.stat_panel(
        "Negative share",
        f"""
SELECT countIf(label = 'negative') / greatest(count(), 1) AS negative_share
FROM {table('scored')} FINAL
WHERE {SENTIMENT} AND $__timeFilter(published_at)""",
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
SELECT $__timeInterval(published_at) AS time, label AS sentiment, count() AS items
FROM {table('scored')} FINAL
WHERE {SENTIMENT} AND $__timeFilter(published_at)
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
       countIf(label = 'negative') AS negative,
       countIf(label = 'positive') AS positive,
       countIf(label NOT IN ('negative', 'positive')) AS other
FROM {table('scored')} FINAL
WHERE {SENTIMENT} AND $__timeFilter(published_at)
GROUP BY source
ORDER BY count() DESC
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

    # Ranked by items in the range; `before` counts the story's items published before the range.
    top_stories = g.table_panel(
        "Top stories",
        f"""
WITH ranked AS (
    SELECT st.story_id AS story, count() AS items, countIf(s.label = 'negative') / count() AS negative_share,
           {counted('s.label')} AS sentiment, {counted('s.lang')} AS languages, {counted('s.source', 5)} AS sources,
           argMin(s.title, s.published_at) AS first_title, min(s.published_at) AS first_in_range,
           max(s.published_at) AS last_in_range
    FROM {story_items("id, published_at, source, lang, title, label")}
    GROUP BY story
    ORDER BY items DESC, story
    LIMIT {TOP_STORIES}
),
earlier AS (
    SELECT story_id AS story, count() AS before
    FROM {table('item_stories')} FINAL
    WHERE published_at < $__fromTime AND story_id IN (SELECT story FROM ranked)
    GROUP BY story
),
known AS (
    SELECT story_id AS story, titles, size, first_seen, last_seen
    FROM {table('stories')} FINAL
    WHERE story_id IN (SELECT story FROM ranked)
)
SELECT if(empty(k.titles), r.first_title, {story_titles('k.titles')}) AS title, r.items AS items,
       if(ifNull(e.before, 0) = 0, NULL, r.items / e.before) AS growth,
       greatest(k.size, r.items + ifNull(e.before, 0)) AS size, r.languages AS languages, r.sources AS sources,
       r.sentiment AS sentiment, r.negative_share AS negative,
       if(k.story = '', r.first_in_range, k.first_seen) AS first_seen,
       if(k.story = '', r.last_in_range, k.last_seen) AS last_seen, r.story AS story
FROM ranked AS r
LEFT JOIN earlier AS e ON e.story = r.story
LEFT JOIN known AS k ON k.story = r.story
ORDER BY items DESC, story""",
        description="Stories (one event across outlets and languages) with the most items in the time range: "
                    "their representative titles, items in the range, growth (those items against the story's "
                    "items before the range; new: it began in the range), all its items, languages and sources "
                    "(items in the range), the sentiment mix. Click a title for the story drill-down.",
        widths={"items": 60, "growth": 70, "size": 60, "languages": 110, "sources": 260, "sentiment": 190,
                "negative": 80, "first_seen": 160, "last_seen": 160, "story": 120},
        units={"growth": "percentunit", "negative": "percentunit"},
        links={"title": story.link("story")},
        null_text={"growth": "new"},
    ).span(24).height(10)

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
        .with_variable(g.model_variable("sentiment"))
        .with_variable(g.model_variable("topic"))
    )
    for panel in (items, negative_share, alerts_fired, dead_letters, by_sentiment, share_by_topic,
                  top_sources, latest_negative, fired, top_stories):
        board = board.with_panel(panel)
    return g.as_json(board)
