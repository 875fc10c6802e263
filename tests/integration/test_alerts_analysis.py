"""Rules on what a multi-head package says: neutral items in the negative-surge share, watched
entities (normalized names, optional types) and category groups, on real ClickHouse."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from stream.alerts import LiveRunner, parse_rules
from stream.core.store import Store
from tests.integration.alerts_rows import Row, insert, item_rows

pytestmark = pytest.mark.integration

T = dt.datetime(2025, 3, 10, 12, 0, tzinfo=dt.UTC)
# A neutral item whose second-likeliest label is negative: only its label may decide.
NEUTRAL_LEANING_NEGATIVE = {"negative": 0.45, "neutral": 0.5, "positive": 0.05}


def _mix(negative: int, positive: int, neutral: int, category: str = "society") -> list[Row]:
    rows: list[Row] = []
    labels = ["negative"] * negative + ["positive"] * positive + ["neutral"] * neutral
    for n, label in enumerate(labels):
        rows += item_rows(
            f"{category}-{label}-{n:03d}",
            T - dt.timedelta(minutes=55) + dt.timedelta(seconds=10 * n),
            sentiment=label,
            probs=NEUTRAL_LEANING_NEGATIVE if label == "neutral" else None,
            category=category,
            source=("weibo", "xinhua", "zhihu")[n % 3],
        )
    return rows


def _surge(**extra: Any) -> dict[str, Any]:
    return {"name": "surge", "kind": "negative_surge", "threshold": 0.6, "min_items": 30, **extra}


def _cycle(store: Store, *rules: dict[str, Any]) -> list[tuple[str, str, float, int]]:
    with LiveRunner(store, parse_rules({"rule": list(rules)})) as runner:
        return [(d.alert.rule, d.alert.scope, round(d.alert.value, 3), d.alert.item_count) for d in runner.cycle(T)]


def test_a_neutral_flood_fires_no_negative_surge(store: Store) -> None:
    # 200 neutral items leaning negative, 8 negative, 2 positive: 80% of the non-neutral items are
    # negative, but there are 10 of them, below min_items; counted in, neutral makes the share 4%.
    insert(store, _mix(negative=8, positive=2, neutral=200))
    assert _cycle(store, _surge(), _surge(name="all-in", include_neutral=True)) == []
    assert _cycle(store, _surge(name="few", min_items=10)) == [("few", "all", 0.8, 10)]


def test_neutral_items_neither_dilute_a_surge_nor_count_towards_it(store: Store) -> None:
    insert(store, _mix(negative=40, positive=10, neutral=100))
    with LiveRunner(store, parse_rules({"rule": [_surge(), _surge(name="all-in", include_neutral=True)]})) as runner:
        fired = runner.cycle(T)
    assert [(d.alert.rule, d.alert.scope, d.alert.value, d.alert.item_count) for d in fired] == [
        ("surge", "all", 0.8, 50)
    ]
    assert "80% of 50 non-neutral items negative" in fired[0].alert.message
    assert "100 neutral left out" in fired[0].alert.message
    assert all("negative" in s for s in fired[0].alert.sample_ids)


def test_surges_grouped_and_filtered_by_category(store: Store) -> None:
    insert(store, _mix(negative=40, positive=5, neutral=5, category="finance"))
    insert(store, _mix(negative=10, positive=40, neutral=0, category="sports"))
    assert _cycle(store, _surge(by="category")) == [("surge", "category=finance", round(40 / 45, 3), 45)]
    assert _cycle(store, _surge(name="sports", scope={"category": ["sports"]})) == []


def _entity_items(store: Store) -> None:
    specs: list[tuple[str, dict[str, Any]]] = [
        ("org", {"title": "华为发布新机", "entities": [("华为", "ORG")]}),
        ("fullwidth", {"title": "ＨＵＡＷＥＩ launches a phone", "entities": [("ＨＵＡＷＥＩ", "ORG")], "lang": "en"}),
        ("quoted", {"title": "《华为》纪录片上映", "entities": [("《华为》", "ORG")], "negative": True}),
        ("place", {"title": "华为小镇举办灯会", "entities": [("华为", "LOC")]}),  # another type
        ("musk", {"title": "ELON   MUSK visits", "entities": [("ELON   MUSK", "PER"), ("Berlin", "LOC")]}),
        ("text-only", {"title": "华为 and Elon Musk in the text, no entity found", "entities": []}),
        ("no-head", {"title": "华为"}),  # scored by a package without an entity head
    ]
    rows: list[Row] = []
    for n, (item_id, spec) in enumerate(specs):
        rows += item_rows(item_id, T - dt.timedelta(minutes=30) + dt.timedelta(seconds=n), **spec)
    # An older package that tagged an item the current one did not: not the version read.
    rows += [("entities", row) for table, row in item_rows(
        "text-only", T - dt.timedelta(minutes=30), entities=[("华为", "ORG")], sentiment_version="sent-v0",
        scored_at=T - dt.timedelta(hours=2)) if table == "entities"]
    insert(store, rows)


def _watch(**extra: Any) -> dict[str, Any]:
    return {"name": "watch", "kind": "watch_list", "window": "1h", **extra}


def test_watched_entities_match_normalized_names_of_the_type_given(store: Store) -> None:
    _entity_items(store)
    rule = _watch(entities=["华为:ORG", "huawei:org", "华为", "elon musk", "Tesla"])
    with LiveRunner(store, parse_rules({"rule": [rule]})) as runner:
        fired = runner.cycle(T)
        assert runner.cycle(T + dt.timedelta(minutes=1)) == []  # reported once
    assert {d.alert.scope: sorted(d.alert.sample_ids) for d in fired} == {
        "entity=华为:ORG": ["org", "quoted"],
        "entity=huawei:ORG": ["fullwidth"],
        "entity=华为": ["org", "place", "quoted"],
        "entity=elon musk": ["musk"],
    }
    musk = next(d.alert for d in fired if d.alert.scope == "entity=elon musk")
    assert "1 new item name the entity 'elon musk'" in musk.message


def test_entities_with_terms_negative_only_and_a_pinned_version(store: Store) -> None:
    _entity_items(store)
    both = _watch(terms=["华为"], entities=["华为:ORG"], negative_only=True)
    assert {(s, n) for _, s, _, n in _cycle(store, both)} == {("term=华为", 1), ("entity=华为:ORG", 1)}
    old = _watch(name="old", entities=["华为:ORG"], entities_version="sent-v0")
    with LiveRunner(store, parse_rules({"rule": [old]})) as runner:
        assert [sorted(d.alert.sample_ids) for d in runner.cycle(T)] == [["text-only"]]
