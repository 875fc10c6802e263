"""The event set (tests/data/events.jsonl) as items and scored rows, and a memoising `use` embedder, for the
stories job tests: every test embeds the same 326 texts, so each text is encoded once per session."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from stream.core.store import Store
from stream.stories.embed import Embedder, load_embedder
from stream.stories.evaluate import LabelledItem, load_events
from tests.integration.alerts_rows import Row, insert, item_rows

EVENTS = Path(__file__).resolve().parents[1] / "data" / "events.jsonl"


class MemoEmbedder:
    """The real `use` encoder, each distinct text encoded once (its vector does not depend on the
    batch, see stream.stories.embed)."""

    def __init__(self, inner: Embedder) -> None:
        self.inner, self.name, self.dim = inner, inner.name, inner.dim
        self.memo: dict[str, np.ndarray] = {}

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in self.memo]
        if missing:
            self.memo.update(zip(missing, self.inner.embed(missing), strict=True))
        return np.array([self.memo[t] for t in texts], dtype=np.float32).reshape(len(texts), self.dim)


_SHARED: list[MemoEmbedder] = []


def shared_embedder() -> MemoEmbedder:
    if not _SHARED:
        _SHARED.append(MemoEmbedder(load_embedder("use", threads=1)))
    return _SHARED[0]


def events() -> list[LabelledItem]:
    return load_events(EVENTS)


def negative(item_id: str) -> bool:
    """A fixed, arbitrary sentiment per item."""
    return hashlib.sha1(item_id.encode()).digest()[0] % 3 == 0


def write_scored(store: Store, items: Sequence[LabelledItem], scored_at: dt.datetime | None = None) -> None:
    """Each item's items row and its sentiment and risk rows (scored_at: 5 s after publication unless given)."""
    rows: list[Row] = []
    for x in items:
        rows += item_rows(x.item.id, x.item.published_at, source=x.source, title=x.item.title, text=x.item.text,
                          lang=x.item.lang, negative=negative(x.item.id), scored_at=scored_at)
    insert(store, rows)


def assignments(store: Store) -> dict[str, tuple[str, str, float]]:
    """id -> (story_id, duplicate_of, similarity) as item_stories has it."""
    rows = store.rows(f"SELECT id, story_id, duplicate_of, similarity FROM {store.database}.item_stories FINAL")
    return {str(i): (str(s), str(d), float(sim)) for i, s, d, sim in rows}
