"""Feed entries -> our JSON items: ids, HTML stripping, language, dates."""

from __future__ import annotations

import datetime as dt
import hashlib
import json

import feedparser
import pytest

from stream.feeds.config import FeedConfig
from stream.feeds.normalize import (
    FeedItem,
    detect_lang,
    item_id,
    normalize_entry,
    normalize_lang,
    strip_html,
)
from tests.feeds_fixtures import Entry, atom, rss

NOW = dt.datetime(2026, 3, 1, 12, 0, 0, 500_000, tzinfo=dt.UTC)
FEED_URL = "http://127.0.0.1:1/zh.xml"
PUB = dt.datetime(2026, 2, 27, 8, 30, 5, tzinfo=dt.UTC)


def _items(xml: str, feed: FeedConfig) -> list[FeedItem | None]:
    parsed = feedparser.parse(xml)
    lang = parsed.feed.get("language")
    return [normalize_entry(e, feed, lang, NOW) for e in parsed.entries]


def test_strip_html_drops_tags_scripts_and_decodes_entities() -> None:
    html = "<p>股价&nbsp;上涨 <b>5%</b></p><script>alert(1)</script><p>AT&amp;T &lt;3</p><br/>end"
    assert strip_html(html) == "股价 上涨 5%\nAT&T <3\nend"
    assert strip_html("  plain   text\n\n\n more ") == "plain text\nmore"
    assert strip_html("a &lt;b&gt; c", is_html=False) == "a &lt;b&gt; c"
    assert strip_html(None) == ""


@pytest.mark.parametrize(
    ("text", "lang"),
    [
        ("央行宣布下调存款准备金率", "zh"),
        ("The central bank cut rates", "en"),
        ("苹果发布新款iPhone，市场反应热烈", "zh"),
        ("Apple's new iPhone 发布", "en"),
        ("2026 — 100%", None),
    ],
)
def test_detect_lang_by_cjk_share(text: str, lang: str | None) -> None:
    assert detect_lang(text) == lang


def test_normalize_lang_tags() -> None:
    assert normalize_lang("zh-CN") == "zh"
    assert normalize_lang("en_us") == "en"
    assert normalize_lang("") is None
    assert normalize_lang("??") is None


def test_ids_are_stable_and_namespaced_only_for_bare_guids() -> None:
    sha = lambda s: hashlib.sha1(s.encode()).hexdigest()  # noqa: E731
    assert item_id({"id": "tag:example.org,2026:1"}, FEED_URL) == sha("tag:example.org,2026:1")
    assert item_id({"id": "https://n.example/a/1"}, "http://other/feed") == sha("https://n.example/a/1")
    assert item_id({"id": "12345"}, FEED_URL) == sha(f"{FEED_URL}#12345")
    assert item_id({"id": "12345"}, FEED_URL) != item_id({"id": "12345"}, "http://other/feed")
    assert item_id({"link": "https://n.example/a/2"}, FEED_URL) == sha("https://n.example/a/2")
    no_keys = {"title": "t", "summary": "s"}
    assert item_id(no_keys, FEED_URL) == item_id(dict(no_keys), FEED_URL)


def test_rss_entry_with_channel_language() -> None:
    xml = rss(
        [Entry("zh-1", "央行 <b>降准</b>", "<p>中国人民银行宣布&amp;下调</p><p>第二段</p>", PUB, "https://n.example/zh/1")],
        language="zh-cn",
    )
    (item,) = _items(xml, FeedConfig(url=FEED_URL, source="xinhua"))
    assert item is not None
    assert item.id == hashlib.sha1(f"{FEED_URL}#zh-1".encode()).hexdigest()
    assert item.source == "xinhua"
    assert item.url == "https://n.example/zh/1"
    assert item.title == "央行 降准"
    assert item.text == "中国人民银行宣布&下调\n第二段"
    assert item.lang == "zh"
    assert item.published_at == PUB
    assert item.timestamp_ms == int(PUB.timestamp()) * 1000


def test_per_feed_lang_wins_over_the_feed_and_detection() -> None:
    xml = rss([Entry("1", "Hello world", "English text", PUB)], language="zh-cn")
    (item,) = _items(xml, FeedConfig(url=FEED_URL, source="s", lang="en"))
    assert item is not None and item.lang == "en"


def test_atom_entries_detect_language_per_entry() -> None:
    xml = atom(
        [
            Entry("tag:ex.org,2026:en", "Markets rally", "<p>Stocks rose on <i>Tuesday</i>.</p>", PUB,
                  "https://ex.org/en"),
            Entry("tag:ex.org,2026:zh", "市场大涨", "<div>周二股市上涨。</div>", PUB, "https://ex.org/zh"),
        ]
    )
    en, zh = _items(xml, FeedConfig(url="http://h/atom", source="ex"))
    assert en is not None and zh is not None
    assert (en.lang, en.title, en.text) == ("en", "Markets rally", "Stocks rose on Tuesday.")
    assert (zh.lang, zh.text) == ("zh", "周二股市上涨。")
    assert en.id == hashlib.sha1(b"tag:ex.org,2026:en").hexdigest()
    assert en.url == "https://ex.org/en" and en.published_at == PUB


def test_dates_fall_back_to_updated_then_to_now() -> None:
    future = NOW + dt.timedelta(days=3)
    xml = rss([Entry("a", "no date", "x", None), Entry("b", "from the future", "x", future)])
    a, b = _items(xml, FeedConfig(url=FEED_URL, source="s"))
    assert a is not None and b is not None
    assert a.published_at == NOW.replace(microsecond=0) == b.published_at
    # Atom with only <updated>
    (u,) = _items(atom([Entry("urn:x:1", "t", "x", None)]), FeedConfig(url=FEED_URL, source="s"))
    assert u is not None and u.published_at == dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def test_entry_without_title_or_text_is_skipped() -> None:
    (item,) = _items(rss([Entry("a", "", "", PUB)]), FeedConfig(url=FEED_URL, source="s"))
    assert item is None


def test_json_matches_the_input_contract_and_fits_the_size_limit() -> None:
    item = FeedItem("i", "s", "https://u", "标题", "长" * 5000, "zh", PUB)
    data = json.loads(item.to_json())
    assert data == {
        "id": "i", "source": "s", "url": "https://u", "title": "标题", "text": "长" * 5000,
        "lang": "zh", "published_at": "2026-02-27T08:30:05Z",
    }
    small = item.to_json(max_bytes=2000)
    assert len(small) <= 2000
    shortened = json.loads(small)
    assert shortened["title"] == "标题" and 0 < len(shortened["text"]) < 5000
    no_lang = json.loads(FeedItem("i", "s", "", "t", "", None, PUB).to_json())
    assert "lang" not in no_lang
