"""The main loop through faults, with in-memory stages: model outages, store refusals, dead letters."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from typing import Any

import pytest
from kafka.errors import KafkaTimeoutError, MessageSizeTooLargeError
from prometheus_client import REGISTRY

from stream.consumer.pipeline import Pipeline
from stream.consumer.sink import refuses_rows
from stream.core.errors import ModelUnavailable, StoreError
from stream.core.records import (
    DLQ_FAILED,
    DLQ_SENT,
    DLQ_TRUNCATED,
    Analysis,
    BadRecord,
    EntityRow,
    ScoredRow,
    SourceRecord,
)
from stream.core.settings import BatchSettings, ModelSettings
from stream.kafka.dlq import DeadLetterTopic
from tests.unit.test_pipeline_loop import FlakySink, ListSource, NewsScorer, UpperScorer, payloads

BATCH = BatchSettings(max_items=50, max_wait_ms=0)


class BrokenScorer(UpperScorer):
    """Fails on every text for its first `outage` calls (a lost GPU), then on texts with `poison`."""

    def __init__(self, outage: int = 10**9, poison: str = "\0") -> None:
        self.outage, self.poison, self.calls = outage, poison, 0

    def analyze(self, texts: Sequence[str]) -> list[Analysis]:
        self.calls += 1
        if self.calls <= self.outage:
            raise RuntimeError("CUDA error: device lost")
        if any(self.poison in t for t in texts):
            raise ValueError("cannot score this one")
        return super().analyze(texts)


class CountingSink(FlakySink):
    """Records each publish to the dead-letter topic; refuses rows whose title holds `refuse`."""

    def __init__(self, events: list[str], failures: int = 0, refuse: str = "\0") -> None:
        super().__init__(events, failures)
        self.published: list[list[BadRecord]] = []
        self.refuse = refuse

    def dead_letter(self, bad: Sequence[BadRecord]) -> list[BadRecord]:
        if bad:
            self.published.append(list(bad))
            self.events.append(f"publish {len(bad)}")
        return [BadRecord(b.record, b.kind, b.error, dlq_status=DLQ_SENT) for b in bad]

    def write_batch(
        self, scored: Sequence[ScoredRow], entities: Sequence[EntityRow], bad: Sequence[BadRecord]
    ) -> list[BadRecord]:
        keep = [r for r in scored if self.refuse not in r.item.title]
        super().write_batch(keep, entities, bad)
        refused = [r for r in scored if r not in keep]
        return [BadRecord(r.record, "store_rejected", "Code: 469. VIOLATED_CONSTRAINT") for r in refused]


def metric(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


@pytest.fixture
def stop(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    event = threading.Event()
    monkeypatch.setattr(event, "wait", lambda _delay: False)  # back off without sleeping
    return event


def test_a_model_failing_on_everything_dead_letters_and_commits_nothing_then_exits(stop: threading.Event) -> None:
    events: list[str] = []
    source, sink = ListSource(payloads(20), events), CountingSink(events)
    before = metric("yuqing_model_outages_total")
    pipeline = Pipeline(source, [BrokenScorer()], sink, BATCH, stop, models=ModelSettings(max_attempts=3))
    with pytest.raises(ModelUnavailable) as caught:
        pipeline.run()
    assert caught.value.exit_code == 6 and "3 tries" in str(caught.value)
    assert source.committed == {} and sink.rows == [] and sink.bad == [] and sink.published == []
    assert pipeline.counts.model_outages == 3
    assert metric("yuqing_model_outages_total") - before == 3
    assert events == ["read 20", "pause"]  # fetching paused while backing off, never written


def test_an_outage_that_ends_loses_nothing(stop: threading.Event) -> None:
    events: list[str] = []
    source, sink = ListSource(payloads(20), events), CountingSink(events)
    # Each failed try costs one call for the batch and one per item (the share decides, no probe).
    scorer = BrokenScorer(outage=2 * 21)
    counts = Pipeline(source, [scorer], sink, BATCH, stop, models=ModelSettings(max_attempts=5)).run()
    assert counts.model_outages == 2 and counts.scored_items == 20 and counts.dead_lettered == 0
    assert source.committed == {("news", 0): 20}
    assert events == ["read 20", "pause", "resume", "write 20+0", "commit 20", "read 0"]


def test_one_text_of_twenty_that_breaks_the_model_is_a_score_error(stop: threading.Event) -> None:
    events: list[str] = []
    data = [*payloads(19), b'{"title": "poison pill", "text": "x"}']
    source, sink = ListSource(data, events), CountingSink(events)
    counts = Pipeline(source, [BrokenScorer(outage=0, poison="poison")], sink, BATCH, stop).run()
    assert counts.scored_items == 19 and counts.by_kind == {"score_error": 1} and counts.model_outages == 0
    assert [b.kind for b in sink.bad] == ["score_error"] and b"poison" in sink.bad[0].record.value
    assert source.committed == {("news", 0): 20}


class PoisonedNews(NewsScorer):
    def analyze(self, texts: Sequence[str]) -> list[Analysis]:
        if any("poison" in t for t in texts):
            raise ValueError("cannot analyze this one")
        return super().analyze(texts)


def test_scored_one_by_one_a_multi_head_batch_keeps_every_head_and_entity_set_of_the_good_items(
    stop: threading.Event,
) -> None:
    data = [b'{"id": "a", "title": "Arsenal wins"}', b'{"id": "p", "title": "poison Pill"}',
            b'{"id": "b", "title": "Beijing match"}']
    source, sink = ListSource(data, []), CountingSink([])
    counts = Pipeline(source, [PoisonedNews()], sink, BATCH, stop).run()
    assert counts.by_kind == {"score_error": 1} and sink.bad[0].record.offset == 1
    assert [(r.item.id, r.task) for r in sink.rows] == [("a", "sentiment"), ("a", "category"),
                                                       ("b", "sentiment"), ("b", "category")]
    assert [(e.item.id, [x.text for x in e.entities]) for e in sink.entities] == [("a", ["Arsenal"]),
                                                                                 ("b", ["Beijing"])]
    assert counts.rows_written == 4 and source.committed == {("news", 0): 3}


@pytest.mark.parametrize(("failing", "n", "outage"), [(3, 4, True), (2, 4, False), (1, 1, False)])
def test_the_failure_share_decides_between_bad_texts_and_an_outage(
    stop: threading.Event, failing: int, n: int, outage: bool
) -> None:
    data = [b'{"title": "poison %d"}' % i for i in range(failing)] + payloads(n - failing)
    source, sink = ListSource(data, []), CountingSink([])
    pipeline = Pipeline(source, [BrokenScorer(outage=0, poison="poison")], sink, BATCH, stop,
                        models=ModelSettings(max_failure_share=0.5, max_attempts=1))
    if outage:
        with pytest.raises(ModelUnavailable):
            pipeline.run()
        assert source.committed == {}
    else:
        assert pipeline.run().by_kind == {"score_error": failing}


def test_a_broken_model_on_a_one_item_batch_is_an_outage_too(stop: threading.Event) -> None:
    source, sink = ListSource(payloads(1), []), CountingSink([])
    with pytest.raises(ModelUnavailable, match="plain text too"):
        Pipeline(source, [BrokenScorer()], sink, BATCH, stop, models=ModelSettings(max_attempts=1)).run()
    assert source.committed == {} and sink.bad == []


def test_dead_letters_are_published_once_per_batch_however_often_the_store_fails(stop: threading.Event) -> None:
    events: list[str] = []
    source, sink = ListSource([*payloads(3), b"not json", b"[1]"], events), CountingSink(events, failures=3)
    counts = Pipeline(source, [UpperScorer()], sink, BATCH, stop).run()
    assert events == ["read 5", "publish 2", "write failed", "pause", "write failed", "write failed",
                      "write 3+2", "resume", "commit 5", "read 0"]
    assert [b.dlq_status for b in sink.bad] == [DLQ_SENT, DLQ_SENT]
    assert counts.store_retries == 3 and counts.dead_lettered == 2


def test_rows_the_store_refuses_become_store_rejected_dead_letters_and_the_rest_lands(stop: threading.Event) -> None:
    events: list[str] = []
    data = [*payloads(4), b'{"title": "refuse me", "text": "x"}']
    source, sink = ListSource(data, events), CountingSink(events, refuse="refuse")
    counts = Pipeline(source, [UpperScorer()], sink, BATCH, stop).run()
    assert events == ["read 5", "write 4+0", "publish 1", "write 0+1", "commit 5", "read 0"]
    assert [(b.kind, b.record.offset, b.dlq_status) for b in sink.bad] == [("store_rejected", 4, DLQ_SENT)]
    assert (counts.scored_items, counts.rows_written, counts.by_kind) == (4, 4, {"store_rejected": 1})
    assert source.committed == {("news", 0): 5}


@pytest.mark.parametrize(
    ("code", "message", "refused"),
    [
        (469, "Constraint `c` for table db.scored is violated at row 2", True),
        (252, "Too many partitions for single INSERT block (more than 100)", True),
        (252, "Too many parts (300 with average size of 1.00 MiB) in table 'db.scored'", False),
        (241, "Memory limit (for query) exceeded: would use 9.31 GiB", True),
        (241, "Memory limit (total) exceeded: would use 60.00 GiB", False),
        (321, "Value is out of range of data type", True),
        (60, "Table db.scored does not exist. (UNKNOWN_TABLE)", False),
        (210, "Connection refused (NETWORK_ERROR)", False),
        (None, "timed out", False),
        (123456, "a code this table does not know", False),
    ],
)
def test_store_errors_are_classified_by_code(code: int | None, message: str, refused: bool) -> None:
    assert refuses_rows(StoreError(message, code=code)) is refused


class Future:
    def __init__(self, error: Exception | None) -> None:
        self.error = error

    def get(self, timeout: float) -> None:
        if self.error is not None:
            raise self.error


class FakeProducer:
    """A KafkaProducer stand-in: `broker` answers each send (None = taken), `metadata_down` topics time out."""

    def __init__(self, broker: Any = None, metadata_down: int = 0) -> None:
        self.sent: list[tuple[str, bytes, bytes | None, dict[str, bytes]]] = []
        self.broker = broker or (lambda value: None)
        self.metadata_down = metadata_down  # the first N sends block on metadata and time out

    def send(self, topic: str, value: bytes, key: bytes | None, headers: list[tuple[str, bytes]]) -> Future:
        if self.metadata_down:
            self.metadata_down -= 1
            raise KafkaTimeoutError("Failed to update metadata after 5.0 secs.")
        self.sent.append((topic, value, key, dict(headers)))
        return Future(self.broker(value))

    def flush(self, timeout: float | None = None) -> None:
        pass

    def close(self) -> None:
        pass


def bad_record(value: bytes, offset: int = 0, key: bytes | None = b"key") -> BadRecord:
    return BadRecord(SourceRecord("news", 2, offset, 1_700_000_000_000, key, value), "too_large", "too big")


def test_a_dead_letter_too_large_for_the_topic_goes_as_a_prefix_with_its_size_and_hash() -> None:
    producer = FakeProducer()
    value = bytes(range(256)) * 40  # 10240 bytes
    dlq = DeadLetterTopic(producer, ".dlq", max_bytes=1000)
    [out] = dlq.send([bad_record(value)])
    [(topic, sent, key, headers)] = producer.sent
    assert topic == "news.dlq" and key == b"key" and sent == value[: 1000 - 3]
    assert headers["yuqing.truncated"] == b"true"
    assert headers["yuqing.original.size"] == b"10240"
    assert headers["yuqing.original.sha256"] == hashlib.sha256(value).hexdigest().encode()
    assert headers["yuqing.error.kind"] == b"too_large" and headers["yuqing.source.offset"] == b"0"
    assert out.dlq_status == DLQ_TRUNCATED and out.record.value == value  # the store row keeps it whole


def test_a_dead_letter_the_broker_refuses_is_given_up_after_the_attempts() -> None:
    producer = FakeProducer(broker=lambda v: MessageSizeTooLargeError("RecordTooLarge") if b"huge" in v else None)
    dlq = DeadLetterTopic(producer, ".dlq", max_bytes=10_000, attempts=3, backoff_s=0)
    out = dlq.send([bad_record(b"small", 0), bad_record(b"huge", 1)])
    assert [o.dlq_status for o in out] == [DLQ_SENT, DLQ_FAILED]
    assert "MessageSizeTooLargeError" in out[1].dlq_error and out[0].dlq_error == ""
    assert [v for _, v, _, _ in producer.sent] == [b"small", b"huge", b"huge", b"huge"]  # retried, bounded


def test_a_missing_dead_letter_topic_costs_one_metadata_wait_per_try_and_then_recovers() -> None:
    producer = FakeProducer(metadata_down=1)
    dlq = DeadLetterTopic(producer, ".dlq", max_bytes=10_000, attempts=2, backoff_s=0)
    out = dlq.send([bad_record(b"a", i) for i in range(5)])
    assert [o.dlq_status for o in out] == [DLQ_SENT] * 5
    assert len(producer.sent) == 5  # the first try stopped at the timeout instead of waiting five times


def test_a_dead_letter_topic_that_never_answers_gives_up_without_raising() -> None:
    producer = FakeProducer(metadata_down=10**6)
    dlq = DeadLetterTopic(producer, ".dlq", max_bytes=10_000, attempts=3, backoff_s=0)
    out = dlq.send([bad_record(b"a", i) for i in range(50)])
    assert {o.dlq_status for o in out} == {DLQ_FAILED} and "KafkaTimeoutError" in out[0].dlq_error
    assert producer.metadata_down == 10**6 - 3  # one wait per try, not one per message


class LaggingSource(ListSource):
    def lag(self) -> dict[tuple[str, int], tuple[int, int]]:
        return {("news", 0): (self.committed.get(("news", 0), -1), 9), ("news", 1): (-1, 4)}


class StatsSink(CountingSink):
    def __init__(self, events: list[str]) -> None:
        super().__init__(events)
        self.stats: list[list[Any]] = []

    def write_stats(self, rows: list[list[Any]]) -> None:
        self.stats.extend(rows)


def test_pipeline_stats_hold_the_last_committed_offset_and_the_lag_behind_it(stop: threading.Event) -> None:
    source, sink = LaggingSource(payloads(6), []), StatsSink([])
    Pipeline(source, [UpperScorer()], sink, BATCH, stop, stats_every_s=0).run()
    # ts, consumer, group, topic, partition, committed_offset, end_offset, lag, ...
    first_batch = [row[3:8] for row in sink.stats[:2]]
    assert first_batch == [["news", 0, 6, 9, 3], ["news", 1, -1, 4, 4]]  # never committed: all of it is lag
