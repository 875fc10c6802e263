"""Replay a day out of a week under a new model version, beside the live group's offsets."""

from __future__ import annotations

import datetime as dt
import json
import random
import subprocess
from pathlib import Path

import pytest

from stream.core.settings import KafkaSettings, StoreSettings
from stream.core.store import Store
from stream.kafka.admin import ensure_topic, group_lag
from tests.helpers import news_item, produce, run_cli

pytestmark = pytest.mark.integration

WEEK_START = dt.datetime(2026, 11, 16, tzinfo=dt.UTC)


@pytest.fixture(scope="module")
def sentiment_v2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from export.package import ExportOptions, build_package
    from tests.tiny_models import save_tiny_classifier

    root = tmp_path_factory.mktemp("v2")
    ckpt = save_tiny_classifier(root / "ckpt", ("negative", "positive"), seed=11)
    pkg = root / "pkg"
    build_package(ExportOptions(model_dir=ckpt, out=pkg, name="tiny-sentiment", task="sentiment", progress=False))
    return pkg


def committed(bootstrap: str, group: str) -> list[tuple[str, int, int, int]]:
    return group_lag(KafkaSettings(bootstrap_servers=[bootstrap]), group)


def test_replay_one_day_with_a_new_version(
    kafka_bootstrap: str,
    topic_name: str,
    group_name: str,
    tiny_packages: list[Path],
    sentiment_v2: Path,
    tmp_path: Path,
) -> None:
    ensure_topic(KafkaSettings(bootstrap_servers=[kafka_bootstrap]), topic_name, partitions=3)
    # 7 days x 40 items, timestamps spread evenly; the Kafka timestamp is the publication time.
    stamps = [WEEK_START + dt.timedelta(hours=24 * 7 * i / 280) for i in range(280)]
    items = [news_item(i, published=ts) for i, ts in enumerate(stamps)]
    produce(kafka_bootstrap, topic_name, items, timestamps_ms=[int(ts.timestamp() * 1000) for ts in stamps])
    dsn = f"chdb://{tmp_path / 'store'}"
    sentiment_v1 = tiny_packages[0]

    live = run_cli(
        "run",
        "--bootstrap",
        kafka_bootstrap,
        "--topic",
        topic_name,
        "--group",
        group_name,
        "--store",
        dsn,
        "--device",
        "cpu",
        "--until-idle",
        "3",
        "--models",
        str(sentiment_v1),
    )
    assert live.returncode == 0, live.stderr
    live_offsets = committed(kafka_bootstrap, group_name)
    assert sum(c for _, _, c, _ in live_offsets) == 280

    day_from, day_to = "2026-11-18T00:00:00Z", "2026-11-18T23:59:59.999Z"
    for _ in range(2):  # the same replay twice still leaves one row per (id, model_version)
        replay = run_cli(
            "replay",
            "--bootstrap",
            kafka_bootstrap,
            "--topic",
            topic_name,
            "--from",
            day_from,
            "--to",
            day_to,
            "--models",
            str(sentiment_v2),
            "--store",
            dsn,
            "--no-progress",
        )
        assert replay.returncode == 0, replay.stderr
        assert "read 40" in replay.stderr
    assert committed(kafka_bootstrap, group_name) == live_offsets  # the live group never moved

    expected = {
        f"item-{i}"
        for i, ts in enumerate(stamps)
        if dt.datetime(2026, 11, 18, tzinfo=dt.UTC) <= ts < dt.datetime(2026, 11, 19, tzinfo=dt.UTC)
    }
    with Store(StoreSettings(dsn=dsn)) as store:
        versions = dict(store.rows("SELECT model_version, count() FROM yuqing.scored FINAL GROUP BY 1"))
        v2 = json.loads((sentiment_v2 / "manifest.json").read_text())["version"]
        v1 = json.loads((sentiment_v1 / "manifest.json").read_text())["version"]
        replayed = {
            r[0] for r in store.rows("SELECT id FROM yuqing.scored FINAL WHERE model_version = {v:String}", {"v": v2})
        }
    assert versions == {v1: 280, v2: 40}
    assert replayed == expected

    diff = run_cli("diff", "--model-version", v1, "--model-version", v2, "--store", dsn, "--json", "-")
    assert diff.returncode == 0, diff.stderr
    report = json.loads(diff.stdout)
    assert report["heads"]["sentiment"]["common"] == 40


