"""Drill-down: one slice of the stream by risk, category, source, language and keyword."""

from __future__ import annotations

from typing import Any

from dashboards import grafana as g
from dashboards.overview import entity_type_variable, top_entities_panel
from dashboards.queries import (
    SENTIMENT,
    head_filter,
    negative_share,
    neutral_share,
    options,
    selection,
    sentiment_counts,
)

UID = "yuqing-drilldown"
WITH_SEL = "WITH" + selection()


def build(database: str) -> dict[str, Any]:
    matching = g.stat_panel(
        "Matching items",
        f"""{WITH_SEL}
SELECT count() AS items FROM sel""",
        description="Items in the selection (risk, category, source, language, keyword, time range).",
    ).span(6).height(4)
    negative_stat = g.stat_panel(
        "Negative share",
        f"""{WITH_SEL}
SELECT {negative_share()} AS negative_share FROM sel""",
        description="Share of the selected non-neutral items labelled negative: negative / (negative + positive).",
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
        "Negative and neutral share over time",
        f"""{WITH_SEL}
SELECT $__timeInterval(published_at) AS time, {negative_share()} AS negative_share,
       {neutral_share()} AS neutral_share
FROM sel
GROUP BY time
ORDER BY time""",
        description="Per interval: the share of the selected non-neutral items labelled negative, and the "
                    "share of all selected items labelled neutral.",
        unit="percentunit",
        min_interval="1m",
    ).span(12).height(9)

    def sentiment_by(column: str, title: str, limit: int = 0) -> Any:
        return g.barchart_panel(
            f"Sentiment by {title}",
            f"""{WITH_SEL}
SELECT {column}, {sentiment_counts()}
FROM sel
GROUP BY {column}
ORDER BY count() DESC, {column}""" + (f"\nLIMIT {limit}" if limit else ""),
            description=f"Selected items per {title}" + (f" (top {limit})" if limit else "") + ", split by sentiment.",
            x_field=column,
            stacked=True,
            colors=g.SENTIMENT_COLORS,
        ).span(8).height(9)

    by_risk = sentiment_by("risk", "risk")
    by_category = sentiment_by("category", "category")
    by_source = sentiment_by("source", "source", limit=15)

    items = g.table_panel(
        "Items",
        f"""{WITH_SEL}
SELECT published_at AS time, source, lang, risk, category, label AS sentiment, round(score, 3) AS score, title, url
FROM sel
ORDER BY time DESC, id
LIMIT 500""",
        description="The selected items, newest first.",
        widths={"time": 160, "source": 150, "lang": 50, "risk": 110, "category": 100, "sentiment": 90, "score": 70},
    ).span(24).height(12)
    entities = top_entities_panel("SELECT id FROM sel", "selected items", WITH_SEL).span(24).height(10)

    board = (
        g.new_dashboard(
            UID,
            "yuqing · Drill-down",
            description="Slice the scored stream by risk, category, source, language and keyword.",
            tags=["drill-down"],
            time_from="now-7d",
            refresh="5m",
        )
        .with_variable(g.datasource_variable())
        .with_variable(g.database_constant(database))
        .with_variable(g.model_variable("sentiment"))
        .with_variable(g.model_variable("risk"))
        .with_variable(g.model_variable("category"))
        .with_variable(g.model_variable("entities"))
        .with_variable(g.sql_variable("risk", "Risk", options("label", head_filter("risk")), multi=True))
        .with_variable(g.sql_variable("category", "Category", options("label", head_filter("category")), multi=True))
        .with_variable(entity_type_variable())
        .with_variable(g.sql_variable("source", "Source", options("source", SENTIMENT), multi=True))
        .with_variable(g.sql_variable("lang", "Language", options("lang", SENTIMENT), multi=True))
        .with_variable(g.textbox_variable(
            "keyword", "Keyword", "Case-insensitive text in the title or body (empty: everything)."))
    )
    for panel in (matching, negative_stat, sources, mean_confidence, by_sentiment, share_over_time,
                  by_risk, by_category, by_source, items, entities):
        board = board.with_panel(panel)
    return g.as_json(board)
