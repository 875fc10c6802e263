"""Feeds -> `yuqing ingest` -> Kafka -> `yuqing run` -> store, end to end, with the real services."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest

from stream.core.settings import StoreSettings
from stream.core.store import Store
from tests.feeds_fixtures import Entry, FeedServer, atom, rss, serve_feeds
from tests.helpers import run_cli

pytestmark = pytest.mark.integration

NOW = dt.datetime(2026, 11, 27, 9, 0, tzinfo=dt.UTC)


@pytest.fixture
def feeds() -> Iterator[FeedServer]:
    with serve_feeds() as server:
        yield server


def test_feed_entries_reach_the_store_once(
    feeds: FeedServer,
    kafka_bootstrap: str,
    topic_name: str,
    group_name: str,
    tiny_packages: list[Path],
    tmp_path: Path,
) -> None:
    zh = [Entry(f"zh-{i}", f"央行公告第{i}号", f"<p>市场消息 {i}</p>", NOW - dt.timedelta(hours=i)) for i in range(4)]
    en = [
        Entry(
            f"urn:en:{i}",
            f"Factory news {i}",
            f"<b>Plant</b> update {i}",
            NOW - dt.timedelta(hours=i),
            link=f"https://news.example/en/{i}",
        )
        for i in range(3)
    ]
    feeds.set("/zh.xml", rss(zh, language="zh-cn"))
    feeds.set("/en.xml", atom(en, lang="en"))
    config = tmp_path / "feeds.toml"
    config.write_text(
        "allow_private = true\n\n"  # the local feed server
        f'[[feeds]]\nurl = "{feeds.url("/zh.xml")}"\nsource = "zh-wire"\n\n'
        f'[[feeds]]\nurl = "{feeds.url("/en.xml")}"\nsource = "en-wire"\n'
    )
    state = tmp_path / "state.sqlite"
    for _ in range(2):  # a second poll finds nothing new
        ingest = run_cli(
            "ingest",
            "--feeds",
            str(config),
            "--bootstrap",
            kafka_bootstrap,
            "--topic",
            topic_name,
            "--state",
            str(state),
            "--once",
        )
        assert ingest.returncode == 0, ingest.stderr
    dsn = f"chdb://{tmp_path / 'store'}"
    run = run_cli(
        "run",
        "--bootstrap",
        kafka_bootstrap,
        "--topic",
        topic_name,
        "--group",
        group_name,
        "--store",
        dsn,
        "--until-idle",
        "3",
        "--models",
        *map(str, tiny_packages),
    )
    assert run.returncode == 0, run.stderr
    with Store(StoreSettings(dsn=dsn)) as store:
        rows = store.rows(
            "SELECT s.source, s.lang, i.title, s.published_at FROM yuqing.scored AS s FINAL "
            "INNER JOIN (SELECT id, title FROM yuqing.items FINAL) AS i ON s.id = i.id "
            "WHERE s.task = 'sentiment' ORDER BY s.source, i.title"
        )
        per_task = dict(store.rows("SELECT task, uniqExact(id) FROM yuqing.scored FINAL GROUP BY task"))
    assert per_task == {"sentiment": 7, "topic": 7}
    assert [(s, lang) for s, lang, _, _ in rows] == [("en-wire", "en")] * 3 + [("zh-wire", "zh")] * 4
    published = {title: ts.replace(tzinfo=dt.UTC) for _, _, title, ts in rows}
    assert published["央行公告第2号"] == NOW - dt.timedelta(hours=2)
