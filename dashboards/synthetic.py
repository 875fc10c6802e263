"""Realistic synthetic rows written straight into a Store: scored items, stories, dead letters, pipeline stats, alerts.

The dashboards' SQL check and the tests use this instead of Kafka and a model.  The layout follows
what the pipeline writes: one ``scored`` row per (item id, model version) and task, a stats row per
partition for each stats write of a consumer (items and dead letters counted per consumer), dead
letters keyed by their source offset.  Everything is deterministic for a given spec (seed).

Planted patterns make checks meaningful: a newer sentiment model that replayed the early part of the
range (so "latest version" matters), re-delivered rows that only ``FINAL`` collapses, and optional
negative surges (a burst of mostly negative items on one topic) with the alerts they fire.

Stories follow what the stories job writes (``item_stories``, ``stories``): items of one event
(same topic, headline and place, in both languages, within two days) share a story whose id is its
first item's id; a later item of the story with the same title and language is a near-duplicate of
the first one; a surge is one story.  The newest items (``story_lag``) are not assigned yet, and
some rows are written twice (an older ``stories`` row, a re-written assignment) so that only
``FINAL`` reads them right.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from stream.core.schema import (
    ALERT_COLUMNS,
    DEAD_LETTER_COLUMNS,
    EMBEDDING_DIM,
    ITEM_STORY_COLUMNS,
    PIPELINE_STATS_COLUMNS,
    SCORED_COLUMNS,
    STORY_COLUMNS,
)
from stream.core.store import Store

TOPICS: tuple[str, ...] = ("markets", "regulation", "public health", "labour", "environment", "technology")
# Share of negative items per topic in quiet times.
NEGATIVE_RATE: dict[str, float] = {
    "markets": 0.40,
    "regulation": 0.35,
    "public health": 0.50,
    "labour": 0.45,
    "environment": 0.50,
    "technology": 0.30,
}
SOURCES: tuple[tuple[str, str, str, float], ...] = (
    # name, language, url host, relative volume
    ("Harbor Daily", "en", "harbordaily.example", 1.0),
    ("Metro Business Review", "en", "metro-business.example", 0.8),
    ("The Northfield Gazette", "en", "northfield-gazette.example", 0.5),
    ("江城晚报", "zh", "jiangcheng-wanbao.example", 1.0),
    ("财经观察", "zh", "caijing-guancha.example", 0.7),
    ("健康时报网", "zh", "jiankang-shibao.example", 0.4),
)
DEAD_LETTER_KINDS: tuple[tuple[str, float], ...] = (
    ("invalid_json", 0.40),
    ("bad_field", 0.20),
    ("no_text", 0.15),
    ("bad_date", 0.12),
    ("too_large", 0.08),
    ("invalid_utf8", 0.05),
)

# Headline templates per (topic, lang, polarity); {place} and {n} are filled in.
_HEADLINES: dict[tuple[str, str, str], tuple[str, ...]] = {
    ("markets", "en", "+"): ("Shares rally in {place} as exporters report record orders",
                            "Small-business lending in {place} rises {n}% as rates ease"),
    ("markets", "en", "-"): ("Developer in {place} misses bond payment, shares plunge {n}%",
                            "Savers in {place} lose deposits as wealth platform collapses"),
    ("markets", "zh", "+"): ("{place}出口订单创新高，股市连涨{n}天", "{place}小微企业贷款同比增长{n}%"),
    ("markets", "zh", "-"): ("{place}房企债券违约，股价暴跌{n}%", "{place}理财平台爆雷，储户血本无归"),
    ("regulation", "en", "+"): ("New rules in {place} protect renters from hidden fees",
                               "Consumer agency wins refunds for {n},000 customers in {place}"),
    ("regulation", "en", "-"): ("Audit finds {n} factories in {place} dodged inspections",
                               "Safety complaints pile up unanswered in {place}"),
    ("regulation", "zh", "+"): ("{place}出台新规，保障租客知情权", "{place}消协追回多收费用，{n}千名用户获退款"),
    ("regulation", "zh", "-"): ("审计发现{place}{n}家企业逃避排污检查", "{place}安全投诉积压，监管人手严重不足"),
    ("public health", "en", "+"): ("Vaccination rate in {place} climbs back above {n}%",
                                  "New screening programme in {place} halves diagnosis times"),
    ("public health", "en", "-"): ("Hospitals in {place} overflow as flu cases surge {n}%",
                                  "Contaminated water leaves homes in {place} without safe supply"),
    ("public health", "zh", "+"): ("{place}儿童疫苗接种率回升至{n}%", "{place}社区诊所延长门诊，急诊压力缓解"),
    ("public health", "zh", "-"): ("{place}流感病例激增{n}%，医院病房爆满", "{place}自来水受污染，居民暂停饮用"),
    ("labour", "en", "+"): ("Workers in {place} win {n}% pay rise after talks",
                           "Unemployment in {place} falls to a ten-year low"),
    ("labour", "en", "-"): ("Warehouse in {place} lays off {n}00 staff without notice",
                           "Delivery riders in {place} strike over unpaid wages"),
    ("labour", "zh", "+"): ("{place}工人协商获得{n}%加薪", "{place}失业率降至十年最低"),
    ("labour", "zh", "-"): ("{place}物流公司突然裁员{n}百人", "{place}外卖骑手因欠薪集体停工"),
    ("environment", "en", "+"): ("River in {place} safe for swimming after clean-up",
                                "Wind farm near {place} powers {n}0,000 homes"),
    ("environment", "en", "-"): ("Chemical spill near {place} kills thousands of fish",
                                "Wildfire smoke pushes {place} air quality to hazardous levels"),
    ("environment", "zh", "+"): ("{place}河道治理见成效，重新开放游泳", "{place}海上风电并网，可供{n}万户用电"),
    ("environment", "zh", "-"): ("{place}化工厂泄漏，下游大量死鱼", "{place}山火烟雾致空气质量达危险级别"),
    ("technology", "en", "+"): ("Chipmaker in {place} unveils processor using {n}% less power",
                               "Broadband reaches {n}0 rural schools near {place}"),
    ("technology", "en", "-"): ("Data breach in {place} exposes {n} million customer records",
                               "Ransomware attack shuts hospital systems in {place}"),
    ("technology", "zh", "+"): ("{place}芯片企业发布新处理器，功耗降低{n}%", "宽带进村，{place}{n}十所学校接入网络"),
    ("technology", "zh", "-"): ("{place}数据泄露致{n}百万用户信息外泄", "勒索软件攻击致{place}医院系统瘫痪"),
}
_PLACES: dict[str, tuple[str, ...]] = {
    "en": ("Northfield", "the harbour district", "Riverside", "Lakeshore", "the east side"),
    "zh": ("江城", "南岸", "临河", "东湖", "北区"),
}
_TEXT: dict[tuple[str, str], str] = {
    ("en", "+"): "{title}. Officials and residents welcomed the news, the best result in years, {source} reports.",
    ("en", "-"): "{title}. Residents voiced anger and worry; {source} reports the damage is still being assessed.",
    ("zh", "+"): "{title}。据{source}报道，市民普遍表示欢迎，认为这是近年来最好的消息。",
    ("zh", "-"): "{title}。据{source}报道，居民对此十分担忧和不满，损失仍在评估中。",
}


@dataclass(frozen=True)
class Surge:
    """A burst of extra, mostly negative items on one topic in [start, start + duration)."""

    topic: str
    start: dt.datetime
    duration: dt.timedelta = dt.timedelta(hours=1)
    items: int = 40
    negative_share: float = 0.85


@dataclass(frozen=True)
class SyntheticSpec:
    start: dt.datetime
    end: dt.datetime
    items: int = 1500
    seed: int = 0
    sentiment_version: str = "sentiment-synth-2"
    topic_version: str = "topic-synth-1"
    # An older sentiment model that scored the first `replayed_share` of the range live; the current
    # model re-scored that part in a replay, so both versions coexist there.
    previous_sentiment_version: str | None = "sentiment-synth-1"
    replayed_share: float = 0.3
    neutral_share: float = 0.0  # > 0 adds a third sentiment label, 'neutral'
    surges: tuple[Surge, ...] = ()
    duplicate_share: float = 0.05  # scored rows written twice (re-delivery); FINAL must collapse them
    dead_letter_share: float = 0.02
    stats_every: dt.timedelta = dt.timedelta(minutes=5)
    partitions: int = 3
    kafka_topic: str = "news"
    group_id: str = "yuqing"
    write_alerts: bool = True  # one fired alert per planted surge
    write_stories: bool = True
    story_lag: dt.timedelta = dt.timedelta(minutes=3)  # items this close to `end` have no story yet


@dataclass(frozen=True)
class SyntheticItem:
    id: str
    source: str
    lang: str
    url: str
    title: str
    text: str
    published_at: dt.datetime
    ingested_at: dt.datetime
    partition: int
    offset: int
    topic: str
    sentiment: str
    event: str = ""  # what the item reports on: items of one event form one story
    story_id: str = ""  # '' until the stories job has assigned it
    duplicate_of: str = ""


@dataclass(frozen=True)
class StoryMember:
    """One item as the stories job assigns it: what `story_rows` turns into table rows."""

    id: str
    story_id: str
    published_at: dt.datetime
    source: str
    lang: str
    title: str
    sentiment: str
    duplicate_of: str = ""
    similarity: float = 1.0
    assigned_at: dt.datetime | None = None  # default: a minute after publication


@dataclass
class SyntheticSummary:
    """What was written, for assertions: counts are distinct (FINAL) counts."""

    items: list[SyntheticItem] = field(default_factory=list)
    scored_rows: int = 0
    duplicate_rows: int = 0
    dead_letters: int = 0
    stats_rows: int = 0
    alerts: int = 0
    stories: int = 0
    dead_letters_by_kind: Counter[str] = field(default_factory=Counter)

    def count(self, *, topic: str | None = None, sentiment: str | None = None,
              since: dt.datetime | None = None, until: dt.datetime | None = None) -> int:
        return sum(
            1
            for it in self.items
            if (topic is None or it.topic == topic)
            and (sentiment is None or it.sentiment == sentiment)
            and (since is None or it.published_at >= since)
            and (until is None or it.published_at < until)
        )


def utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def write_synthetic(store: Store, spec: SyntheticSpec) -> SyntheticSummary:
    """Generate the rows for `spec` and insert them into `store` (its schema must exist)."""
    start, end = utc(spec.start), utc(spec.end)
    if end <= start:
        raise ValueError("synthetic range is empty: end must be after start")
    rng = random.Random(spec.seed)
    summary = SyntheticSummary()
    items = _items(rng, spec, start, end)
    summary.items = items

    scored = _scored_rows(rng, spec, items, start, end)
    duplicates = [_redelivered(rng, row) for row in scored if rng.random() < spec.duplicate_share]
    store.insert("scored", scored, SCORED_COLUMNS)
    store.insert("scored", duplicates, SCORED_COLUMNS)
    summary.scored_rows, summary.duplicate_rows = len(scored), len(duplicates)

    dead = _dead_letters(rng, spec, items)
    store.insert("dead_letters", dead, DEAD_LETTER_COLUMNS)
    summary.dead_letters = len(dead)
    summary.dead_letters_by_kind = Counter(str(row[4]) for row in dead)

    stats = _pipeline_stats(rng, spec, items, dead, start, end)
    store.insert("pipeline_stats", stats, PIPELINE_STATS_COLUMNS)
    summary.stats_rows = len(stats)

    if spec.write_alerts:
        alerts = _alerts(spec, items)
        store.insert("alerts", alerts, ALERT_COLUMNS)
        summary.alerts = len(alerts)

    if spec.write_stories:
        summary.items = _assign_stories(spec, items, end)
        summary.stories = write_story_rows(store, _members(spec, summary.items), rewrite_seed=spec.seed)
    return summary


# -- items -----------------------------------------------------------------------------------
def _diurnal_time(rng: random.Random, start: dt.datetime, end: dt.datetime) -> dt.datetime:
    """A time in [start, end), about three times likelier in the (UTC+8) day than at night."""
    span = (end - start).total_seconds()
    while True:
        t = start + dt.timedelta(seconds=rng.random() * span)
        local_hour = (t.hour + 8) % 24
        if rng.random() < (1.0 if 7 <= local_hour <= 22 else 0.33):
            return t.replace(microsecond=(t.microsecond // 1000) * 1000)


def _items(rng: random.Random, spec: SyntheticSpec, start: dt.datetime, end: dt.datetime) -> list[SyntheticItem]:
    planned: list[tuple[dt.datetime, str, str, str]] = []  # published_at, topic, sentiment, surge event
    for _ in range(spec.items):
        topic = rng.choice(TOPICS)
        planned.append((_diurnal_time(rng, start, end), topic, _sentiment(rng, NEGATIVE_RATE[topic], spec), ""))
    for k, surge in enumerate(spec.surges):
        s_start = utc(surge.start)
        for _ in range(surge.items):
            t = s_start + dt.timedelta(seconds=rng.random() * surge.duration.total_seconds())
            if start <= t < end:
                planned.append((t, surge.topic, _sentiment(rng, surge.negative_share, spec), f"surge-{k}"))
    planned.sort(key=lambda p: p[0])

    weights = [s[3] for s in SOURCES]
    next_offset = [0] * spec.partitions
    items = []
    for n, (published, topic, sentiment, surge_event) in enumerate(planned):
        name, lang, host, _ = rng.choices(SOURCES, weights)[0]
        polarity = "-" if sentiment == "negative" else "+"
        # The English and Chinese headlines and places are parallel lists: the same indices are the
        # same event in either language.
        headlines, places = _HEADLINES[(topic, lang, polarity)], _PLACES[lang]
        headline, place = rng.choice(headlines), rng.choice(places)
        title = headline.format(place=place, n=rng.randint(2, 9))
        two_days = int((published - start) / dt.timedelta(days=2))
        event = surge_event or (f"{topic}|{polarity}|{headlines.index(headline)}|{places.index(place)}|{two_days}")
        text_polarity = polarity if sentiment != "neutral" else rng.choice("+-")
        text = _TEXT[(lang, text_polarity)].format(title=title, source=name)
        partition = rng.randrange(spec.partitions)
        offset = next_offset[partition]
        next_offset[partition] += 1
        item_id = f"syn-{spec.seed}-{n:06d}"
        items.append(
            SyntheticItem(
                id=item_id,
                source=name,
                lang=lang,
                url=f"https://{host}/{published:%Y/%m/%d}/{item_id}",
                title=title,
                text=text,
                published_at=published,
                # feeds are polled every few minutes; some items arrive much later
                ingested_at=published + dt.timedelta(seconds=rng.expovariate(1 / 180)),
                partition=partition,
                offset=offset,
                topic=topic,
                sentiment=sentiment,
                event=event,
            )
        )
    return items


# -- stories ---------------------------------------------------------------------------------
def _assign_stories(spec: SyntheticSpec, items: list[SyntheticItem], end: dt.datetime) -> list[SyntheticItem]:
    """The items with their story and near-duplicate set, as the stories job would by `end`."""
    first_of_event: dict[str, str] = {}
    first_of_title: dict[tuple[str, str, str], str] = {}
    out = []
    for it in items:  # in publication order
        if it.published_at >= end - spec.story_lag:
            out.append(it)
            continue
        story = first_of_event.setdefault(it.event, it.id)
        original = first_of_title.setdefault((story, it.lang, it.title), it.id)
        out.append(replace(it, story_id=story, duplicate_of="" if original == it.id else original))
    return out


def _members(spec: SyntheticSpec, items: list[SyntheticItem]) -> list[StoryMember]:
    rng = random.Random(f"{spec.seed}-stories")  # apart from the main generator: other rows stay as they were
    return [
        StoryMember(it.id, it.story_id, it.published_at, it.source, it.lang, it.title, it.sentiment,
                    duplicate_of=it.duplicate_of,
                    similarity=1.0 if it.id == it.story_id else round(rng.uniform(0.93, 0.99) if it.duplicate_of
                                                                       else rng.uniform(0.4, 0.9), 4),
                    assigned_at=it.ingested_at + dt.timedelta(seconds=rng.uniform(20, 120)))
        for it in items
        if it.story_id
    ]


def _vector(key: str) -> np.ndarray:
    seed = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")
    return np.random.default_rng(seed).standard_normal(EMBEDDING_DIM)


def _embedding(story_id: str, item_id: str) -> list[float]:
    """A unit vector near its story's own: the items of one story are each other's nearest."""
    v = _vector(story_id) + 0.6 * _vector(item_id)
    return [float(x) for x in (v / np.linalg.norm(v)).astype(np.float32)]


def story_rows(members: Iterable[StoryMember]) -> tuple[list[list[Any]], list[list[Any]]]:
    """The `item_stories` rows and the `stories` rows (one per story) of assigned items, in
    ITEM_STORY_COLUMNS and STORY_COLUMNS order.  A story's representative title in a language is
    its earliest item's there that is no near-duplicate."""
    items: list[list[Any]] = []
    stories: dict[str, list[StoryMember]] = defaultdict(list)
    for m in sorted(members, key=lambda m: (utc(m.published_at), m.id)):
        assigned = m.assigned_at or m.published_at + dt.timedelta(minutes=1)
        items.append([m.id, m.story_id, m.duplicate_of, m.similarity, m.published_at, m.source, m.lang, m.title,
                      "synthetic", _embedding(m.story_id, m.id), assigned])
        stories[m.story_id].append(replace(m, assigned_at=assigned))
    rows: list[list[Any]] = []
    for story_id, group in stories.items():
        titles: dict[str, str] = {}
        for m in group:
            if not m.duplicate_of:
                titles.setdefault(m.lang, m.title)
        rows.append([story_id, group[0].published_at, group[-1].published_at, len(group),
                     sum(bool(m.duplicate_of) for m in group), list(dict.fromkeys(m.source for m in group)),
                     list(dict.fromkeys(m.lang for m in group)), titles, dict(Counter(m.sentiment for m in group)),
                     [], max(m.assigned_at for m in group if m.assigned_at)])
    return items, rows


def write_story_rows(store: Store, members: Sequence[StoryMember], rewrite_seed: int | None = None) -> int:
    """Insert what the stories job writes for `members`; returns the number of stories.

    With `rewrite_seed`, about one story in five also gets an older `stories` row (fewer items, an
    earlier update) and one assignment in twenty is written twice: only FINAL reads them right."""
    items, stories = story_rows(members)
    store.insert("item_stories", items, ITEM_STORY_COLUMNS)
    store.insert("stories", stories, STORY_COLUMNS)
    if rewrite_seed is not None:
        rng = random.Random(f"{rewrite_seed}-rewrites")
        older = [[*row[:3], max(row[3] - 1, 1), *row[4:10], row[10] - dt.timedelta(minutes=5)]
                 for row in stories if rng.random() < 0.2]
        again = [[*row[:10], row[10] + dt.timedelta(minutes=1)] for row in items if rng.random() < 0.05]
        store.insert("stories", older, STORY_COLUMNS)
        store.insert("item_stories", again, ITEM_STORY_COLUMNS)
    return len(stories)


def _sentiment(rng: random.Random, negative_rate: float, spec: SyntheticSpec) -> str:
    if spec.neutral_share > 0 and rng.random() < spec.neutral_share:
        return "neutral"
    return "negative" if rng.random() < negative_rate else "positive"


