"""Feeds in GBK, GB18030 and Big5 that declare no encoding still come out as the original Chinese."""

from __future__ import annotations

import datetime as dt

import charset_normalizer
import feedparser
import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream.feeds.fetch import Validators, decode_undeclared, fetch_feed
from stream.feeds.net import EVERY_NETWORK
from tests.feeds_fixtures import Entry, FeedServer, rss

PUB = dt.datetime(2026, 2, 27, 8, 0, tzinfo=dt.UTC)

SIMPLIFIED = [
    ("央行宣布下调存款准备金率", "中国人民银行今天宣布，下调金融机构存款准备金率零点五个百分点。"),
    ("新能源汽车销量创新高", "一月份新能源汽车销量同比增长三成，市场需求持续旺盛。"),
    ("暴雨预警：城市交通受阻", "气象台发布暴雨橙色预警，多条道路临时封闭，市民出行请注意安全。"),
]
TRADITIONAL = [
    ("央行宣佈調降存款準備率", "中央銀行今日宣佈，調降金融機構存款準備率零點五個百分點。"),
    ("颱風來襲，氣象局發布警報", "強烈颱風逐漸接近，氣象局發布海上及陸上颱風警報，請民眾注意防範。"),
    ("股市大漲，投資人信心回升", "台北股市今日大漲，電子類股領軍上攻，成交量明顯放大。"),
]
# GB18030 beyond GBK: 𠮷 (a four-byte sequence) and 㐀 (CJK extension A).
GB18030_ONLY = [("𠮷野家开设新店", "㐀字在国家标准中有编码，今日起新店开业，市民排队品尝。"), *SIMPLIFIED[1:]]

CASES = {"gbk": SIMPLIFIED, "gb18030": GB18030_ONLY, "big5": TRADITIONAL}


def undeclared_feed(entries: list[tuple[str, str]]) -> str:
    xml = rss([Entry(str(i), title, f"<p>{text}</p>", PUB) for i, (title, text) in enumerate(entries)])
    return xml.replace(' encoding="UTF-8"', "")  # `<?xml version="1.0"?>`: nothing declared


@pytest.mark.parametrize("content_type", ["application/rss+xml", "text/xml", "text/html"])
@pytest.mark.parametrize("encoding", list(CASES))
def test_undeclared_chinese_feeds_decode(
    feed_server: FeedServer, client: httpx.Client, encoding: str, content_type: str
) -> None:
    entries = CASES[encoding]
    body = undeclared_feed(entries).encode(encoding)
    with pytest.raises(UnicodeDecodeError):
        body.decode("utf-8")
    url = feed_server.set("/f", body, content_type=content_type)
    got = fetch_feed(client, url, Validators(), 5, EVERY_NETWORK)
    assert [e.title for e in got.entries] == [title for title, _ in entries]
    assert [e.summary for e in got.entries] == [f"<p>{text}</p>" for _, text in entries]


@pytest.mark.parametrize("encoding", list(CASES))
def test_decoding_is_to_utf8_with_the_charset_said(encoding: str) -> None:
    xml = undeclared_feed(CASES[encoding])
    body, content_type = decode_undeclared(xml.encode(encoding), "text/xml")
    assert body == xml.encode("utf-8") and content_type == "text/xml; charset=utf-8"
    parsed = feedparser.parse(body, response_headers={"content-type": content_type})
    assert not parsed.bozo and parsed.entries[0].title == CASES[encoding][0][0]


def test_a_declared_encoding_wins_over_detection(feed_server: FeedServer, client: httpx.Client) -> None:
    xml = undeclared_feed(TRADITIONAL)
    big5 = xml.encode("big5")
    in_xml = xml.replace('<?xml version="1.0"?>', '<?xml version="1.0" encoding="big5"?>').encode("big5")
    in_header = ("application/rss+xml; charset=big5", big5)
    for content_type, body in (("application/rss+xml", in_xml), in_header):
        assert decode_undeclared(body, content_type) == (body, content_type)  # left to feedparser
        url = feed_server.set("/f", body, content_type=content_type)
        titles = [e.title for e in fetch_feed(client, url, Validators(), 5, EVERY_NETWORK).entries]
        assert titles == [title for title, _ in TRADITIONAL]
    # Declared wrongly, the declaration still wins: GBK bytes read as Big5 are not the GBK text.
    gbk = undeclared_feed(SIMPLIFIED).encode("gbk")
    assert decode_undeclared(gbk, "text/xml; charset=big5") == (gbk, "text/xml; charset=big5")
    bom = b"\xef\xbb\xbf" + undeclared_feed(SIMPLIFIED).encode("utf-8")
    assert decode_undeclared(bom, "") == (bom, "")


def test_utf8_skips_detection(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_detection(*args: object, **kwargs: object) -> None:
        raise AssertionError("UTF-8 must not go through charset detection")

    monkeypatch.setattr(charset_normalizer, "from_bytes", no_detection)
    body = undeclared_feed(SIMPLIFIED * 2000).encode("utf-8")  # ~1.5 MB
    got, content_type = decode_undeclared(body, "application/rss+xml")
    assert got is body and content_type == "application/rss+xml; charset=utf-8"


@given(st.text(), st.sampled_from(["", "text/xml", "application/atom+xml", "garbage"]))
def test_utf8_bodies_are_never_altered(text: str, content_type: str) -> None:
    body = text.encode("utf-8")
    assert decode_undeclared(body, content_type)[0] is body


@given(st.binary(max_size=2000))
def test_any_bytes_come_back_as_bytes(body: bytes) -> None:
    got, content_type = decode_undeclared(body, "application/rss+xml")
    assert isinstance(got, bytes) and content_type.startswith("application/rss+xml")
    feedparser.parse(got, response_headers={"content-type": content_type})  # never raises
