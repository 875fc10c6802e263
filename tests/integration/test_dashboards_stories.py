"""The story panels on chdb: Top stories (Overview) and the story drill-down show what was planted,
and a hostile story id reaches SQL only as a literal."""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dashboards import overview, story
from dashboards.check import synthetic_spec
from dashboards.sqlcheck import HOSTILE_VALUES, QueryResultCheck, check_dashboard, run_with
from dashboards.synthetic import (
    StoryMember,
    SyntheticItem,
    SyntheticSpec,
    SyntheticSummary,
    write_story_rows,
    write_synthetic,
)
from stream.core.store import Store
from stream.core.times import as_utc
from tests.integration.test_dashboards_injection import decoys, plant_item

pytestmark = pytest.mark.integration

NOW = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)


def panels(results: list[QueryResultCheck], scenario: str = "picked") -> dict[str, QueryResultCheck]:
    assert all(r.ok for r in results), [r.describe() for r in results if not r.ok]
    return {r.panel.split(" ", 1)[1]: r for r in results if r.scenario == scenario}


def by_story(items: list[SyntheticItem], since: dt.datetime | None = None) -> dict[str, list[SyntheticItem]]:
    out: dict[str, list[SyntheticItem]] = defaultdict(list)
    for it in items:
        if it.story_id and (since is None or it.published_at >= since):
            out[it.story_id].append(it)
    return out


@pytest.fixture
def planted(store: Store) -> SyntheticSummary:
    return write_synthetic(store, synthetic_spec(NOW))


@pytest.mark.parametrize("hours", [24, 36])
def test_top_stories_rank_stories_by_their_items_in_the_range(store: Store, planted: SyntheticSummary,
                                                              hours: int) -> None:
    # Synthetic events span two days from the start of the week: over 36 hours some began before.
    span = dt.timedelta(hours=hours)
    got = panels(run_with(store, "overview", overview.build("yuqing"), NOW, {}, span=span))["Top stories"]
    day_ago = NOW - span
    in_day, ever = by_story(planted.items, day_ago), by_story(planted.items)
    expected = sorted(in_day, key=lambda s: (-len(in_day[s]), s))[: overview.TOP_STORIES]
    columns = [name for name, _ in got.columns]
    rows = [dict(zip(columns, row, strict=True)) for row in got.result_rows]
    assert [(r["story"], r["items"]) for r in rows] == [(s, len(in_day[s])) for s in expected]
    # The planted surge is one story, and the biggest; its last items are not assigned yet.
    surge = [it for it in planted.items if it.event == "surge-0"]
    assert rows[0]["story"] == surge[0].id and 0 < rows[0]["items"] < len(surge)
    assert planted.items[-1].story_id == ""
    for row in rows:
        members = ever[row["story"]]
        before = sum(it.published_at < day_ago for it in members)
        assert row["growth"] == (None if before == 0 else pytest.approx(row["items"] / before))
        assert row["size"] == len(members)  # the current stories row, not the older one written first
        assert abs(as_utc(row["first_seen"]) - members[0].published_at) < dt.timedelta(milliseconds=1)
        langs = Counter(it.lang for it in in_day[row["story"]])
        ranked = sorted(langs.items(), key=lambda kv: (-kv[1], kv[0]))
        assert row["languages"] == " · ".join(f"{k} {v}" for k, v in ranked)
        negative = sum(it.sentiment == "negative" for it in in_day[row["story"]])
        sided = sum(it.sentiment != "neutral" for it in in_day[row["story"]])  # neutral items left out
        assert row["negative"] == (pytest.approx(negative / sided) if sided else None)
        firsts: dict[str, str] = {}
        for it in members:
            if not it.duplicate_of:
                firsts.setdefault(it.lang, it.title)
        assert row["title"] == " / ".join(firsts.values())
    assert any(r["growth"] is None for r in rows)
    assert hours == 24 or any(r["growth"] is not None for r in rows)


