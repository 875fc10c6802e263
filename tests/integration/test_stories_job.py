"""The stories job on a real chdb store, over the labelled event set: what it writes, and that no
re-delivery, replay, restart or way of cutting the stream into cycles changes a story."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable

import numpy as np
import pytest

from stream.core.errors import ConfigError
from stream.core.store import Store
from stream.core.times import utcnow
from stream.stories.cluster import STORY_THRESHOLDS, Assignment, StoryConfig, assign_stories
from stream.stories.embed import item_text
from stream.stories.evaluate import LabelledItem, score
from stream.stories.job import FULL_SWEEP, StoriesJob
from tests.integration.alerts_rows import insert, item_rows
from tests.integration.story_job_rows import assignments, events, negative, shared_embedder, write_scored

pytestmark = pytest.mark.integration

CONFIG = StoryConfig(threshold=STORY_THRESHOLDS["use"])


def job(store: Store, chunk: int = 256, clock: Callable[[], dt.datetime] = utcnow) -> StoriesJob:
    return StoriesJob(store, shared_embedder(), CONFIG, chunk=chunk, clock=clock)


def reference() -> dict[str, tuple[str, str]]:
    """One pass of a fresh assigner over the whole set, in memory: what the job must reproduce."""
    items = events()
    out = assign_stories([x.item for x in items], CONFIG, embedder=shared_embedder())
    return {a.item_id: (a.story_id, a.duplicate_of or "") for a in out}


def stories_only(found: dict[str, tuple[str, str, float]]) -> dict[str, tuple[str, str]]:
    return {i: (s, d) for i, (s, d, _) in found.items()}


def test_job_writes_every_item_its_story_embedding_and_duplicate(store: Store) -> None:
    items = events()
    write_scored(store, items)
    result = job(store).cycle()
    assert result.items == len(items) == 326
    found = assignments(store)
    assert stories_only(found) == reference()
    figures = score(items, [_as_assignment(i, found) for i in items])
    assert figures.dup_precision == 1.0 and figures.dup_recall >= 0.95, figures
    assert figures.ari > 0.8 and figures.purity > 0.9, figures
    # Chinese and English reports of one event share a story for most events.
    langs: dict[str, set[str]] = {}
    for x in items:
        langs.setdefault(found[x.item.id][0], set()).add(str(x.item.lang))
    assert sum(ls == {"zh", "en"} for ls in langs.values()) >= 30
    # The stored vector is the encoder's, unit length, 512 floats.
    db = store.database
    sample = items[17].item
    stored = np.asarray(store.scalar(f"SELECT embedding FROM {db}.item_stories FINAL WHERE id = '{sample.id}'"))
    expected = shared_embedder().embed([item_text(sample.title, sample.text)])[0]
    assert stored.shape == (512,) and np.array_equal(stored.astype(np.float32), expected)
    assert abs(float(np.linalg.norm(stored)) - 1) < 1e-5
    assert store.scalar(f"SELECT countIf(duplicate_of = '') FROM {db}.item_stories FINAL") == 326 - result.duplicates


def _as_assignment(x: LabelledItem, found: dict[str, tuple[str, str, float]]) -> Assignment:
    story, dup, sim = found[x.item.id]
    return Assignment(x.item.id, story, dup or None, sim)


def test_stories_rows_aggregate_their_items(store: Store) -> None:
    items = events()
    write_scored(store, items)
    job(store).cycle()
    db = store.database
    found = assignments(store)
    rows = store.rows(f"SELECT story_id, first_seen, last_seen, size, duplicates, sources, languages, titles, "
                      f"sentiment, top_entities FROM {db}.stories FINAL")
    by_story: dict[str, list[LabelledItem]] = {}
    for x in items:
        by_story.setdefault(found[x.item.id][0], []).append(x)
    assert {r[0] for r in rows} == set(by_story)
    for story_id, first, last, size, dups, sources, languages, titles, sentiment, entities in rows:
        members = by_story[story_id]
        assert size == len(members)
        assert dups == sum(found[m.item.id][1] != "" for m in members)
        assert first.replace(tzinfo=dt.UTC) == min(m.item.published_at for m in members)
        assert last.replace(tzinfo=dt.UTC) == max(m.item.published_at for m in members)
        assert sources == sorted({m.source for m in members})
        assert languages == sorted(titles) == sorted({str(m.item.lang) for m in members})
        for lang, title in titles.items():
            first_in_lang = min((m for m in members if m.item.lang == lang), key=lambda m: m.item.order)
            assert title == first_in_lang.item.title
        assert sentiment == dict(Counter("negative" if negative(m.item.id) else "positive" for m in members))
        assert entities == []


def test_redelivery_replay_and_appended_items_keep_every_story(store: Store) -> None:
    items = sorted(events(), key=lambda x: x.item.order)
    head, tail = items[:200], items[200:]
    write_scored(store, head)
    first = job(store)
    assert first.cycle().items == 200
    before = assignments(store)
    db = store.database
    assigned_at = dict(store.rows(f"SELECT id, assigned_at FROM {db}.item_stories FINAL"))
    stories_before = store.scalar(f"SELECT count() FROM {db}.stories")

    # Re-delivery: the same rows scored again, later.
    write_scored(store, head, scored_at=utcnow() + dt.timedelta(hours=1))
    assert first.cycle().items == 0
    # Replay: the job run again, from scratch.
    assert job(store).cycle().items == 0
    assert assignments(store) == before
    assert dict(store.rows(f"SELECT id, assigned_at FROM {db}.item_stories FINAL")) == assigned_at
    assert store.scalar(f"SELECT count() FROM {db}.stories") == stories_before  # nothing re-written

    # New items appended, taken by a fresh job that rebuilds its window from the store.
    write_scored(store, tail, scored_at=utcnow())
    again = job(store)
    result = again.cycle()
    assert result.items == len(tail) and result.restored > 0
    after = assignments(store)
    assert {i: after[i] for i in before} == before
    assert stories_only(after) == reference()  # as if the whole set had come at once
    # The rebuilt centroids are the same float32 sums; the rows sit in other slots of the matrix,
    # which moves the last bit of a BLAS dot product, no more.
    one_pass = _similarities_of_one_pass()
    assert max(abs(float(s) - float(one_pass[i])) for i, s in _similarities(after).items()) < 1e-6
    assert store.scalar(f"SELECT count() FROM {db}.item_stories") == len(items)  # one row per id, ever


def test_many_cycles_give_the_result_of_one(store: Store) -> None:
    items = sorted(events(), key=lambda x: x.item.order)
    running = job(store, chunk=7)
    for part in (items[:50], items[50:51], items[51:180], items[180:]):
        write_scored(store, part, scored_at=utcnow())
        assert running.cycle().items == len(part)
    many = assignments(store)
    assert stories_only(many) == reference()
    # Similarities too, to the bit: the centroids are the same sums in the same order.
    assert _similarities(many) == _similarities_of_one_pass()


def _similarities(found: dict[str, tuple[str, str, float]]) -> dict[str, np.float32]:
    return {i: np.float32(s) for i, (_, _, s) in found.items()}


def _similarities_of_one_pass() -> dict[str, np.float32]:
    ref = assign_stories([x.item for x in events()], CONFIG, embedder=shared_embedder())
    return {a.item_id: np.float32(a.similarity) for a in ref}


def test_late_rows_are_found_by_the_full_sweep_and_old_items_rebuild_the_window(store: Store) -> None:
    items = sorted(events(), key=lambda x: x.item.order)
    now = [utcnow()]
    running = job(store, clock=lambda: now[0])
    write_scored(store, items[100:], scored_at=now[0])
    assert running.cycle().items == len(items) - 100
    # Rows scored long ago that reach the store only now (a consumer held up by an outage), and
    # published before everything the job has seen.
    write_scored(store, items[:100], scored_at=now[0] - dt.timedelta(days=2))
    now[0] += dt.timedelta(minutes=1)
    assert running.cycle().items == 0  # older than the incremental cycle looks
    now[0] += FULL_SWEEP
    result = running.cycle()
    assert result.items == 100 and result.restored > 0
    found = assignments(store)
    assert len(found) == len(items)
    # Late, so assigned against what the store held then; each is in a story, never a stray id.
    assert all(story in found for story, _, _ in found.values())


def test_hostile_items(store: Store) -> None:
    at = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    odd = [("q'\"; DROP TABLE x --", "标题", ""), ("only-title", "Just a title", ""), ("emoji", "🔥🔥🔥", "‮‭\u0000x"),
           ("long", "长" * 2000, "word " * 5000), ("blank", " ", " ")]
    rows = []
    for k, (item_id, title, text) in enumerate(odd):
        rows += item_rows(item_id, at + dt.timedelta(minutes=k), title=title, text=text, lang="zh")
    insert(store, rows)
    assert job(store).cycle().items == len(odd)
    found = assignments(store)
    assert set(found) == {i for i, _, _ in odd}
    assert all(story in found for story, _, _ in found.values())
    assert store.scalar(f"SELECT count() FROM {store.database}.stories FINAL") == len({s for s, _, _ in found.values()})


def test_an_embedder_of_another_size_is_refused(store: Store) -> None:
    class Small:
        name, dim = "small", 384

        def embed(self, texts: object) -> np.ndarray:
            raise AssertionError("never called")

    with pytest.raises(ConfigError, match="384-dimensional"):
        StoriesJob(store, Small(), CONFIG)
