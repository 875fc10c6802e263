"""Overview: how opinion moves, where negativity concentrates, what fired."""

from __future__ import annotations

from typing import Any

from dashboards import grafana as g
from dashboards import story
from dashboards.queries import (
    ENTITIES,
    SENTIMENT,
    counted,
    negative_share,
    neutral_share,
    options,
    scored_items,
    sentiment_counts,
    story_items,
    story_titles,
    table,
    top_entities,
)

UID = "yuqing-overview"
TOP_STORIES = 20
TOP_ENTITIES = 20
ENTITY_TYPE_HELP = "Entity types the entity panels count (PER person, LOC place, ORG organisation)."


def entity_type_variable() -> Any:
    """The `entity_type` variable (multi, with All): the types the entities model found."""
    return g.sql_variable("entity_type", "Entity type", options("type", ENTITIES, "entity_mentions"), multi=True,
                          description=ENTITY_TYPE_HELP)


def top_entities_panel(within: str = "", what: str = "items in the time range", prefix: str = "") -> Any:
    """`within`: a subquery of the ids to count in, which may read the CTEs of `prefix` (a WITH clause)."""
    return g.table_panel(
        "Top entities",
        prefix + top_entities(TOP_ENTITIES, within),
        description=f"People, places and organisations named by most {what} (one entity: one normalized "
                    "form and type, shown in its commonest spelling): mentions, items naming it, and the "
                    "negative share of those items (the entities model's own sentiment; neutral left out).",
        widths={"type": 60, "mentions": 90, "items": 70, "negative": 90},
        units={"negative": "percentunit"},
    )


