"""`yuqing diff` pieces that need no store: time parsing, kappa, table layout."""

from __future__ import annotations

import datetime as dt

import pytest

from stream.core.errors import ConfigError
from stream.core.times import parse_time
from stream.diff.cli import _clip, _width, render, table
from stream.diff.compare import ChangedItem, VersionDiff

NOW = dt.datetime(2026, 3, 10, 12, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-03-01", dt.datetime(2026, 3, 1, tzinfo=dt.UTC)),
        ("2026-03-01T08:00:00Z", dt.datetime(2026, 3, 1, 8, tzinfo=dt.UTC)),
        ("2026-03-01T16:00:00+08:00", dt.datetime(2026, 3, 1, 8, tzinfo=dt.UTC)),
        ("2026-03-01 08:00", dt.datetime(2026, 3, 1, 8, tzinfo=dt.UTC)),
        ("6h", NOW - dt.timedelta(hours=6)),
        ("7d", NOW - dt.timedelta(days=7)),
        ("30m", NOW - dt.timedelta(minutes=30)),
        ("1.5w", NOW - dt.timedelta(weeks=1.5)),
    ],
)
def test_parse_time(text: str, expected: dt.datetime) -> None:
    assert parse_time(text, NOW) == expected


def test_parse_time_refuses_nonsense() -> None:
    with pytest.raises(ConfigError, match="neither an RFC 3339 time"):
        parse_time("yesterday", NOW)


def _diff(confusion: dict[str, dict[str, int]], changed: list[ChangedItem] | None = None) -> VersionDiff:
    return VersionDiff("a1", "b2", "sentiment", None, None, 10, 10, confusion, {}, {}, changed or [])


def test_kappa_and_agreement() -> None:
    perfect = _diff({"pos": {"pos": 5}, "neg": {"neg": 5}})
    assert perfect.agreement == 1.0 and perfect.kappa == 1.0
    # B always says pos: agreement 50%, but no better than chance
    lazy = _diff({"pos": {"pos": 5}, "neg": {"pos": 5}})
    assert lazy.agreement == 0.5 and lazy.kappa == pytest.approx(0.0)
    assert lazy.labels_b == {"neg": 0, "pos": 10}
    empty = _diff({})
    assert empty.agreement is None and empty.kappa is None
    assert "nothing to compare" in render(empty)


def test_tables_align_chinese_titles() -> None:
    assert _width("标题ab") == 6
    assert _clip("很长的中文标题很长的中文标题", 9) == "很长的中…"
    text = table(["id", "title", "n"], [["x", "中文", "1"], ["yy", "ab", "10"]], right=[2])
    lines = text.splitlines()
    assert lines[2] == "x   中文    1"
    assert lines[3] == "yy  ab     10"


def test_render_lists_changes() -> None:
    changed = [ChangedItem("id1", "央行降准", "neg", 0.9, "pos", 0.8)]
    out = render(_diff({"neg": {"pos": 1}}, changed))
    assert "agreement: 0.0% (0 of 1)" in out
    assert "id1  央行降准  neg        0.900  pos        0.800" in out
