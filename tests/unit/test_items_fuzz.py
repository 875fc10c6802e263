"""Hostile messages through `classify` and the sink's row encoding: nothing escapes, every row encodes."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream.consumer.sink import dead_letter_values, scored_values
from stream.core.items import STORE_MAX, STORE_MIN, classify, kafka_time
from stream.core.records import BadRecord, NewsItem, Prediction, ScoredRow, SourceRecord

KINDS = {"invalid_utf8", "invalid_json", "not_object", "bad_field", "no_text", "too_large", "bad_date", "invalid_input"}
NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

# Every code point, with lone surrogates and other edges drawn often (they are rare in the full range).
ANY_CHAR = st.one_of(
    st.characters(codec=None, categories=None),
    st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF),
    st.sampled_from(["\x00", "\x1f", "\ufeff", "\u2028", "\ufffd", "\U0010ffff", "\u0301", "央"]),
)
texts = st.text(ANY_CHAR, max_size=40)
dates = st.one_of(
    texts,
    st.datetimes(min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31, 23, 59, 59)).map(
        lambda d: d.isoformat()
    ),
    st.tuples(st.integers(1, 9999), st.sampled_from(["Z", "+23:59", "-23:59", "+14:00", ""])).map(
        lambda t: f"{t[0]:04d}-12-31T23:59:59{t[1]}" if t[0] > 5000 else f"{t[0]:04d}-01-01T00:00:00{t[1]}"
    ),
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)
field_values = st.one_of(texts, json_values)
messages = st.fixed_dictionaries(
    {},
    optional={
        "id": st.one_of(texts, st.integers(), json_values),
        "source": field_values,
        "url": field_values,
        "title": st.one_of(texts, st.just("title")),
        "text": st.one_of(texts, st.just("some text"), field_values),
        "lang": field_values,
        "published_at": st.one_of(dates, json_values),
        "extra": json_values,
    },
)
timestamps = st.one_of(st.none(), st.integers(min_value=-(2**63), max_value=2**63 - 1), st.sampled_from([-1, 0]))


def encode_json(obj: Any, ascii_only: bool) -> bytes:
    # ensure_ascii writes a lone surrogate as "\ud800" (valid JSON); otherwise it cannot be UTF-8.
    return json.dumps(obj, ensure_ascii=ascii_only, allow_nan=True).encode("utf-8", "surrogatepass")


payloads = st.one_of(
    st.binary(max_size=300),
    st.builds(encode_json, messages, st.booleans()),
    st.builds(encode_json, json_values, st.booleans()),
    st.integers(1, 200_000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(1, 200_000).map(lambda n: b'{"title": "t", "x": ' + b'{"a": ' * n + b"1" + b"}" * n + b"}"),
    st.integers(4301, 20_000).map(lambda n: b'{"title": "t", "id": ' + b"7" * n + b"}"),
)


def assert_encodable(values: list[Any]) -> None:
    """What clickhouse-connect needs: UTF-8 strings, datetimes in DateTime64's range."""
    for value in values:
        if isinstance(value, str):
            value.encode("utf-8")
        elif isinstance(value, dt.datetime):
            assert STORE_MIN <= value <= STORE_MAX, value
        elif isinstance(value, dict):
            for k in value:
                k.encode("utf-8")


def check(record: SourceRecord) -> NewsItem | BadRecord:
    verdict = classify(record, 100_000)
    if isinstance(verdict, BadRecord):
        assert verdict.kind in KINDS and verdict.error
        assert verdict.record is record
        assert_encodable(dead_letter_values(verdict, NOW))
    else:
        assert isinstance(verdict, NewsItem)
        assert verdict.id and (verdict.title or verdict.text)
        row = ScoredRow(record, verdict, "m", "sentiment", "m-1", Prediction("positive", 0.9, {"positive": 0.9}), NOW)
        assert_encodable(scored_values(row))
    return verdict


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payloads, timestamps)
def test_no_message_content_escapes_classify_or_the_row_encoding(payload: bytes, ts: int | None) -> None:
    check(SourceRecord("news", 0, 1, ts, None, payload))


@settings(max_examples=200, deadline=None)
@given(messages, timestamps)
def test_json_objects_with_every_unicode_edge(obj: dict[str, Any], ts: int | None) -> None:
    check(SourceRecord("news", 0, 1, ts, b"k", encode_json(obj, ascii_only=True)))


def rec(value: bytes, ts: int | None = 1_700_000_000_000) -> SourceRecord:
    return SourceRecord("news", 0, 3, ts, None, value)


@pytest.mark.parametrize(
    ("payload", "kind", "cause"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "invalid_json", "RecursionError"),
        (b'{"title": "t", "x": ' + b"9" * 5000 + b"}", "invalid_json", "ValueError"),
        (b'{"title": "t", "published_at": "9999-12-31T23:59:59-23:59"}', "bad_date", "OverflowError"),
        (b'{"title": "t", "published_at": "0001-01-01T00:00:00+01:00"}', "bad_date", "OverflowError"),
        (b'{"title": "t", "published_at": "1850-06-01T00:00:00Z"}', "bad_date", "outside 1900..2299"),
        (b'{"title": "t", "published_at": "2024-01-0\\ud800"}', "bad_date", "ValueError"),
        (b'{"title": "t", "id": "a\\udc80b"}', "bad_field", "lone surrogate"),
    ],
)
def test_content_that_used_to_crash_is_a_dead_letter_naming_the_cause(payload: bytes, kind: str, cause: str) -> None:
    verdict = classify(rec(payload), 10_000_000)
    assert isinstance(verdict, BadRecord)
    assert verdict.kind == kind and cause in verdict.error
    verdict.error.encode("utf-8")


@pytest.mark.parametrize("ts", [2**62, 10**15, 253_402_300_800_000])
def test_a_kafka_timestamp_out_of_range_is_a_bad_date_not_a_crash(ts: int) -> None:
    verdict = classify(rec(b'{"title": "t", "text": "x"}', ts), 10_000)
    assert isinstance(verdict, BadRecord) and verdict.kind == "bad_date"
    assert kafka_time(ts) is None
    stamped = dead_letter_values(verdict, NOW)[3]  # kafka_timestamp: the time it was received instead
    assert abs((stamped - dt.datetime.now(dt.UTC)).total_seconds()) < 60


def test_lone_surrogates_are_repaired_deterministically_outside_the_id() -> None:
    payload = b'{"source": "w\\ud800", "url": "https://e.x/\\udfff", "title": "a\\ud83d", "text": "\\ud83d\\ude00 ok"}'
    first, second = classify(rec(payload), 10_000), classify(rec(payload), 10_000)
    assert isinstance(first, NewsItem) and isinstance(second, NewsItem)
    assert (first.source, first.url, first.title) == ("w\ufffd", "https://e.x/\ufffd", "a\ufffd")
    assert first.text == "\U0001f600 ok"  # a proper pair is one character, left alone
    assert first.id == second.id  # the repaired url still gives one stable id
    assert_encodable(scored_values(ScoredRow(rec(payload), first, "m", "t", "v", Prediction("x", 1.0, {}), NOW)))


def test_an_unforeseen_exception_is_still_a_dead_letter(monkeypatch: pytest.MonkeyPatch) -> None:
    import stream.core.items as items

    def explode(text: str) -> str:
        raise MemoryError("no room for this text")

    monkeypatch.setattr(items, "detect_lang", explode)
    verdict = classify(rec(b'{"title": "t", "text": "x"}'), 10_000)
    assert isinstance(verdict, BadRecord)
    assert verdict.kind == "invalid_input" and verdict.error == "MemoryError: no room for this text"
