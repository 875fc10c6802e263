"""`yuqing ingest` against the real broker, with feeds served from 127.0.0.1.

Good RSS (Chinese) and Atom (English) feeds, one that grows between polls, one that answers 304
to its ETag, and three broken ones (HTTP 500, malformed XML, one that trickles past its deadline).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from kafka import KafkaConsumer

from stream.core.settings import KafkaSettings
from stream.feeds.config import FeedsFile, parse_feeds
from stream.feeds.ingest import Ingester
from stream.feeds.produce import ItemProducer
from stream.feeds.state import IngestState
from tests.feeds_fixtures import MALFORMED, Entry, FeedServer, atom, rss, serve_feeds

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
YUQING = str(Path(sys.executable).parent / "yuqing")
T0 = dt.datetime(2026, 2, 27, 8, 0, tzinfo=dt.UTC)


def at(minutes: int) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


ZH = [
    Entry("xh-1", "央行宣布降准", "<p>中国人民银行宣布下调存款准备金率0.5个百分点。</p>", at(1), "https://n.example/zh/1"),
    Entry("xh-2", "新能源汽车销量创新高", "<p>一月销量同比增长<b>30%</b>。</p>", at(2), "https://n.example/zh/2"),
]
EN = [
    Entry("tag:ex.org,2026:1", "Markets rally", "<p>Stocks rose sharply.</p>", at(3), "https://ex.org/1"),
    Entry("tag:ex.org,2026:2", "Storm warning", "<p>Heavy rain expected.</p>", at(4), "https://ex.org/2"),
]
GROWING = [Entry(f"g-{i}", f"Update {i}", f"<p>Item number {i}</p>", at(10 + i)) for i in range(6)]
CACHED = [Entry("c-1", "缓存的条目", "<p>这个源支持 ETag。</p>", at(5))]


@pytest.fixture
def feed_server() -> Iterator[FeedServer]:
    with serve_feeds() as server:
        yield server


def serve_all(server: FeedServer, growing: int) -> None:
    server.set("/zh.rss", rss(ZH, language="zh-cn"))
    server.set("/en.atom", atom(EN), content_type="application/atom+xml")
    server.set("/growing.rss", rss(GROWING[:growing]))
    server.set("/cached.rss", rss(CACHED), etag='"cached-v1"')
    server.set("/500.rss", "internal error", status=500)
    server.set("/malformed.rss", MALFORMED)
    server.set("/slow.rss", rss(ZH), trickle=0.05)  # every read is quick, the whole body is not


def feeds_config(server: FeedServer) -> dict[str, Any]:
    names = ["zh", "en", "growing", "cached", "500", "malformed", "slow"]
    paths = ["/zh.rss", "/en.atom", "/growing.rss", "/cached.rss", "/500.rss", "/malformed.rss", "/slow.rss"]
    return {
        "interval": 0.5,
        "timeout": 0.7,
        "backoff_base": 0.5,
        "backoff_max": 2,
        "allow_private": True,  # the local feed server
        "feeds": [{"url": server.url(p), "source": n} for n, p in zip(names, paths, strict=True)],
    }


def write_toml(path: Path, data: dict[str, Any]) -> Path:
    lines = [f"{k} = {str(v).lower() if isinstance(v, bool) else v}" for k, v in data.items() if k != "feeds"]
    for feed in data["feeds"]:
        lines.append("[[feeds]]")
        lines.extend(f'{k} = "{v}"' for k, v in feed.items())
    path.write_text("\n".join(lines) + "\n")
    return path


def consume(bootstrap: str, topic: str, expected: int, timeout_s: float = 20.0) -> list[Any]:
    """Every message of the topic; waits until at least `expected` arrived, then 1 s for extras."""
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        consumer_timeout_ms=1000,
    )
    messages: list[Any] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            batch = list(consumer)  # stops after 1 s without messages
            messages.extend(batch)
            if len(messages) >= expected and not batch:
                break
    finally:
        consumer.close()
    return messages


def test_three_polls_produce_each_entry_once(
    feed_server: FeedServer, kafka_bootstrap: str, topic_name: str, tmp_path: Path
) -> None:
    serve_all(feed_server, growing=2)
    cfg: FeedsFile = parse_feeds(feeds_config(feed_server))
    producer = ItemProducer(KafkaSettings(bootstrap_servers=[kafka_bootstrap]), topic_name)
    state = IngestState(tmp_path / "state.sqlite")
    ingester = Ingester(cfg, producer, state)
    try:
        summaries = []
        for growing in (2, 4, 6):
            serve_all(feed_server, growing)
            summaries.append(ingester.poll(ingester.schedule))
    finally:
        ingester.close()
        producer.close()
        state.close()

    # Every good feed was read each time; the broken ones failed each time, by kind.
    for summary in summaries:
        assert sorted(summary.failed) == ["500", "malformed", "slow"]
    assert [s.total("produced") for s in summaries] == [2 + 2 + 2 + 1, 2, 2]
    cached = [o.outcome for s in summaries for o in s.outcomes if o.source == "cached"]
    assert cached == ["ok", "not_modified", "not_modified"]
    cached_requests = feed_server.requests_for("/cached.rss")
    assert "if-none-match" not in cached_requests[0].headers
    assert [r.headers["if-none-match"] for r in cached_requests[1:]] == ['"cached-v1"', '"cached-v1"']
    m = ingester.metrics
    assert m.value("yuqing_ingest_errors", feed="500", kind="http_status") == 3
    assert m.value("yuqing_ingest_errors", feed="malformed", kind="bad_xml") == 3
    assert m.value("yuqing_ingest_errors", feed="slow", kind="timeout") == 3
    assert m.value("yuqing_ingest_skipped_duplicates", feed="zh") == 4

    messages = consume(kafka_bootstrap, topic_name, expected=11)
    ids = Counter(json.loads(msg.value)["id"] for msg in messages)
    assert len(messages) == 11 and len(ids) == 11 and max(ids.values()) == 1
    by_title = {}
    for msg in messages:
        item = json.loads(msg.value.decode("utf-8"))
        assert msg.key.decode() == item["id"]
        assert set(item) == {"id", "source", "url", "title", "text", "lang", "published_at"}
        published = dt.datetime.fromisoformat(item["published_at"].replace("Z", "+00:00"))
        assert msg.timestamp == int(published.timestamp() * 1000)  # Kafka time = published time
        by_title[item["title"]] = item
    zh = by_title["央行宣布降准"]
    assert (zh["source"], zh["lang"], zh["published_at"]) == ("zh", "zh", "2026-02-27T08:01:00Z")
    assert zh["text"] == "中国人民银行宣布下调存款准备金率0.5个百分点。"
    assert by_title["Markets rally"]["lang"] == "en" and by_title["Markets rally"]["url"] == "https://ex.org/1"
    assert by_title["缓存的条目"]["lang"] == "zh"  # no language in the feed: detected
    assert {f"Update {i}" for i in range(6)} <= set(by_title)


def _run_once(feeds: Path, bootstrap: str, topic: str, state: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [YUQING, "ingest", "--feeds", str(feeds), "--bootstrap", bootstrap, "--topic", topic,
         "--state", str(state), "--once"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )


def test_cli_once_then_restart_with_the_same_state_produces_nothing_new(
    feed_server: FeedServer, kafka_bootstrap: str, topic_name: str, tmp_path: Path
) -> None:
    serve_all(feed_server, growing=3)
    feeds = write_toml(tmp_path / "feeds.toml", feeds_config(feed_server))
    state = tmp_path / "state.sqlite"
    first = _run_once(feeds, kafka_bootstrap, topic_name, state)
    assert first.returncode == 0, first.stderr
    assert "polled 7 feed(s): 8 new item(s), 0 already produced, 0 not modified, failed: " in first.stdout
    assert sorted(first.stdout.strip().split("failed: ")[1].split(", ")) == ["500", "malformed", "slow"]
    second = _run_once(feeds, kafka_bootstrap, topic_name, state)
    assert second.returncode == 0, second.stderr
    assert "0 new item(s), 7 already produced, 1 not modified" in second.stdout
    messages = consume(kafka_bootstrap, topic_name, expected=8)
    assert len(messages) == 8 and len({m.key for m in messages}) == 8


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_sigterm_finishes_the_poll_and_exits_zero(
    feed_server: FeedServer, kafka_bootstrap: str, topic_name: str, tmp_path: Path
) -> None:
    serve_all(feed_server, growing=1)
    feeds = write_toml(tmp_path / "feeds.toml", feeds_config(feed_server))
    port = _free_port()
    proc = subprocess.Popen(
        [YUQING, "ingest", "--feeds", str(feeds), "--bootstrap", kafka_bootstrap, "--topic", topic_name,
         "--state", str(tmp_path / "state.sqlite"), "--metrics-port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )
    try:
        assert len(consume(kafka_bootstrap, topic_name, expected=6)) == 6
        serve_all(feed_server, growing=3)  # picked up by a later poll (interval 0.5 s)
        assert len(consume(kafka_bootstrap, topic_name, expected=8)) == 8
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        assert 'yuqing_ingest_produced_total{feed="growing"} 3.0' in metrics
        assert 'yuqing_ingest_errors_total{feed="slow",kind="timeout"}' in metrics
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    assert "SIGTERM: finishing the current poll" in stderr
    assert "Traceback" not in stderr


def test_unreachable_broker_is_exit_code_5(feed_server: FeedServer, topic_name: str, tmp_path: Path) -> None:
    serve_all(feed_server, growing=1)
    feeds = write_toml(tmp_path / "feeds.toml", feeds_config(feed_server))
    result = _run_once(feeds, f"127.0.0.1:{_free_port()}", topic_name, tmp_path / "state.sqlite")
    assert result.returncode == 5
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: no Kafka broker answered at 127.0.0.1:")
    assert "Traceback" not in result.stderr
    assert not feed_server.requests  # nothing fetched before Kafka was there


def test_bad_feeds_file_is_exit_code_3(tmp_path: Path, kafka_bootstrap: str) -> None:
    feeds = tmp_path / "feeds.toml"
    feeds.write_text('[[feeds]]\nurl = "http://127.0.0.1:1/x"\nsource = "x"\nlanguage = "en"\n')
    result = _run_once(feeds, kafka_bootstrap, "unused", tmp_path / "state.sqlite")
    assert result.returncode == 3
    assert "unknown key 'feeds.0.language'" in result.stderr
    assert os.path.exists(tmp_path / "state.sqlite") is False


def test_sigterm_during_a_fetch_lets_that_poll_finish(
    feed_server: FeedServer, kafka_bootstrap: str, topic_name: str, tmp_path: Path
) -> None:
    feed_server.set("/slow-ok.rss", rss(ZH), delay=1.5)  # slow but within its timeout
    config = {
        "timeout": 10,
        "allow_private": True,
        "feeds": [{"url": feed_server.url("/slow-ok.rss"), "source": "slow-ok"}],
    }
    feeds = write_toml(tmp_path / "feeds.toml", config)
    state = tmp_path / "state.sqlite"
    proc = subprocess.Popen(
        [YUQING, "ingest", "--feeds", str(feeds), "--bootstrap", kafka_bootstrap, "--topic", topic_name,
         "--state", str(state)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 30
        while not feed_server.requests_for("/slow-ok.rss") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert feed_server.requests_for("/slow-ok.rss"), "ingest never fetched the feed"
        proc.send_signal(signal.SIGTERM)  # the response is still 1.5 s away
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    assert len(feed_server.requests_for("/slow-ok.rss")) == 1
    assert len(consume(kafka_bootstrap, topic_name, expected=2)) == 2
    with IngestState(state) as saved:
        assert saved.count() == 2  # produced and recorded before the exit
