"""Story drill-down: one story (one event across outlets and languages) over the time range."""

from __future__ import annotations

from typing import Any

from dashboards import grafana as g
from dashboards.queries import negative_share, story_items, table, value

UID = "yuqing-story"
STORY_OPTIONS = 200  # the story picker lists the stories with most items in the range


def link(field: str) -> dict[str, str]:
    """A data link from a table whose `field` column holds story ids to this dashboard, keeping the
    time range and the sentiment model."""
    return {
        "title": "Story drill-down",
        "url": f"/d/{UID}/story?${{__url_time_range}}&${{sentiment_model:queryparam}}"
               f"&var-story=${{__data.fields.{field}:percentencode}}",
    }


def build(database: str) -> dict[str, Any]:
    items_sql = story_items(story="story")

    items = g.stat_panel(
        "Story items",
        f"SELECT count() AS items FROM {items_sql}",
        description="Items of the story published in the time range (scored by the selected sentiment model).",
    ).span(6).height(4)
    negative_stat = g.stat_panel(
        "Negative share",
        f"SELECT {negative_share()} AS negative_share FROM {items_sql}",
        description="Share of the story's non-neutral items in the range labelled negative.",
        unit="percentunit",
        thresholds=((None, "green"), (0.4, "orange"), (0.5, "red")),
        decimals=1,
    ).span(6).height(4)
    sources = g.stat_panel(
        "Sources",
        f"SELECT uniqExact(source) AS sources FROM {items_sql}",
        description="Distinct sources that carried the story in the range.",
    ).span(6).height(4)
    duplicates = g.stat_panel(
        "Near-duplicates",
        f"SELECT countIf(duplicate_of != '') AS duplicates FROM {items_sql}",
        description="Items in the range that are near-copies of an earlier item (wire reprints, light rewrites).",
        thresholds=((None, "blue"),),
    ).span(6).height(4)

    titles = g.table_panel(
        "Representative titles",
        f"""
SELECT lang, title, size AS items, duplicates, first_seen, last_seen, arrayStringConcat(sources, ', ') AS sources
FROM {table('stories')} FINAL
ARRAY JOIN mapKeys(titles) AS lang, mapValues(titles) AS title
WHERE story_id = {value('story')}
ORDER BY lang""",
        description="The story as the stories job keeps it: one representative title per language, and its items "
                    "and near-duplicates of all time (not only the range).",
        widths={"lang": 50, "items": 60, "duplicates": 90, "first_seen": 160, "last_seen": 160},
    ).span(24).height(5)

    def over_time(title: str, column: str, name: str, colors: dict[str, str] | None = None) -> Any:
        return g.timeseries_panel(
            title,
            f"""
SELECT $__timeInterval(published_at) AS time, {column} AS {name}, count() AS items
FROM {items_sql}
GROUP BY time, {name}
ORDER BY time""",
            description=f"The story's items per interval, stacked by {name}.",
            bars=True,
            stacked=True,
            min_interval="1m",
            display_name=f"${{__field.labels.{name}}}",
            colors=colors,
        ).span(8).height(9)

    by_lang = over_time("Items by language", "lang", "language")
    by_source = over_time("Items by source", "source", "source")
    by_sentiment = over_time("Items by sentiment", "label", "sentiment", g.SENTIMENT_COLORS)

    story_table = g.table_panel(
        "Items",
        f"""
SELECT published_at AS time, source, lang, label AS sentiment, round(score, 3) AS score, title,
       duplicate_of, round(similarity, 3) AS similarity, url, id
FROM {story_items(story="story", text="title, url")}
ORDER BY time DESC, id
LIMIT 500""",
        description="The story's items in the range, newest first; duplicate_of names the item a near-copy repeats, "
                    "similarity is how close the item came to the story when it joined (1 for its first item).",
        widths={"time": 160, "source": 150, "lang": 50, "sentiment": 90, "score": 70, "similarity": 80},
    ).span(24).height(12)

    picker = f"""
SELECT story_id AS story, concat(argMin(title, published_at), ' (', toString(count()), ')') AS text
FROM {story_items("id, published_at", text="title")}
GROUP BY story
ORDER BY count() DESC, story
LIMIT {STORY_OPTIONS}"""
    board = (
        g.new_dashboard(
            UID,
            "yuqing · Story",
            description="One story (an event across outlets and languages): its items by language, source and "
                        "sentiment, and the items themselves with their near-duplicates.",
            tags=["stories"],
            time_from="now-7d",
            refresh="5m",
        )
        .with_variable(g.datasource_variable())
        .with_variable(g.database_constant(database))
        .with_variable(g.model_variable("sentiment"))
        .with_variable(g.sql_variable("story", "Story", picker, per_time_range=True,
                                      description="Stories with most items in the time range (default: the first)."))
    )
    for panel in (items, negative_stat, sources, duplicates, titles, by_lang, by_source, by_sentiment, story_table):
        board = board.with_panel(panel)
    return g.as_json(board)
