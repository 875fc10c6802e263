"""The SQL the rules and the brief read, with every value a server-side parameter.

The SQL text is assembled only from fixed fragments chosen by validated settings (which filters
are present, how to group); every value that comes from a rule or the data — versions, sources,
topics, terms, times — travels as a clickhouse-connect `{name:Type}` parameter.

An *item* is one sentiment row of the chosen model version joined on ``id`` with the topic row of
the chosen topic version; ``scored`` is read with ``FINAL`` so a re-delivered row never counts
twice, and the rules count ``uniqExact(id)``, so no layout of ``scored`` that keeps two rows of one
(id, model_version) apart (and no join that repeats one) can count an item twice either.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from stream.alerts.matching import term_pattern
from stream.alerts.rules import GroupBy, Scope
from stream.core.store import Store
from stream.core.times import as_utc

TIME = "DateTime64(3,'UTC')"

# Probability of 'negative', whether or not the model wrote a probs map.
_NEG_SCORE = "if(mapContains(probs, 'negative'), probs['negative'], if(label = 'negative', score, 0))"


@dataclass(frozen=True)
class Versions:
    """The model version per task that a rule reads (None: that task has no rows)."""

    sentiment: str | None
    topic: str | None

    def pinned(self, sentiment: str | None, topic: str | None) -> Versions:
        return Versions(sentiment or self.sentiment, topic or self.topic)

    def describe(self) -> str:
        return f"sentiment={self.sentiment or '-'} topic={self.topic or '-'}"


def latest_versions(store: Store, start: dt.datetime, end: dt.datetime) -> Versions:
    """Per task, the model version that scored most recently among items published in [start, end)."""
    rows = store.rows(
        f"SELECT task, argMax(model_version, scored_at) FROM {store.database}.scored FINAL "
        f"WHERE task IN ('sentiment', 'topic') AND published_at >= {{start:{TIME}}} "
        f"AND published_at < {{end:{TIME}}} GROUP BY task",
        {"start": start, "end": end},
    )
    found = {str(task): str(version) for task, version in rows}
    return Versions(found.get("sentiment"), found.get("topic"))


def version_coverage(
    store: Store, versions: Versions, tasks: tuple[str, ...], start: dt.datetime, end: dt.datetime
) -> dt.datetime | None:
    """When the chosen versions of `tasks` began covering [start, end): the latest of their
    earliest items.  A version rolled out an hour ago has no baseline before that hour."""
    chosen = {task: getattr(versions, task) for task in tasks if getattr(versions, task) is not None}
    if not chosen:
        return None
    rows = store.rows(
        f"SELECT task, min(published_at) FROM {store.database}.scored FINAL "
        "WHERE ((task = 'sentiment' AND model_version = {sentiment:String}) "
        "OR (task = 'topic' AND model_version = {topic:String})) "
        f"AND published_at >= {{start:{TIME}}} AND published_at < {{end:{TIME}}} GROUP BY task",
        {
            "sentiment": chosen.get("sentiment", ""),
            "topic": chosen.get("topic", ""),
            "start": start,
            "end": end,
        },
    )
    firsts = {str(task): as_utc(first) for task, first in rows}
    if set(firsts) != set(chosen):
        return None
    return max(firsts.values())


def late_windows(
    store: Store,
    window: dt.timedelta,
    scored_since: dt.datetime,
    start: dt.datetime,
    end: dt.datetime,
    stories: bool = False,
) -> list[dt.datetime]:
    """The ends, oldest first, of the windows aligned to multiples of `window` that hold items
    published in [start, end) and scored at or after `scored_since`; with `stories`, also those
    holding items the stories job assigned since then (it runs behind the consumer)."""
    window_ms = int(window.total_seconds() * 1000)
    key = "intDiv(toUnixTimestamp64Milli(published_at), {window_ms:Int64}) AS k"
    in_range = f"published_at >= {{start:{TIME}}} AND published_at < {{end:{TIME}}}"
    sql = (
        f"SELECT {key} FROM {store.database}.scored FINAL WHERE task IN ('sentiment', 'topic') "
        f"AND scored_at >= {{since:{TIME}}} AND {in_range}"
    )
    if stories:
        sql += (
            f" UNION ALL SELECT {key} FROM {store.database}.item_stories FINAL "
            f"WHERE assigned_at >= {{since:{TIME}}} AND {in_range}"
        )
    rows = store.rows(
        f"SELECT DISTINCT k FROM ({sql}) ORDER BY k",
        {"window_ms": window_ms, "since": scored_since, "start": start, "end": end},
    )
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return [epoch + dt.timedelta(milliseconds=(int(k) + 1) * window_ms) for (k,) in rows]


def stories_of(store: Store, ids: Sequence[str]) -> dict[str, tuple[str, str]]:
    """item id -> (its story id, its language) for the items the stories job has assigned."""
    if not ids:
        return {}
    rows = store.rows(
        f"SELECT id, story_id, lang FROM {store.database}.item_stories FINAL WHERE has({{ids:Array(String)}}, id)",
        {"ids": list(ids)},
    )
    return {str(i): (str(story), str(lang)) for i, story, lang in rows if story}


def story_titles(store: Store, story_ids: Sequence[str]) -> dict[str, dict[str, str]]:
    """story id -> its representative titles (language -> title), for the stories known."""
    if not story_ids:
        return {}
    rows = store.rows(
        f"SELECT story_id, titles FROM {store.database}.stories FINAL WHERE has({{ids:Array(String)}}, story_id)",
        {"ids": sorted(set(story_ids))},
    )
    return {str(story): {str(k): str(v) for k, v in titles.items()} for story, titles in rows}


def representative_title(titles: dict[str, str], lang: str | None = None) -> str:
    """The story's title in `lang` when it has one there, else all its titles ('zh / en')."""
    if lang and titles.get(lang):
        return titles[lang]
    return " / ".join(t for t in titles.values() if t)


