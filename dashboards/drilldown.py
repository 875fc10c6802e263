"""Drill-down: one slice of the stream by topic, source, language and keyword."""

from __future__ import annotations

from typing import Any

from dashboards import grafana as g
from dashboards.queries import SENTIMENT, TOPIC, options, selection

UID = "yuqing-drilldown"
WITH_SEL = "WITH" + selection()


def build(database: str) -> dict[str, Any]:
    matching = g.stat_panel(
        "Matching items",
        f"""{WITH_SEL}
SELECT count() AS items FROM sel""",
        description="Items in the selection (topic, source, language, keyword, time range).",
    ).span(6).height(4)
    negative_share = g.stat_panel(
        "Negative share",
        f"""{WITH_SEL}
SELECT countIf(label = 'negative') / greatest(count(), 1) AS negative_share FROM sel""",
        description="Share of the selected items labelled negative.",
        unit="percentunit",
        thresholds=((None, "green"), (0.4, "orange"), (0.5, "red")),
        decimals=1,
    ).span(6).height(4)
    sources = g.stat_panel(
        "Sources",
        f"""{WITH_SEL}
SELECT uniqExact(source) AS sources FROM sel""",
        description="Distinct sources in the selection.",
    ).span(6).height(4)
    mean_confidence = g.stat_panel(
        "Mean confidence",
        f"""{WITH_SEL}
SELECT avg(score) AS confidence FROM sel""",
        description="Average probability the sentiment model gave its label (low values: borderline items).",
        unit="percentunit",
        thresholds=((None, "orange"), (0.7, "green")),
        decimals=1,
    ).span(6).height(4)

    by_sentiment = g.timeseries_panel(
        "Items by sentiment",
        f"""{WITH_SEL}
SELECT $__timeInterval(published_at) AS time, label AS sentiment, count() AS items
FROM sel
GROUP BY time, sentiment
ORDER BY time""",
        description="Selected items per interval, stacked by sentiment (publication time).",
        bars=True,
        stacked=True,
        min_interval="1m",
        display_name="${__field.labels.sentiment}",
        colors=g.SENTIMENT_COLORS,
    ).span(12).height(9)
    share_over_time = g.timeseries_panel(
        "Negative share over time",
        f"""{WITH_SEL}
SELECT $__timeInterval(published_at) AS time, countIf(label = 'negative') / count() AS negative_share
FROM sel
GROUP BY time
ORDER BY time""",
        description="Share of the selected items labelled negative, per interval.",
        unit="percentunit",
        min_interval="1m",
    ).span(12).height(9)

    by_topic = g.barchart_panel(
        "Sentiment by topic",
        f"""{WITH_SEL}
SELECT topic, countIf(label = 'negative') AS negative, countIf(label = 'positive') AS positive,
       countIf(label NOT IN ('negative', 'positive')) AS other
FROM sel
GROUP BY topic
ORDER BY count() DESC""",
        description="Selected items per topic, split by sentiment.",
        x_field="topic",
        stacked=True,
        colors={"negative": "red", "positive": "green", "other": "blue"},
    ).span(12).height(9)
    by_source = g.barchart_panel(
        "Sentiment by source",
        f"""{WITH_SEL}
SELECT source, countIf(label = 'negative') AS negative, countIf(label = 'positive') AS positive,
       countIf(label NOT IN ('negative', 'positive')) AS other
FROM sel
GROUP BY source
ORDER BY count() DESC
LIMIT 15""",
        description="Selected items per source (top 15), split by sentiment.",
        x_field="source",
        stacked=True,
        colors={"negative": "red", "positive": "green", "other": "blue"},
    ).span(12).height(9)

    items = g.table_panel(
        "Items",
        f"""{WITH_SEL}
SELECT published_at AS time, source, lang, topic, label AS sentiment, round(score, 3) AS score, title, url
FROM sel
ORDER BY time DESC
LIMIT 500""",
        description="The selected items, newest first.",
        widths={"time": 160, "source": 150, "lang": 50, "topic": 120, "sentiment": 90, "score": 70},
    ).span(24).height(12)

    board = (
        g.new_dashboard(
            UID,
            "yuqing · Drill-down",
            description="Slice the scored stream by topic, source, language and keyword.",
            tags=["drill-down"],
            time_from="now-7d",
            refresh="5m",
        )
        .with_variable(g.datasource_variable())
        .with_variable(g.database_constant(database))
        .with_variable(g.model_variable("sentiment"))
        .with_variable(g.model_variable("topic"))
        .with_variable(g.sql_variable("topic", "Topic", options("label", TOPIC), multi=True))
        .with_variable(g.sql_variable("source", "Source", options("source", SENTIMENT), multi=True))
        .with_variable(g.sql_variable("lang", "Language", options("lang", SENTIMENT), multi=True))
        .with_variable(g.textbox_variable(
            "keyword", "Keyword", "Case-insensitive text in the title or body (empty: everything)."))
    )
    for panel in (matching, negative_share, sources, mean_confidence, by_sentiment, share_over_time,
                  by_topic, by_source, items):
        board = board.with_panel(panel)
    return g.as_json(board)
