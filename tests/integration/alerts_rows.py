"""Store rows for the alert and brief tests: demo-like traffic plus planted incidents.

Each item becomes its `items` row (title, url, text), `scored` rows (sentiment, risk and, when
given, category) of fixed model versions and, when given entities, its `entities` row.  Rows are
(table, values) pairs that `insert` groups by table.  Traffic is seeded, so a test sees the same
data on every run.
"""

from __future__ import annotations

import datetime as dt
import random
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from stream.core.items import normalize_entity
from stream.core.schema import ENTITY_COLUMNS, ITEM_COLUMNS, SCORED_COLUMNS
from stream.core.store import Store

SENTIMENT_VERSION = "sent-v1"
RISK_VERSION = "risk-v1"
SOURCES = ("weibo", "xinhua", "reuters", "zhihu")
RISKS = ("财经", "科技", "体育", "娱乐", "社会")
LANG = {"weibo": "zh", "xinhua": "zh", "zhihu": "zh", "reuters": "en"}
_WORDS_ZH = ("市场", "发布", "会议", "球队", "电影", "城市", "政策", "公司", "数据", "天气")
_WORDS_EN = ("market", "launch", "meeting", "team", "film", "city", "policy", "company", "data", "weather")
COLUMNS = {"items": ITEM_COLUMNS, "scored": SCORED_COLUMNS, "entities": ENTITY_COLUMNS}
Row = tuple[str, list[Any]]


def item_rows(
    item_id: str,
    published_at: dt.datetime,
    *,
    source: str = "weibo",
    risk: str = "社会",
    negative: bool = False,
    sentiment: str | None = None,
    probs: dict[str, float] | None = None,
    category: str | None = None,
    entities: Sequence[tuple[str, str]] | None = None,
    title: str = "",
    text: str = "",
    lang: str | None = None,
    sentiment_version: str = SENTIMENT_VERSION,
    risk_version: str = RISK_VERSION,
    scored_at: dt.datetime | None = None,
) -> list[Row]:
    """One item's rows: `sentiment` (default negative or positive, as `negative` says) with
    `probs`, risk, category when given, and its entities ((text, type) pairs) when given."""
    scored_at = scored_at or published_at + dt.timedelta(seconds=5)
    label = sentiment or ("negative" if negative else "positive")
    if probs is None:
        probs = {"negative": 0.9, "positive": 0.1} if label == "negative" else {label: 0.9, "negative": 0.1}
    lang = lang or LANG.get(source, "zh")
    title = title or f"{item_id} {source}"
    kafka = {"kafka_topic": "news", "kafka_partition": 0, "kafka_offset": 0}
    common = {
        "id": item_id,
        "source": source,
        "lang": lang,
        "published_at": published_at,
        "ingested_at": published_at + dt.timedelta(seconds=1),
        **kafka,
        "truncated": False,
        "scored_at": scored_at,
    }
    item = {
        **common,
        "url": f"https://news.example/{source}/{item_id}",
        "title": title,
        "text": text or f"{risk} {item_id}",
        "stored_at": scored_at,
    }
    heads = [
        ("sentiment", sentiment_version, label, probs.get(label, 0.9), probs),
        ("risk", risk_version, risk, 0.8, {risk: 0.8}),
    ]
    if category is not None:
        heads.append(("category", sentiment_version, category, 0.7, {category: 0.7}))
    rows: list[Row] = [("items", [item[c] for c in ITEM_COLUMNS])]
    for task, version, head_label, score, head_probs in heads:
        row = {**common, "task": task, "model_name": f"{task}-test", "model_version": version,
               "label": head_label, "score": score, "probs": head_probs}
        rows.append(("scored", [row[c] for c in SCORED_COLUMNS]))
    if entities is not None:
        # Offsets into the title, as the consumer's are into the item's model text.
        starts = [max(title.find(name), 0) for name, _ in entities]
        found = {
            **common,
            "model_version": sentiment_version,
            "sentiment": label,
            "entity_text": [name for name, _ in entities],
            "entity_normalized": [normalize_entity(name) for name, _ in entities],
            "entity_type": [kind for _, kind in entities],
            "entity_start": starts,
            "entity_end": [s + len(name) for s, (name, _) in zip(starts, entities, strict=True)],
            "entity_score": [0.9] * len(entities),
        }
        rows.append(("entities", [found[c] for c in ENTITY_COLUMNS]))
    return rows


def demo_traffic(
    end: dt.datetime,
    hours: int = 26,
    per_hour: int = 150,
    negative_share: float = 0.25,
    seed: int = 7,
) -> list[Row]:
    """Steady traffic over [end - hours, end): every source and topic, ~25% negative."""
    rng = random.Random(seed)
    rows: list[Row] = []
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
                risk=rng.choice(RISKS),
                negative=rng.random() < negative_share,
                title=title,
                text=title,
                lang=lang,
            )
    return rows


def negative_surge_plant(end: dt.datetime, risk: str = "社会", count: int = 50) -> list[Row]:
    """`count` extra items of one risk topic in the last hour, nearly all negative, spread over sources
    (so no source alone turns negative, and the hour's volume stays within the normal range)."""
    rows: list[Row] = []
    for n in range(count):
        rows += item_rows(
            f"surge-{n:03d}",
            end - dt.timedelta(minutes=50) + dt.timedelta(seconds=55 * n),
            source=SOURCES[n % len(SOURCES)],
            risk=risk,
            negative=n % 10 != 0,
            title=f"事故通报 {n}",
        )
    return rows


def volume_spike_plant(end: dt.datetime, source: str = "zhihu", count: int = 70) -> list[Row]:
    """`count` extra items from one source in the last hour, ordinary risk topics and sentiment."""
    rows: list[Row] = []
    for n in range(count):
        rows += item_rows(
            f"spike-{n:03d}",
            end - dt.timedelta(minutes=55) + dt.timedelta(seconds=40 * n),
            source=source,
            risk=RISKS[n % len(RISKS)],
            negative=n % 4 == 0,
            title=f"热议话题 {n}",
        )
    return rows


def insert(store: Store, rows: Sequence[Row]) -> None:
    by_table: dict[str, list[list[Any]]] = defaultdict(list)
    for table, values in rows:
        by_table[table].append(values)
    for table, values in by_table.items():
        store.insert(table, values, COLUMNS[table])
