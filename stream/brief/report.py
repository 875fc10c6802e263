"""The daily brief (舆情日报): one self-contained HTML page from the store.

`gather` reads the store (parameterized SQL, `scored` with FINAL, latest model versions) into a
`Brief`; `render` turns a `Brief` into HTML with inline SVG charts, inline CSS and a few lines of
inline JS (no network: it opens offline and from e-mail attachments).  Every string that comes
from data is HTML-escaped; only http(s) URLs become links.

Stories (``item_stories`` / ``stories``, from the stories job) give the 今日要闻 section: the
stories with most items in the period, and they keep one event from filling the most-negative
list: it shows one item per story (an item the job has not assigned stands alone).

Negative shares are of the non-neutral items (negative / (negative + positive)), as the
negative-surge rule counts them.  The most-negative list ranks by the calibrated probability of
negative, then by the least positive mass (of two items as negative, the one whose rest is
neutral ranks first), then the newest, then the id: ties never come out in arbitrary order.
"""

from __future__ import annotations

import datetime as dt
import html
import math
from dataclasses import dataclass, field
from importlib import resources
from string import Template

from stream.alerts.queries import TIME, Versions, items_query, latest_versions, representative_title, story_titles
from stream.alerts.rules import Scope
from stream.core.store import Store
from stream.core.times import as_utc, format_duration

TOP_ITEMS = 20
TOP_STORIES = 10
STORY_SOURCES = 5  # sources named per story; the rest are counted
TOP_RISKS = 12
TOP_CATEGORIES = 10
TOP_SOURCES = 15
TOP_ENTITIES = 15
MAX_ALERTS = 200

NEG_COLOR = "#d64545"
POS_COLOR = "#3f9d5a"
NEU_COLOR = "#9aa3ad"
PALETTE = ("#3b6fb6", "#e08a2c", "#6a4fb3", "#2a9d8f", "#c9457a", "#7a8b2c", "#8c564b", "#4c9ed9")


@dataclass(frozen=True)
class Bucket:
    start: dt.datetime
    negative: int
    positive: int
    neutral: int = 0


@dataclass(frozen=True)
class Share:
    name: str
    items: int
    negative: int
    neutral: int = 0

    @property
    def positive(self) -> int:
        return self.items - self.negative - self.neutral

    @property
    def negative_share(self) -> float:
        """Of the non-neutral items."""
        return _share(self.negative, self.items - self.neutral)


@dataclass(frozen=True)
class EntityShare(Share):
    """One entity (its normalized form and type) in the period: the items naming it and their
    sentiment (the sentiment of the package that found it); `name` is its most frequent spelling."""

    type: str = ""