def build(database: str) -> dict[str, Any]:
    items = g.stat_panel(
        "Items",
        f"""
SELECT count() AS items
FROM {table('scored')} FINAL
WHERE {SENTIMENT} AND $__timeFilter(published_at)""",
        description="Distinct items scored by the selected sentiment model, by publication time.",
    ).span(4).height(4)
    negative_stat = g.stat_panel(
        "Negative share",
        f"""
SELECT {negative_share()} AS negative_share
FROM {table('scored')} FINAL
WHERE {SENTIMENT} AND $__timeFilter(published_at)""",
        description="Share of the non-neutral items the sentiment model labels negative: negative / "
                    "(negative + positive), as the brief and the negative-surge rule count it.",
        unit="percentunit",
        thresholds=((None, "green"), (0.4, "orange"), (0.5, "red")),
        decimals=1,
    ).span(5).height(4)
    neutral_stat = g.stat_panel(
        "Neutral share",
        f"""
SELECT {neutral_share()} AS neutral_share
FROM {table('scored')} FINAL
WHERE {SENTIMENT} AND $__timeFilter(published_at)""",
        description="Share of the items the sentiment model labels neutral (wire copy, announcements).",
        unit="percentunit",
        decimals=1,
    ).span(5).height(4)
    alerts_fired = g.stat_panel(
        "Alerts fired",
        f"""
SELECT count() AS alerts
FROM {table('alerts')} FINAL
WHERE $__timeFilter(fired_at)""",
        description="Alerts fired in the time range (see the table below).",
        thresholds=((None, "green"), (1, "red")),
    ).span(5).height(4)
    dead_letters = g.stat_panel(
        "Dead letters",
        f"""
SELECT count() AS dead_letters
FROM {table('dead_letters')} FINAL
WHERE $__timeFilter(received_at)""",
        description="Messages rejected by the pipeline (details on the Pipeline health dashboard).",
        thresholds=((None, "green"), (1, "orange")),
    ).span(5).height(4)

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
    share_by_risk = g.barchart_panel(
        "Negative share by risk",
        f"""
SELECT concat(r.label, ' (', toString(count()), ')') AS risk,
       {negative_share('s.label')} AS negative_share
FROM {scored_items(heads=("risk",))}
WHERE r.label != ''
GROUP BY r.label
ORDER BY negative_share DESC""",
        description="Per risk topic (item count in brackets): share of its non-neutral items labelled negative.",
        x_field="risk",
        unit="percentunit",
        max_value=1,
    ).span(8).height(9)

    def share_over_time(title: str, share: str, name: str, description: str) -> Any:
        return g.timeseries_panel(
            title,
            f"""
SELECT $__timeInterval(published_at) AS time, {share} AS {name}
FROM {table('scored')} FINAL
WHERE {SENTIMENT} AND $__timeFilter(published_at)
GROUP BY time
ORDER BY time""",
            description=description,
            unit="percentunit",
            min_interval="5m",
        ).span(12).height(8)

    neutral_over_time = share_over_time(
        "Neutral share over time", neutral_share(), "neutral_share",
        "Share of the items labelled neutral, per interval: a rise is wire copy and announcements, not opinion.")
    negative_over_time = share_over_time(
        "Negative share of non-neutral items", negative_share(), "negative_share",
        "Per interval, negative / (negative + positive): the tone of the items that take a side, "
        "unmoved by how much neutral copy there is (no point where every item is neutral).")

    by_category = g.barchart_panel(
        "Sentiment by category",
        f"""
SELECT c.label AS category, {sentiment_counts('s.label')}
FROM {scored_items(heads=("category",))}
WHERE c.label != ''
GROUP BY c.label
ORDER BY count() DESC, category""",
        description="Items per news section (category model), split by sentiment.",
        x_field="category",
        stacked=True,
        colors=g.SENTIMENT_COLORS,
    ).span(8).height(10)
    entities = top_entities_panel().span(16).height(10)

    top_sources = g.barchart_panel(
        "Top sources",
        f"""
SELECT source, {sentiment_counts()}
FROM {table('scored')} FINAL
WHERE {SENTIMENT} AND $__timeFilter(published_at)
GROUP BY source
ORDER BY count() DESC
LIMIT 10""",
        description="The ten sources with most items, split by sentiment.",
        x_field="source",
        stacked=True,
        colors=g.SENTIMENT_COLORS,
    ).span(8).height(10)
    latest_negative = g.table_panel(
        "Latest negative items",
        f"""
SELECT s.published_at AS time, s.source AS source, r.label AS risk, c.label AS category,
       round(s.score, 3) AS score, x.title AS title, x.url AS url
FROM {scored_items("id, published_at, source, score", sentiment_filter="label = 'negative'",
                   heads=("risk", "category"), text="title, url")}
ORDER BY time DESC, s.id
LIMIT 100""",
        description="The most recent items labelled negative, with the model's confidence.",
        widths={"time": 160, "source": 150, "risk": 110, "category": 100, "score": 70},
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
    SELECT st.story_id AS story, count() AS items, {negative_share('s.label')} AS negative_share,
           {counted('s.label')} AS sentiment, {counted('s.lang')} AS languages, {counted('s.source', 5)} AS sources,
           argMin(x.title, s.published_at) AS first_title, min(s.published_at) AS first_in_range,
           max(s.published_at) AS last_in_range
    FROM {story_items("id, published_at, source, lang, label", text="title")}
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
                    "(items in the range), the sentiment mix and the negative share of its non-neutral items. "
                    "Click a title for the story drill-down.",
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
            description="Public-opinion overview: sentiment over time, negativity by risk, category and source, "
                        "the entities in the news, alerts, stories.",
            tags=["overview"],
            time_from="now-24h",
        )
        .with_variable(g.datasource_variable())
        .with_variable(g.database_constant(database))
        .with_variable(g.model_variable("sentiment"))
        .with_variable(g.model_variable("risk"))
        .with_variable(g.model_variable("category"))
        .with_variable(g.model_variable("entities"))
        .with_variable(entity_type_variable())
    )
    for panel in (items, negative_stat, neutral_stat, alerts_fired, dead_letters, by_sentiment, share_by_risk,
                  neutral_over_time, negative_over_time, by_category, entities, top_sources, latest_negative, fired,
                  top_stories):
        board = board.with_panel(panel)
    return g.as_json(board)
