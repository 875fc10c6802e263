"""Scored rows for the alert and brief tests: demo-like traffic plus planted incidents.

Each item becomes two `scored` rows (sentiment and topic) of fixed model versions.  Traffic is
seeded, so a test sees the same data on every run.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Sequence
from typing import Any

from stream.core.schema import SCORED_COLUMNS
from stream.core.store import Store

SENTIMENT_VERSION = "sent-v1"
TOPIC_VERSION = "topic-v1"
SOURCES = ("weibo", "xinhua", "reuters", "zhihu")
TOPICS = ("财经", "科技", "体育", "娱乐", "社会")
LANG = {"weibo": "zh", "xinhua": "zh", "zhihu": "zh", "reuters": "en"}
_WORDS_ZH = ("市场", "发布", "会议", "球队", "电影", "城市", "政策", "公司", "数据", "天气")
_WORDS_EN = ("market", "launch", "meeting", "team", "film", "city", "policy", "company", "data", "weather")


def item_rows(
    item_id: str,
    published_at: dt.datetime,
    *,
    source: str = "weibo",
    topic: str = "社会",
    negative: bool = False,
    title: str = "",
    text: str = "",
    lang: str | None = None,
    sentiment_version: str = SENTIMENT_VERSION,
    topic_version: str = TOPIC_VERSION,
    scored_at: dt.datetime | None = None,
) -> list[list[Any]]:
    """The sentiment row and the topic row of one item, in SCORED_COLUMNS order."""
    scored_at = scored_at or published_at + dt.timedelta(seconds=5)
    neg_p = 0.9 if negative else 0.1
    common = {
        "id": item_id,
        "source": source,
        "url": f"https://news.example/{source}/{item_id}",
        "title": title or f"{item_id} {source}",
        "text": text or f"{topic} {item_id}",
        "lang": lang or LANG.get(source, "zh"),
        "published_at": published_at,
        "ingested_at": published_at + dt.timedelta(seconds=1),
        "kafka_topic": "news",
        "kafka_partition": 0,
        "kafka_offset": 0,
        "truncated": False,
        "scored_at": scored_at,
    }
    sentiment = {
        **common,
        "task": "sentiment",
        "model_name": "sentiment-test",
        "model_version": sentiment_version,
        "label": "negative" if negative else "positive",
        "score": max(neg_p, 1 - neg_p),
        "probs": {"negative": neg_p, "positive": 1 - neg_p},
    }
    topic_row = {
        **common,
        "task": "topic",
        "model_name": "topic-test",
        "model_version": topic_version,
        "label": topic,
        "score": 0.8,
        "probs": {topic: 0.8},
    }
    return [[row[c] for c in SCORED_COLUMNS] for row in (sentiment, topic_row)]


def demo_traffic(
    end: dt.datetime,
    hours: int = 26,
    per_hour: int = 150,
    negative_share: float = 0.25,
    seed: int = 7,
) -> list[list[Any]]:
    """Steady traffic over [end - hours, end): every source and topic, ~25% negative."""
    rng = random.Random(seed)
    rows: list[list[Any]] = []
    start = end - dt.timedelta(hours=hours)
    for hour in range(hours):
        count = int(per_hour * rng.uniform(0.9, 1.1))
        for n in range(count):
            source = rng.choice(SOURCES)
            lang = LANG[source]
            words = _WORDS_EN if lang == "en" else _WORDS_ZH
            published = start + dt.timedelta(hours=hour, seconds=rng.uniform(0, 3599))
            title = " ".join(rng.sample(words, 3)) if lang == "en" else "".join(rng.sample(words, 3))
            rows += item_rows(
                f"d{hour:03d}-{n:04d}",
                published,
                source=source,
                topic=rng.choice(TOPICS),
                negative=rng.random() < negative_share,
                title=title,
                text=title,
                lang=lang,
            )
    return rows


def negative_surge_plant(end: dt.datetime, topic: str = "社会", count: int = 50) -> list[list[Any]]:
    """`count` extra items of one topic in the last hour, nearly all negative, spread over sources
    (so no source alone turns negative, and the hour's volume stays within the normal range)."""
    rows: list[list[Any]] = []
    for n in range(count):
        rows += item_rows(
            f"surge-{n:03d}",
            end - dt.timedelta(minutes=50) + dt.timedelta(seconds=55 * n),
            source=SOURCES[n % len(SOURCES)],
            topic=topic,
            negative=n % 10 != 0,
            title=f"事故通报 {n}",
        )
    return rows


def volume_spike_plant(end: dt.datetime, source: str = "zhihu", count: int = 70) -> list[list[Any]]:
    """`count` extra items from one source in the last hour, ordinary topics and sentiment."""
    rows: list[list[Any]] = []
    for n in range(count):
        rows += item_rows(
            f"spike-{n:03d}",
            end - dt.timedelta(minutes=55) + dt.timedelta(seconds=40 * n),
            source=source,
            topic=TOPICS[n % len(TOPICS)],
            negative=n % 4 == 0,
            title=f"热议话题 {n}",
        )
    return rows


def insert(store: Store, rows: Sequence[Sequence[Any]]) -> None:
    store.insert("scored", rows, SCORED_COLUMNS)
