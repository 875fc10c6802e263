"""Turn raw messages into NewsItems, or into BadRecords with a reason (the dead-letter path).

Whatever a message holds, `classify` returns: an exception its content causes (nesting too deep
for the parser, an integer past Python's int-string limit, a date outside the calendar) becomes
a BadRecord naming the exception class, never an error that stops the partition.

Every string of a NewsItem can be encoded as UTF-8, so the store's row encoding cannot fail on
content: JSON may carry lone surrogates ("\\ud800") that UTF-8 cannot, and they are repaired to
U+FFFD in every field, except in an explicit `id`, which is refused (``bad_field``), since
repairing it could merge two items into one.  Dates must lie in the store's DateTime64 range.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import unicodedata
from typing import Any

from stream.core.records import BadRecord, NewsItem, SourceRecord
from stream.core.times import parse_rfc3339

_STR_FIELDS = ("id", "source", "url", "title", "text", "lang")
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LETTER = re.compile(r"[^\W\d_]", re.UNICODE)
_SURROGATE = re.compile(r"[\ud800-\udfff]")
# ClickHouse's DateTime64 range; a value outside it is stored, but read back clamped.
STORE_MIN = dt.datetime(1900, 1, 1, tzinfo=dt.UTC)
STORE_MAX = dt.datetime(2299, 12, 31, 23, 59, 59, 999000, tzinfo=dt.UTC)
MAX_ERROR_CHARS = 2000


class ItemError(ValueError):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def clean_text(value: str) -> str:
    """`value` with every lone surrogate replaced by U+FFFD (the same input gives the same output)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", value)
    return value


# Stripped from both ends of an entity's normalized form: quotes, brackets and punctuation that a
# span can catch (《》, “”, 's is kept: it is part of what was written).
_ENTITY_EDGES = " \t\n\"'“”‘’《》〈〉「」『』()（）[]【】<>.,;:!?，。；：！？、·-—"


def normalize_entity(text: str) -> str:
    """The form entities are grouped and matched by: NFKC (full-width letters and digits become
    ASCII), case-folded, whitespace collapsed, surrounding quotes and punctuation stripped."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(folded.split()).strip(_ENTITY_EDGES)


def error_text(message: str) -> str:
    """A reason fit for a dead_letters row: encodable and bounded."""
    return clean_text(message[:MAX_ERROR_CHARS])


def kafka_time(ms: int | None) -> dt.datetime | None:
    """A Kafka timestamp as an aware datetime; None when absent (-1) or outside the store's range."""
    if ms is None or ms < 0:
        return None
    try:
        when = dt.datetime.fromtimestamp(ms / 1000, dt.UTC)
    except (OverflowError, OSError, ValueError):
        return None
    return when if STORE_MIN <= when <= STORE_MAX else None


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
    if clean_text(out["id"]) != out["id"]:
        raise ItemError("bad_field", "field 'id' holds a lone surrogate (not encodable as UTF-8)")
    return {name: clean_text(value) for name, value in out.items()}


def _published_at(obj: dict[str, Any], record: SourceRecord) -> dt.datetime:
    raw = obj.get("published_at")
    if raw is None or raw == "":
        if record.timestamp_ms is None or record.timestamp_ms < 0:
            return dt.datetime.now(dt.UTC)
        stamped = kafka_time(record.timestamp_ms)
        if stamped is None:
            raise ItemError("bad_date", f"no published_at, and Kafka timestamp {record.timestamp_ms} is out of range")
        return stamped
    if not isinstance(raw, str):
        raise ItemError("bad_field", f"field 'published_at' must be a string, got {type(raw).__name__}")
    shown = clean_text(raw[:64])
    try:
        published = parse_rfc3339(raw)
    except (ValueError, OverflowError) as exc:
        raise ItemError("bad_date", f"published_at {shown!r} is not RFC 3339 ({type(exc).__name__})") from None
    if not STORE_MIN <= published <= STORE_MAX:
        raise ItemError("bad_date", f"published_at {shown!r} is outside {STORE_MIN.year}..{STORE_MAX.year}")
    return published


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
    except (ValueError, RecursionError) as exc:  # ValueError: bad syntax, or an int past the digit limit
        raise ItemError("invalid_json", f"not JSON ({type(exc).__name__}): {exc}") from None
    if not isinstance(obj, dict):
        raise ItemError("not_object", f"JSON {type(obj).__name__} where an object was expected")
    f = _fields(obj)
    if not f["title"] and not f["text"]:
        raise ItemError("no_text", "both title and text are empty")
    return NewsItem(
        id=f["id"] or stable_id(f["url"], f["source"], f["title"], f["text"]),
        source=f["source"] or record.topic,
        url=f["url"],
        title=f["title"],
        text=f["text"],
        lang=f["lang"] or detect_lang(f"{f['title']} {f['text']}"),
        published_at=_published_at(obj, record),
    )


def classify(record: SourceRecord, max_bytes: int) -> NewsItem | BadRecord:
    """The item, or the reason it is a dead letter; never raises on a message's content."""
    try:
        return parse_item(record, max_bytes)
    except ItemError as exc:
        return BadRecord(record=record, kind=exc.kind, error=error_text(str(exc)))
    except Exception as exc:  # content no rule above foresaw: a dead letter, not a stopped partition
        return BadRecord(record=record, kind="invalid_input", error=error_text(f"{type(exc).__name__}: {exc}"))
