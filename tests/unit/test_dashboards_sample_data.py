"""stream/tools/sample/news_sample.jsonl (what `make demo` streams) meets the input contract and covers
the dashboards."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections import Counter
from pathlib import Path

from stream.core.items import parse_item
from stream.core.records import SourceRecord

SAMPLE = Path(__file__).resolve().parents[2] / "stream" / "tools" / "sample" / "news_sample.jsonl"


def load() -> list[dict[str, object]]:
    return [json.loads(line) for line in SAMPLE.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_every_line_is_a_valid_item() -> None:
    raw = SAMPLE.read_bytes().splitlines()
    items = [parse_item(SourceRecord("news", 0, i, None, None, line), 1_000_000) for i, line in enumerate(raw)]
    assert 150 <= len(items) <= 250
    assert len({it.id for it in items}) == len(items)
    assert len({it.url for it in items}) == len(items)
    assert Counter(it.lang for it in items).keys() == {"en", "zh"}
    assert min(Counter(it.lang for it in items).values()) >= 60
    assert len({it.source for it in items}) >= 8
    span = max(it.published_at for it in items) - min(it.published_at for it in items)
    assert dt.timedelta(days=6) <= span <= dt.timedelta(days=8)


def test_optional_fields_are_exercised() -> None:
    rows = load()
    assert any("id" not in r for r in rows) and any("id" in r for r in rows)
    assert any("lang" not in r for r in rows)
    # some timestamps carry an offset rather than Z
    assert any(str(r["published_at"]).endswith("+08:00") for r in rows)
    assert all(set(r) <= {"id", "source", "url", "title", "text", "lang", "published_at"} for r in rows)


def test_a_burst_on_one_incident_within_an_hour() -> None:
    # the demo's negative-surge alert needs >= 20 items within one hour
    times = sorted(
        dt.datetime.fromisoformat(str(r["published_at"]).replace("Z", "+00:00")) for r in load()
        if re.search("Linhe|临河", f"{r['title']} {r['text']}")
    )
    best = max(sum(1 for t in times if start <= t < start + dt.timedelta(hours=1)) for start in times)
    assert best >= 20
