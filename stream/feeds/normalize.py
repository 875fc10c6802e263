"""Turn a feedparser entry into one of our JSON items (README "Input contract").

    id            sha1 of the entry's guid / Atom id, else of its link (stable across polls)
    source        the feed's `source` name from feeds.toml
    url, title    the entry's link and title (HTML stripped)
    text          content (or else summary) with HTML stripped
    lang          feeds.toml `lang`, else the feed's language, else zh/en by the share of CJK
    published_at  published, else updated, else the time of the poll; RFC 3339 UTC
"""

from __future__ import annotations

import calendar
import datetime as dt
import hashlib
import json
import re
from dataclasses import dataclass
from html import unescape
from html.parser import HTMLParser
from typing import Any

from stream.core.items import detect_lang as _consumer_detect_lang
from stream.feeds.config import FeedConfig

# A feed date further ahead than this is a clock or timezone bug: the poll time is used instead.
MAX_FUTURE = dt.timedelta(hours=1)

_BLOCK_TAGS = {
    "p", "br", "div", "li", "ul", "ol", "tr", "table", "h1", "h2", "h3", "h4", "h5", "h6",
    "blockquote", "pre", "section", "article", "header", "footer", "figcaption", "hr",
}
_SKIP_TAGS = {"script", "style", "noscript", "template"}
_SPACES = re.compile(r"[ \t\r\f\v\u00a0\u3000]+")
_NEWLINES = re.compile(r"\s*\n\s*")


@dataclass(frozen=True)
class FeedItem:
    id: str
    source: str
    url: str
    title: str
    text: str
    lang: str | None
    published_at: dt.datetime  # UTC, whole seconds

    @property
    def timestamp_ms(self) -> int:
        """The Kafka timestamp: the entry's published time."""
        return int(self.published_at.timestamp()) * 1000

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": self.id,
            "source": self.source,
            "url": self.url,
            "title": self.title,
            "text": self.text,
            "published_at": self.published_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        if self.lang:
            data["lang"] = self.lang
        return data

    def to_json(self, max_bytes: int | None = None) -> bytes:
        """UTF-8 JSON; the text is shortened (never the other fields) to fit ``max_bytes``."""
        data = self.to_dict()
        raw = json.dumps(data, ensure_ascii=False).encode("utf-8")
        if max_bytes is None or len(raw) <= max_bytes:
            return raw
        overflow = len(raw) - max_bytes
        text_bytes = data["text"].encode("utf-8")
        data["text"] = text_bytes[: max(0, len(text_bytes) - overflow - 16)].decode("utf-8", "ignore")
        return json.dumps(data, ensure_ascii=False).encode("utf-8")


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIP_TAGS:
            self._skipping += 1
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIP_TAGS:
            self._skipping = max(0, self._skipping - 1)
        elif tag in _BLOCK_TAGS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


def strip_html(value: str | None, *, is_html: bool = True) -> str:
    """Plain text of an HTML fragment: tags and scripts dropped, entities decoded, spaces tidied.

    ``is_html=False`` (feedparser already decoded a text/plain construct) only tidies spaces.
    """
    if not value:
        return ""
    if not is_html:
        pass
    elif "<" in value:
        parser = _TextExtractor()
        parser.feed(value)
        parser.close()
        value = "".join(parser.parts)
    else:
        value = unescape(value)
    value = _SPACES.sub(" ", value)
    return _NEWLINES.sub("\n", value).strip()


def detect_lang(text: str) -> str | None:
    """'zh' or 'en' by the share of CJK among letters (the consumer's rule); None without letters."""
    lang = _consumer_detect_lang(text)
    return None if lang == "und" else lang


def normalize_lang(tag: str | None) -> str | None:
    """'zh-CN' -> 'zh', 'en_us' -> 'en'; None for a missing or unusable tag."""
    if not tag:
        return None
    primary = re.split(r"[-_]", tag.strip())[0].lower()
    return primary if re.fullmatch(r"[a-z]{2,3}", primary) else None


def item_id(entry: Any, feed_url: str) -> str:
    """sha1 of the guid / Atom id, else of the link, else of the feed and the entry's content.

    A guid that is a URI (http://, urn:, tag:) is globally unique, so the same story syndicated
    in two feeds gets one id; a bare guid such as "12345" is only unique within its feed and is
    prefixed with the feed's URL.
    """
    guid = str(entry.get("id") or "").strip()
    if guid:
        key = guid if re.match(r"^([a-z][a-z0-9+.-]*://|urn:|tag:)", guid, re.I) else f"{feed_url}#{guid}"
    elif entry.get("link"):
        key = str(entry["link"]).strip()
    else:
        key = f"{feed_url}#{entry.get('title', '')}\n{entry.get('summary', '')}"
    return hashlib.sha1(key.encode("utf-8")).hexdigest()


def _is_html(detail: Any) -> bool:
    return not detail or detail.get("type") != "text/plain"


def entry_text(entry: Any) -> str:
    """The longest content block, else the summary (description), as plain text."""
    contents = [c for c in entry.get("content") or [] if c.get("value")]
    if contents:
        block = max(contents, key=lambda c: len(c["value"]))
        return strip_html(block["value"], is_html=_is_html(block))
    return strip_html(entry.get("summary"), is_html=_is_html(entry.get("summary_detail")))


def entry_published(entry: Any, now: dt.datetime) -> dt.datetime:
    for key in ("published_parsed", "updated_parsed", "created_parsed"):
        parsed = entry.get(key)
        if parsed:
            # feedparser gives a UTC struct_time
            when = dt.datetime.fromtimestamp(calendar.timegm(parsed), tz=dt.UTC)
            if when.year >= 1970 and when <= now + MAX_FUTURE:
                return when
    return now.replace(microsecond=0)


def normalize_entry(
    entry: Any, feed: FeedConfig, feed_lang: str | None, now: dt.datetime
) -> FeedItem | None:
    """Our item for one entry, or None for an entry with neither title nor text."""
    title = strip_html(entry.get("title"), is_html=_is_html(entry.get("title_detail"))).replace("\n", " ")
    text = entry_text(entry)
    if not title and not text:
        return None
    link = str(entry.get("link") or "")
    if not link and entry.get("guidislink"):
        link = str(entry.get("id") or "")
    lang = feed.lang or normalize_lang(feed_lang) or detect_lang(f"{title}\n{text}")
    return FeedItem(
        id=item_id(entry, feed.url),
        source=feed.source,
        url=link,
        title=title,
        text=text,
        lang=lang,
        published_at=entry_published(entry, now),
    )
