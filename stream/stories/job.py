"""The stories job (`yuqing stories run`): assigns every scored item a story, over the store.

A cycle takes the scored items not yet in ``item_stories``, in (published_at, id) order, embeds
them, assigns them (`cluster.StoryAssigner`), writes their ``item_stories`` rows and re-writes the
``stories`` rows of the stories they touched.  The assigner lives on between cycles; it is
rebuilt from ``item_stories`` (`StoryAssigner.restore`) when the job starts and when an item
arrives that is older than the assigner's window, so what the job knows is what the store holds.

Replay-safe by construction: an id already in ``item_stories`` is never read again, so a
re-delivered or replayed item (same id) keeps its story, and a story id (the id of its first
item) never changes.  One job per store: it sees the items of every consumer, which a consumer
(seeing its partitions only) could not.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tqdm import tqdm

from stream.core.errors import ConfigError, StoreError
from stream.core.schema import EMBEDDING_DIM
from stream.core.store import Store
from stream.core.times import utcnow
from stream.stories.cluster import StoryAssigner, StoryConfig
from stream.stories.embed import Embedder, item_text
from stream.stories.queries import (
    item_story_row,
    pending,
    rewrite_stories,
    scored_items,
    stored_window,
    write_item_stories,
)

log = logging.getLogger(__name__)

CHUNK = 256  # items per embed + write: what a stop or a store failure can lose
# Rows reach the store a little after they are scored (batched writes, clock skew between hosts),
# so each cycle reads rows scored from a little before the previous one began...
LATE_OVERLAP = dt.timedelta(minutes=10)
# ...and, this often, all of `scored`, for rows held up longer (a store outage, a stopped consumer).
FULL_SWEEP = dt.timedelta(hours=1)
PROGRESS_FROM = 1000  # a backlog this long gets a progress bar


@dataclass
class CycleResult:
    items: int = 0
    duplicates: int = 0
    new_stories: int = 0
    stories_written: int = 0
    seconds: float = 0.0
    embed_seconds: float = 0.0
    restored: int = 0  # items read back from item_stories to rebuild the window
    stopped: bool = False

    @property
    def items_per_s(self) -> float:
        return self.items / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        return (f"{self.items} item(s) assigned ({self.new_stories} new stories, {self.duplicates} duplicates), "
                f"{self.stories_written} story row(s) written in {self.seconds:.2f}s ({self.items_per_s:.1f} items/s)")


class StoriesJob:
    """Cycles of assignment over one store; the store and the embedder belong to the caller."""

    def __init__(self, store: Store, embedder: Embedder, config: StoryConfig, *, chunk: int = CHUNK,
                 progress: bool = False, clock: Callable[[], dt.datetime] = utcnow) -> None:
        if embedder.dim != EMBEDDING_DIM:
            raise ConfigError(f"the {embedder.name} embedder makes {embedder.dim}-dimensional vectors; "
                              f"item_stories holds {EMBEDDING_DIM}", hint="use --embedder use")
        if chunk < 1:
            raise ConfigError("the chunk size must be at least 1")
        self.store, self.embedder, self.config = store, embedder, config
        self.chunk, self.progress, self.clock = chunk, progress, clock
        self._assigner: StoryAssigner | None = None
        self._since: dt.datetime | None = None  # rows scored before this were read by an earlier cycle
        self._last_full: dt.datetime | None = None
        self._dirty: set[str] = set()  # stories whose `stories` row is not yet re-written

    def cycle(self, stop: threading.Event | None = None) -> CycleResult:
        """Assign what is pending; with `stop` set, finish the current chunk and return."""
        started, clock_started = time.perf_counter(), self.clock()
        full = self._last_full is None or clock_started - self._last_full >= FULL_SWEEP
        todo = pending(self.store, None if full else self._since)
        result = CycleResult()
        if todo:
            self._ready_for(todo[0][0], result)
        with tqdm(total=len(todo), desc="stories", unit="item",
                  disable=not self.progress or len(todo) < PROGRESS_FROM) as bar:
            for i in range(0, len(todo), self.chunk):
                if stop is not None and stop.is_set():
                    result.stopped = True
                    break
                part = todo[i : i + self.chunk]
                self._assign([item_id for _, item_id in part], result)
                result.stories_written += self._flush()
                bar.update(len(part))
        result.stories_written += self._flush()  # what a failed flush left
        if not result.stopped:
            self._since = clock_started - LATE_OVERLAP
            if full:
                self._last_full = clock_started
        result.seconds = time.perf_counter() - started
        return result

    def run(self, every_s: float, stop: threading.Event | None = None) -> CycleResult:
        """Cycle every `every_s` seconds until `stop` is set; returns the totals."""
        stop = stop or threading.Event()
        total = CycleResult()
        while not stop.is_set():
            begun = time.monotonic()
            try:
                result = self.cycle(stop)
            except StoreError as exc:
                # A store that is briefly away should not end the job; the next cycle retries.
                log.error("stories cycle failed, retrying next cycle: %s", exc)
                result = CycleResult()
            if result.items:
                log.info("%s", result.line())
            for name in ("items", "duplicates", "new_stories", "stories_written", "seconds", "embed_seconds"):
                setattr(total, name, getattr(total, name) + getattr(result, name))
            if stop.wait(max(0.0, every_s - (time.monotonic() - begun))):
                break
        return total

    def _ready_for(self, oldest: dt.datetime, result: CycleResult) -> None:
        """Rebuild the assigner unless its window already covers `oldest`."""
        window = self.config.window
        newest = self._assigner.newest if self._assigner is not None else None
        if self._assigner is not None and (newest is None or oldest >= newest - window):
            return
        assigner = StoryAssigner(self.embedder, self.config)
        stored = stored_window(self.store, oldest - window, self.config.max_active)
        assigner.restore(stored, oldest - window)
        self._assigner = assigner
        result.restored = len(stored)

    def _assign(self, ids: Sequence[str], result: CycleResult) -> None:
        assert self._assigner is not None
        # Sorted as `pending` was: the assigner takes a chunk in (published_at, id) order anyway.
        items = sorted(scored_items(self.store, ids), key=lambda s: s.item.order)
        if not items:
            return
        embed_started = time.perf_counter()
        vectors = self.embedder.embed([item_text(s.item.title, s.item.text) for s in items])
        result.embed_seconds += time.perf_counter() - embed_started
        assignments = self._assigner.assign([s.item for s in items], vectors)
        now = self.clock()
        rows = [item_story_row(s, a, s.item.lang or "", self.embedder.name, v, now)
                for s, a, v in zip(items, assignments, vectors, strict=True)]
        write_item_stories(self.store, rows)
        self._dirty.update(a.story_id for a in assignments)
        result.items += len(items)
        result.duplicates += sum(a.duplicate_of is not None for a in assignments)
        result.new_stories += sum(a.story_id == a.item_id for a in assignments)

    def _flush(self) -> int:
        """Re-write the `stories` rows of the stories touched (kept for the next cycle on failure)."""
        if not self._dirty:
            return 0
        written = rewrite_stories(self.store, sorted(self._dirty), self.clock())
        self._dirty.clear()
        return written
