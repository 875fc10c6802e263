"""Deterministic incremental story assignment.

Items are taken in (published_at, id) order.  Each item:

1. is looked up in the near-duplicate index (`dedup`); a near-copy gets ``duplicate_of`` = the
   earliest copy's id and joins that item's story;
2. otherwise joins the story whose centroid (the normalised sum of its members' embeddings) is
   most similar, among the stories active within `window` of it, when the cosine similarity
   reaches `threshold`;
3. otherwise starts a story whose id is its own id.

A story id is therefore the id of its first item: it is fixed when the story starts and never
changes, so re-running the same items (a replay, a re-delivery) gives the same ids, and items
appended later (a superset that extends the stream) leave every earlier assignment as it was.
Within one call the batch is sorted, so delivery order inside a batch does not matter; across
calls, an item arriving after later-published ones is assigned against the state it finds
(it never moves an earlier item).

Cost per item: O(A·d) for the centroid scan, A <= `max_active` stories (those seen within
`window` of the newest item; the least recently seen are dropped first when the cap is hit) and
d the embedding size, plus O(bands) bucket probes for duplicates.  Memory is bounded the same
way: nothing grows with the number of stories ever made.
"""

from __future__ import annotations

import datetime as dt
import heapq
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from stream.core.errors import DataError
from stream.core.times import as_utc
from stream.stories.dedup import DEFAULT_WINDOW, DUP_THRESHOLD, Match, NearDuplicateIndex
from stream.stories.embed import Embedder, item_text

# Cosine thresholds per embedder, chosen on the dev split of tests/data/events.jsonl.
STORY_THRESHOLDS = {"use": 0.38, "e5": 0.86}


@dataclass(frozen=True)
class StoryItem:
    id: str
    published_at: dt.datetime
    title: str
    text: str
    lang: str | None = None

    @property
    def order(self) -> tuple[dt.datetime, str]:
        return (as_utc(self.published_at), self.id)


@dataclass(frozen=True)
class Assignment:
    item_id: str
    story_id: str
    duplicate_of: str | None
    similarity: float  # cosine to the closest eligible story centroid before joining (0.0 if none)


@dataclass(frozen=True)
class StoredItem:
    """An item already assigned, as the store keeps it: what `StoryAssigner.restore` rebuilds from."""

    item: StoryItem
    assignment: Assignment
    vector: np.ndarray
    original_at: dt.datetime | None = None  # published_at of `assignment.duplicate_of`


@dataclass(frozen=True)
class StoryConfig:
    threshold: float  # cosine to a story centroid needed to join it
    dup_threshold: float = DUP_THRESHOLD  # Jaccard of title+lead shingles for a near-duplicate
    window: dt.timedelta = DEFAULT_WINDOW
    max_active: int = 20_000


@dataclass
class _Story:
    story_id: str
    slot: int
    first_seen: float
    last_seen: float


