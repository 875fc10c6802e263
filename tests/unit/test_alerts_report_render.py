"""The brief's HTML from hand-made data: escaping, links, charts, empty periods."""

from __future__ import annotations

import datetime as dt
from html.parser import HTMLParser

from stream.alerts.queries import Versions
from stream.brief.report import (
    Brief,
    Bucket,
    EntityShare,
    FiredAlert,
    NegativeItem,
    Share,
    TopStory,
    bucket_for,
    render,
)

T = dt.datetime(2025, 3, 10, 12, 0, tzinfo=dt.UTC)
EVIL = "<script>alert('x')</script>&\"'"


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts.append(data)


def _brief() -> Brief:
    start = T - dt.timedelta(hours=24)
    brief = Brief(start, T, T, Versions("sent-v1", "risk-v1", "sent-v1", "sent-v1"), dt.timedelta(hours=1))
    brief.total, brief.negative = 30, 12
    brief.timeline = [Bucket(start + dt.timedelta(hours=h), h % 3, 2, h % 2) for h in range(24)]
    brief.risks = [Share("社会", 20, 10), Share(EVIL, 10, 2)]
    brief.categories = [Share("society", 20, 6, 8), Share(EVIL, 4, 0, 4)]
    brief.entities = [EntityShare("华为", 9, 3, 3, type="ORG"), EntityShare(EVIL, 2, 2, 0, type="PER")]
    brief.sources = [Share("weibo", 25, 10), Share('x"onmouseover="alert(1)', 5, 2)]
    brief.most_negative = [
        NegativeItem("i1", "weibo", f"标题 {EVIL}", "https://news.example/a?x=1&y=<2>", T, 0.97, "社会"),
        NegativeItem("i2", "weibo", "bad link", "javascript:alert(1)", T, 0.9, "社会", story_id="s1",
                     story_negatives=4),
    ]
    brief.stories = [
        TopStory(f'x"{EVIL}', f"化工厂泄漏 / {EVIL}", 12, 9, [("zh", 8), (EVIL, 4)],
                 [(f"src{k}", 7 - k) for k in range(7)], T - dt.timedelta(hours=3), T),
    ]
    brief.alerts = [FiredAlert(T, "watch", "watch_list", "critical", f"term={EVIL}", 1, 1, 1, f"[x] watch · s: {EVIL}")]
    return brief


def test_everything_from_data_is_escaped() -> None:
    page = render(_brief(), title=f"日报 {EVIL}")
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;&amp;&quot;&#x27;" in page
    parser = _Collect()
    parser.feed(page)
    # The only script is our own, and no attribute was broken out of.
    assert len([t for t, _ in parser.tags if t == "script"]) == 1
    assert all("onmouseover" not in attrs for _, attrs in parser.tags)
    hrefs = [attrs.get("href") for tag, attrs in parser.tags if tag == "a"]
    assert hrefs == ["https://news.example/a?x=1&y=<2>"]  # escaped in the source, intact once parsed
    assert "javascript:" not in "".join(str(h) for h in hrefs)


def test_self_contained_with_three_charts() -> None:
    page = render(_brief())
    parser = _Collect()
    parser.feed(page)
    tags = [t for t, _ in parser.tags]
    assert "link" not in tags and "img" not in tags and "iframe" not in tags
    assert all("src" not in attrs for _, attrs in parser.tags)
    charts = [attrs["data-chart"] for tag, attrs in parser.tags if tag == "svg"]
    assert charts == ["timeline", "risks", "sources"]
    assert tags.count("rect") >= 24 + 2 * 2 and "path" in tags
    assert "舆情日报" in page and "Most negative items" in page


def test_an_empty_period_says_so() -> None:
    empty = Brief(T - dt.timedelta(hours=24), T, T, Versions(None, None), dt.timedelta(hours=1))
    page = render(empty)
    assert page.count("nothing in this period") == 8
    assert "<svg" not in page


def test_bucket_sizes() -> None:
    assert bucket_for(dt.timedelta(hours=24)) == dt.timedelta(hours=1)
    assert bucket_for(dt.timedelta(days=7)) == dt.timedelta(hours=6)
    assert bucket_for(dt.timedelta(days=30)) == dt.timedelta(days=1)
    assert bucket_for(dt.timedelta(days=200)) == dt.timedelta(days=5)


def test_top_stories_and_the_story_count_of_a_negative_item() -> None:
    page = render(_brief())
    parser = _Collect()
    parser.feed(page)
    rows = [attrs for tag, attrs in parser.tags if tag == "tr" and "data-story" in attrs]
    assert [r["data-story"] for r in rows] == [f'x"{EVIL}']  # one story, its id intact once parsed
    assert "化工厂泄漏 / &lt;script&gt;" in page and '<td class="count">75%</td>' in page
    # five sources named, the other two counted
    assert "src0 7 · src1 6 · src2 5 · src3 4 · src4 3 <span class=\"more\">+2</span>" in page
    assert "同一事件另有 3 条负面 · 3 more on this story" in page
    assert page.index("今日要闻 · Top stories") < page.index("情感趋势")


def test_categories_and_entities_with_shares_of_the_non_neutral_items() -> None:
    page = render(_brief())
    categories = page[page.index('<table class="categories">'):]
    # society: 20 items, 6 negative, 8 neutral, 6 positive: 50% of the 12 non-neutral are negative.
    assert ('<td class="name">society</td><td class="count">20</td><td class="count">6</td>'
            '<td class="count">8</td><td class="count">6</td><td class="count">50%</td>') in categories
    # all neutral: no non-neutral item, a share of 0 (not a division error)
    assert '<td class="count">4</td><td class="count">0</td><td class="count">0%</td>' in categories
    entities = page[page.index('<table class="entities">'):]
    assert '<td class="name">华为</td><td>ORG</td><td class="count">9</td>' in entities and "50%" in entities
    assert "<td class=\"name\">&lt;script&gt;" in entities
    assert page.index("按类别 · By category") < page.index("新闻中的实体 · Entities in the news")
    assert 'class="bar neu"' in page  # neutral drawn in the timeline