def test_story_drilldown_shows_the_picked_story(store: Store, planted: SyntheticSummary) -> None:
    board = story.build("yuqing")
    results = check_dashboard(store, "story", board, NOW)
    default = panels(results, "default")
    week = by_story(planted.items, NOW - dt.timedelta(days=7))
    top = sorted(week, key=lambda s: (-len(week[s]), s))[0]
    assert f"story_id = decodeURLComponent('{top}')" in default["Story items"].sql  # the picker's first story
    assert default["Story items"].first_row == (len(week[top]),)
    # Pick one with near-duplicates and items before the range, over the last 36 hours.
    span = dt.timedelta(hours=36)
    day = by_story(planted.items, NOW - span)
    picked = next(s for s in sorted(day, key=lambda s: (-len(day[s]), s))
                  if any(it.duplicate_of for it in day[s]) and len(week[s]) > len(day[s]))
    got = panels(run_with(store, "story", board, NOW, {"story": picked}, span=span))
    members = day[picked]
    assert got["Story items"].first_row == (len(members),)
    assert got["Near-duplicates"].first_row == (sum(bool(it.duplicate_of) for it in members),)
    assert got["Sources"].first_row == (len({it.source for it in members}),)
    # id and duplicate_of of every item of the story in the day, newest first
    assert [(row[9], row[6]) for row in got["Items"].result_rows] == [
        (it.id, it.duplicate_of) for it in sorted(members, key=lambda it: (-it.published_at.timestamp(), it.id))]
    assert sum(row[2] for row in got["Items by language"].result_rows) == len(members)
    assert {row[1] for row in got["Items by source"].result_rows} == {it.source for it in members}
    everything = by_story(planted.items)[picked]
    firsts: dict[str, str] = {}
    for it in everything:
        if not it.duplicate_of:
            firsts.setdefault(it.lang, it.title)
    assert {row[0]: row[1] for row in got["Representative titles"].result_rows} == firsts
    assert {row[2] for row in got["Representative titles"].result_rows} == {len(everything)}
    hostile = panels(results, "hostile")
    assert hostile["Story items"].first_row == (0,) and hostile["Representative titles"].rows == 0


def _plant_story(store: Store, story_id: str, prefix: str, count: int, title: str = "t") -> None:
    at = NOW - dt.timedelta(hours=1)
    for k in range(count):
        plant_item(store, f"{prefix}-{k}", source="s", lang=("zh", "en")[k % 2], risk="other", title=title)
    write_story_rows(store, [StoryMember(f"{prefix}-{k}", story_id, at, "s", ("zh", "en")[k % 2], title, "negative")
                             for k in range(count)])


def _story_panels(store: Store, value: str) -> dict[str, QueryResultCheck]:
    return panels(run_with(store, "story", story.build("yuqing"), NOW, {"story": value}))


@pytest.fixture
def background(store: Store) -> Store:
    write_synthetic(store, SyntheticSpec(**{**synthetic_spec(NOW).__dict__, "items": 300}))
    return store


def test_hostile_story_ids_select_exactly_their_story(background: Store) -> None:
    store = background
    for n, value in enumerate(HOSTILE_VALUES):
        _plant_story(store, value, f"hit-{n}", 3, title=f"t {value}")
        for k, decoy in enumerate(d for d in decoys(value) if d not in HOSTILE_VALUES):
            _plant_story(store, decoy, f"decoy-{n}-{k}", 1)
    for n, value in enumerate(HOSTILE_VALUES):
        got = _story_panels(store, value)
        assert got["Story items"].first_row == (3,), value
        assert sorted(r[9] for r in got["Items"].result_rows) == [f"hit-{n}-{k}" for k in range(3)]
        assert got["Representative titles"].rows == 2 and {r[1] for r in got["Representative titles"].result_rows} \
            == {f"t {value}"}
        assert HOSTILE_VALUES[0] not in got["Items"].sql
    # The Overview lists them as data: story ids and titles are values, never SQL.
    top = panels(run_with(store, "overview", overview.build("yuqing"), NOW, {}))["Top stories"]
    listed = {row[-1] for row in top.result_rows}
    assert set(HOSTILE_VALUES) & listed
    assert store.scalar(f"SELECT count() FROM {store.database}.item_stories") > 0  # and dropped nothing


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=st.text(min_size=1, max_size=12))
def test_any_story_id_is_matched_literally(store: Store, value: str) -> None:
    prefix = f"any-{value.encode('utf-8').hex()}"
    _plant_story(store, value, prefix, 2)
    got = _story_panels(store, value)
    assert got["Story items"].first_row == (2,)
    rows: list[Any] = got["Representative titles"].result_rows
    assert len(rows) == 2
