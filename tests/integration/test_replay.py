"""Replay a day out of a week under a new model version, beside the live group's offsets."""

from __future__ import annotations

import datetime as dt
import json
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
    assert report["common"] == 40


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
