"""The consumer's promises under faults, on the real broker and real chdb: rebalances skip nothing,
refused rows and hostile content become dead letters, dead letters never block."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.admin import NewTopic

from stream.consumer.app import run_pipeline
from stream.consumer.sink import ClickHouseSink
from stream.core.errors import StoreError
from stream.core.items import classify, normalize_entity
from stream.core.records import (
    Analysis,
    BadRecord,
    Batch,
    Entity,
    EntityRow,
    NewsItem,
    Prediction,
    ScoredRow,
    SourceRecord,
)
from stream.core.settings import KafkaSettings, Settings, StoreSettings
from stream.core.store import Store
from stream.kafka.admin import ensure_topic, group_lag
from stream.kafka.source import KafkaSource
from tests.helpers import committed_total, news_item, produce
from tests.unit.test_items_fuzz import payloads as hostile_payloads
from tests.unit.test_items_fuzz import timestamps as hostile_timestamps

pytestmark = pytest.mark.integration

PARTITIONS = 4


class KeywordScorer:
    """A real Scorer without a model file: the store and the broker are what these tests are about.
    Two heads, and entities: every word that starts with a capital letter."""

    name, version, max_length = "kw", "kw-1", 64
    heads: Mapping[str, Sequence[str]] = MappingProxyType(
        {"sentiment": ("negative", "positive"), "category": ("finance", "sports")}
    )

    def analyze(self, texts: Sequence[str]) -> list[Analysis]:
        out = []
        for t in texts:
            p = 0.9 if "bad" in t else 0.1
            sentiment = Prediction("negative" if p > 0.5 else "positive", max(p, 1 - p), {"negative": p})
            category = Prediction("finance", 0.6, {"finance": 0.6, "sports": 0.4})
            words = [(w, t.index(w)) for w in t.split() if w[:1].isupper()]
            entities = tuple(Entity(w, normalize_entity(w), "ORG", at, at + len(w), 0.8) for w, at in words)
            out.append(Analysis({"sentiment": sentiment, "category": category}, entities))
        return out


# -- rebalances ----------------------------------------------------------------------------------


class Worker:
    """One KafkaSource with the loop's read / write / commit steps; `written` is every offset written."""

    def __init__(self, bootstrap: str, topic: str, group: str, written: set[tuple[int, int]]) -> None:
        self.source = KafkaSource(KafkaSettings(bootstrap_servers=[bootstrap]), [topic], group)
        # Topic metadata before the first join: a group leader without it assigns the new member
        # nothing (kafka-python logs "No partition metadata"), and the test would wait for nothing.
        self.source.consumer.partitions_for_topic(topic)
        self.written = written

    def read(self, max_items: int = 10_000, wait_ms: int = 1000) -> Batch:
        return self.source.next_batch(max_items, wait_ms)

    def write_and_commit(self, batch: Batch) -> None:
        self.written.update((r.partition, r.offset) for r, _ in batch.items)
        self.written.update((b.record.partition, b.record.offset) for b in batch.bad)
        self.source.commit(batch)

    def owned(self) -> set[int]:
        return {tp.partition for tp in self.source.consumer.assignment()}


def joining(worker_factory: Any, wait_ms: int) -> tuple[threading.Thread, dict[str, Any]]:
    """A second member joining the group in the background; its first batch lands in the dict."""
    out: dict[str, Any] = {}

    def join() -> None:
        worker = out["worker"] = worker_factory()
        out["batch"] = worker.read(wait_ms=wait_ms)

    thread = threading.Thread(target=join)
    thread.start()
    return thread, out


def drain(workers: list[Worker], deadline_s: float = 60) -> None:
    idle, deadline = 0, time.monotonic() + deadline_s
    while idle < 3 and time.monotonic() < deadline:
        got = 0
        for w in workers:
            batch = w.read(wait_ms=500)
            w.write_and_commit(batch)
            got += len(batch)
        idle = idle + 1 if not got else 0


def assert_nothing_skipped(bootstrap: str, topic: str, group: str, written: set[tuple[int, int]]) -> None:
    reader = KafkaConsumer(bootstrap_servers=bootstrap)
    ends = {tp.partition: end for tp, end in reader.end_offsets(
        [TopicPartition(topic, p) for p in range(PARTITIONS)]).items()}
    reader.close()
    missing = {(p, o) for p, end in ends.items() for o in range(end)} - written
    assert not missing, f"{len(missing)} offsets never written, e.g. {sorted(missing)[:5]}"
    committed = {p: c for t, p, c, _ in group_lag(KafkaSettings(bootstrap_servers=[bootstrap]), group) if t == topic}
    assert committed == ends  # nothing stuck either


@pytest.fixture
def topic4(kafka_bootstrap: str, topic_name: str) -> str:
    ensure_topic(KafkaSettings(bootstrap_servers=[kafka_bootstrap]), topic_name, partitions=PARTITIONS)
    return topic_name


