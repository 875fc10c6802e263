"""The main loop's contract, with in-memory stages: write before commit, retry without committing."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import pytest

from stream.consumer.pipeline import Pipeline, StoppedBeforeWrite
from stream.core.errors import StoreError
from stream.core.items import classify
from stream.core.records import BadRecord, Batch, Prediction, ScoredRow, SourceRecord
from stream.core.settings import BatchSettings


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
        self.bad: list[BadRecord] = []

    def dead_letter(self, bad: Sequence[BadRecord]) -> list[BadRecord]:
        return list(bad)

    def write_batch(self, scored: Sequence[ScoredRow], bad: Sequence[BadRecord]) -> list[BadRecord]:
        if self.failures:
            self.failures -= 1
            self.events.append("write failed")
            raise StoreError("store down")
        self.rows.extend(scored)
        self.bad.extend(bad)
        self.events.append(f"write {len(scored)}+{len(bad)}")
        return []

    def write_stats(self, rows: list[list[Any]]) -> None:
        pass

    def close(self) -> None:
        pass


class UpperScorer:
    name, task, version, labels, max_length = "kw", "sentiment", "kw-1", ("negative", "positive"), 64

    def score(self, texts: Sequence[str]) -> list[Prediction]:
        if any("boom" in t for t in texts):
            raise ValueError("model failure")
        return [Prediction("negative" if "bad" in t else "positive", 0.9, {}) for t in texts]


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

    def failing_then_stop(scored: Sequence[ScoredRow], bad: Sequence[BadRecord]) -> list[BadRecord]:
        stop.set()  # SIGTERM arrives while the store is down
        return original(scored, bad)

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