def test_replay_reports_the_part_past_retention(
    kafka_bootstrap: str, topic_name: str, tiny_packages: list[Path], tmp_path: Path
) -> None:
    from kafka import KafkaAdminClient, TopicPartition

    ensure_topic(KafkaSettings(bootstrap_servers=[kafka_bootstrap]), topic_name, partitions=1)
    stamps = [WEEK_START + dt.timedelta(hours=i) for i in range(48)]
    produce(
        kafka_bootstrap,
        topic_name,
        [news_item(i) for i in range(48)],
        timestamps_ms=[int(ts.timestamp() * 1000) for ts in stamps],
    )
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    admin.delete_records({TopicPartition(topic_name, 0): 30})  # retention's work
    admin.close()
    replay = run_cli(
        "replay",
        "--bootstrap",
        kafka_bootstrap,
        "--topic",
        topic_name,
        "--from",
        "2026-11-16",
        "--to",
        "2026-11-17T12:00:00Z",
        "--models",
        str(tiny_packages[0]),
        "--store",
        f"chdb://{tmp_path / 'store'}",
        "--no-progress",
    )
    assert replay.returncode == 0, replay.stderr
    assert "read 7" in replay.stderr  # offsets 30..36 = 06:00..12:00 on the 17th
    assert "past retention" in replay.stderr and "2026-11-17T06:00:00" in replay.stderr


DAY_MS = 86_400_000
DAY_FROM = int(dt.datetime(2026, 11, 18, tzinfo=dt.UTC).timestamp() * 1000)
DAY_TO = DAY_FROM + DAY_MS - 1  # --to is inclusive


def replay_cli(bootstrap: str, topic: str, package: Path, dsn: str, *extra: str) -> subprocess.CompletedProcess[str]:
    # A replay that never ends is the failure mode under test: a timeout turns it into an error.
    return run_cli(
        "replay",
        "--bootstrap",
        bootstrap,
        "--topic",
        topic,
        "--from",
        "2026-11-18T00:00:00Z",
        "--to",
        "2026-11-18T23:59:59.999Z",
        "--models",
        str(package),
        "--store",
        dsn,
        *extra,
        timeout=120,
    )


def stored_ids(dsn: str) -> set[str]:
    out = run_cli("sql", "SELECT id FROM yuqing.scored FINAL", "--store", dsn, "--format", "json")
    assert out.returncode == 0, out.stderr
    return {row["id"] for row in json.loads(out.stdout)}


def first_offset(stamps: list[int], at_or_after: int) -> int:
    """What the broker's offsets_for_times answers for a partition written in this order."""
    return next((i for i, ts in enumerate(stamps) if ts >= at_or_after), len(stamps))


def out_of_order_partition() -> tuple[list[int], set[int]]:
    """50 week-old messages, then 1,000 stamped inside the day, each after one stamped outside it
    and up to 2 days away (alternately later and earlier), so stamps go back and forth by days."""
    rng = random.Random(7)
    stamps = [DAY_FROM - 10 * DAY_MS + i * 60_000 for i in range(50)]
    inside = set()
    for k in range(1000):
        ts = DAY_FROM + k * DAY_MS // 1000
        jump = DAY_MS + rng.randrange(DAY_MS)
        stamps.append(ts + jump if k % 2 == 0 else ts - jump)
        inside.add(len(stamps))
        stamps.append(ts)
    return stamps, inside