def test_a_member_joining_between_read_and_commit_and_mid_batch_skips_nothing(
    kafka_bootstrap: str, topic4: str, group_name: str
) -> None:
    produce(kafka_bootstrap, topic4, (news_item(i) for i in range(400)))
    written: set[tuple[int, int]] = set()
    a = Worker(kafka_bootstrap, topic4, group_name, written)
    first = a.read(max_items=40, wait_ms=5000)
    assert len(first) == 40 and a.owned() == set(range(PARTITIONS))
    thread, b = joining(lambda: Worker(kafka_bootstrap, topic4, group_name, written), wait_ms=15_000)
    a.write_and_commit(first)  # the new member is joining while this batch is written
    second = a.read(wait_ms=12_000)  # the rebalance runs inside this batch's polls
    thread.join(30)
    assert len(a.owned()) == PARTITIONS // 2 and len(b["worker"].owned()) == PARTITIONS // 2
    assert {r.partition for r, _ in second.items} <= a.owned()  # nothing kept of partitions gone
    a.write_and_commit(second)
    b["worker"].write_and_commit(b["batch"])
    drain([a, b["worker"]])
    assert_nothing_skipped(kafka_bootstrap, topic4, group_name, written)
    for w in (a, b["worker"]):
        committed = {p: c for (_, p), (c, _) in w.source.lag().items()}
        assert committed == {p: c for t, p, c, _ in group_lag(w.source.settings, group_name) if p in w.owned()}
        w.source.close()


def test_a_member_joining_during_a_pause_skips_nothing_and_no_foreign_partition_is_committed(
    kafka_bootstrap: str, topic4: str, group_name: str
) -> None:
    produce(kafka_bootstrap, topic4, (news_item(i) for i in range(300)))
    written: set[tuple[int, int]] = set()
    a = Worker(kafka_bootstrap, topic4, group_name, written)
    batch = a.read(wait_ms=5000)
    assert len(batch) == 300
    a.source.pause()  # the store is down: the loop pauses and keeps membership with keepalive()
    thread, b = joining(lambda: Worker(kafka_bootstrap, topic4, group_name, written), wait_ms=15_000)
    deadline = time.monotonic() + 30
    while len(a.owned()) == PARTITIONS and time.monotonic() < deadline:
        time.sleep(0.2)
        a.source.keepalive()
    assert len(a.owned()) == PARTITIONS // 2
    a.source.resume()
    a.write_and_commit(batch)  # the store is back
    settings = KafkaSettings(bootstrap_servers=[kafka_bootstrap])
    committed = {p for t, p, c, _ in group_lag(settings, group_name) if c >= 0}
    assert committed <= a.owned()  # not the partitions the new member took over
    thread.join(30)
    b["worker"].write_and_commit(b["batch"])
    drain([a, b["worker"]])
    assert_nothing_skipped(kafka_bootstrap, topic4, group_name, written)
    a.source.close()
    b["worker"].source.close()


# -- the store refusing rows, and outages ---------------------------------------------------------


def consumer_settings(bootstrap: str, topic: str, group: str, store: StoreSettings, **kafka: Any) -> Settings:
    return Settings(
        kafka=KafkaSettings(bootstrap_servers=[bootstrap], topics=[topic], group_id=group, **kafka),
        store=store,
        batch={"max_items": 64, "max_wait_ms": 200},  # type: ignore[arg-type]
    )


def dlq_messages(bootstrap: str, topic: str) -> list[Any]:
    reader = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=4000)
    try:
        return list(reader)
    finally:
        reader.close()


def test_rows_the_store_refuses_for_good_are_dead_letters_and_the_others_land(
    kafka_bootstrap: str, topic_name: str, group_name: str, store: Store, store_settings: StoreSettings
) -> None:
    db = store.database
    store.command(f"ALTER TABLE {db}.scored ADD CONSTRAINT no_evil CHECK source != 'evil'")  # refuses: code 469
    items = [dict(news_item(i), source="evil" if i % 10 == 3 else f"wire{i % 3}") for i in range(50)]
    produce(kafka_bootstrap, topic_name, items)
    counts = run_pipeline(consumer_settings(kafka_bootstrap, topic_name, group_name, store_settings), "kafka",
                          scorers=[KeywordScorer()], idle_exit_s=3)
    evil = sorted(i for i in range(50) if i % 10 == 3)
    assert counts.by_kind == {"store_rejected": len(evil)} and counts.scored_items == 50 - len(evil)
    assert store.scalar(f"SELECT uniqExact(id) FROM {db}.scored FINAL") == 50 - len(evil)
    # The refused messages' rows were left out of the tables written after `scored`.
    assert store.scalar(f"SELECT uniqExact(id) FROM {db}.entities FINAL") == 50 - len(evil)
    letters = store.rows(f"SELECT kafka_offset, error_kind, error, dlq_status, raw FROM {db}.dead_letters FINAL "
                         "ORDER BY kafka_offset")
    assert [json.loads(raw)["id"] for *_, raw in letters] == [f"item-{i}" for i in evil]
    assert {(k, s) for _, k, _, s, _ in letters} == {("store_rejected", "sent")}
    assert all("VIOLATED_CONSTRAINT" in e and e.startswith("scored: Code: 469") for _, _, e, _, _ in letters)
    assert committed_total(kafka_bootstrap, group_name) == 50  # offsets committed: nothing stuck
    dlq = dlq_messages(kafka_bootstrap, topic_name + ".dlq")
    assert sorted(json.loads(m.value)["id"] for m in dlq) == sorted(f"item-{i}" for i in evil)


