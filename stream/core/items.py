"""Turn raw messages into NewsItems, or into BadRecords with a reason (the dead-letter path)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from typing import Any

from stream.core.records import BadRecord, NewsItem, SourceRecord
from stream.core.times import parse_rfc3339

_STR_FIELDS = ("id", "source", "url", "title", "text", "lang")
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LETTER = re.compile(r"[^\W\d_]", re.UNICODE)


class ItemError(ValueError):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def stable_id(url: str, source: str, title: str, text: str) -> str:
    """The default id: a hash of the url, else of source + title + text (stable across re-sends)."""
    basis = url if url else "\x1f".join((source, title, text))
    return hashlib.sha1(basis.encode("utf-8")).hexdigest()


def detect_lang(text: str) -> str:
    """A cheap script-based guess: 'zh' when CJK dominates the letters, else 'en'."""
    letters = _LETTER.findall(text[:2000])
    if not letters:
        return "und"
    cjk = sum(1 for ch in letters if _CJK.match(ch))
    return "zh" if cjk / len(letters) >= 0.3 else "en"


def _fields(obj: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name in _STR_FIELDS:
        value = obj.get(name)
        if value is None:
            out[name] = ""
        elif isinstance(value, str):
            out[name] = value.strip()
        elif name == "id" and isinstance(value, int) and not isinstance(value, bool):
            out[name] = str(value)
        else:
            raise ItemError("bad_field", f"field {name!r} must be a string, got {type(value).__name__}")
    return out


def parse_item(record: SourceRecord, max_bytes: int) -> NewsItem:
    """Validate one message against the input contract; raises ItemError with a kind."""
    if len(record.value) > max_bytes:
        raise ItemError("too_large", f"message of {len(record.value)} bytes exceeds {max_bytes}")
    try:
        decoded = record.value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ItemError("invalid_utf8", f"not UTF-8: {exc}") from None
    try:
        obj = json.loads(decoded)
    except json.JSONDecodeError as exc:
        raise ItemError("invalid_json", f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise ItemError("not_object", f"JSON {type(obj).__name__} where an object was expected")
    f = _fields(obj)
    if not f["title"] and not f["text"]:
        raise ItemError("no_text", "both title and text are empty")
    published_raw = obj.get("published_at")
    if published_raw is None or published_raw == "":
        ts = record.timestamp_ms if record.timestamp_ms is not None and record.timestamp_ms >= 0 else None
        published = (
            dt.datetime.fromtimestamp(ts / 1000, dt.UTC) if ts is not None else dt.datetime.now(dt.UTC)
        )
    elif not isinstance(published_raw, str):
        raise ItemError("bad_field", f"field 'published_at' must be a string, got {type(published_raw).__name__}")
    else:
        try:
            published = parse_rfc3339(published_raw)
        except ValueError:
            raise ItemError("bad_date", f"published_at {published_raw[:64]!r} is not RFC 3339") from None
    return NewsItem(
        id=f["id"] or stable_id(f["url"], f["source"], f["title"], f["text"]),
        source=f["source"] or record.topic,
        url=f["url"],
        title=f["title"],
        text=f["text"],
        lang=f["lang"] or detect_lang(f"{f['title']} {f['text']}"),
        published_at=published,
    )


def classify(record: SourceRecord, max_bytes: int) -> NewsItem | BadRecord:
    try:
        return parse_item(record, max_bytes)
    except ItemError as exc:
        return BadRecord(record=record, kind=exc.kind, error=str(exc))