def test_replay_of_an_out_of_order_partition(
    kafka_bootstrap: str, topic_name: str, group_name: str, tiny_packages: list[Path], tmp_path: Path
) -> None:
    from kafka import KafkaConsumer, TopicPartition
    from kafka.structs import OffsetAndMetadata

    ensure_topic(KafkaSettings(bootstrap_servers=[kafka_bootstrap]), topic_name, partitions=1)
    stamps, inside = out_of_order_partition()
    assert all(DAY_FROM <= stamps[i] <= DAY_TO for i in inside)
    assert sum(DAY_FROM <= ts <= DAY_TO for ts in stamps) == 1000
    produce(kafka_bootstrap, topic_name, [news_item(i) for i in range(len(stamps))], timestamps_ms=stamps)
    total = len(stamps)
    live = KafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=group_name, enable_auto_commit=False)
    live.assign([TopicPartition(topic_name, 0)])
    live.commit({TopicPartition(topic_name, 0): OffsetAndMetadata(123, "", -1)})
    live.close()
    live_offsets = committed(kafka_bootstrap, group_name)
    package = tiny_packages[0]

    # Default: bounded with no grace.  The first message stamped at or after --from is already
    # after --to, so nothing is scanned -- and the summary says so instead of "no messages".
    bare = replay_cli(kafka_bootstrap, topic_name, package, f"chdb://{tmp_path / 'bare'}", "--no-progress")
    assert bare.returncode == 0, bare.stderr
    assert "scan bounded by --grace 0s" in bare.stderr
    assert "offsets 50..50 scanned (0), 0 in range, 0 outside" in bare.stderr
    assert f"offsets 50..{total} not scanned ({total - 50})" in bare.stderr
    assert "--scan all reads them" in bare.stderr

    # --grace 1d: a bounded scan whose account is exact, checked against the partition's own stamps.
    start, stop = first_offset(stamps, DAY_FROM - DAY_MS), first_offset(stamps, DAY_TO + DAY_MS + 1)
    covered = {i for i in inside if start <= i < stop}
    assert 0 < len(covered) < 1000  # the grace is too short for this partition: a partial scan
    graced_dsn = f"chdb://{tmp_path / 'graced'}"
    graced = replay_cli(kafka_bootstrap, topic_name, package, graced_dsn, "--grace", "1d", "--no-progress")
    assert graced.returncode == 0, graced.stderr
    assert "scan bounded by --grace 1d" in graced.stderr
    assert f"offsets {start}..{stop} scanned ({stop - start}), {len(covered)} in range, " in graced.stderr
    assert f"{stop - start - len(covered)} outside" in graced.stderr
    assert f"offsets {stop}..{total} not scanned" in graced.stderr
    assert "more than --grace 1d" in graced.stderr and "likely missed; rerun with --scan all" in graced.stderr
    assert stored_ids(graced_dsn) == {f"item-{i}" for i in covered}

    # --scan all: from the beginning to the end offset; every message of the day, nothing else.
    # Progress bars on: they must not get in the way.
    full_dsn = f"chdb://{tmp_path / 'full'}"
    full = replay_cli(kafka_bootstrap, topic_name, package, full_dsn, "--scan", "all")
    assert full.returncode == 0, full.stderr
    assert "read 1000," in full.stderr
    assert "scan to end: from each partition's beginning" in full.stderr
    assert f"offsets 0..{total} scanned ({total}), 1000 in range, {total - 1000} outside" in full.stderr
    assert "not scanned" not in full.stderr and "warning" not in full.stderr
    assert stored_ids(full_dsn) == {f"item-{i}" for i in inside}

    # --scan-to-end --grace 2d starts at the first offset stamped at or after --from - 2d.
    to_end = replay_cli(
        kafka_bootstrap, topic_name, package, full_dsn, "--scan-to-end", "--grace", "2d", "--no-progress"
    )
    assert to_end.returncode == 0, to_end.stderr
    assert "scan to end: from --from - 2d" in to_end.stderr
    assert f"offsets 50..{total} scanned ({total - 50}), 1000 in range, {total - 1050} outside" in to_end.stderr

    assert committed(kafka_bootstrap, group_name) == live_offsets  # the live group never moved


def test_replay_ends_past_transaction_markers(
    kafka_bootstrap: str, topic_name: str, tiny_packages: list[Path], tmp_path: Path
) -> None:
    """Every partition's end offset points past a control record, which poll() never returns:
    a committed transaction's marker, an aborted one's, and a partition holding nothing else."""
    from kafka import KafkaProducer

    ensure_topic(KafkaSettings(bootstrap_servers=[kafka_bootstrap]), topic_name, partitions=3)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, transactional_id=f"{topic_name}-tx")
    producer.init_transactions()

    def transaction(ids: range, partition: int, commit: bool) -> None:
        producer.begin_transaction()
        for i in ids:
            value = json.dumps(news_item(i)).encode()
            producer.send(topic_name, value=value, partition=partition, timestamp_ms=DAY_FROM + i * 60_000)
        producer.flush()
        producer.commit_transaction() if commit else producer.abort_transaction()

    transaction(range(0, 10), 0, commit=True)
    transaction(range(10, 20), 0, commit=True)
    transaction(range(20, 30), 1, commit=True)
    transaction(range(30, 35), 1, commit=False)  # partition 1 ends with an abort marker
    transaction(range(35, 40), 2, commit=False)  # partition 2 holds nothing to return
    producer.close()
    committed_ids = {f"item-{i}" for i in range(30)}

    for mode, extra in (("bounded", ("--grace", "1h")), ("to end", ("--scan", "all"))):
        dsn = f"chdb://{tmp_path / mode.replace(' ', '-')}"
        replay = replay_cli(kafka_bootstrap, topic_name, tiny_packages[0], dsn, "--no-progress", *extra)
        assert replay.returncode == 0, (mode, replay.stderr)
        assert "read 30," in replay.stderr
        assert "[0]: offsets 0..22 scanned (22), 20 in range, 0 outside" in replay.stderr  # 20 + 2 markers
        assert "[1]: offsets 0..17 scanned (17), 10 in range, 0 outside" in replay.stderr
        assert "[2]: offsets 0..6 scanned (6), 0 in range, 0 outside" in replay.stderr
        assert stored_ids(dsn) == committed_ids  # aborted messages are not replayed