def _share(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


@dataclass(frozen=True)
class NegativeItem:
    id: str
    source: str
    title: str
    url: str
    published_at: dt.datetime
    negative_score: float  # calibrated P(negative)
    risk: str
    story_id: str = ""
    story_negatives: int = 1  # negative items of its story in the period (itself included)
    category: str = ""
    positive_score: float = 0.0  # P(positive): breaks ties of negative_score


@dataclass(frozen=True)
class TopStory:
    story_id: str
    title: str  # the representative titles ('zh / en'), else its first item's title in the period
    items: int
    negative: int
    languages: list[tuple[str, int]]  # (language, items), most first
    sources: list[tuple[str, int]]
    first: dt.datetime
    last: dt.datetime

    @property
    def negative_share(self) -> float:
        return self.negative / self.items if self.items else 0.0


@dataclass(frozen=True)
class FiredAlert:
    fired_at: dt.datetime
    rule: str
    kind: str
    severity: str
    scope: str
    value: float
    threshold: float
    item_count: int
    message: str


@dataclass
class Brief:
    start: dt.datetime
    end: dt.datetime
    generated_at: dt.datetime
    versions: Versions
    bucket: dt.timedelta
    total: int = 0
    negative: int = 0
    neutral: int = 0
    timeline: list[Bucket] = field(default_factory=list)
    risks: list[Share] = field(default_factory=list)
    categories: list[Share] = field(default_factory=list)
    sources: list[Share] = field(default_factory=list)
    entities: list[EntityShare] = field(default_factory=list)
    most_negative: list[NegativeItem] = field(default_factory=list)
    stories: list[TopStory] = field(default_factory=list)
    alerts: list[FiredAlert] = field(default_factory=list)

    @property
    def negative_share(self) -> float:
        """Of the non-neutral items."""
        return _share(self.negative, self.total - self.neutral)


def bucket_for(span: dt.timedelta) -> dt.timedelta:
    """At most ~48 bars: hours up to two days, then 6 hours, then days."""
    for step in (dt.timedelta(hours=1), dt.timedelta(hours=6), dt.timedelta(days=1)):
        if span / step <= 48:
            return step
    return dt.timedelta(days=max(1, math.ceil(span / dt.timedelta(days=48))))


# -- reading ----------------------------------------------------------------------------------
def gather(store: Store, start: dt.datetime, end: dt.datetime) -> Brief:
    versions = latest_versions(store, start, end)
    brief = Brief(start, end, dt.datetime.now(dt.UTC), versions, bucket_for(end - start))
    brief.alerts = _alerts(store, start, end)
    query = items_query(store.database, versions, Scope(), start, end)
    if query is None:
        return brief
    items, params = query.sql, query.params

    total, negative, neutral = store.rows(f"SELECT count(), countIf(neg), countIf(neutral) FROM ({items})", params)[0]
    brief.total, brief.negative, brief.neutral = int(total), int(negative), int(neutral)

    step_s = int(brief.bucket.total_seconds())
    counts = {
        as_utc(t): (int(n), int(p), int(u))
        for t, n, p, u in store.rows(
            "SELECT toStartOfInterval(published_at, INTERVAL {step:UInt32} SECOND) AS t, "
            f"countIf(neg), countIf(NOT neg AND NOT neutral), countIf(neutral) FROM ({items}) GROUP BY t ORDER BY t",
            {**params, "step": step_s},
        )
    }
    first = dt.datetime.fromtimestamp(int(start.timestamp()) // step_s * step_s, dt.UTC)
    cursor = first
    while cursor < end:
        brief.timeline.append(Bucket(cursor, *counts.get(cursor, (0, 0, 0))))
        cursor += brief.bucket

    def shares(column: str, limit: int) -> list[Share]:
        return [
            Share(str(name), int(n), int(neg), int(neu))
            for name, n, neg, neu in store.rows(
                f"SELECT {column} AS name, count() AS n, countIf(neg), countIf(neutral) FROM ({items}) "
                "GROUP BY name ORDER BY n DESC, name LIMIT {limit:UInt32}",
                {**params, "limit": limit},
            )
        ]

    brief.risks = shares("risk", TOP_RISKS) if versions.risk else []
    brief.categories = shares("category", TOP_CATEGORIES) if versions.category else []
    brief.sources = shares("source", TOP_SOURCES)
    brief.entities = _entities(store, versions, start, end)
    # Each item with its story ('' while the stories job has not assigned it).
    with_story = (
        "SELECT id, source, lang, title, url, published_at, neg, neg_score, pos_score, risk, category, "
        f"st.story_id AS story_id FROM ({items}) AS i LEFT JOIN (SELECT id, story_id "
        f"FROM {store.database}.item_stories FINAL WHERE published_at >= {{start:{TIME}}} "
        f"AND published_at < {{end:{TIME}}}) AS st USING id"
    )
    brief.most_negative = [
        NegativeItem(str(i), str(s), str(t), str(u), as_utc(p), float(neg), str(risk), str(story), int(n),
                     str(category), float(pos))
        for i, s, t, u, p, neg, pos, risk, category, story, n in store.rows(
            "SELECT id, source, title, url, published_at, neg_score, pos_score, risk, category, story_id, "
            "count() OVER (PARTITION BY grp) AS n "
            f"FROM (SELECT *, if(story_id = '', id, story_id) AS grp FROM ({with_story}) WHERE neg) "
            "ORDER BY neg_score DESC, pos_score ASC, published_at DESC, id LIMIT 1 BY grp LIMIT {limit:UInt32}",
            {**params, "limit": TOP_ITEMS},
        )
    ]
    brief.stories = _stories(store, with_story, params)
    return brief


def _entities(store: Store, versions: Versions, start: dt.datetime, end: dt.datetime) -> list[EntityShare]:
    """The entities named by most items in the period (one entity: one normalized form and type)."""
    if versions.entities is None:
        return []
    return [
        EntityShare(str(name), int(n), int(neg), int(neu), type=str(kind))
        for name, kind, n, neg, neu in store.rows(
            "SELECT arraySort(p -> (-p.2, p.1), CAST(sumMap(map(text, toUInt64(1))), "
            "'Array(Tuple(String, UInt64))'))[1].1, type, uniqExact(id) AS n, uniqExactIf(id, sentiment = 'negative'), "
            f"uniqExactIf(id, sentiment = 'neutral') FROM {store.database}.entity_mentions "
            f"WHERE model_version = {{version:String}} AND published_at >= {{start:{TIME}}} "
            f"AND published_at < {{end:{TIME}}} GROUP BY normalized, type ORDER BY n DESC, normalized, type "
            "LIMIT {limit:UInt32}",
            {"version": versions.entities, "start": start, "end": end, "limit": TOP_ENTITIES},
        )
    ]


def _stories(store: Store, with_story: str, params: dict[str, object]) -> list[TopStory]:
    """The stories with most items in the period, with their items per language and source."""
    pairs = "CAST(sumMap(map({0}, toUInt64(1))), 'Array(Tuple(String, UInt64))')"
    rows = store.rows(
        f"SELECT story_id, count() AS n, countIf(neg), {pairs.format('lang')}, {pairs.format('source')}, "
        f"min(published_at), max(published_at), argMin(title, published_at) FROM ({with_story}) "
        "WHERE story_id != '' GROUP BY story_id ORDER BY n DESC, story_id LIMIT {limit:UInt32}",
        {**params, "limit": TOP_STORIES},
    )
    titles = story_titles(store, [str(r[0]) for r in rows])

    def ranked(counts: list[tuple[str, int]]) -> list[tuple[str, int]]:
        return sorted(((str(k), int(v)) for k, v in counts), key=lambda kv: (-kv[1], kv[0]))

    return [
        TopStory(str(story), representative_title(titles.get(str(story), {})) or str(first_title), int(n),
                 int(negative), ranked(langs), ranked(sources), as_utc(first), as_utc(last))
        for story, n, negative, langs, sources, first, last, first_title in rows
    ]


def _alerts(store: Store, start: dt.datetime, end: dt.datetime) -> list[FiredAlert]:
    rows = store.rows(
        "SELECT fired_at, rule, kind, severity, scope, value, threshold, item_count, message "
        f"FROM {store.database}.alerts FINAL "
        f"WHERE window_end >= {{start:{TIME}}} AND window_end <= {{end:{TIME}}} "
        "ORDER BY fired_at DESC, rule, scope LIMIT {limit:UInt32}",
        {"start": start, "end": end, "limit": MAX_ALERTS},
    )
    return [
        FiredAlert(as_utc(f), str(r), str(k), str(s), str(sc), float(v), float(t), int(n), str(m))
        for f, r, k, s, sc, v, t, n, m in rows
    ]


# -- drawing ----------------------------------------------------------------------------------
def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _nice_max(value: int) -> int:
    """A round axis maximum at or above `value` (1, 2, 5 x 10^n)."""
    if value <= 5:
        return 5
    magnitude = 10 ** int(math.log10(value))
    for factor in (1, 2, 5, 10):
        if value <= factor * magnitude:
            return factor * magnitude
    return 10 * magnitude


def _svg(chart: str, label: str, width: int, height: int, body: list[str]) -> str:
    return (
        f'<svg class="chart" data-chart="{_e(chart)}" role="img" aria-label="{_e(label)}" '
        f'viewBox="0 0 {width} {height}" width="100%" preserveAspectRatio="xMidYMid meet" '
        f'xmlns="http://www.w3.org/2000/svg">' + "".join(body) + "</svg>"
    )


def timeline_svg(brief: Brief) -> str:
    """Stacked bars per bucket: negative at the bottom, neutral, then positive above."""
    width, height, left, right, top, bottom = 760, 260, 44, 40, 12, 36
    plot_w, plot_h = width - left - right, height - top - bottom
    buckets = brief.timeline
    peak = _nice_max(max((b.negative + b.neutral + b.positive for b in buckets), default=0))
    body: list[str] = []
    for i in range(5):  # horizontal grid and y labels
        value = peak * i / 4
        y = top + plot_h - plot_h * i / 4
        body.append(f'<line class="grid" x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}"/>')
        body.append(f'<text class="axis" x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{value:g}</text>')
        body.append(f'<text class="axis share" x="{width - right + 6}" y="{y + 4:.1f}">{25 * i}%</text>')
    slot = plot_w / max(len(buckets), 1)
    bar_w = max(slot * 0.75, 1.0)
    label_every = max(1, math.ceil(len(buckets) / 8))
    day_fmt = "%m-%d %H:%M" if brief.bucket < dt.timedelta(days=1) else "%m-%d"
    for i, b in enumerate(buckets):
        x = left + i * slot + (slot - bar_w) / 2
        tip = (f"{b.start:%Y-%m-%d %H:%M} UTC: {b.negative} 负面 negative, {b.neutral} 中性 neutral, "
               f"{b.positive} 正面 positive")
        base = float(top + plot_h)
        for css, count, color in (("neg", b.negative, NEG_COLOR), ("neu", b.neutral, NEU_COLOR),
                                  ("pos", b.positive, POS_COLOR)):
            if count:
                h = plot_h * count / peak
                base -= h
                body.append(
                    f'<rect class="bar {css}" x="{x:.1f}" y="{base:.1f}" width="{bar_w:.1f}" '
                    f'height="{h:.1f}" fill="{color}"><title>{_e(tip)}</title></rect>'
                )
        if i % label_every == 0:
            body.append(
                f'<text class="axis" x="{x + bar_w / 2:.1f}" y="{height - bottom + 16}" '
                f'text-anchor="middle">{_e(format(b.start, day_fmt))}</text>'
            )
    # Negative share (of the non-neutral items) as a line over the bars, on the right-hand 0-100% scale.
    points = [
        (left + i * slot + slot / 2, top + plot_h - plot_h * b.negative / (b.negative + b.positive))
        for i, b in enumerate(buckets)
        if b.negative + b.positive
    ]
    if len(points) >= 2:
        path = "M" + " L".join(f"{x:.1f},{y:.1f}" for x, y in points)
        body.append(f'<path class="share-line" d="{path}" fill="none" stroke="#222" stroke-width="1.5"/>')
    body.append(f'<line class="axis-line" x1="{left}" x2="{width - right}" y1="{top + plot_h}" y2="{top + plot_h}"/>')
    return _svg("timeline", "情感趋势 Sentiment over time", width, height, body)


def hbar_svg(chart: str, label: str, shares: list[Share], as_share: bool) -> str:
    """Horizontal bars: item counts (risk topic mix) or negative share 0-100% (by source)."""
    row_h, left, right, top = 26, 150, 150, 8
    width = 760
    height = top * 2 + row_h * max(len(shares), 1)
    plot_w = width - left - right
    peak = 1.0 if as_share else float(max((s.items for s in shares), default=1) or 1)
    total = sum(s.items for s in shares)
    body: list[str] = []
    for i, s in enumerate(shares):
        y = top + i * row_h
        value = s.negative_share if as_share else float(s.items)
        bar = max(plot_w * value / peak, 0.0)
        color = NEG_COLOR if as_share else PALETTE[i % len(PALETTE)]
        name = s.name or "(无 none)"
        if as_share:
            text = f"{s.negative_share:.0%} · {s.negative}/{s.items}"
        else:
            text = f"{s.items} ({s.items / total:.0%}) · 负面 {s.negative_share:.0%}" if total else "0"
        body.append(
            f'<text class="label" x="{left - 8}" y="{y + row_h / 2 + 4:.1f}" text-anchor="end">{_e(name[:24])}</text>'
        )
        body.append(
            f'<rect class="bar track" x="{left}" y="{y + 4}" width="{plot_w}" height="{row_h - 8}" fill="#eef0f3"/>'
        )
        if bar > 0:
            body.append(
                f'<rect class="bar" x="{left}" y="{y + 4}" width="{bar:.1f}" height="{row_h - 8}" '
                f'fill="{color}"><title>{_e(name)}: {_e(text)}</title></rect>'
            )
        body.append(f'<text class="value" x="{left + plot_w + 8}" y="{y + row_h / 2 + 4:.1f}">{_e(text)}</text>')
    return _svg(chart, label, width, height, body)


def _link(url: str, text: str) -> str:
    if url.startswith(("http://", "https://")):
        return f'<a href="{_e(url)}" rel="noopener noreferrer" target="_blank">{_e(text)}</a>'
    return _e(text)


def _section(title: str, content: str, empty: bool = False) -> str:
    inner = '<p class="empty">此期间无数据 · nothing in this period</p>' if empty else content
    return f"<section><h2>{_e(title)}</h2>{inner}</section>"


def render(brief: Brief, title: str = "舆情日报 Daily brief") -> str:
    fmt = "%Y-%m-%d %H:%M"
    period = f"{brief.start:{fmt}} – {brief.end:{fmt}} UTC"
    summary = (
        '<div class="cards">'
        f'<div class="card"><b>{brief.total}</b><span>条 items</span></div>'
        f'<div class="card neg"><b>{brief.negative_share:.0%}</b><span>负面 negative ({brief.negative}, '
        "of non-neutral)</span></div>"
        f'<div class="card"><b>{brief.neutral}</b><span>中性 neutral</span></div>'
        f'<div class="card"><b>{len(brief.alerts)}</b><span>告警 alerts</span></div>'
        f'<div class="card"><b>{len(brief.sources)}</b><span>来源 sources</span></div>'
        "</div>"
    )
    legend = (
        f'<p class="legend"><i style="background:{NEG_COLOR}"></i>负面 negative '
        f'<i style="background:{NEU_COLOR}"></i>中性 neutral '
        f'<i style="background:{POS_COLOR}"></i>正面 positive '
        '<i class="line"></i>负面占比 negative share of non-neutral (0–100%) · '
        f"{_e(format_duration(brief.bucket))} 每柱 per bar</p>"
    )
    sections = [
        _section("今日要闻 · Top stories", _stories_table(brief), empty=not brief.stories),
        _section("情感趋势 · Sentiment over time", legend + timeline_svg(brief), empty=brief.total == 0),
        _section("按类别 · By category", _categories_table(brief), empty=not brief.categories),
        _section(
            "风险话题 · Risk topics",
            hbar_svg("risks", "风险话题 Risk topics", brief.risks, as_share=False),
            empty=not brief.risks,
        ),
        _section(
            "各来源负面占比 · Negative share by source",
            hbar_svg("sources", "各来源负面占比 Negative share by source", brief.sources, as_share=True),
            empty=not brief.sources,
        ),
        _section("新闻中的实体 · Entities in the news", _entities_table(brief), empty=not brief.entities),
        _section("最负面条目 · Most negative items (one per story)", _items_table(brief),
                 empty=not brief.most_negative),
        _section("告警 · Alerts fired", _alerts_table(brief), empty=not brief.alerts),
    ]
    page = Template(resources.files("stream.brief").joinpath("assets/brief.html").read_text("utf-8"))
    return page.substitute(
        title=_e(title),
        period=_e(period),
        generated=_e(f"{brief.generated_at:{fmt}} UTC"),
        versions=_e(brief.versions.describe()),
        css=resources.files("stream.brief").joinpath("assets/brief.css").read_text("utf-8"),
        js=resources.files("stream.brief").joinpath("assets/brief.js").read_text("utf-8"),
        summary=summary,
        sections="\n".join(sections),
    )


def _counts(pairs: list[tuple[str, int]], shown: int = 0) -> str:
    """'zh 5 · en 3' (the first `shown`, then '+N more')."""
    cut = pairs[:shown] if shown else pairs
    text = " · ".join(f"{name or '(无 none)'} {n}" for name, n in cut)
    return _e(text) + (f' <span class="more">+{len(pairs) - len(cut)}</span>' if len(pairs) > len(cut) else "")


def _stories_table(brief: Brief) -> str:
    rows = [
        f'<tr data-story="{_e(story.story_id)}">'
        f'<td class="rank">{rank}</td>'
        f'<td class="story-title">{_e(story.title)}</td>'
        f'<td class="count">{story.items}</td>'
        f'<td class="count">{story.negative_share:.0%}</td>'
        f'<td class="langs">{_counts(story.languages)}</td>'
        f'<td class="story-sources">{_counts(story.sources, STORY_SOURCES)}</td>'
        f'<td class="time">{story.first:%m-%d %H:%M} – {story.last:%m-%d %H:%M}</td>'
        "</tr>"
        for rank, story in enumerate(brief.stories, start=1)
    ]
    return (
        '<table class="stories"><thead><tr><th>#</th><th>事件 Story (代表标题 titles)</th><th>条数 Items</th>'
        "<th>负面 Negative</th><th>语言 Languages</th><th>来源 Sources</th><th>时间 First – last (UTC)</th>"
        f"</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _items_table(brief: Brief) -> str:
    def more(item: NegativeItem) -> str:
        others = item.story_negatives - 1
        if others <= 0:
            return ""
        return f'<br><span class="more">同一事件另有 {others} 条负面 · {others} more on this story</span>'

    rows = [
        "<tr>"
        f'<td class="num">{item.negative_score:.3f}</td>'
        f"<td>{_link(item.url, item.title or item.id)}{more(item)}</td>"
        f"<td>{_e(item.source)}</td><td>{_e(item.category)}</td><td>{_e(item.risk)}</td>"
        f'<td class="time">{item.published_at:%m-%d %H:%M}</td>'
        "</tr>"
        for item in brief.most_negative
    ]
    return (
        '<table class="items"><thead><tr><th>负面概率<br>P(neg)</th><th>标题 Title</th>'
        "<th>来源 Source</th><th>类别 Category</th><th>风险 Risk</th><th>发布 Published (UTC)</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _mix(share: Share) -> str:
    return (f'<td class="count">{share.items}</td><td class="count">{share.negative}</td>'
            f'<td class="count">{share.neutral}</td><td class="count">{share.positive}</td>'
            f'<td class="count">{share.negative_share:.0%}</td>')


_MIX_HEAD = ("<th>条数 Items</th><th>负面 Neg.</th><th>中性 Neu.</th><th>正面 Pos.</th>"
             "<th>负面占比 Neg. share<br>(不含中性 of non-neutral)</th>")


def _categories_table(brief: Brief) -> str:
    rows = [f'<tr><td class="name">{_e(c.name or "(无 none)")}</td>{_mix(c)}</tr>' for c in brief.categories]
    return (f'<table class="categories"><thead><tr><th>类别 Category</th>{_MIX_HEAD}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>")


def _entities_table(brief: Brief) -> str:
    rows = [f'<tr><td class="name">{_e(e.name)}</td><td>{_e(e.type)}</td>{_mix(e)}</tr>' for e in brief.entities]
    return (f'<table class="entities"><thead><tr><th>实体 Entity</th><th>类型 Type</th>{_MIX_HEAD}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>")


def _alerts_table(brief: Brief) -> str:
    rows = [
        f'<tr class="sev-{_e(a.severity)}">'
        f'<td class="time">{a.fired_at:%m-%d %H:%M}</td>'
        f"<td>{_e(a.severity)}</td><td>{_e(a.rule)}</td><td>{_e(a.scope)}</td>"
        f"<td>{_e(a.message.split(': ', 1)[-1])}</td>"
        "</tr>"
        for a in brief.alerts
    ]
    return (
        '<table class="alerts"><thead><tr><th>时间 Fired (UTC)</th><th>级别 Severity</th>'
        "<th>规则 Rule</th><th>范围 Scope</th><th>详情 Details</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )
