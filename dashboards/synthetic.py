"""Realistic synthetic rows written straight into a Store: items, scored heads, entities, stories,
dead letters, pipeline stats, alerts.

The dashboards' SQL check and the tests use this instead of Kafka and a model.  The layout follows
what the pipeline writes: one ``items`` row per item (its url, title and text), one ``scored`` row
per (item id, model version) and sequence head (sentiment with neutral, risk, category), one
``entities`` row per (item id, model version) with the people, places and organisations of its text
(character offsets into title + "\\n" + text), a stats row per partition for each stats write of
a consumer (items and dead letters counted per consumer), dead letters keyed by their source
offset.  Everything is deterministic for a given spec (seed).

Items report on *beats* (markets, public health, sports, ...); a beat fixes the item's category
and risk topic choices and its headline templates.  Planted patterns make checks meaningful: a
multi-head package (sentiment, category, entities) that replayed the early part of the range over
an older two-label sentiment model (so "latest version" matters), a separate risk package,
re-delivered rows that only ``FINAL`` collapses, recurring entities (a few people and
organisations are named far more often than the rest, and the items of one event share their
organisation), and optional negative surges (a burst of mostly negative items on one beat) with the
alerts they fire.

Stories follow what the stories job writes (``item_stories``, ``stories``): items of one event
(same beat, headline and place, in both languages, within two days) share a story whose id is its
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

from stream.core.items import normalize_entity
from stream.core.schema import (
    ALERT_COLUMNS,
    DEAD_LETTER_COLUMNS,
    EMBEDDING_DIM,
    ENTITY_COLUMNS,
    ITEM_COLUMNS,
    ITEM_STORY_COLUMNS,
    PIPELINE_STATS_COLUMNS,
    SCORED_COLUMNS,
    STORY_COLUMNS,
)
from stream.core.store import Store

# The heads' label sets, as the models write them (dashboards may not import `models`).
SENTIMENT_LABELS: tuple[str, ...] = ("negative", "neutral", "positive")
RISKS: tuple[str, ...] = ("other", "conflict", "terrorism", "corruption", "social", "governance", "foreign_policy",
                          "environment")
CATEGORIES: tuple[str, ...] = ("finance", "realty", "stocks", "education", "science", "society", "politics",
                               "sports", "game", "entertainment")


@dataclass(frozen=True)
class Beat:
    """What a kind of news is labelled: its category and risk topic choices (the first the
    commonest), its share of negative items in quiet times, and its share of the stream."""

    categories: tuple[str, ...]
    risks: tuple[str, ...]
    negative_rate: float
    volume: float = 1.0


BEATS: dict[str, Beat] = {
    "markets": Beat(("finance", "stocks", "realty"), ("other", "corruption"), 0.40, 1.2),
    "regulation": Beat(("politics", "society"), ("governance", "corruption"), 0.35),
    "public health": Beat(("society",), ("social",), 0.50),
    "labour": Beat(("society", "finance"), ("social",), 0.45),
    "environment": Beat(("society", "science"), ("environment",), 0.50),
    "technology": Beat(("science", "stocks"), ("other",), 0.30),
    "education": Beat(("education",), ("social", "other"), 0.30, 0.6),
    "diplomacy": Beat(("politics",), ("foreign_policy", "conflict"), 0.45, 0.6),
    "sports": Beat(("sports",), ("other",), 0.25, 0.7),
    "culture": Beat(("entertainment", "game"), ("other",), 0.20, 0.7),
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

# Headline templates per (beat, lang, polarity); {place} and {n} are filled in.
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
    ("education", "en", "+"): ("Schools in {place} add {n},000 free lunch places",
                              "Exam pass rate in {place} rises to {n}0%"),
    ("education", "en", "-"): ("Teachers in {place} walk out over {n}-month pay freeze",
                              "School roof collapse in {place} injures {n} pupils"),
    ("education", "zh", "+"): ("{place}学校新增{n}千个免费午餐名额", "{place}中考合格率升至{n}成"),
    ("education", "zh", "-"): ("{place}教师因{n}个月欠薪罢课", "{place}校舍屋顶坍塌，{n}名学生受伤"),
    ("diplomacy", "en", "+"): ("Trade talks in {place} end with {n}-point agreement",
                              "Border crossing near {place} reopens after {n} years"),
    ("diplomacy", "en", "-"): ("Shelling near {place} forces {n},000 to flee",
                              "Envoys expelled as talks in {place} collapse"),
    ("diplomacy", "zh", "+"): ("{place}贸易谈判达成{n}点共识", "{place}边境口岸时隔{n}年重新开放"),
    ("diplomacy", "zh", "-"): ("{place}附近遭炮击，{n}千人逃离", "{place}谈判破裂，双方驱逐外交官"),
    ("sports", "en", "+"): ("{place} side wins cup final {n}-1",
                           "Marathon in {place} draws record {n}0,000 runners"),
    ("sports", "en", "-"): ("Stadium crush in {place} injures {n} fans",
                           "Doping scandal hits {place} athletics club"),
    ("sports", "zh", "+"): ("{place}队{n}比1夺得杯赛冠军", "{place}马拉松吸引{n}万名跑者"),
    ("sports", "zh", "-"): ("{place}体育场发生踩踏，{n}名球迷受伤", "{place}田径俱乐部陷兴奋剂丑闻"),
    ("culture", "en", "+"): ("Film shot in {place} tops box office for {n} weeks",
                            "Game studio in {place} hires {n}00 developers"),
    ("culture", "en", "-"): ("Concert in {place} cancelled, {n},000 fans left without refunds",
                            "Game studio in {place} shuts down, {n}00 jobs lost"),
    ("culture", "zh", "+"): ("{place}取景电影连续{n}周票房第一", "{place}游戏公司招聘{n}百名开发者"),
    ("culture", "zh", "-"): ("{place}演唱会取消，{n}千名歌迷退票无门", "{place}游戏公司倒闭，{n}百人失业"),
}
# Neutral items (announcements, schedules) per language; {subject} is the beat's word there.
_NEUTRAL_HEADLINES: dict[str, tuple[str, ...]] = {
    "en": ("{place} to publish {subject} report next week",
           "Officials in {place} to hold {subject} hearing on day {n}"),
    "zh": ("{place}将于下周发布{subject}报告", "{place}将于{n}日召开{subject}听证会"),
}
_SUBJECTS: dict[str, tuple[str, str]] = {
    "markets": ("market", "市场"), "regulation": ("regulatory", "监管"), "public health": ("health", "卫生"),
    "labour": ("employment", "就业"), "environment": ("environment", "环境"), "technology": ("technology", "科技"),
    "education": ("education", "教育"), "diplomacy": ("foreign affairs", "外事"), "sports": ("sports", "体育"),
    "culture": ("culture", "文化"),
}
# People and organisations quoted in the body, most often named first (a few recur everywhere).
_PEOPLE: dict[str, tuple[str, ...]] = {
    "en": ("Maria Chen", "David Okafor", "Sarah Lindqvist", "Tom Reyes", "Aisha Rahman", "Jonas Weber"),
    "zh": ("王建国", "李晓梅", "张伟", "陈静", "刘洋", "赵敏"),
}
_ORGS: dict[str, tuple[str, ...]] = {
    "en": ("Northfield City Council", "Harbor Health Trust", "Lakeshore Chemical Co.", "Metro Transit Authority",
           "Riverside University", "East Side Workers Union"),
    "zh": ("江城市政府", "东湖人民医院", "临河化工集团", "南岸公交集团", "北区大学", "江城总工会"),
}
_NAME_WEIGHTS = (8, 5, 3, 2, 1, 1)
_PLACES: dict[str, tuple[str, ...]] = {
    "en": ("Northfield", "the harbour district", "Riverside", "Lakeshore", "the east side"),
    "zh": ("江城", "南岸", "临河", "东湖", "北区"),
}
# The body repeats the title, then quotes a person of an organisation.
_TEXT: dict[tuple[str, str], str] = {
    ("en", "+"): "{title}. {person} of {org} welcomed the news, the best result in years, {source} reports.",
    ("en", "-"): "{title}. {person} of {org} voiced anger and worry; {source} reports the damage is still being "
                 "assessed.",
    ("en", "0"): "{title}. {person} of {org} said details would follow, {source} reports.",
    ("zh", "+"): "{title}。据{source}报道，{org}的{person}表示欢迎，认为这是近年来最好的消息。",
    ("zh", "-"): "{title}。据{source}报道，{org}的{person}对此十分担忧，损失仍在评估中。",
    ("zh", "0"): "{title}。据{source}报道，{org}的{person}表示，具体安排将另行公布。",
}


@dataclass(frozen=True)
class Surge:
    """A burst of extra, mostly negative items on one beat in [start, start + duration), all of
    one event and labelled with the beat's first risk topic."""

    beat: str
    start: dt.datetime
    duration: dt.timedelta = dt.timedelta(hours=1)
    items: int = 40
    negative_share: float = 0.85

    @property
    def risk(self) -> str:
        return BEATS[self.beat].risks[0]


@dataclass(frozen=True)
class SyntheticSpec:
    start: dt.datetime
    end: dt.datetime
    items: int = 1500
    seed: int = 0
    # One multi-head package scores sentiment, category and entities; risk comes from its own package.
    sentiment_version: str = "analysis-synth-2"
    risk_version: str = "risk-synth-1"
    # An older two-label sentiment model that scored the first `replayed_share` of the range live;
    # the multi-head package re-scored that part in a replay, so both versions coexist there.
    previous_sentiment_version: str | None = "sentiment-synth-1"
    replayed_share: float = 0.3
    neutral_share: float = 0.2  # items labelled neutral by the current sentiment model
    surges: tuple[Surge, ...] = ()
    duplicate_share: float = 0.05  # rows written twice (re-delivery); FINAL must collapse them
    dead_letter_share: float = 0.02
    stats_every: dt.timedelta = dt.timedelta(minutes=5)
    partitions: int = 3
    kafka_topic: str = "news"
    group_id: str = "yuqing"
    write_alerts: bool = True  # one fired alert per planted surge
    write_stories: bool = True
    story_lag: dt.timedelta = dt.timedelta(minutes=3)  # items this close to `end` have no story yet

    @property
    def category_version(self) -> str:
        return self.sentiment_version

    @property
    def entities_version(self) -> str:
        return self.sentiment_version


@dataclass(frozen=True)
class SyntheticEntity:
    """An entity as the pipeline stores it: offsets are characters of title + "\\n" + text."""

    text: str
    type: str
    start: int
    end: int
    score: float

    @property
    def normalized(self) -> str:
        return normalize_entity(self.text)


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
    beat: str
    risk: str
    category: str
    sentiment: str
    entities: tuple[SyntheticEntity, ...] = ()
    event: str = ""  # what the item reports on: items of one event form one story
    story_id: str = ""  # '' until the stories job has assigned it
    duplicate_of: str = ""

    @property
    def model_text(self) -> str:
        return f"{self.title}\n{self.text}"


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
    duplicate_rows: int = 0  # of scored; items and entities rows are re-delivered as often
    entity_rows: int = 0
    dead_letters: int = 0
    stats_rows: int = 0
    alerts: int = 0
    stories: int = 0
    dead_letters_by_kind: Counter[str] = field(default_factory=Counter)

    def count(self, *, risk: str | None = None, category: str | None = None, sentiment: str | None = None,
              since: dt.datetime | None = None, until: dt.datetime | None = None) -> int:
        return sum(
            1
            for it in self.items
            if (risk is None or it.risk == risk)
            and (category is None or it.category == category)
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

    texts = [_item_row(spec, it) for it in items]
    scored, entities = _scored_rows(rng, spec, items, start, end)
    for table, rows, columns in (("items", texts, ITEM_COLUMNS), ("scored", scored, SCORED_COLUMNS),
                                 ("entities", entities, ENTITY_COLUMNS)):
        duplicates = [_redelivered(rng, row) for row in rows if rng.random() < spec.duplicate_share]
        store.insert(table, rows, columns)
        store.insert(table, duplicates, columns)
        if table == "scored":
            summary.scored_rows, summary.duplicate_rows = len(rows), len(duplicates)
    summary.entity_rows = len(entities)

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
    planned: list[tuple[dt.datetime, str, str, str]] = []  # published_at, beat, sentiment, surge event
    beats, volumes = list(BEATS), [b.volume for b in BEATS.values()]
    for _ in range(spec.items):
        beat = rng.choices(beats, volumes)[0]
        planned.append((_diurnal_time(rng, start, end), beat, _sentiment(rng, BEATS[beat].negative_rate, spec), ""))
    for k, surge in enumerate(spec.surges):
        s_start = utc(surge.start)
        for _ in range(surge.items):
            t = s_start + dt.timedelta(seconds=rng.random() * surge.duration.total_seconds())
            if start <= t < end:
                planned.append((t, surge.beat, _sentiment(rng, surge.negative_share, spec), f"surge-{k}"))
    planned.sort(key=lambda p: p[0])

    weights = [s[3] for s in SOURCES]
    next_offset = [0] * spec.partitions
    items = []
    for n, (published, beat, sentiment, surge_event) in enumerate(planned):
        name, lang, host, _ = rng.choices(SOURCES, weights)[0]
        polarity = {"negative": "-", "positive": "+"}.get(sentiment, "0")
        # The English and Chinese headlines and places are parallel lists: the same indices are the
        # same event in either language.
        headlines = (_NEUTRAL_HEADLINES[lang] if polarity == "0" else _HEADLINES[(beat, lang, polarity)])
        places = _PLACES[lang]
        headline, place = rng.choice(headlines), rng.choice(places)
        subject = _SUBJECTS[beat][lang == "zh"]
        title = headline.format(place=place, n=rng.randint(2, 9), subject=subject)
        two_days = int((published - start) / dt.timedelta(days=2))
        event = surge_event or f"{beat}|{polarity}|{headlines.index(headline)}|{places.index(place)}|{two_days}"
        # The items of one event quote the same organisation; people are quoted anywhere.
        org = _ORGS[lang][_stable_index(event, _NAME_WEIGHTS)]
        person = rng.choices(_PEOPLE[lang], _NAME_WEIGHTS)[0]
        text = _TEXT[(lang, polarity)].format(title=title, source=name, person=person, org=org)
        info = BEATS[beat]
        risk = info.risks[0] if surge_event else rng.choices(info.risks, [3] + [1] * (len(info.risks) - 1))[0]
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
                beat=beat,
                risk=risk,
                category=rng.choice(info.categories),
                sentiment=sentiment,
                entities=_entities(rng, f"{title}\n{text}", [(place, "LOC"), (person, "PER"), (org, "ORG")]),
                event=event,
            )
        )
    return items


def _stable_index(key: str, weights: Sequence[int]) -> int:
    """A weighted index chosen by `key` alone (the same for every item of one event)."""
    point = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=4).digest(), "big") % sum(weights)
    for index, weight in enumerate(weights):
        point -= weight
        if point < 0:
            return index
    raise AssertionError("unreachable")


def _entities(rng: random.Random, model_text: str, names: Sequence[tuple[str, str]]) -> tuple[SyntheticEntity, ...]:
    """Every mention of `names` in `model_text`, in text order, as a tagger would find them (a place
    in a headline is found twice: in the title and in the body that repeats it).  One mention in
    twenty is missed."""
    found = []
    for name, kind in names:
        at = model_text.find(name)
        while at >= 0:
            if rng.random() >= 0.05:
                found.append(SyntheticEntity(name, kind, at, at + len(name), round(rng.uniform(0.7, 0.99), 4)))
            at = model_text.find(name, at + len(name))
    return tuple(sorted(found, key=lambda e: e.start))


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


def _item_row(spec: SyntheticSpec, it: SyntheticItem) -> list[Any]:
    """The item's `items` row (its text once), stored when it was first scored."""
    return [it.id, it.source, it.url, it.title, it.text, it.lang, it.published_at, it.ingested_at, spec.kafka_topic,
            it.partition, it.offset, it.ingested_at + dt.timedelta(seconds=0.2)]


def _scored_rows(rng: random.Random, spec: SyntheticSpec, items: list[SyntheticItem],
                 start: dt.datetime, end: dt.datetime) -> tuple[list[list[Any]], list[list[Any]]]:
    """The `scored` rows (every head of every package) and the `entities` rows of `items`."""
    replay_until = start + (end - start) * spec.replayed_share if spec.previous_sentiment_version else start
    # The replay ran right after the new package was deployed (at replay_until).
    replay_at = replay_until + dt.timedelta(minutes=10)
    rows: list[list[Any]] = []
    entity_rows: list[list[Any]] = []

    def row(it: SyntheticItem, task: str, model: str, version: str, label: str, labels: Sequence[str],
            scored_at: dt.datetime) -> list[Any]:
        score, probs = _probs(rng, label, labels)
        truncated = rng.random() < 0.02
        return [it.id, it.source, it.lang, it.published_at, it.ingested_at, spec.kafka_topic, it.partition,
                it.offset, task, model, version, label, score, probs, truncated, scored_at]

    for it in items:
        live = it.ingested_at + dt.timedelta(seconds=rng.uniform(0.2, 4.0))
        if it.published_at < replay_until and spec.previous_sentiment_version:
            # The old model knew no neutral: it called a neutral item one way or the other.
            old = it.sentiment if it.sentiment != "neutral" else rng.choice(("negative", "positive"))
            rows.append(row(it, "sentiment", "sentiment-minilm", spec.previous_sentiment_version, old,
                            ("negative", "positive"), live))
            new_at = max(replay_at + dt.timedelta(seconds=rng.uniform(0, 120)), live)
        else:
            new_at = live
        rows.append(row(it, "sentiment", "news-analysis", spec.sentiment_version, it.sentiment, SENTIMENT_LABELS,
                        new_at))
        rows.append(row(it, "category", "news-analysis", spec.category_version, it.category, CATEGORIES, new_at))
        rows.append(row(it, "risk", "risk-minilm", spec.risk_version, it.risk, RISKS, live))
        ents = it.entities
        entity_rows.append([it.id, spec.entities_version, it.source, it.lang, it.published_at, it.sentiment,
                            [e.text for e in ents], [e.normalized for e in ents], [e.type for e in ents],
                            [e.start for e in ents], [e.end for e in ents], [e.score for e in ents], new_at])
    return rows, entity_rows


def _redelivered(rng: random.Random, row: list[Any]) -> list[Any]:
    """The same row written again after a consumer restart: a later version column (the last:
    scored_at, stored_at)."""
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
        # As the rule counts: the non-neutral items of the surge's risk topic in the window.
        inside = [it for it in items if it.risk == surge.risk and w_start <= it.published_at < w_end
                  and it.sentiment != "neutral"]
        if not inside:
            continue
        share = sum(it.sentiment == "negative" for it in inside) / len(inside)
        scope = f"risk={surge.risk}"
        rows.append([f"negative_surge|{scope}|{w_end:%Y%m%dT%H%M}", "negative_surge", "negative_share", "warning",
                     scope, w_start, w_end, share, 0.5, len(inside), [it.id for it in inside[:5]],
                     f"negative share {share:.0%} over {len(inside)} non-neutral items on {surge.risk}",
                     w_end + dt.timedelta(minutes=1)])
    return rows


# -- bulk ------------------------------------------------------------------------------------
def write_bulk_scored(store: Store, spec: SyntheticSpec) -> int:
    """`spec.items` items generated inside the engine (INSERT ... SELECT FROM numbers()), for timing
    the panels: millions of rows in seconds.  The same layout as `write_synthetic`: hashed ids, one
    `items` row each (plain generated titles naming a place, a person and an organisation), the
    sentiment (with `neutral_share` neutral), category and risk heads, the previous sentiment model
    on the replayed share, an `entities` row each (the three names, with their offsets), and
    `duplicate_share` re-deliveries of every table with a later version.  Returns the scored rows
    written."""
    start, end = utc(spec.start), utc(spec.end)
    if end <= start:
        raise ValueError("synthetic range is empty: end must be after start")
    span_ms = int((end - start).total_seconds() * 1000)
    replay_ms = int(span_ms * spec.replayed_share) if spec.previous_sentiment_version else 0
    beats = list(BEATS.values())
    names: dict[str, Any] = {}
    for lang in ("en", "zh"):
        for key, pool in (("places", _PLACES[lang]), ("people", _PEOPLE[lang]), ("orgs", _ORGS[lang])):
            names[f"{key}_{lang}"] = list(pool)
            names[f"{key}_{lang}_n"] = [normalize_entity(name) for name in pool]
    params = {
        **names,
        "n": spec.items, "seed": spec.seed, "start": int(start.timestamp() * 1000), "span": span_ms,
        "replay": replay_ms, "sources": [s[0] for s in SOURCES], "langs": [s[1] for s in SOURCES],
        "beats": list(BEATS), "categories": [list(b.categories) for b in beats],
        "risks": [list(b.risks) for b in beats],
        "negative": [int(b.negative_rate * 1000) for b in beats], "neutral": int(spec.neutral_share * 1000),
        "dup": int(spec.duplicate_share * 1000), "v_new": spec.sentiment_version,
        "v_old": spec.previous_sentiment_version or "", "v_risk": spec.risk_version,
    }
    before = store.scalar(f"SELECT count() FROM {store.database}.scored")
    # Re-deliveries go in a second insert: one insert block is collapsed on the way in.
    for copy in (0, 1):
        for table, columns, select in (("items", ITEM_COLUMNS, _BULK_ITEMS), ("scored", SCORED_COLUMNS, _BULK_SCORED),
                                       ("entities", ENTITY_COLUMNS, _BULK_ENTITIES)):
            sql = f"INSERT INTO {store.database}.{table} ({', '.join(columns)}) {select}"
            store.command(sql.replace("__BASE__", f"({_BULK_BASE})"), {**params, "copy": copy})
    return int(store.scalar(f"SELECT count() FROM {store.database}.scored")) - int(before)


def _pick(pool: str, h: int) -> str:
    """A name from the item's language's `pool`, the first ones likelier (the lesser of two draws)."""
    names = f"if(lang = 'zh', {{{pool}_zh:Array(String)}}, {{{pool}_en:Array(String)}})"
    draw = f"least(cityHash64(number, {{seed:UInt64}}, {h}), cityHash64(number, {{seed:UInt64}}, {h + 1}))"
    return f"{names}[{draw} % length({names}) + 1]"


