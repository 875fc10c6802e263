"""The consumer against the real broker and chdb: kill -9, SIGTERM, bad input, store outage."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import pytest
from kafka import KafkaConsumer

from stream.consumer.app import run_pipeline
from stream.core.interfaces import Scorer
from stream.core.settings import KafkaSettings, Settings, StoreSettings
from stream.core.store import Store
from stream.kafka.admin import ensure_topic
from tests.helpers import committed_total, news_item, output_of, produce, start_consumer

pytestmark = pytest.mark.integration


def test_kill_9_three_times_loses_and_doubles_nothing(
    kafka_bootstrap: str, topic_name: str, group_name: str, tiny_multihead: Path, tiny_packages: list[Path],
    tmp_path: Path
) -> None:
    """A multi-head package (three heads, entities) beside a single-head one: items, scored and
    entities each hold exactly one row per key after the kills."""
    total = 20_000
    packages = [tiny_multihead, tiny_packages[0]]
    ensure_topic(KafkaSettings(bootstrap_servers=[kafka_bootstrap]), topic_name, partitions=4)
    produce(kafka_bootstrap, topic_name, (news_item(i) for i in range(total)))
    dsn = f"chdb://{tmp_path / 'store'}"

    kills = 0
    last_committed = -1
    while kills < 3:
        proc = start_consumer(kafka_bootstrap, topic_name, group_name, packages, dsn, "--batch-size", "500")
        # Kill once the group has committed more than before (mid-stream, after real writes).
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            done = committed_total(kafka_bootstrap, group_name)
            if done > last_committed + 1500 and done < total:
                time.sleep(0.3 * (kills + 1))  # land at different points of the batch cycle
                break
            time.sleep(0.5)
        assert proc.poll() is None, output_of(proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        kills += 1
        last_committed = committed_total(kafka_bootstrap, group_name)
        assert last_committed < total, "the consumer finished before it could be killed"

    final = start_consumer(kafka_bootstrap, topic_name, group_name, packages, dsn)
    final.wait(timeout=600)
    assert final.returncode == 0, output_of(final)
    assert committed_total(kafka_bootstrap, group_name) == total

    with Store(StoreSettings(dsn=dsn)) as store:
        per_head = store.rows(
            "SELECT model_version, task, count(), uniqExact(id) FROM yuqing.scored FINAL GROUP BY 1, 2 ORDER BY 1, 2"
        )
        raw = store.scalar("SELECT count() FROM yuqing.scored")
        items = store.rows("SELECT count(), uniqExact(id) FROM yuqing.items FINAL")
        raw_items = store.scalar("SELECT count() FROM yuqing.items")
        entity_sets = store.rows("SELECT model_version, count(), uniqExact(id) FROM yuqing.entities FINAL GROUP BY 1")
        orphans = store.scalar("SELECT count() FROM yuqing.scored FINAL WHERE id NOT IN (SELECT id FROM yuqing.items)")
    assert sorted(task for _, task, _, _ in per_head) == ["category", "risk", "sentiment", "sentiment"]
    for _version, _task, rows, ids in per_head:
        assert rows == ids == total  # every (id, model_version, head) exactly once, none missing
    assert items == [(total, total)] and orphans == 0  # every text once, every score with its text
    [(entity_version, sets, set_ids)] = entity_sets
    assert sets == set_ids == total and entity_version in {v for v, t, _, _ in per_head if t == "risk"}
    # The kills did cause re-deliveries (raw rows above 4 x total, items above total) that the reads collapse.
    assert raw >= 4 * total and raw_items >= total


def test_sigterm_finishes_the_batch_commits_and_exits_zero(
    kafka_bootstrap: str, topic_name: str, group_name: str, tiny_packages: list[Path], tmp_path: Path
) -> None:
    ensure_topic(KafkaSettings(bootstrap_servers=[kafka_bootstrap]), topic_name, partitions=2)
    produce(kafka_bootstrap, topic_name, (news_item(i) for i in range(3000)))
    dsn = f"chdb://{tmp_path / 'store'}"
    proc = start_consumer(kafka_bootstrap, topic_name, group_name, tiny_packages, dsn, "--batch-size", "200")
    deadline = time.monotonic() + 120
    while committed_total(kafka_bootstrap, group_name) == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    assert proc.returncode == 0, output_of(proc)
    committed = committed_total(kafka_bootstrap, group_name)
    assert committed > 0
    with Store(StoreSettings(dsn=dsn)) as store:
        stored = store.scalar("SELECT uniqExact(id) FROM yuqing.scored FINAL")
        texts = store.scalar("SELECT count() FROM yuqing.items FINAL")
    # Everything read was written and committed before exit: the store holds exactly what was committed.
    assert stored == texts == committed


BAD_INPUTS: list[tuple[bytes, str]] = [
    (b"\xff\xfe\x00bad", "invalid_utf8"),
    (b"{oops", "invalid_json"),
    (b'"just a string"', "not_object"),
    (json.dumps({"title": ["a"], "text": "x"}).encode(), "bad_field"),
    (json.dumps({"title": "", "text": "  "}).encode(), "no_text"),
    (json.dumps({"title": "t", "text": "x" * 3000}).encode(), "too_large"),
    (json.dumps({"title": "t", "text": "x", "published_at": "31/12/2026"}).encode(), "bad_date"),
]


def test_bad_input_goes_to_dead_letters_and_the_stream_goes_on(
    kafka_bootstrap: str, topic_name: str, group_name: str, tiny_packages: list[Path], store_settings: StoreSettings
) -> None:
    payloads: list[bytes | dict[str, object]] = []
    for i in range(60):
        payloads.append(news_item(i))
        if i % 8 == 0 and i // 8 < len(BAD_INPUTS):
            payloads.append(BAD_INPUTS[i // 8][0])
    produce(kafka_bootstrap, topic_name, payloads)
    settings = Settings(
        kafka=KafkaSettings(
            bootstrap_servers=[kafka_bootstrap], topics=[topic_name], group_id=group_name, max_message_bytes=2000
        ),
        store=store_settings,
    )
    counts = run_pipeline(settings, "kafka", scorers=_scorers(tiny_packages), idle_exit_s=3)
    assert counts.scored_items == 60
    assert counts.dead_lettered == len(BAD_INPUTS)
    assert counts.by_kind == {kind: 1 for _, kind in BAD_INPUTS}

    with Store(store_settings) as store:
        db = store_settings.database
        assert store.scalar(f"SELECT uniqExact(id) FROM {db}.scored FINAL") == 60
        letters = store.rows(f"SELECT error_kind, raw, kafka_offset FROM {db}.dead_letters FINAL ORDER BY kafka_offset")
    assert sorted(k for k, _, _ in letters) == sorted(k for _, k in BAD_INPUTS)
    assert {bytes(r) if isinstance(r, bytes) else r.encode("utf-8", "surrogateescape") for _, r, _ in letters} >= {
        p for p, k in BAD_INPUTS if k != "invalid_utf8"
    }

    dlq = KafkaConsumer(
        topic_name + ".dlq", bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest", consumer_timeout_ms=5000
    )
    messages = list(dlq)
    dlq.close()
    assert len(messages) == len(BAD_INPUTS)
    by_kind = {dict(m.headers)["yuqing.error.kind"].decode(): m for m in messages}
    assert set(by_kind) == {k for _, k in BAD_INPUTS}
    for payload, kind in BAD_INPUTS:
        msg = by_kind[kind]
        assert msg.value == payload  # the original bytes, untouched
        headers = dict(msg.headers)
        assert headers["yuqing.source.topic"].decode() == topic_name
        assert int(headers["yuqing.source.offset"]) >= 0 and headers["yuqing.error"]


def _scorers(packages: list[Path]) -> list[Scorer]:
    from stream.core.scorer import OnnxScorer

    return [OnnxScorer.open(p, device="cpu") for p in packages]


def test_store_outage_pauses_and_loses_nothing(
    kafka_bootstrap: str, topic_name: str, group_name: str, tiny_packages: list[Path], store_settings: StoreSettings
) -> None:
    total = 3000
    ensure_topic(KafkaSettings(bootstrap_servers=[kafka_bootstrap]), topic_name, partitions=2)
    produce(kafka_bootstrap, topic_name, (news_item(i) for i in range(total)))
    settings = Settings(
        kafka=KafkaSettings(bootstrap_servers=[kafka_bootstrap], topics=[topic_name], group_id=group_name),
        store=store_settings,
        batch={"max_items": 100, "max_wait_ms": 100},  # type: ignore[arg-type]
    )
    db = store_settings.database
    admin = Store(store_settings)
    admin.init_schema()
    result: dict[str, object] = {}

    def consume() -> None:
        result["counts"] = run_pipeline(settings, "kafka", scorers=_scorers(tiny_packages), idle_exit_s=4)

    worker = threading.Thread(target=consume, daemon=True)  # a stuck consumer fails the test, not the session
    worker.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not admin.scalar(f"SELECT count() FROM {db}.scored"):
        time.sleep(0.05)
    admin.command(f"DETACH TABLE {db}.scored")  # the store refuses every insert into scored now
    committed_during_outage = committed_total(kafka_bootstrap, group_name)
    time.sleep(3)
    assert committed_total(kafka_bootstrap, group_name) == committed_during_outage  # nothing committed
    admin.command(f"ATTACH TABLE {db}.scored")
    worker.join(120)
    assert not worker.is_alive()
    counts = result["counts"]
    assert counts.store_retries >= 1  # type: ignore[attr-defined]
    assert admin.scalar(f"SELECT uniqExact(id) FROM {db}.scored FINAL") == total
    admin.close()
    assert committed_total(kafka_bootstrap, group_name) == total
