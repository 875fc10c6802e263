"""`StoryAssigner.restore`, what the stories job rebuilds its window with: an assigner restored from
the items assigned so far continues exactly as the one that assigned them (no store here: the
job's store side is tested in tests/integration/test_stories_job.py)."""

from __future__ import annotations

import datetime as dt
import hashlib

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream.stories.cluster import StoredItem, StoryAssigner, StoryConfig, StoryItem
from stream.stories.job import CycleResult

T0 = dt.datetime(2026, 3, 9, tzinfo=dt.UTC)
DIM = 16
CONFIG = StoryConfig(threshold=0.8, window=dt.timedelta(hours=72))
LEADS = ("the river burst its banks overnight and thousands left their homes",
         "the central bank cut its reserve ratio by half a point on friday",
         "a new model of the phone went on sale with a foldable screen")


def vector(topic: int, item_id: str) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha1(item_id.encode()).digest()[:4], "little")
    v = np.zeros(DIM, dtype=np.float32)
    v[topic] = 1.0
    v += 0.3 * np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


# (topic, hours after T0, copy: reuse the topic's lead word for word -> a near-duplicate)
ITEM = st.tuples(st.integers(0, 2), st.floats(0, 400, allow_nan=False), st.booleans())


def build(specs: list[tuple[int, float, bool]]) -> tuple[list[StoryItem], np.ndarray]:
    items, vectors = [], []
    for k, (topic, hours, copy) in enumerate(specs):
        item_id = f"i{k:03d}"
        text = LEADS[topic] if copy else f"{LEADS[topic]} {item_id} reported further details {k}"
        items.append(StoryItem(item_id, T0 + dt.timedelta(hours=hours), f"topic {topic} update", text, "en"))
        vectors.append(vector(topic, item_id))
    order = sorted(range(len(items)), key=lambda i: items[i].order)
    return [items[i] for i in order], np.array([vectors[i] for i in order], dtype=np.float32)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ITEM, min_size=2, max_size=40), st.floats(0, 1))
def test_a_restored_assigner_continues_as_the_original(specs: list[tuple[int, float, bool]], cut: float) -> None:
    items, vectors = build(specs)
    k = max(1, int(cut * len(items)))
    whole = StoryAssigner(None, CONFIG).assign(items, vectors)

    first = StoryAssigner(None, CONFIG).assign(items[:k], vectors[:k])
    at = {i.id: i.published_at for i in items}
    stored = [StoredItem(i, a, v, at.get(a.duplicate_of or "")) for i, a, v in zip(items[:k], first, vectors[:k],
                                                                                    strict=True)]
    # What the job restores: the stories seen within the window before the next item, and the
    # items of that window.
    horizon = items[k].published_at - CONFIG.window if k < len(items) else items[-1].published_at
    active = {s.assignment.story_id for s in stored if s.item.published_at >= horizon}
    restored = StoryAssigner(None, CONFIG)
    restored.restore([s for s in stored if s.assignment.story_id in active], horizon)
    rest = restored.assign(items[k:], vectors[k:])

    assert [(a.story_id, a.duplicate_of) for a in first + rest] == [(a.story_id, a.duplicate_of) for a in whole]
    np.testing.assert_allclose([a.similarity for a in rest], [a.similarity for a in whole[k:]], atol=1e-6)


def test_restore_keeps_old_items_out_of_the_duplicate_index_but_in_their_centroid() -> None:
    items, vectors = build([(0, 0, False), (0, 60, False), (0, 100, True)])
    assigned = StoryAssigner(None, CONFIG).assign(items, vectors)
    stored = [StoredItem(i, a, v) for i, a, v in zip(items, assigned, vectors, strict=True)]
    restored = StoryAssigner(None, CONFIG)
    restored.restore(stored, T0 + dt.timedelta(hours=50))
    assert restored.active_stories == 1 and len(restored.dedup) == 2
    assert restored.newest == items[-1].published_at
    # An id restored comes back with its stored assignment, not a new one.
    assert restored.assign(items[2:], vectors[2:]) == assigned[2:]


def test_an_empty_restore_is_a_fresh_assigner() -> None:
    restored = StoryAssigner(None, CONFIG)
    restored.restore([], T0)
    assert restored.newest is None and restored.active_stories == 0


def test_cycle_line_reads_the_figures() -> None:
    line = CycleResult(items=12, duplicates=2, new_stories=5, stories_written=7, seconds=0.5).line()
    assert line == "12 item(s) assigned (5 new stories, 2 duplicates), 7 story row(s) written in 0.50s (24.0 items/s)"
    assert CycleResult().items_per_s == 0.0
