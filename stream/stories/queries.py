"""The store side of stories: what the job reads and writes, and what `yuqing stories` and
`yuqing similar` print.  Every value travels as a `{name:Type}` parameter.

Which items are scored comes from ``scored``; an item's fields (title, lead, language, source,
published_at) from its one row in ``items FINAL`` (the latest delivery's), so re-deliveries and
every model version agree on them.  Per-item verdicts read from ``scored`` take the newest row
(``argMax`` by ``(scored_at, model_version)``).
``item_stories`` holds one row per id (the job never writes an id twice) and is read with
``FINAL`` all the same, so a re-write could never be counted twice.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stream.core.schema import ITEM_STORY_COLUMNS, STORY_COLUMNS
from stream.core.store import Store
from stream.core.times import as_utc
from stream.stories.cluster import Assignment, StoredItem, StoryItem

TIME = "DateTime64(3,'UTC')"
_NEWEST = "(scored_at, model_version)"


@dataclass(frozen=True)
class ScoredItem:
    """An item to assign, as `items` has it."""

    item: StoryItem
    source: str


def pending(store: Store, since: dt.datetime | None) -> list[tuple[dt.datetime, str]]:
    """(published_at, id) of the scored items not in item_stories, in that order.  With `since`,
    only items with a row scored from then on are looked at, so a cycle reads the recent rows of
    ``scored`` and looks up only their ids in ``item_stories`` (by its primary key)."""
    db = store.database
    recent = f"scored_at >= {{since:{TIME}}}" if since is not None else "1"
    rows = store.rows(
        f"""SELECT id, argMax(published_at, {_NEWEST}) AS published FROM {db}.scored
            WHERE {recent} AND id NOT IN (
                SELECT id FROM {db}.item_stories WHERE id IN (SELECT id FROM {db}.scored WHERE {recent}))
            GROUP BY id ORDER BY published, id""",
        {"since": since} if since is not None else None,
    )
    return [(as_utc(published), str(item_id)) for item_id, published in rows]


def scored_items(store: Store, ids: Sequence[str]) -> list[ScoredItem]:
    """The ``items`` row of each id (ids not in ``items`` are left out)."""
    if not ids:
        return []
    db = store.database
    rows = store.rows(
        f"""SELECT id, title, text, lang, source, published_at
            FROM {db}.items FINAL WHERE id IN {{ids:Array(String)}}""",
        {"ids": list(ids)},
    )
    out = []
    for item_id, title, text, lang, source, published in rows:
        out.append(ScoredItem(StoryItem(str(item_id), as_utc(published), str(title), str(text), str(lang) or None),
                              str(source)))
    return out


def stored_window(store: Store, horizon: dt.datetime, max_stories: int) -> list[StoredItem]:
    """Every member of the stories seen from `horizon` on (the `max_stories` seen last), with its
    embedding; the members from `horizon` on also carry their lead (for their fingerprints) and the
    time of the item they duplicate."""
    db = store.database
    rows = store.rows(
        f"""WITH active AS (
                SELECT story_id FROM {db}.item_stories FINAL WHERE published_at >= {{horizon:{TIME}}}
                GROUP BY story_id ORDER BY max(published_at) DESC, story_id LIMIT {{max_stories:UInt32}})
            SELECT id, story_id, duplicate_of, similarity, published_at, lang, title, embedding
            FROM {db}.item_stories FINAL WHERE story_id IN (SELECT story_id FROM active)""",
        {"horizon": horizon, "max_stories": max_stories},
    )
    recent = [str(r[0]) for r in rows if as_utc(r[4]) >= horizon]
    leads = {s.item.id: s.item.text for s in scored_items(store, recent)}
    published = {str(r[0]): as_utc(r[4]) for r in rows}
    missing = sorted({str(r[2]) for r in rows if r[2] and str(r[2]) not in published})
    if missing:
        published |= {str(i): as_utc(p) for i, p in store.rows(
            f"SELECT id, published_at FROM {db}.item_stories FINAL WHERE id IN {{ids:Array(String)}}",
            {"ids": missing})}
    out = []
    for item_id, story_id, duplicate_of, similarity, when, lang, title, embedding in rows:
        item = StoryItem(str(item_id), as_utc(when), str(title), leads.get(str(item_id), ""), str(lang) or None)
        assignment = Assignment(item.id, str(story_id), str(duplicate_of) or None, float(similarity))
        out.append(StoredItem(item, assignment, np.asarray(embedding, dtype=np.float32),
                              published.get(str(duplicate_of)) if duplicate_of else None))
    return out


def item_story_row(scored: ScoredItem, assignment: Assignment, lang: str, embedder: str, vector: np.ndarray,
                   assigned_at: dt.datetime) -> list[Any]:
    """One row of item_stories, in ITEM_STORY_COLUMNS order."""
    item = scored.item
    return [item.id, assignment.story_id, assignment.duplicate_of or "", assignment.similarity, item.published_at,
            scored.source, lang, item.title, embedder, np.asarray(vector, dtype=np.float32).tolist(), assigned_at]


def write_item_stories(store: Store, rows: Sequence[Sequence[Any]]) -> None:
    store.insert("item_stories", rows, ITEM_STORY_COLUMNS)


def rewrite_stories(store: Store, story_ids: Sequence[str], updated_at: dt.datetime) -> int:
    """Re-write the `stories` rows of `story_ids` from item_stories and each member's newest
    sentiment row; returns how many were written."""
    if not story_ids:
        return 0
    db = store.database
    params = {"ids": sorted(set(story_ids))}
    per_lang = store.rows(
        f"""SELECT story_id, lang, min(published_at), max(published_at), count(), countIf(duplicate_of != ''),
                   groupUniqArray(source), argMin(title, (published_at, id))
            FROM {db}.item_stories FINAL WHERE story_id IN {{ids:Array(String)}}
            GROUP BY story_id, lang""",
        params,
    )
    sentiment = store.rows(
        f"""SELECT m.story_id, s.label, count() FROM
              (SELECT id, story_id FROM {db}.item_stories FINAL WHERE story_id IN {{ids:Array(String)}}) AS m
            INNER JOIN
              (SELECT id, argMax(label, {_NEWEST}) AS label FROM {db}.scored FINAL
               WHERE task = 'sentiment' AND id IN (
                   SELECT id FROM {db}.item_stories WHERE story_id IN {{ids:Array(String)}})
               GROUP BY id) AS s USING id
            GROUP BY m.story_id, s.label""",
        params,
    )
    stories: dict[str, _Story] = {}
    for story_id, lang, first, last, size, dups, sources, title in per_lang:
        story = stories.setdefault(str(story_id), _Story(as_utc(first), as_utc(last)))
        story.first, story.last = min(story.first, as_utc(first)), max(story.last, as_utc(last))
        story.size += int(size)
        story.duplicates += int(dups)
        story.sources.update(map(str, sources))
        story.titles[str(lang)] = str(title)
    for story_id, label, count in sentiment:
        if str(story_id) in stories:
            stories[str(story_id)].sentiment[str(label)] = int(count)
    rows = [[sid, s.first, s.last, s.size, s.duplicates, sorted(s.sources), sorted(s.titles), s.titles,
             s.sentiment, [], updated_at] for sid, s in sorted(stories.items())]
    store.insert("stories", rows, STORY_COLUMNS)
    return len(rows)


@dataclass
class _Story:
    first: dt.datetime
    last: dt.datetime
    size: int = 0
    duplicates: int = 0
    sources: set[str] = field(default_factory=set)
    titles: dict[str, str] = field(default_factory=dict)
    sentiment: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class TopStory:
    story_id: str
    items: int  # items published in [start, end)
    before: int  # items published in the span of the same length before start
    size: int
    duplicates: int
    first_seen: dt.datetime
    last_seen: dt.datetime
    languages: list[str]
    sources: list[str]
    sentiment: dict[str, int]
    titles: dict[str, str]

    @property
    def growth(self) -> int:
        return self.items - self.before


def top_stories(store: Store, start: dt.datetime, end: dt.datetime, *, lang: str | None = None,
                min_size: int = 1, limit: int = 20) -> list[TopStory]:
    """The stories with the most items published in [start, end) (of language `lang`, if given),
    with their items in the span of the same length before `start`."""
    db = store.database
    only_lang = "AND lang = {lang:String}" if lang else ""
    rows = store.rows(
        f"""WITH recent AS (
                SELECT story_id, count() AS n FROM {db}.item_stories FINAL
                WHERE published_at >= {{start:{TIME}}} AND published_at < {{end:{TIME}}} {only_lang}
                GROUP BY story_id),
            earlier AS (
                SELECT story_id, count() AS n FROM {db}.item_stories FINAL
                WHERE published_at >= {{previous:{TIME}}} AND published_at < {{start:{TIME}}} {only_lang}
                  AND story_id IN (SELECT story_id FROM recent)
                GROUP BY story_id)
            SELECT r.story_id, r.n, e.n, s.size, s.duplicates, s.first_seen, s.last_seen, s.languages, s.sources,
                   s.sentiment, s.titles
            FROM recent AS r
            INNER JOIN (SELECT * FROM {db}.stories FINAL WHERE story_id IN (SELECT story_id FROM recent)) AS s
                USING story_id
            LEFT JOIN earlier AS e USING story_id
            WHERE s.size >= {{min_size:UInt32}}
            ORDER BY r.n DESC, s.size DESC, r.story_id
            LIMIT {{limit:UInt32}}""",
        {"start": start, "end": end, "previous": start - (end - start), "lang": lang or "",
         "min_size": min_size, "limit": limit},
    )
    return [TopStory(str(sid), int(n), int(before or 0), int(size), int(dups), as_utc(first), as_utc(last),
                     list(langs), list(sources), dict(sentiment), dict(titles))
            for sid, n, before, size, dups, first, last, langs, sources, sentiment, titles in rows]


@dataclass(frozen=True)
class SimilarItem:
    id: str
    story_id: str
    similarity: float
    published_at: dt.datetime
    source: str
    lang: str
    title: str
    story_size: int


def nearest(store: Store, vector: np.ndarray, embedder: str, limit: int) -> list[SimilarItem]:
    """The `limit` items closest to `vector` by cosine (embeddings of `embedder`), and their stories.
    ``ORDER BY cosineDistance(...) LIMIT n`` is the form the vector index answers."""
    db = store.database
    rows = store.rows(
        f"""WITH n AS (
                SELECT id, story_id, published_at, source, lang, title,
                       cosineDistance(embedding, {{vector:Array(Float32)}}) AS distance
                FROM {db}.item_stories FINAL WHERE embedder = {{embedder:String}}
                ORDER BY distance LIMIT {{limit:UInt32}})
            SELECT n.id, n.story_id, 1 - n.distance, n.published_at, n.source, n.lang, n.title, s.size
            FROM n LEFT JOIN (SELECT story_id, size FROM {db}.stories FINAL
                              WHERE story_id IN (SELECT story_id FROM n)) AS s USING story_id
            ORDER BY n.distance, n.id""",
        {"vector": np.asarray(vector, dtype=np.float32).tolist(), "embedder": embedder, "limit": limit},
    )
    return [SimilarItem(str(i), str(sid), float(sim), as_utc(when), str(src), str(lang), str(title), int(size or 0))
            for i, sid, sim, when, src, lang, title, size in rows]