def test_entity_sets_the_store_refuses_dead_letter_only_their_messages(
    kafka_bootstrap: str, topic_name: str, group_name: str, store: Store, store_settings: StoreSettings
) -> None:
    """A CHECK on `entities` refuses the sets naming Evil: those messages become dead letters (their
    items and scored rows, written before, stay), every other message lands in all three tables."""
    db = store.database
    store.command(f"ALTER TABLE {db}.entities ADD CONSTRAINT no_evil CHECK NOT has(entity_normalized, 'evil')")
    items = [dict(news_item(i), title=f"Evil report {i}" if i % 7 == 2 else f"plain report {i}") for i in range(40)]
    produce(kafka_bootstrap, topic_name, items)
    counts = run_pipeline(consumer_settings(kafka_bootstrap, topic_name, group_name, store_settings), "kafka",
                          scorers=[KeywordScorer()], idle_exit_s=3)
    evil = [i for i in range(40) if i % 7 == 2]
    assert counts.by_kind == {"store_rejected": len(evil)} and counts.scored_items == 40 - len(evil)
    landed = {r[0] for r in store.rows(f"SELECT id FROM {db}.entities FINAL")}
    assert landed == {f"item-{i}" for i in range(40) if i not in evil}
    assert store.scalar(f"SELECT uniqExact(id) FROM {db}.items FINAL") == 40
    assert store.rows(f"SELECT task, count() FROM {db}.scored FINAL GROUP BY task ORDER BY task") == [
        ("category", 40), ("sentiment", 40)]
    letters = store.rows(f"SELECT error_kind, error, raw FROM {db}.dead_letters FINAL ORDER BY kafka_offset")
    assert [json.loads(raw)["id"] for *_, raw in letters] == [f"item-{i}" for i in evil]
    assert all(k == "store_rejected" and e.startswith("entities: Code: 469") for k, e, _ in letters)
    assert committed_total(kafka_bootstrap, group_name) == 40


def test_an_items_row_the_store_refuses_keeps_its_messages_out_of_scored_and_entities(store: Store) -> None:
    """Two messages of one id in a batch share one items row: refused, both are dead letters and
    neither writes a score without a text."""
    db = store.database
    store.command(f"ALTER TABLE {db}.items ADD CONSTRAINT no_evil CHECK source != 'evil'")
    now = dt.datetime.now(dt.UTC)
    rows, sets = [], []
    for offset, (item_id, source) in enumerate([("a", "wire"), ("x", "wire"), ("x", "evil"), ("b", "wire")]):
        payload = json.dumps({"id": item_id, "source": source, "title": "t", "text": "Some text"}).encode()
        record = SourceRecord("news", 0, offset, 1_700_000_000_000, None, payload)
        item = classify(record, 100_000)
        assert isinstance(item, NewsItem)
        rows.append(ScoredRow(record, item, "kw", "sentiment", "kw-1", Prediction("positive", 0.9, {}), now))
        sets.append(EntityRow(record, item, "kw-1", "positive", (), now))
    refused = ClickHouseSink(store, None).write_batch(rows, sets, [])
    assert sorted(b.record.offset for b in refused) == [1, 2]
    assert {b.kind for b in refused} == {"store_rejected"} and refused[0].error.startswith("items: Code: 469")
    for table in ("items", "scored", "entities"):
        assert sorted(r[0] for r in store.rows(f"SELECT id FROM {db}.{table} FINAL")) == ["a", "b"], table


def dead_letter(offset: int, ts_ms: int) -> BadRecord:
    return BadRecord(SourceRecord("news", 0, offset, ts_ms, None, b"{oops"), "invalid_json", "not JSON")


