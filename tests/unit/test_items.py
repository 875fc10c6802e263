from __future__ import annotations

import datetime as dt
import json

import pytest

from stream.core.items import classify, detect_lang, stable_id
from stream.core.records import BadRecord, NewsItem, SourceRecord


def rec(value: bytes, ts: int | None = 1_700_000_000_000) -> SourceRecord:
    return SourceRecord("news", 0, 7, ts, None, value)


def good(**fields: object) -> bytes:
    base: dict[str, object] = {"source": "wire", "url": "https://e.x/1", "title": "Markets rally", "text": "Up."}
    base.update(fields)
    return json.dumps(base, ensure_ascii=False).encode()


def test_valid_item_defaults() -> None:
    item = classify(rec(good()), 10_000)
    assert isinstance(item, NewsItem)
    assert item.id == stable_id("https://e.x/1", "", "", "")
    assert item.lang == "en"
    assert item.published_at == dt.datetime.fromtimestamp(1_700_000_000, dt.UTC)  # Kafka timestamp
    assert item.model_text == "Markets rally\nUp."


def test_chinese_and_explicit_fields() -> None:
    item = classify(
        rec(good(id="a1", title="股市大涨", text="今天沪指上涨", published_at="2026-11-01T08:00:00+08:00")), 10_000
    )
    assert isinstance(item, NewsItem)
    assert (item.id, item.lang) == ("a1", "zh")
    assert item.published_at == dt.datetime(2026, 11, 1, 0, 0, tzinfo=dt.UTC)


def test_id_without_url_hashes_content() -> None:
    a = classify(rec(good(url=None)), 10_000)
    b = classify(rec(good(url=None)), 10_000)
    assert isinstance(a, NewsItem) and isinstance(b, NewsItem) and a.id == b.id


@pytest.mark.parametrize(
    ("payload", "kind"),
    [
        (b"\xff\xfe{}", "invalid_utf8"),
        (b"{not json", "invalid_json"),
        (b"[1, 2]", "not_object"),
        (good(title=5), "bad_field"),
        (good(published_at=12), "bad_field"),
        (good(title="", text=""), "no_text"),
        (good(published_at="yesterday"), "bad_date"),
        (good(text="x" * 5000), "too_large"),
    ],
)
def test_bad_inputs_have_kinds(payload: bytes, kind: str) -> None:
    verdict = classify(rec(payload), 1000)
    assert isinstance(verdict, BadRecord)
    assert verdict.kind == kind
    assert verdict.record.value == payload and verdict.error


def test_detect_lang() -> None:
    assert detect_lang("央行宣布降准") == "zh"
    assert detect_lang("The central bank cut rates") == "en"
    assert detect_lang("12345") == "und"