# One row per generated item (and a second for the re-delivered ones, `copy` = 1).
_BULK_BASE = f"""
    SELECT number, lower(hex(cityHash64(number, {{seed:UInt64}}))) AS id,
           cityHash64(number, {{seed:UInt64}}, 1) % {{span:UInt64}} AS offset_ms,
           fromUnixTimestamp64Milli(toInt64({{start:Int64}} + offset_ms), 'UTC') AS published_at,
           cityHash64(number, {{seed:UInt64}}, 2) % length({{sources:Array(String)}}) + 1 AS s,
           {{sources:Array(String)}}[s] AS source, {{langs:Array(String)}}[s] AS lang,
           cityHash64(number, {{seed:UInt64}}, 3) % length({{beats:Array(String)}}) + 1 AS b,
           {{categories:Array(Array(String))}}[b] AS cats, {{risks:Array(Array(String))}}[b] AS rks,
           cats[cityHash64(number, {{seed:UInt64}}, 7) % length(cats) + 1] AS category,
           rks[cityHash64(number, {{seed:UInt64}}, 8) % length(rks) + 1] AS risk,
           cityHash64(number, {{seed:UInt64}}, 4) % 1000 AS h,
           multiIf(h < {{neutral:UInt32}}, 'neutral',
                   h < {{neutral:UInt32}} + (1000 - {{neutral:UInt32}}) * {{negative:Array(UInt32)}}[b] / 1000,
                   'negative', 'positive') AS sentiment,
           {_pick('places', 10)} AS place, {_pick('people', 12)} AS person, {_pick('orgs', 14)} AS org,
           indexOf(if(lang = 'zh', {{places_zh:Array(String)}}, {{places_en:Array(String)}}), place) AS pi,
           indexOf(if(lang = 'zh', {{people_zh:Array(String)}}, {{people_en:Array(String)}}), person) AS ei,
           indexOf(if(lang = 'zh', {{orgs_zh:Array(String)}}, {{orgs_en:Array(String)}}), org) AS oi,
           concat('Bulk headline ', toString(number % 9973), ' on ', {{beats:Array(String)}}[b], ' in ', place)
               AS title,
           concat(title, '. ', person, ' of ', org, ' spoke to ', source, '.') AS text,
           toFloat32(0.62 + (cityHash64(number, {{seed:UInt64}}, 6) % 370) / 1000) AS score,
           published_at + toIntervalSecond(3) AS ingested_at, toUInt32(number % 6) AS partition,
           published_at + toIntervalMillisecond(4000 + {{copy:UInt8}} * 60000) AS live_at,
           -- the multi-head package replayed the early part ten minutes after the replayed span
           live_at + toIntervalMillisecond(if(offset_ms < {{replay:UInt64}},
                                              {{replay:UInt64}} - offset_ms + 600000, 0)) AS new_at
    FROM numbers({{n:UInt64}})
    WHERE {{copy:UInt8}} = 0 OR cityHash64(number, {{seed:UInt64}}, 5) % 1000 < {{dup:UInt32}}"""

_BULK_ITEMS = """
    SELECT id, source, concat('https://bulk.example/', id), title, text, lang, published_at, ingested_at, 'news',
           partition, number, live_at
    FROM __BASE__"""

_BULK_SCORED = """
    SELECT id, source, lang, published_at, ingested_at, 'news', partition, number, job.1, job.4, job.2, job.3,
           score, map(job.3, score), false, job.5
    FROM (
        SELECT *, arrayJoin(arrayConcat(
            [('sentiment', {v_new:String}, sentiment, 'news-analysis-bulk', new_at),
             ('category', {v_new:String}, category, 'news-analysis-bulk', new_at),
             ('risk', {v_risk:String}, risk, 'risk-bulk', live_at)],
            -- the old two-label model called a neutral item one way or the other
            if({v_old:String} != '' AND offset_ms < {replay:UInt64},
               [('sentiment', {v_old:String}, if(sentiment = 'neutral', if(h % 2 = 0, 'negative', 'positive'),
                                                 sentiment), 'sentiment-bulk', live_at)], []))) AS job
        FROM __BASE__
    )"""

_BULK_ENTITIES = """
    SELECT id, {v_new:String}, source, lang, published_at, sentiment, [place, person, org],
           [if(lang = 'zh', {places_zh_n:Array(String)}, {places_en_n:Array(String)})[pi],
            if(lang = 'zh', {people_zh_n:Array(String)}, {people_en_n:Array(String)})[ei],
            if(lang = 'zh', {orgs_zh_n:Array(String)}, {orgs_en_n:Array(String)})[oi]],
           ['LOC', 'PER', 'ORG'],
           arrayMap(x -> toUInt32(x), [positionUTF8(title, place) - 1,
                                       lengthUTF8(title) + positionUTF8(text, person),
                                       lengthUTF8(title) + positionUTF8(text, org)]) AS starts,
           [starts[1] + lengthUTF8(place), starts[2] + lengthUTF8(person), starts[3] + lengthUTF8(org)],
           [score, score, score], new_at
    FROM __BASE__"""
