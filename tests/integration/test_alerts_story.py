"""Story alerts on real chdb: `story_surge` fires once per story incident (count and baseline
modes, late assignments), and watch-list alerts name the story of each matching item."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from stream.alerts import Evaluator, LiveRunner, MemoryState, StoreState, parse_rules
from stream.alerts.alert import DeliveryStatus
from stream.core.store import Store
from stream.core.times import as_utc
from tests.integration.alerts_rows import demo_traffic, insert, item_rows
from tests.integration.stories_rows import assign

pytestmark = pytest.mark.integration

T = dt.datetime(2025, 3, 10, 12, 0, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)
MINUTE = dt.timedelta(minutes=1)
COUNT = {"name": "story", "kind": "story_surge", "window": "1h", "cooldown": "6h", "min_items": 15}
RATIO = {**COUNT, "method": "ratio", "threshold": 3, "baseline": "6h"}


def _story(store: Store, story: str, start: dt.datetime, count: int, span: dt.timedelta, *,
           title: str = "化工厂泄漏", scored_at: dt.datetime | None = None, assign_now: bool = True) -> list[str]:
    """`count` items spread over [start, start + span), Chinese and English, several sources, in
    one story whose first item is `story`; returns their ids."""
    ids, rows = [], []
    for n in range(count):
        item = story if n == 0 else f"{story}-{n:03d}"
        source = ("weibo", "xinhua", "reuters")[n % 3]
        rows += item_rows(item, start + span * n / count, source=source, negative=n % 2 == 0,
                          title=f"{title} {n}" if source != "reuters" else f"Chemical leak {n}",
                          scored_at=scored_at)
        ids.append(item)
    insert(store, rows)
    if assign_now:
        assign(store, story, ids)
    return ids


def _fired(store: Store) -> list[tuple[str, str, dt.datetime]]:
    return [(str(rule), str(scope), as_utc(end)) for rule, scope, end in store.rows(
        f"SELECT rule, scope, window_end FROM {store.database}.alerts FINAL ORDER BY window_end, scope")]


def test_a_story_gaining_items_fires_once_per_incident(store: Store) -> None:
    insert(store, demo_traffic(T))  # unassigned traffic: no story, never an alert
    _story(store, "leak", T - 50 * MINUTE, 20, 45 * MINUTE)
    _story(store, "small", T - 50 * MINUTE, 14, 45 * MINUTE, title="小事")  # one short of min_items
    config = parse_rules({"rule": [COUNT]})
    with LiveRunner(store, config) as runner:
        first = runner.cycle(T)
        assert [(d.alert.scope, d.alert.item_count) for d in first] == [("story=leak", 20)]
        assert runner.cycle(T + MINUTE) == [] and runner.cycle(T + 20 * MINUTE) == []
    # A second evaluator on the same store (a restart) knows the incident fired.
    with LiveRunner(store, config) as again:
        assert again.cycle(T + 2 * MINUTE) == []
    alert = first[0].alert
    assert alert.kind == "story_surge" and alert.value == 20 and alert.threshold == 15
    assert "化工厂泄漏 0 / Chemical leak 2" in alert.message and "(leak)" in alert.message
    assert all(s.story_id == "leak" and s.story_title == "化工厂泄漏 0 / Chemical leak 2" for s in alert.samples)
    assert alert.to_dict()["samples"][0]["story_id"] == "leak"
    # The id is a function of (rule, story, cool-down bucket): another evaluator computes the same.
    fresh = Evaluator(store, config.active_rules, MemoryState()).evaluate(T + 3 * MINUTE)
    assert [a.alert_id for a in fresh] == [alert.alert_id]
    assert _fired(store) == [("story", "story=leak", T)]


def test_baseline_mode_skips_a_large_story_that_is_not_growing(store: Store) -> None:
    insert(store, demo_traffic(T, hours=8))
    # 20 items an hour for seven hours: large, but steady.
    _story(store, "steady", T - 7 * HOUR, 140, 7 * HOUR, title="持续报道")
    # Two an hour for six hours, then 30 in the last hour: 15x its baseline.
    growing = _story(store, "grow", T - 7 * HOUR, 12, 6 * HOUR, title="突发事件", assign_now=False)
    growing += _story(store, "grow-b", T - 55 * MINUTE, 30, 50 * MINUTE, title="突发事件", assign_now=False)
    assign(store, "grow", growing)
    count_mode = Evaluator(store, parse_rules({"rule": [COUNT]}).active_rules, MemoryState()).evaluate(T)
    assert sorted(a.scope for a in count_mode) == ["story=grow", "story=steady"]
    ratio = Evaluator(store, parse_rules({"rule": [RATIO]}).active_rules, MemoryState()).evaluate(T)
    assert [a.scope for a in ratio] == ["story=grow"]
    assert ratio[0].item_count == 30 and ratio[0].value == pytest.approx(15.0)
    assert "15.0x its mean of 2.0" in ratio[0].message


def test_a_new_story_needs_a_covered_baseline(store: Store) -> None:
    # The stories job began assigning only in the last hour: every story would look new.
    insert(store, demo_traffic(T, hours=8))
    _story(store, "fresh", T - 50 * MINUTE, 30, 45 * MINUTE)
    assert Evaluator(store, parse_rules({"rule": [RATIO]}).active_rules, MemoryState()).evaluate(T) == []
    # Once older items are assigned too (anything, here a small story), the new one fires.
    _story(store, "old", T - 5 * HOUR, 3, HOUR, title="旧闻")
    fired = Evaluator(store, parse_rules({"rule": [RATIO]}).active_rules, MemoryState()).evaluate(T)
    assert [a.scope for a in fired] == ["story=fresh"]


def test_items_assigned_to_a_story_late_fire_in_their_own_window(store: Store) -> None:
    insert(store, demo_traffic(T))
    # Published and scored in [T - 2h, T - 1h); the stories job gets to them only after T.
    ids = _story(store, "late", T - 2 * HOUR + 5 * MINUTE, 25, 50 * MINUTE, assign_now=False,
                 scored_at=T - HOUR)
    config = parse_rules({"rule": [COUNT]})
    with LiveRunner(store, config) as runner:
        assert runner.cycle(T) == []
        assign(store, "late", ids, assigned_at=T + 3 * MINUTE)
        fired = runner.cycle(T + 5 * MINUTE)
        assert [(d.alert.scope, d.alert.window_end) for d in fired] == [("story=late", T - HOUR)]
        assert runner.cycle(T + 6 * MINUTE) == []
    # Re-written assignments (the same rows again, later) fire nothing more.
    assign(store, "late", ids, assigned_at=T + 7 * MINUTE)
    with LiveRunner(store, config) as runner:
        assert runner.cycle(T + 8 * MINUTE) == []
    assert _fired(store) == [("story", "story=late", T - HOUR)]


def test_watch_list_names_the_story_of_each_item(store: Store) -> None:
    rows: list[list[Any]] = []
    for n, (item, title, lang) in enumerate([
        ("w-zh", "某品牌奶粉召回 recall", "zh"),
        ("w-en", "Baby formula recall widens", "en"),
        ("w-en2", "Formula recall: stores pull stock", "en"),
        ("w-alone", "Car recall announced", "en"),
    ]):
        rows += item_rows(item, T - 30 * MINUTE + n * MINUTE, title=title, lang=lang,
                          source="reuters" if lang == "en" else "weibo")
    insert(store, rows)
    assign(store, "w-zh", ["w-zh", "w-en", "w-en2"], duplicate_of={"w-en2": "w-en"})
    state = StoreState(store)
    with LiveRunner(store, parse_rules({"rule": [{"name": "watch", "kind": "watch_list", "terms": ["recall"]}]})) \
            as runner:
        fired = runner.cycle(T)
    assert len(fired) == 1
    alert = fired[0].alert
    stories = {s.id: (s.story_id, s.story_title) for s in alert.samples}
    # Each item gets the story's title in its own language; an unassigned item none.
    assert stories == {
        "w-zh": ("w-zh", "某品牌奶粉召回 recall"),
        "w-en": ("w-zh", "Baby formula recall widens"),
        "w-en2": ("w-zh", "Baby formula recall widens"),
        "w-alone": ("", ""),
    }
    assert alert.message.endswith("; story: «某品牌奶粉召回 recall» (w-zh) ×3")
    # A later delivery round reads the samples back from the store with their stories.
    state.record(alert, DeliveryStatus("pending", attempts=99), T + MINUTE)
    pending = {a.alert_id: a for a, _ in state.pending(10)}
    again = {s.id: s.story_id for s in pending[alert.alert_id].samples}
    assert again == {"w-zh": "w-zh", "w-en": "w-zh", "w-en2": "w-zh", "w-alone": ""}
