"""Story rows for items already in `scored`, as the stories job writes them (`item_stories`, `stories`)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence

from dashboards.synthetic import StoryMember, write_story_rows
from stream.core.store import Store


def assign(
    store: Store,
    story_id: str,
    ids: Sequence[str],
    *,
    duplicate_of: Mapping[str, str] | None = None,
    assigned_at: dt.datetime | None = None,
) -> None:
    """Put the items `ids` in story `story_id`.  The `stories` row is re-written over all the
    story's members, earlier ones included, as the job does; `assigned_at` defaults to a minute
    after each item's publication."""
    db = store.database
    earlier = {
        str(i): (str(dup), float(sim), a)
        for i, dup, sim, a in store.rows(
            f"SELECT id, duplicate_of, similarity, assigned_at FROM {db}.item_stories FINAL "
            "WHERE story_id = {story:String}",
            {"story": story_id},
        )
    }
    new = {i: ((duplicate_of or {}).get(i, ""), 1.0 if i == story_id else 0.7, assigned_at) for i in ids}
    members = {**earlier, **new}
    write_story_rows(store, [
        StoryMember(str(i), story_id, p, str(s), str(lang), str(t), str(label), *members[str(i)])
        for i, p, s, lang, t, label in store.rows(
            f"SELECT s.id, s.published_at, s.source, s.lang, i.title, s.label FROM {db}.scored AS s FINAL "
            f"LEFT JOIN (SELECT id, title FROM {db}.items FINAL) AS i ON s.id = i.id "
            "WHERE s.task = 'sentiment' AND has({ids:Array(String)}, s.id)",
            {"ids": list(members)},
        )
    ])