def test_dead_letters_spanning_more_months_than_one_insert_may_write_all_land(store: Store) -> None:
    start = dt.datetime(2010, 1, 15, tzinfo=dt.UTC)
    bad = [dead_letter(i, int((start + dt.timedelta(days=31 * i)).timestamp() * 1000)) for i in range(150)]
    refused = ClickHouseSink(store, None).write_batch([], [], bad)  # 150 monthly partitions: code 252 first
    assert refused == []
    assert store.scalar(f"SELECT count() FROM {store.database}.dead_letters FINAL") == 150


def test_an_outage_is_not_mistaken_for_a_refusal(store: Store) -> None:
    db = store.database
    sink = ClickHouseSink(store, None)
    store.command(f"DETACH TABLE {db}.dead_letters")
    try:
        with pytest.raises(StoreError) as caught:
            sink.write_batch([], [], [dead_letter(1, 1_700_000_000_000)])
        assert caught.value.code == 60  # UNKNOWN_TABLE: raised for the loop to retry, nothing dead-lettered
    finally:
        store.command(f"ATTACH TABLE {db}.dead_letters")
    assert sink.write_batch([], [], [dead_letter(1, 1_700_000_000_000)]) == []
    assert store.scalar(f"SELECT count() FROM {db}.dead_letters") == 1


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(hostile_payloads, hostile_timestamps), min_size=1, max_size=8))
def test_hostile_messages_are_written_by_the_real_store(store: Store, messages: list[tuple[bytes, int | None]]) -> None:
    now = dt.datetime.now(dt.UTC)
    rows: list[ScoredRow] = []
    sets: list[EntityRow] = []
    bad: list[BadRecord] = []
    for offset, (payload, ts) in enumerate(messages):
        record = SourceRecord("news", 0, offset, ts, None, payload)
        verdict = classify(record, 100_000)
        if isinstance(verdict, NewsItem):
            rows.append(ScoredRow(record, verdict, "kw", "sentiment", "kw-1", Prediction("positive", 0.9, {}), now))
            text = verdict.model_text  # an entity cut anywhere in a hostile text, as a model could cut it
            found = Entity(text[:3], normalize_entity(text[:3]), "PER", 0, min(3, len(text)), 0.5)
            sets.append(EntityRow(record, verdict, "kw-1", "positive", (found,), now))
        else:
            bad.append(verdict)
    assert ClickHouseSink(store, None).write_batch(rows, sets, bad) == []  # nothing refused: every row encodes


# -- dead letters never block ---------------------------------------------------------------------


def test_a_message_too_large_for_the_dead_letter_topic_goes_as_a_prefix(
    kafka_bootstrap: str, topic_name: str, group_name: str, store: Store, store_settings: StoreSettings
) -> None:
    huge = json.dumps({"title": "t", "text": "x" * 10_000}).encode()
    produce(kafka_bootstrap, topic_name, [huge, news_item(1)])
    settings_ = consumer_settings(kafka_bootstrap, topic_name, group_name, store_settings,
                                  max_message_bytes=2000, dlq_max_bytes=3000)
    counts = run_pipeline(settings_, "kafka", scorers=[KeywordScorer()], idle_exit_s=3)
    assert counts.by_kind == {"too_large": 1} and counts.scored_items == 1
    [msg] = dlq_messages(kafka_bootstrap, topic_name + ".dlq")
    headers = dict(msg.headers)
    assert msg.key == b"0" and msg.value == huge[: 3000 - 1]
    assert headers["yuqing.truncated"] == b"true" and int(headers["yuqing.original.size"]) == len(huge)
    [(status, raw)] = store.rows(f"SELECT dlq_status, raw FROM {store.database}.dead_letters FINAL")
    assert status == "truncated" and raw.encode() == huge  # the store keeps the whole message


def test_a_dead_letter_topic_that_refuses_is_given_up_and_the_stream_goes_on(
    kafka_bootstrap: str, topic_name: str, group_name: str, store: Store, store_settings: StoreSettings
) -> None:
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    admin.create_topics([NewTopic(topic_name + ".dlq", 1, 1, topic_configs={"max.message.bytes": "1000"})])
    admin.close()
    big = json.dumps({"title": "t", "text": "y" * 1500}).encode()
    produce(kafka_bootstrap, topic_name, [news_item(0), big, *(news_item(i) for i in range(2, 30))])
    started = time.monotonic()
    counts = run_pipeline(consumer_settings(kafka_bootstrap, topic_name, group_name, store_settings,
                                            max_message_bytes=1200), "kafka", scorers=[KeywordScorer()], idle_exit_s=3)
    assert time.monotonic() - started < 60  # bounded: three tries, not a retry loop
    assert counts.dlq_failed == 1 and counts.by_kind == {"too_large": 1} and counts.scored_items == 29
    [(kind, status, error)] = store.rows(f"SELECT error_kind, dlq_status, dlq_error FROM {store.database}.dead_letters")
    assert (kind, status) == ("too_large", "failed") and "TooLarge" in error
    assert committed_total(kafka_bootstrap, group_name) == 30
