"""The SQL the rules and the brief read, with every value a server-side parameter.

The SQL text is assembled only from fixed fragments chosen by validated settings (which filters
are present, how to group); every value that comes from a rule or the data — versions, sources,
risk topics, terms, entities, times — travels as a clickhouse-connect `{name:Type}` parameter.

An *item* is one sentiment row of the chosen model version joined on ``id`` with the risk and
category rows of the chosen versions and with its text in ``items`` (title, url, text are kept
there once); ``scored`` and ``items`` are read with ``FINAL`` so a re-delivered row never counts
twice, and the rules count ``uniqExact(id)``, so no layout of ``scored`` that keeps two rows of one
(id, model_version) apart (and no join that repeats one) can count an item twice either.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

from stream.alerts.matching import term_pattern
from stream.alerts.rules import GroupBy, Scope
from stream.core.store import Store
from stream.core.times import as_utc

TIME = "DateTime64(3,'UTC')"

# The sequence heads the rules read, in the order an item is built from them (the first one a
# version exists for drives the item list).
LABEL_TASKS: tuple[str, ...] = ("sentiment", "risk", "category")


def _prob(label: str) -> str:
    """Probability of `label`, whether or not the model wrote a probs map."""
    return f"if(mapContains(probs, '{label}'), probs['{label}'], if(label = '{label}', score, 0))"


@dataclass(frozen=True)
class Versions:
    """The model version per head that a rule reads (None: that head has no rows).  A multi-head
    package gives every head the same version; `entities` is read from the entities table."""

    sentiment: str | None
    risk: str | None = None
    category: str | None = None
    entities: str | None = None

    def pinned(self, **pins: str | None) -> Versions:
        """These versions with the given ones (head -> version, None: keep) put in their place."""
        return replace(self, **{head: version for head, version in pins.items() if version})

    def of(self, task: str) -> str | None:
        return getattr(self, task) if task in LABEL_TASKS or task == "entities" else None

    def describe(self) -> str:
        return " ".join(f"{f.name}={getattr(self, f.name) or '-'}" for f in fields(self))


def latest_versions(store: Store, start: dt.datetime, end: dt.datetime) -> Versions:
    """Per head, the model version that scored most recently among items published in [start, end)."""
    in_range = f"published_at >= {{start:{TIME}}} AND published_at < {{end:{TIME}}}"
    rows = store.rows(
        f"SELECT task, argMax(model_version, scored_at) FROM {store.database}.scored FINAL "
        f"WHERE task IN {{tasks:Array(String)}} AND {in_range} GROUP BY task "
        f"UNION ALL SELECT 'entities', argMax(model_version, scored_at) FROM {store.database}.entities FINAL "
        f"WHERE {in_range} HAVING count() > 0",
        {"start": start, "end": end, "tasks": list(LABEL_TASKS)},
    )
    found = {str(task): str(version) for task, version in rows}
    return Versions(*(found.get(task) for task in (*LABEL_TASKS, "entities")))


def version_coverage(
    store: Store, versions: Versions, tasks: tuple[str, ...], start: dt.datetime, end: dt.datetime
) -> dt.datetime | None:
    """When the chosen versions of `tasks` began covering [start, end): the latest of their
    earliest items.  A version rolled out an hour ago has no baseline before that hour."""
    chosen = {task: versions.of(task) for task in tasks if versions.of(task) is not None}
    if not chosen:
        return None
    rows = store.rows(
        f"SELECT task, min(published_at) FROM {store.database}.scored FINAL "
        "WHERE has({pairs:Array(Tuple(String, String))}, (task, model_version)) "
        f"AND published_at >= {{start:{TIME}}} AND published_at < {{end:{TIME}}} GROUP BY task",
        {"pairs": [(task, str(version)) for task, version in chosen.items()], "start": start, "end": end},
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
        f"SELECT {key} FROM {store.database}.scored FINAL WHERE task IN {{tasks:Array(String)}} "
        f"AND scored_at >= {{since:{TIME}}} AND {in_range}"
    )
    if stories:
        sql += (
            f" UNION ALL SELECT {key} FROM {store.database}.item_stories FINAL "
            f"WHERE assigned_at >= {{since:{TIME}}} AND {in_range}"
        )
    rows = store.rows(
        f"SELECT DISTINCT k FROM ({sql}) ORDER BY k",
        {"window_ms": window_ms, "since": scored_since, "start": start, "end": end, "tasks": list(LABEL_TASKS)},
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
    """Columns: id, source, lang, url, title, published_at, neg, neutral (Bool), neg_score,
    pos_score (probabilities), risk, category ('' without that head), hay (title and text).
    None when no head has a model version (nothing scored yet)."""
    params: dict[str, Any] = {"start": start, "end": end}
    in_range = f"published_at >= {{start:{TIME}}} AND published_at < {{end:{TIME}}}"

    def head(task: str, columns: str) -> str:
        params[f"{task}_version"] = versions.of(task)
        return (
            f"SELECT id, {columns} FROM {database}.scored FINAL "
            f"WHERE task = '{task}' AND model_version = {{{task}_version:String}} AND {in_range}"
        )

    present = [task for task in LABEL_TASKS if versions.of(task) is not None]
    if not present:
        return None
    driver = present[0]
    sentiment = (
        f"label = 'negative' AS neg, label = 'neutral' AS neutral, {_prob('negative')} AS neg_score, "
        f"{_prob('positive')} AS pos_score"
        if driver == "sentiment"
        else "false AS neg, false AS neutral, toFloat32(0) AS neg_score, toFloat32(0) AS pos_score"
    )

    def label_of(task: str) -> str:
        if task == driver:
            return "d.label"
        return f"h_{task}.label" if task in present else "''"

    joins = [
        f"LEFT JOIN ({head(task, 'label')} LIMIT 1 BY id) AS h_{task} ON d.id = h_{task}.id"
        for task in present[1:]
    ]
    base = (
        "SELECT d.id AS id, d.source AS source, d.lang AS lang, x.url AS url, x.title AS title, "
        "d.published_at AS published_at, d.neg AS neg, d.neutral AS neutral, d.neg_score AS neg_score, "
        "d.pos_score AS pos_score, "
        + ", ".join(f"{label_of(task)} AS {task}" for task in ("risk", "category"))
        + ", x.hay AS hay "
        f"FROM ({head(driver, f'source, lang, published_at, label, {sentiment}')}) AS d "
        + " ".join(joins)
        + f" LEFT JOIN (SELECT id, url, title, concat(title, '\\n', text) AS hay FROM {database}.items FINAL "
        f"WHERE {in_range}) AS x ON d.id = x.id"
    )

    filters = []
    for column in ("source", "risk", "category", "lang"):
        picked = getattr(scope, column)
        if picked:
            filters.append(f"has({{f_{column}:Array(String)}}, {column})")
            params[f"f_{column}"] = list(picked)
    if scope.keyword:
        filters.append("arrayExists(p -> match(hay, p), {f_keyword:Array(String)})")
        params["f_keyword"] = [term_pattern(k) for k in scope.keyword]
    where = f" WHERE {' AND '.join(filters)}" if filters else ""
    return ItemsQuery(f"SELECT * FROM ({base}){where}", params)


def group_expr(by: GroupBy) -> str:
    """The GROUP BY key for a rule's `by`; for keywords, the 1-based index into scope.keyword."""
    if by in ("risk", "category", "source"):
        return by
    if by == "keyword":
        return (
            "toString(arrayJoin(arrayFilter(i -> match(hay, {f_keyword:Array(String)}[i]), "
            "range(1, length({f_keyword:Array(String)}) + 1))))"
        )
    return "''"


def scope_label(by: GroupBy, key: str, scope: Scope) -> str:
    """The human scope of one group: 'risk=conflict', 'keyword=裁员', 'all'."""
    if by == "all":
        return "all"
    if by == "keyword":
        return f"keyword={scope.keyword[int(key) - 1]}"
    return f"{by}={key}"