# -- scored rows -----------------------------------------------------------------------------
def _probs(rng: random.Random, label: str, labels: Sequence[str]) -> tuple[float, dict[str, float]]:
    top = round(rng.uniform(0.62, 0.99), 4)
    rest = [rng.random() + 1e-3 for _ in range(len(labels) - 1)]
    scale = (1 - top) / sum(rest)
    others = iter(rest)
    probs = {lab: (top if lab == label else round(next(others) * scale, 4)) for lab in labels}
    return top, probs


def _scored_rows(rng: random.Random, spec: SyntheticSpec, items: list[SyntheticItem],
                 start: dt.datetime, end: dt.datetime) -> list[list[Any]]:
    sentiment_labels = ["negative", "positive"] + (["neutral"] if spec.neutral_share > 0 else [])
    replay_until = start + (end - start) * spec.replayed_share if spec.previous_sentiment_version else start
    # The replay ran right after the new model was deployed (at replay_until).
    replay_at = replay_until + dt.timedelta(minutes=10)
    rows: list[list[Any]] = []

    def row(it: SyntheticItem, task: str, model: str, version: str, label: str, labels: Sequence[str],
            scored_at: dt.datetime) -> list[Any]:
        score, probs = _probs(rng, label, labels)
        truncated = rng.random() < 0.02
        return [it.id, it.source, it.url, it.title, it.text, it.lang, it.published_at, it.ingested_at,
                spec.kafka_topic, it.partition, it.offset, task, model, version, label, score, probs,
                truncated, scored_at]

    for it in items:
        live = it.ingested_at + dt.timedelta(seconds=rng.uniform(0.2, 4.0))
        if it.published_at < replay_until and spec.previous_sentiment_version:
            rows.append(row(it, "sentiment", "sentiment-minilm", spec.previous_sentiment_version,
                            it.sentiment, sentiment_labels, live))
            new_at = max(replay_at + dt.timedelta(seconds=rng.uniform(0, 120)), live)
        else:
            new_at = live
        rows.append(row(it, "sentiment", "sentiment-minilm", spec.sentiment_version, it.sentiment,
                        sentiment_labels, new_at))
        topic_at = live if it.published_at >= replay_until else new_at
        rows.append(row(it, "topic", "topic-minilm", spec.topic_version, it.topic, TOPICS, topic_at))
    return rows


