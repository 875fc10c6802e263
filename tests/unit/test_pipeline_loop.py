"""The main loop's contract, with in-memory stages: write before commit, retry without committing."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import pytest

from stream.consumer.pipeline import Pipeline, StoppedBeforeWrite
from stream.core.errors import ModelUnavailable, StoreError
from stream.core.items import classify
from stream.core.records import Analysis, BadRecord, Batch, Entity, EntityRow, Prediction, ScoredRow, SourceRecord
from stream.core.settings import BatchSettings, ModelSettings


class ListSource:
    def __init__(self, payloads: list[bytes], events: list[str]) -> None:
        self.records = [SourceRecord("news", 0, i, 1_700_000_000_000, None, p) for i, p in enumerate(payloads)]
        self.events = events
        self.exhausted = False
        self.committed: dict[tuple[str, int], int] = {}

    def next_batch(self, max_items: int, max_wait_ms: int) -> Batch:
        batch = Batch()
        while self.records and len(batch) < max_items:
            record = self.records.pop(0)
            verdict = classify(record, 10_000)
            if isinstance(verdict, BadRecord):
                batch.bad.append(verdict)
            else:
                batch.items.append((record, verdict))
            batch.next_offsets[("news", 0)] = record.offset + 1
        self.exhausted = not self.records
        self.events.append(f"read {len(batch)}")
        return batch

    def commit(self, batch: Batch) -> None:
        self.committed.update(batch.next_offsets)
        self.events.append(f"commit {batch.next_offsets[('news', 0)]}")

    def pause(self) -> None:
        self.events.append("pause")

    def resume(self) -> None:
        self.events.append("resume")

    def keepalive(self) -> None:
        pass

    def close(self) -> None:
        pass


class FlakySink:
    def __init__(self, events: list[str], failures: int = 0) -> None:
        self.events = events
        self.failures = failures
        self.rows: list[ScoredRow] = []
        self.entities: list[EntityRow] = []
        self.bad: list[BadRecord] = []

    def dead_letter(self, bad: Sequence[BadRecord]) -> list[BadRecord]:
        return list(bad)

    def write_batch(
        self, scored: Sequence[ScoredRow], entities: Sequence[EntityRow], bad: Sequence[BadRecord]
    ) -> list[BadRecord]:
        if self.failures:
            self.failures -= 1
            self.events.append("write failed")
            raise StoreError("store down")
        self.rows.extend(scored)
        self.entities.extend(entities)
        self.bad.extend(bad)
        self.events.append(f"write {len(scored)}+{len(bad)}")
        return []

    def write_stats(self, rows: list[list[Any]]) -> None:
        pass

    def close(self) -> None:
        pass


class UpperScorer:
    """A one-head package: sentiment by keyword."""

    name, version, max_length = "kw", "kw-1", 64
    heads: Mapping[str, Sequence[str]] = MappingProxyType({"sentiment": ("negative", "positive")})

    def analyze(self, texts: Sequence[str]) -> list[Analysis]:
        if any("boom" in t for t in texts):
            raise ValueError("model failure")
        return [Analysis({"sentiment": Prediction("negative" if "bad" in t else "positive", 0.9, {})}) for t in texts]


class NewsScorer:
    """A multi-head package: sentiment and category heads, and entities (capitalized words)."""

    name, version, max_length = "news", "news-1", 64
    heads: Mapping[str, Sequence[str]] = MappingProxyType(
        {"sentiment": ("negative", "positive"), "category": ("sports", "finance")}
    )

    def analyze(self, texts: Sequence[str]) -> list[Analysis]:
        out = []
        for t in texts:
            entities = tuple(
                Entity(w, w.lower(), "ORG", t.index(w), t.index(w) + len(w), 0.8) for w in t.split() if w.istitle()
            )
            predictions = {
                "sentiment": Prediction("negative" if "bad" in t else "positive", 0.9, {}, truncated=len(t) > 40),
                "category": Prediction("sports" if "match" in t else "finance", 0.7, {}),
            }
            out.append(Analysis(predictions, entities, truncated=len(t) > 40))
        return out


def payloads(n: int) -> list[bytes]:
    return [b'{"title": "item %d", "text": "%s"}' % (i, b"bad" if i % 2 else b"good") for i in range(n)]


def test_each_batch_is_written_before_its_offsets_are_committed() -> None:
    events: list[str] = []
    source, sink = ListSource([*payloads(5), b"not json"], events), FlakySink(events)
    counts = Pipeline(source, [UpperScorer()], sink, BatchSettings(max_items=4, max_wait_ms=0)).run()
    assert events == ["read 4", "write 4+0", "commit 4", "read 2", "write 1+1", "commit 6", "read 0"]
    assert (counts.scored_items, counts.dead_lettered, counts.rows_written) == (5, 1, 5)
    assert [r.prediction.label for r in sink.rows] == ["positive", "negative"] * 2 + ["positive"]


def test_store_failure_pauses_retries_and_never_commits_early(monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []
    source, sink = ListSource(payloads(3), events), FlakySink(events, failures=2)
    stop = threading.Event()
    monkeypatch.setattr(stop, "wait", lambda _delay: False)  # no real sleeping in a unit test
    counts = Pipeline(source, [UpperScorer()], sink, BatchSettings(max_items=10, max_wait_ms=0), stop).run()
    assert events == ["read 3", "write failed", "pause", "write failed", "write 3+0", "resume", "commit 3", "read 0"]
    assert counts.store_retries == 2


def test_shutdown_during_an_outage_leaves_the_batch_uncommitted() -> None:
    events: list[str] = []
    stop = threading.Event()
    source, sink = ListSource(payloads(3), events), FlakySink(events, failures=100)
    original = sink.write_batch

    def failing_then_stop(
        scored: Sequence[ScoredRow], entities: Sequence[EntityRow], bad: Sequence[BadRecord]
    ) -> list[BadRecord]:
        stop.set()  # SIGTERM arrives while the store is down
        return original(scored, entities, bad)

    sink.write_batch = failing_then_stop  # type: ignore[method-assign]
    with pytest.raises(StoppedBeforeWrite):
        Pipeline(source, [UpperScorer()], sink, BatchSettings(max_items=10, max_wait_ms=0), stop).run()
    assert source.committed == {}


def test_a_text_that_breaks_the_model_is_dead_lettered_alone() -> None:
    events: list[str] = []
    data = [*payloads(3), b'{"title": "boom", "text": "x"}']
    source, sink = ListSource(data, events), FlakySink(events)
    counts = Pipeline(source, [UpperScorer()], sink, BatchSettings(max_items=10, max_wait_ms=0)).run()
    assert counts.scored_items == 3 and counts.by_kind == {"score_error": 1}
    assert sink.bad[0].kind == "score_error" and b"boom" in sink.bad[0].record.value


def test_a_multi_head_package_gives_a_row_per_head_and_one_entity_set_per_item() -> None:
    events: list[str] = []
    data = [b'{"id": "a", "title": "Arsenal match", "text": "bad day"}',
            b'{"id": "b", "title": "no names", "text": "x"}']
    source, sink = ListSource(data, events), FlakySink(events)
    counts = Pipeline(source, [NewsScorer(), UpperScorer()], sink, BatchSettings(max_items=10, max_wait_ms=0)).run()
    assert events == ["read 2", "write 6+0", "commit 2", "read 0"]
    assert (counts.scored_items, counts.rows_written) == (2, 6)
    assert [(r.item.id, r.task, r.model_version, r.prediction.label) for r in sink.rows] == [
        ("a", "sentiment", "news-1", "negative"), ("a", "category", "news-1", "sports"),
        ("b", "sentiment", "news-1", "positive"), ("b", "category", "news-1", "finance"),
        ("a", "sentiment", "kw-1", "negative"), ("b", "sentiment", "kw-1", "positive"),
    ]
    # one set per item of the package with an entity head, the empty one too; none from the other package
    assert [(e.item.id, e.model_version, e.sentiment, [x.text for x in e.entities]) for e in sink.entities] == [
        ("a", "news-1", "negative", ["Arsenal"]), ("b", "news-1", "positive", []),
    ]
    assert sink.entities[0].entities[0].start == 0


class HeadlessScorer(NewsScorer):
    """Forgets a head it declares: a model fault, not an item fault."""

    def analyze(self, texts: Sequence[str]) -> list[Analysis]:
        return [Analysis({"sentiment": a.predictions["sentiment"]}, a.entities) for a in super().analyze(texts)]


def test_an_entity_set_without_a_sentiment_head_has_an_empty_sentiment_and_a_missing_head_fails() -> None:
    class EntitiesOnly(NewsScorer):
        heads: Mapping[str, Sequence[str]] = MappingProxyType({})

        def analyze(self, texts: Sequence[str]) -> list[Analysis]:
            return [Analysis({}, a.entities) for a in super().analyze(texts)]

    sink = FlakySink([])
    Pipeline(ListSource(payloads(2), []), [EntitiesOnly()], sink, BatchSettings(max_items=10, max_wait_ms=0)).run()
    assert sink.rows == [] and [e.sentiment for e in sink.entities] == ["", ""]

    # A package that leaves out a head it declares fails the plain probe text too: an outage.
    source, sink = ListSource(payloads(1), []), FlakySink([])
    pipeline = Pipeline(source, [HeadlessScorer()], sink, BatchSettings(max_items=10, max_wait_ms=0),
                        models=ModelSettings(max_attempts=1))
    with pytest.raises(ModelUnavailable, match="no category prediction"):
        pipeline.run()
    assert source.committed == {} and sink.rows == [] and sink.entities == [] and sink.bad == []


class EmptyMember(ListSource):
    """A group member that reads nothing: rebalancing for its first `rebalancing_s`, then given nothing."""

    def __init__(self, rebalancing_s: float) -> None:
        super().__init__([], [])
        self.started, self.rebalancing_s = time.monotonic(), rebalancing_s

    @property
    def rebalancing(self) -> bool:
        return time.monotonic() - self.started < self.rebalancing_s

    def next_batch(self, max_items: int, max_wait_ms: int) -> Batch:
        time.sleep(max_wait_ms / 1000)
        return Batch()


@pytest.mark.parametrize("rebalancing_s", [0.0, 1.0])
def test_idle_time_counts_from_the_end_of_a_rebalance_even_one_that_gave_nothing(rebalancing_s: float) -> None:
    """Waiting for partitions is not being idle; holding none once the group has settled is: an
    --until-idle member that the group gives nothing still ends."""
    started = time.monotonic()
    source, sink = EmptyMember(rebalancing_s), FlakySink([])
    Pipeline(source, [UpperScorer()], sink, BatchSettings(max_items=4, max_wait_ms=20), idle_exit_s=0.3).run()
    took = time.monotonic() - started
    assert rebalancing_s + 0.3 - 0.05 <= took < rebalancing_s + 2.0  # the rebalance is seen once per 20 ms wait