def story_coverage(store: Store, start: dt.datetime, end: dt.datetime) -> dt.datetime | None:
    """The first item published in [start, end) that the stories job assigned (None: none yet)."""
    first = store.scalar(
        f"SELECT min(published_at) FROM {store.database}.item_stories FINAL "
        f"WHERE published_at >= {{start:{TIME}}} AND published_at < {{end:{TIME}}} HAVING count() > 0",
        {"start": start, "end": end},
    )
    return as_utc(first) if first is not None else None


@dataclass
class ItemsQuery:
    """A subquery of the items in [start, end) that pass a scope; `sql` goes after FROM."""

    sql: str
    params: dict[str, Any] = field(default_factory=dict)


def items_query(
    database: str,
    versions: Versions,
    scope: Scope,
    start: dt.datetime,
    end: dt.datetime,
) -> ItemsQuery | None:
    """Columns: id, source, lang, url, title, published_at, neg (Bool), neg_score, topic, hay
    (title and text).  None when neither task has a model version (nothing scored yet)."""
    params: dict[str, Any] = {"start": start, "end": end}
    in_range = f"published_at >= {{start:{TIME}}} AND published_at < {{end:{TIME}}}"
    if versions.sentiment is not None:
        params["sentiment_version"] = versions.sentiment
        sentiment = (
            "SELECT id, source, lang, url, title, published_at, label = 'negative' AS neg, "
            f"{_NEG_SCORE} AS neg_score, concat(title, '\\n', text) AS hay "
            f"FROM {database}.scored FINAL "
            f"WHERE task = 'sentiment' AND model_version = {{sentiment_version:String}} AND {in_range}"
        )
        if versions.topic is not None:
            params["topic_version"] = versions.topic
            base = (
                "SELECT s.id AS id, s.source AS source, s.lang AS lang, s.url AS url, s.title AS title, "
                "s.published_at AS published_at, s.neg AS neg, s.neg_score AS neg_score, "
                "t.topic AS topic, s.hay AS hay "
                f"FROM ({sentiment}) AS s LEFT JOIN ("
                f"SELECT id, label AS topic FROM {database}.scored FINAL "
                f"WHERE task = 'topic' AND model_version = {{topic_version:String}} AND {in_range} "
                "LIMIT 1 BY id) AS t ON s.id = t.id"
            )
        else:
            base = (
                "SELECT id, source, lang, url, title, published_at, neg, neg_score, '' AS topic, hay "
                f"FROM ({sentiment})"
            )
    elif versions.topic is not None:
        params["topic_version"] = versions.topic
        base = (
            "SELECT id, source, lang, url, title, published_at, false AS neg, toFloat32(0) AS neg_score, "
            "label AS topic, concat(title, '\\n', text) AS hay "
            f"FROM {database}.scored FINAL "
            f"WHERE task = 'topic' AND model_version = {{topic_version:String}} AND {in_range}"
        )
    else:
        return None

    filters = []
    if scope.source:
        filters.append("has({f_source:Array(String)}, source)")
        params["f_source"] = list(scope.source)
    if scope.topic:
        filters.append("has({f_topic:Array(String)}, topic)")
        params["f_topic"] = list(scope.topic)
    if scope.lang:
        filters.append("has({f_lang:Array(String)}, lang)")
        params["f_lang"] = list(scope.lang)
    if scope.keyword:
        filters.append("arrayExists(p -> match(hay, p), {f_keyword:Array(String)})")
        params["f_keyword"] = [term_pattern(k) for k in scope.keyword]
    where = f" WHERE {' AND '.join(filters)}" if filters else ""
    return ItemsQuery(f"SELECT * FROM ({base}){where}", params)


def group_expr(by: GroupBy) -> str:
    """The GROUP BY key for a rule's `by`; for keywords, the 1-based index into scope.keyword."""
    if by == "topic":
        return "topic"
    if by == "source":
        return "source"
    if by == "keyword":
        return (
            "toString(arrayJoin(arrayFilter(i -> match(hay, {f_keyword:Array(String)}[i]), "
            "range(1, length({f_keyword:Array(String)}) + 1))))"
        )
    return "''"


def scope_label(by: GroupBy, key: str, scope: Scope) -> str:
    """The human scope of one group: 'topic=财经', 'keyword=裁员', 'all'."""
    if by == "all":
        return "all"
    if by == "keyword":
        return f"keyword={scope.keyword[int(key) - 1]}"
    return f"{by}={key}"