def _redelivered(rng: random.Random, row: list[Any]) -> list[Any]:
    """The same (id, model version) scored again after a consumer restart: later scored_at."""
    again = list(row)
    again[-1] = row[-1] + dt.timedelta(seconds=rng.uniform(5, 90))
    return again


# -- dead letters, stats, alerts -------------------------------------------------------------
_BAD_RAW: dict[str, bytes] = {
    "invalid_json": b'{"source": "Harbor Daily", "title": "Port strike',
    "bad_field": b'{"source": "Harbor Daily", "title": 42, "text": "x"}',
    "no_text": b'{"source": "Harbor Daily", "title": "", "text": ""}',
    "bad_date": b'{"source": "Harbor Daily", "title": "t", "published_at": "yesterday"}',
    "too_large": b'{"source": "Harbor Daily", "text": "' + b"x" * 200 + b'..."}',
    "invalid_utf8": b'{"title": "\xff\xfe"}',
}


def _dead_letters(rng: random.Random, spec: SyntheticSpec, items: list[SyntheticItem]) -> list[list[Any]]:
    kinds, weights = zip(*DEAD_LETTER_KINDS, strict=True)
    rows: list[list[Any]] = []
    # Bad messages sit between good ones: give them offsets after the partition's last good one.
    next_offset = Counter({p: 0 for p in range(spec.partitions)})
    for it in items:
        next_offset[it.partition] = max(next_offset[it.partition], it.offset + 1)
    for it in items:
        if rng.random() >= spec.dead_letter_share:
            continue
        kind = rng.choices(kinds, weights)[0]
        offset = next_offset[it.partition]
        next_offset[it.partition] += 1
        at = it.ingested_at + dt.timedelta(seconds=rng.uniform(1, 30))
        rows.append([spec.kafka_topic, it.partition, offset, at, kind, f"{kind}: synthetic bad message",
                     _BAD_RAW[kind], at + dt.timedelta(seconds=rng.uniform(0.1, 3)), "sent", ""])
    return rows


