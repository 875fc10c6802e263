"""The polling loop without Kafka: dedup state, conditional GET across polls, per-feed backoff.

The producer here is a list that acknowledges (or refuses) sends; Kafka itself is exercised in
tests/integration/test_ingest.py.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from stream.core.errors import ConfigError
from stream.feeds.config import FeedsFile, parse_feeds
from stream.feeds.fetch import Validators
from stream.feeds.ingest import Ingester, IngestMetrics
from stream.feeds.normalize import FeedItem
from stream.feeds.state import IngestState
from tests.feeds_fixtures import MALFORMED, Entry, FeedServer, rss, serve_feeds

PUB = dt.datetime(2026, 2, 27, 8, 0, tzinfo=dt.UTC)


class ListProducer:
    def __init__(self) -> None:
        self.sent: list[FeedItem] = []
        self.refuse_after: int | None = None  # acknowledge only this many, then fail

    def send_all(self, items: list[FeedItem]) -> tuple[list[FeedItem], str | None]:
        if self.refuse_after is None:
            self.sent.extend(items)
            return list(items), None
        acked = list(items[: self.refuse_after])
        self.sent.extend(acked)
        return acked, "KafkaTimeoutError: broker away"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def feed_server() -> Iterator[FeedServer]:
    with serve_feeds() as server:
        yield server


def _config(server: FeedServer, **extra: object) -> FeedsFile:
    return parse_feeds(
        {
            "interval": 60,
            "timeout": 0.5,
            "backoff_base": 10,
            "backoff_max": 100,
            "allow_private": True,  # the local feed server
            **extra,
            "feeds": [
                {"url": server.url("/good"), "source": "good"},
                {"url": server.url("/broken"), "source": "broken"},
            ],
        }
    )


def _ingester(server: FeedServer, tmp_path: Path, producer: ListProducer, clock: Clock) -> Ingester:
    state = IngestState(tmp_path / "state.sqlite")
    return Ingester(_config(server), producer, state, IngestMetrics(), clock=clock)


def test_dedup_across_polls_and_restarts(feed_server: FeedServer, tmp_path: Path) -> None:
    feed_server.set("/good", rss([Entry("1", "one", "x", PUB), Entry("2", "two", "y", PUB)]))
    feed_server.set("/broken", MALFORMED)
    producer, clock = ListProducer(), Clock()
    ing = _ingester(feed_server, tmp_path, producer, clock)
    first = ing.poll()
    assert first.total("produced") == 2 and first.failed == ["broken"]
    feed_server.set("/good", rss([Entry("3", "three", "z", PUB), Entry("1", "one", "x", PUB)]))
    second = ing.poll(ing.schedule)
    assert (second.total("produced"), second.total("duplicates")) == (1, 1)
    assert [i.title for i in producer.sent] == ["one", "two", "three"]
    assert ing.metrics.value("yuqing_ingest_skipped_duplicates", feed="good") == 1
    assert ing.metrics.value("yuqing_ingest_errors", feed="broken", kind="bad_xml") == 2
    ing.state.close()
    # A restart with the same state produces nothing again.
    again = _ingester(feed_server, tmp_path, producer, clock)
    assert again.poll().total("produced") == 0
    assert len(producer.sent) == 3
    again.state.close()


def test_validators_survive_restarts_and_304_touches(feed_server: FeedServer, tmp_path: Path) -> None:
    feed_server.set("/good", rss([Entry("1", "one", "x", PUB)]), etag='"a"')
    feed_server.set("/broken", "", status=500)
    producer, clock = ListProducer(), Clock()
    ing = _ingester(feed_server, tmp_path, producer, clock)
    ing.poll()
    ing.state.close()
    ing = _ingester(feed_server, tmp_path, producer, clock)
    summary = ing.poll()
    good = next(o for o in summary.outcomes if o.source == "good")
    assert good.outcome == "not_modified"
    assert feed_server.requests_for("/good")[-1].headers["if-none-match"] == '"a"'
    assert ing.metrics.value("yuqing_ingest_polls", feed="good", outcome="not_modified") == 1
    ing.state.close()


def test_failing_feed_backs_off_exponentially_while_others_keep_their_interval(
    feed_server: FeedServer, tmp_path: Path
) -> None:
    feed_server.set("/good", rss([Entry("1", "one", "x", PUB)]))
    feed_server.set("/broken", "", status=503)
    producer, clock = ListProducer(), Clock()
    ing = _ingester(feed_server, tmp_path, producer, clock)
    good, broken = ing.schedule
    delays = []
    for _ in range(6):
        ing.poll([broken])
        delays.append(broken.next_at - clock.now)
    # 10, 20, 40, 80, 100, 100 seconds, each within the ±10% jitter
    for got, want in zip(delays, [10, 20, 40, 80, 100, 100], strict=True):
        assert want * 0.9 <= got <= want * 1.1
    assert broken.failures == 6
    ing.poll([good])
    assert good.next_at - clock.now == 60 and good.failures == 0
    clock.now += 61
    assert ing.due() == [good]  # the broken feed waits out its backoff
    # Recovery resets the count.
    feed_server.set("/broken", rss([Entry("9", "back", "x", PUB)]))
    ing.poll([broken])
    assert broken.failures == 0
    ing.state.close()


def test_unacknowledged_items_are_not_recorded_and_the_feed_is_refetched(
    feed_server: FeedServer, tmp_path: Path
) -> None:
    feed_server.set("/good", rss([Entry(str(i), f"t{i}", "x", PUB + dt.timedelta(minutes=i)) for i in range(3)]),
                    etag='"v"')
    feed_server.set("/broken", MALFORMED)
    producer, clock = ListProducer(), Clock()
    producer.refuse_after = 1
    ing = _ingester(feed_server, tmp_path, producer, clock)
    good = ing.schedule[0]
    outcome = ing.poll([good]).outcomes[0]
    assert outcome.outcome == "error" and outcome.error_kind == "produce" and outcome.produced == 1
    assert ing.state.count() == 1
    assert ing.state.validators(good.feed.url) == Validators()  # no ETag kept: next GET is full
    producer.refuse_after = None
    outcome = ing.poll([good]).outcomes[0]
    assert (outcome.produced, outcome.duplicates) == (2, 1)
    assert "if-none-match" not in feed_server.requests_for("/good")[-1].headers
    assert [i.title for i in producer.sent] == ["t0", "t1", "t2"]  # oldest first
    ing.state.close()


def test_run_once_and_stop(feed_server: FeedServer, tmp_path: Path) -> None:
    feed_server.set("/good", rss([Entry("1", "one", "x", PUB)]))
    feed_server.set("/broken", MALFORMED)
    producer = ListProducer()
    ing = Ingester(_config(feed_server), producer, IngestState(tmp_path / "s.sqlite"))
    stop = threading.Event()
    summary = ing.run(stop, once=True)
    assert summary.line() == "polled 2 feed(s): 1 new item(s), 0 already produced, 0 not modified, failed: broken"
    stop.set()
    assert ing.run(stop).outcomes == []  # a set stop polls nothing
    ing.state.close()


def test_state_is_locked_to_one_process(tmp_path: Path) -> None:
    with IngestState(tmp_path / "s.sqlite"), pytest.raises(ConfigError, match="in use"):
        IngestState(tmp_path / "s.sqlite")


def test_prune_forgets_only_ids_unseen_for_long(tmp_path: Path) -> None:
    with IngestState(tmp_path / "s.sqlite") as state:
        state.record("f", ["old", "kept"], now=0)
        state.touch(["kept"], now=1000)
        state.record("g", ["other"], now=0)
        state.touch_feed("g", now=1000)
        assert state.prune(retention_s=500, now=1200) == 1
        assert state.known(["old", "kept", "other"]) == {"kept", "other"}


def test_a_trickling_feed_ends_by_its_deadline_while_the_others_keep_their_schedule(
    feed_server: FeedServer, tmp_path: Path
) -> None:
    """One server sends a byte every 50 ms (its body would take ~20 s); its feed has 0.8 s in all."""
    feed_server.set("/good", rss([Entry("1", "one", "x", PUB)]))
    feed_server.set("/trickle", rss([Entry("2", "two", "y" * 200, PUB)]), trickle=0.05)
    config = parse_feeds(
        {
            "interval": 0.2,
            "backoff_base": 0.3,
            "backoff_max": 0.3,
            "allow_private": True,
            "feeds": [
                {"url": feed_server.url("/good"), "source": "good"},
                {"url": feed_server.url("/trickle"), "source": "trickle", "timeout": 0.8},
            ],
        }
    )
    metrics, stop = IngestMetrics(), threading.Event()

    def ingest() -> None:  # SQLite wants the state used in the thread that opened it
        with IngestState(tmp_path / "s.sqlite") as state:
            Ingester(config, ListProducer(), state, metrics).run(stop)

    loop = threading.Thread(target=ingest)
    loop.start()
    try:
        deadline = time.monotonic() + 15
        while len(feed_server.requests_for("/trickle")) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        loop.join(timeout=10)
    assert not loop.is_alive()
    first, second, *_ = (r.at for r in feed_server.requests_for("/trickle"))
    # The first fetch ended at its deadline, then the backoff (0.3 s ±10%) passed: the next poll came.
    assert 0.8 + 0.27 <= second - first < 0.8 + 0.33 + 1.0
    assert metrics.value("yuqing_ingest_errors", feed="trickle", kind="timeout") >= 2
    # Meanwhile the good feed was polled every 0.2 s, not held up by the slow one.
    during = [r for r in feed_server.requests_for("/good") if first < r.at < first + 0.8]
    assert len(during) >= 2
    assert metrics.value("yuqing_ingest_polls", feed="good", outcome="ok") >= 4


def test_a_feed_on_a_private_address_is_refused_unless_allowed(feed_server: FeedServer, tmp_path: Path) -> None:
    feed_server.set("/good", rss([Entry("1", "one", "x", PUB)]))
    feeds = [
        {"url": feed_server.url("/good"), "source": "strict"},
        {"url": feed_server.url("/good", host="localhost"), "source": "local", "allow_private": ["127.0.0.0/8", "::1"]},
    ]
    producer = ListProducer()
    with IngestState(tmp_path / "s.sqlite") as state:
        ing = Ingester(parse_feeds({"feeds": feeds}), producer, state)
        summary = ing.run(threading.Event(), once=True)
    by_source = {o.source: o for o in summary.outcomes}
    assert by_source["strict"].error_kind == "blocked" and "127.0.0.1 is a loopback address" in str(
        by_source["strict"].error
    )
    assert by_source["local"].outcome == "ok" and [i.title for i in producer.sent] == ["one"]
    assert ing.metrics.value("yuqing_ingest_errors", feed="strict", kind="blocked") == 1
    assert len(feed_server.requests) == 1  # only the allowed feed reached the server