class StoryAssigner:
    """Assigns story ids and duplicates; holds only the active window as state."""

    def __init__(self, embedder: Embedder | None, config: StoryConfig) -> None:
        if config.max_active < 1:
            raise DataError("max_active must be at least 1")
        self.embedder, self.config = embedder, config
        # Items outnumber stories by a few to one; the index cap only guards against a flood.
        self.dedup = NearDuplicateIndex(config.dup_threshold, config.window, max_items=4 * config.max_active)
        self._window = config.window.total_seconds()
        self._stories: dict[str, _Story] = {}
        self._by_slot: dict[int, _Story] = {}
        self._free: list[int] = []  # heap of freed slots below the high-water mark
        self._used = 0
        self._sums = np.zeros((0, 0), dtype=np.float32)
        self._first = np.zeros(0)
        self._last = np.zeros(0)
        self._story_expiry: list[tuple[float, str]] = []  # heap of (last_seen, story_id), lazily pruned
        self._done: dict[str, Assignment] = {}
        self._done_expiry: list[tuple[float, str]] = []
        self._newest = -np.inf

    @property
    def active_stories(self) -> int:
        return len(self._stories)

    def assign(self, items: Sequence[StoryItem], vectors: np.ndarray | None = None) -> list[Assignment]:
        """Assignments for `items`, in their order.  `vectors` (rows aligned with `items`) skips
        the embedder; an id assigned before (within the window) gets its earlier assignment."""
        if vectors is not None and len(vectors) != len(items):
            raise DataError(f"{len(items)} items but {len(vectors)} vectors")
        order = sorted(range(len(items)), key=lambda i: items[i].order)
        out = {item.id: self._done[item.id] for item in items if item.id in self._done}
        todo: list[int] = []
        queued: set[str] = set()
        for i in order:
            if items[i].id not in out and items[i].id not in queued:  # a repeat inside the batch counts once
                queued.add(items[i].id)
                todo.append(i)
        if vectors is None:
            if self.embedder is None:
                raise DataError("no embedder configured and no vectors given")
            matrix = self.embedder.embed([item_text(items[i].title, items[i].text) for i in todo])
        else:
            matrix = np.asarray(vectors, dtype=np.float32)[todo]
        for row, i in enumerate(todo):
            out[items[i].id] = self._assign_one(items[i], matrix[row])
        return [out[item.id] for item in items]

    def restore(self, stored: Sequence[StoredItem], since: dt.datetime) -> None:
        """Rebuild the window from assigned items: every member of each story to restore (its
        centroid is the sum of all of them, as when they were assigned), and, for the items
        published from `since` on, their near-duplicate fingerprints and assignments.  Members are
        added in (published_at, id) order, the order they were assigned in, so the float32 sums
        are bit for bit those of one pass over the same items in order.  Nothing is expired here: a late item
        older than the newest restored one still sees every story of its own window."""
        since_t = as_utc(since).timestamp()
        for s in sorted(stored, key=lambda s: s.item.order):
            published = as_utc(s.item.published_at)
            t = published.timestamp()
            self._newest = max(self._newest, t)
            self._add_to_story(s.assignment.story_id, np.asarray(s.vector, dtype=np.float32), t, opens=True)
            if t < since_t:
                continue
            original = None
            if s.assignment.duplicate_of:
                when = as_utc(s.original_at) if s.original_at else published
                original = Match(when, s.assignment.duplicate_of, via=s.assignment.duplicate_of)
            self.dedup.add(s.item.id, self.dedup.fingerprint(s.item.title, s.item.text, s.item.lang), published,
                           original)
            self._done[s.item.id] = s.assignment
            heapq.heappush(self._done_expiry, (t, s.item.id))

    @property
    def newest(self) -> dt.datetime | None:
        """The latest published_at assigned or restored (None before any)."""
        return dt.datetime.fromtimestamp(self._newest, dt.UTC) if np.isfinite(self._newest) else None

    def _assign_one(self, item: StoryItem, vector: np.ndarray) -> Assignment:
        published = as_utc(item.published_at)
        t = published.timestamp()
        if t > self._newest:
            self._newest = t
            self._expire()
        fingerprint = self.dedup.fingerprint(item.title, item.text, item.lang)
        original = self.dedup.find(fingerprint, published)
        duplicate_of = original.original if original else None
        # The copy that matched is in the window even when the original has left the memo.
        known = (self._done.get(original.original) or self._done.get(original.via)) if original else None
        similarity, story = self._closest(vector, t)
        if known:
            story_id = known.story_id
        elif story is not None and similarity >= self.config.threshold:
            story_id = story.story_id
        else:
            story_id = item.id
        self._add_to_story(story_id, vector, t, opens=story_id == item.id)
        self.dedup.add(item.id, fingerprint, published, original)
        done = self._done[item.id] = Assignment(item.id, story_id, duplicate_of, similarity)
        heapq.heappush(self._done_expiry, (t, item.id))
        return done

    def _closest(self, vector: np.ndarray, t: float) -> tuple[float, _Story | None]:
        if not self._stories:
            return 0.0, None
        n = self._used
        sums = self._sums[:n]
        norms = np.linalg.norm(sums, axis=1)
        eligible = (norms > 0) & (self._last[:n] >= t - self._window) & (self._first[:n] <= t + self._window)
        if not eligible.any():
            return 0.0, None
        scores = np.where(eligible, sums @ vector / np.maximum(norms, 1e-12), -np.inf)
        slot = int(np.argmax(scores))
        return float(scores[slot]), self._by_slot[slot]

    def _add_to_story(self, story_id: str, vector: np.ndarray, t: float, *, opens: bool) -> None:
        story = self._stories.get(story_id)
        if story is None:
            if not opens:  # a copy of an item whose story was already dropped from the window
                return
            story = self._open(story_id, vector.shape[0], t)
        self._sums[story.slot] += vector
        story.first_seen = min(story.first_seen, t)
        story.last_seen = max(story.last_seen, t)
        self._first[story.slot], self._last[story.slot] = story.first_seen, story.last_seen
        heapq.heappush(self._story_expiry, (story.last_seen, story_id))

    def _open(self, story_id: str, dim: int, t: float) -> _Story:
        if len(self._stories) >= self.config.max_active:
            self._close_oldest(np.inf)
        if self._free:
            slot = heapq.heappop(self._free)
        else:
            slot = self._used
            self._used += 1
            if slot >= len(self._sums):
                self._grow(dim)
        story = _Story(story_id, slot, t, t)
        self._stories[story_id] = self._by_slot[slot] = story
        return story

    def _grow(self, dim: int) -> None:
        size = min(self.config.max_active, max(64, 2 * len(self._sums)))
        sums = np.zeros((size, dim), dtype=np.float32)
        if len(self._sums):
            sums[: len(self._sums)] = self._sums
        self._sums = sums
        self._first = np.concatenate([self._first, np.zeros(size - len(self._first))])
        self._last = np.concatenate([self._last, np.zeros(size - len(self._last))])

    def _close(self, story: _Story) -> None:
        del self._stories[story.story_id], self._by_slot[story.slot]
        self._sums[story.slot] = 0.0
        heapq.heappush(self._free, story.slot)

    def _close_oldest(self, before: float) -> bool:
        """Close the least recently seen story if it was last seen before `before`."""
        while self._story_expiry and self._story_expiry[0][0] < before:
            last_seen, story_id = heapq.heappop(self._story_expiry)
            story = self._stories.get(story_id)
            if story is not None and story.last_seen == last_seen:  # else a stale heap entry
                self._close(story)
                return True
        return False

    def _expire(self) -> None:
        horizon = self._newest - self._window
        while self._close_oldest(horizon):
            pass
        while self._done_expiry and self._done_expiry[0][0] < horizon:
            _, item_id = heapq.heappop(self._done_expiry)
            self._done.pop(item_id, None)


def assign_stories(
    items: Sequence[StoryItem], config: StoryConfig, *, embedder: Embedder | None = None,
    vectors: np.ndarray | None = None,
) -> list[Assignment]:
    """One pass of a fresh assigner over `items` (the batch and replay form)."""
    return StoryAssigner(embedder, config).assign(items, vectors)