def _pipeline_stats(rng: random.Random, spec: SyntheticSpec, items: list[SyntheticItem],
                    dead: list[list[Any]], start: dt.datetime, end: dt.datetime) -> list[list[Any]]:
    """Two consumers share the partitions; each writes a row per partition every `stats_every`."""
    step = spec.stats_every.total_seconds()
    owner = {p: ("yuqing-a" if p % 2 == 0 else "yuqing-b") for p in range(spec.partitions)}
    slot = lambda t: int((t - start).total_seconds() // step)  # noqa: E731
    consumed: dict[tuple[str, int], int] = defaultdict(int)
    bad: dict[tuple[str, int], int] = defaultdict(int)
    arrived: dict[tuple[int, int], int] = defaultdict(int)
    for it in items:
        consumed[(owner[it.partition], slot(it.ingested_at))] += 1
        arrived[(it.partition, slot(it.ingested_at))] += 1
    for row in dead:
        bad[(owner[row[1]], slot(row[3]))] += 1
        arrived[(row[1], slot(row[3]))] += 1
    surge_slots = {slot(utc(s.start)) + k for s in spec.surges for k in range(int(s.duration.total_seconds() // step))}

    rows: list[list[Any]] = []
    end_offset = [0] * spec.partitions
    # A write at `ts` reports what arrived in the step before it.
    for k in range(int((end - start).total_seconds() // step)):
        ts = start + dt.timedelta(seconds=(k + 1) * step)
        batch_seconds = round(rng.uniform(0.05, 0.4) * (3 if k in surge_slots else 1), 3)
        for p in range(spec.partitions):
            end_offset[p] += arrived[(p, k)]
            backlog = rng.randint(0, 3) + (rng.randint(20, 60) if k in surge_slots else 0)
            lag = min(backlog, end_offset[p])
            consumer = owner[p]
            rows.append([ts, consumer, spec.group_id, spec.kafka_topic, p, end_offset[p] - lag, end_offset[p],
                         lag, consumed[(consumer, k)], bad[(consumer, k)], batch_seconds])
    return rows


def _alerts(spec: SyntheticSpec, items: list[SyntheticItem]) -> list[list[Any]]:
    rows: list[list[Any]] = []
    for surge in spec.surges:
        w_start = utc(surge.start)
        w_end = w_start + surge.duration
        inside = [it for it in items if it.topic == surge.topic and w_start <= it.published_at < w_end]
        if not inside:
            continue
        share = sum(it.sentiment == "negative" for it in inside) / len(inside)
        scope = f"topic={surge.topic}"
        rows.append([f"negative_surge|{scope}|{w_end:%Y%m%dT%H%M}", "negative_surge", "negative_share", "warning",
                     scope, w_start, w_end, share, 0.5, len(inside), [it.id for it in inside[:5]],
                     f"negative share {share:.0%} over {len(inside)} items on {surge.topic}",
                     w_end + dt.timedelta(minutes=1)])
    return rows


# -- bulk ------------------------------------------------------------------------------------
def write_bulk_scored(store: Store, spec: SyntheticSpec) -> int:
    """`spec.items` items' scored rows generated inside the engine (INSERT ... SELECT FROM numbers()).

    Millions of rows in seconds, for timing the panels: the same layout as `write_synthetic` (hashed
    ids, both tasks, the previous sentiment model on the replayed share, `duplicate_share`
    re-deliveries with a later scored_at), with plain generated titles.  Returns the rows written.
    """
    start, end = utc(spec.start), utc(spec.end)
    if end <= start:
        raise ValueError("synthetic range is empty: end must be after start")
    span_ms = int((end - start).total_seconds() * 1000)
    replay_ms = int(span_ms * spec.replayed_share) if spec.previous_sentiment_version else 0
    names = [s[0] for s in SOURCES]
    langs = [s[1] for s in SOURCES]
    negative = sum(NEGATIVE_RATE.values()) / len(NEGATIVE_RATE)
    before = store.scalar(f"SELECT count() FROM {store.database}.scored")
    params = {
        "n": spec.items, "seed": spec.seed, "start": int(start.timestamp() * 1000), "span": span_ms,
        "replay": replay_ms, "sources": names, "langs": langs, "topics": list(TOPICS),
        "negative": int(negative * 1000), "dup": int(spec.duplicate_share * 1000),
        "v_new": spec.sentiment_version, "v_old": spec.previous_sentiment_version or "", "v_topic": spec.topic_version,
    }
    # Re-deliveries go in a second insert: one insert block is collapsed on the way in.
    for copy in (0, 1):
        store.command(_BULK_SQL.format(db=store.database, columns=", ".join(SCORED_COLUMNS)), {**params, "copy": copy})
    return int(store.scalar(f"SELECT count() FROM {store.database}.scored")) - int(before)


_BULK_SQL = """
        INSERT INTO {db}.scored ({columns})
        SELECT id, source, concat('https://bulk.example/', id), title, concat(title, '. ', source), lang,
               published_at, published_at + toIntervalSecond(3), 'news', toUInt32(number % 6), number,
               job.1, concat(job.1, '-bulk'), job.2, job.3, score, map(job.3, score), false,
               published_at + toIntervalMillisecond(4000 + copy * 60000 + if(job.2 = {{v_new:String}}
                   AND offset_ms < {{replay:UInt64}}, {{replay:UInt64}} - offset_ms + 600000, 0))
        FROM (
            SELECT number, lower(hex(cityHash64(number, {{seed:UInt64}}))) AS id,
                   cityHash64(number, {{seed:UInt64}}, 1) % {{span:UInt64}} AS offset_ms,
                   fromUnixTimestamp64Milli(toInt64({{start:Int64}} + offset_ms), 'UTC') AS published_at,
                   cityHash64(number, {{seed:UInt64}}, 2) % length({{sources:Array(String)}}) + 1 AS s,
                   {{sources:Array(String)}}[s] AS source, {{langs:Array(String)}}[s] AS lang,
                   {{topics:Array(String)}}[
                       cityHash64(number, {{seed:UInt64}}, 3) % length({{topics:Array(String)}}) + 1] AS topic,
                   if(cityHash64(number, {{seed:UInt64}}, 4) % 1000 < {{negative:UInt32}}, 'negative', 'positive')
                       AS sentiment,
                   concat('Bulk headline ', toString(number % 9973), ' on ', topic) AS title,
                   toFloat32(0.62 + (cityHash64(number, {{seed:UInt64}}, 6) % 370) / 1000) AS score,
                   {{copy:UInt8}} AS copy,
                   arrayJoin(arrayConcat(
                       [('sentiment', {{v_new:String}}, sentiment), ('topic', {{v_topic:String}}, topic)],
                       if({{v_old:String}} != '' AND offset_ms < {{replay:UInt64}},
                          [('sentiment', {{v_old:String}}, sentiment)], []))) AS job
            FROM numbers({{n:UInt64}})
            WHERE copy = 0 OR cityHash64(number, {{seed:UInt64}}, 5) % 1000 < {{dup:UInt32}}
        )"""
