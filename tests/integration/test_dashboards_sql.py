"""What the panels and alert rules show on synthetic data equals what was planted in it."""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from typing import Any

import pytest
import yaml

from dashboards import build
from dashboards.check import SURGE_BEAT, synthetic_spec
from dashboards.sqlcheck import HOSTILE_KEYWORD, QueryResultCheck, check_alert_rules, check_dashboard, run_with
from dashboards.synthetic import BEATS, SyntheticItem, SyntheticSummary, write_synthetic
from stream.core.items import normalize_entity
from stream.core.schema import ENTITY_COLUMNS, ITEM_COLUMNS, SCORED_COLUMNS
from stream.core.store import Store

pytestmark = pytest.mark.integration

NOW = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)
SURGE_RISK = BEATS[SURGE_BEAT].risks[0]


def negative_share(items: list[SyntheticItem]) -> float | None:
    """Negative among the non-neutral items, as the panels count it."""
    sided = [it for it in items if it.sentiment != "neutral"]
    return sum(it.sentiment == "negative" for it in sided) / len(sided) if sided else None


def board(uid: str) -> dict[str, Any]:
    return build.DASHBOARDS[uid]("yuqing")


def first(result: QueryResultCheck) -> tuple[Any, ...]:
    assert result.first_row is not None, result.describe()
    return result.first_row


def by_panel(results: list[QueryResultCheck], scenario: str) -> dict[str, QueryResultCheck]:
    return {r.panel.split(" ", 1)[1]: r for r in results if r.scenario == scenario}


@pytest.fixture
def planted(store: Store) -> SyntheticSummary:
    return write_synthetic(store, synthetic_spec(NOW))


def test_overview_counts_each_item_once_for_the_latest_models(store: Store, planted: SyntheticSummary) -> None:
    results = check_dashboard(store, "overview", board("yuqing-overview"), NOW)
    assert all(r.ok for r in results), [r.describe() for r in results if not r.ok]
    panels = by_panel(results, "default")
    day_ago = NOW - dt.timedelta(hours=24)
    in_day = [it for it in planted.items if it.published_at >= day_ago]
    # duplicates were written (re-deliveries), yet every item counts once
    assert planted.duplicate_rows > 0
    assert panels["Items"].first_row == (len(in_day),)
    assert first(panels["Negative share"])[0] == pytest.approx(negative_share(in_day))
    neutral = sum(it.sentiment == "neutral" for it in in_day)
    assert neutral > 0 and first(panels["Neutral share"])[0] == pytest.approx(neutral / len(in_day))
    # the variables defaulted to the most recent model versions, each head its own
    assert "model_version = decodeURLComponent('analysis-synth-2')" in panels["Items"].sql
    assert "task = 'risk' AND model_version = decodeURLComponent('risk-synth-1')" in \
        panels["Negative share by risk"].sql
    assert "model_version = decodeURLComponent('analysis-synth-2')" in panels["Top entities"].sql

    shares = {re.sub(r" \(\d+\)$", "", str(row[0])): row[1] for row in panels["Negative share by risk"].result_rows}
    assert set(shares) == {it.risk for it in in_day}
    for risk, share in shares.items():
        assert share == pytest.approx(negative_share([it for it in in_day if it.risk == risk]))

    by_category = {row[0]: row[1:] for row in panels["Sentiment by category"].result_rows}
    assert by_category == {c: tuple(sum(it.category == c and it.sentiment == s for it in in_day)
                                    for s in ("negative", "neutral", "positive"))
                           for c in {it.category for it in in_day}}

    stacked = panels["Items by sentiment"].result_rows
    assert sum(row[2] for row in stacked) == len(in_day)
    assert {row[1] for row in stacked} == {"negative", "neutral", "positive"}
    latest = panels["Latest negative items"].result_rows
    negatives = sorted((it for it in in_day if it.sentiment == "negative"), key=lambda it: it.published_at,
                       reverse=True)
    assert [(row[6], row[2], row[3]) for row in latest] == [(it.url, it.risk, it.category) for it in negatives[:100]]
    assert panels["Fired alerts"].rows == 1 and f"risk={SURGE_RISK}" in first(panels["Fired alerts"])

    # Top entities: one row per (normalized form, type), ranked by items naming it
    entities = panels["Top entities"].result_rows
    named: dict[tuple[str, str], list[SyntheticItem]] = {}
    for it in in_day:
        for key in dict.fromkeys((e.normalized, e.type) for e in it.entities):
            named.setdefault(key, []).append(it)
    ranked = sorted(named, key=lambda k: -len(named[k]))
    assert [row[3] for row in entities] == [len(named[k]) for k in ranked[:20]]
    for entity, kind, mentions, items, negative in entities:
        group = named[(normalize_entity(entity), kind)]
        assert items == len(group)
        assert mentions == sum(1 for it in group for e in it.entities if (e.normalized, e.type) ==
                               (normalize_entity(entity), kind))
        assert negative == (pytest.approx(negative_share(group)) if negative_share(group) is not None else None)
    assert {row[1] for row in entities} == {"PER", "LOC", "ORG"}
    only_people = by_panel(run_with(store, "overview", board("yuqing-overview"), NOW, {"entity_type": "PER"}),
                           "picked")["Top entities"].result_rows
    assert {row[1] for row in only_people} == {"PER"} and only_people[0][3] == max(
        len(v) for k, v in named.items() if k[1] == "PER")


def test_shares_on_a_hand_made_set(store: Store) -> None:
    """Five items an hour ago: neutral share 2/5, negative among the non-neutral 2/3; a person
    named three times in two spellings by two items, an organisation by a negative and a neutral one."""
    at = NOW - dt.timedelta(hours=1)
    labels = {"a": "negative", "b": "negative", "c": "positive", "d": "neutral", "e": "neutral"}
    risks = {"a": "social", "b": "social", "c": "other", "d": "other", "e": "social"}
    items, scored, entities = [], [], []
    for k, (item, label) in enumerate(labels.items()):
        when = at + dt.timedelta(minutes=k)
        items.append([item, "src", f"https://x.example/{item}", f"title {item}", "body", "en", when, when, "news", 0,
                      k, when])
        for task, version, value in (("sentiment", "m-2", label), ("risk", "r-1", risks[item]),
                                     ("category", "m-2", "finance")):
            scored.append([item, "src", "en", when, when, "news", 0, k, task, "m", version, value, 0.9, {value: 0.9},
                           False, when])
    named = {"a": ["Maria Chen", "Maria Chen"], "b": ["MARIA  CHEN", "Harbor Trust"], "d": ["Harbor Trust"]}
    for item, names in named.items():
        entities.append([item, "m-2", "src", "en", at, labels[item], names, [normalize_entity(n) for n in names],
                         ["PER" if "Chen" in n or "CHEN" in n else "ORG" for n in names], [0] * len(names),
                         [len(n) for n in names], [0.9] * len(names), at])
    store.insert("items", items, ITEM_COLUMNS)
    store.insert("scored", scored, SCORED_COLUMNS)
    store.insert("entities", entities, ENTITY_COLUMNS)

    overview = panels_of_run(store, "yuqing-overview")
    assert overview["Items"].first_row == (5,)
    assert first(overview["Neutral share"])[0] == pytest.approx(2 / 5)
    assert first(overview["Negative share"])[0] == pytest.approx(2 / 3)
    assert [row[1] for row in overview["Neutral share over time"].result_rows] == [pytest.approx(2 / 5)]
    assert [row[1] for row in overview["Negative share of non-neutral items"].result_rows] == [pytest.approx(2 / 3)]
    shares = dict(overview["Negative share by risk"].result_rows)
    assert shares == {"social (3)": pytest.approx(1.0), "other (2)": pytest.approx(0.0)}
    assert overview["Sentiment by category"].result_rows == [("finance", 2, 2, 1)]
    # (entity in its commonest spelling, type, mentions, items, negative share of its non-neutral items)
    assert overview["Top entities"].result_rows == [("Maria Chen", "PER", 3, 2, 1.0), ("Harbor Trust", "ORG", 2, 2,
                                                                                          1.0)]
    drill = panels_of_run(store, "yuqing-drilldown", {"risk": "other"})
    assert drill["Matching items"].first_row == (2,)
    assert drill["Negative share"].first_row == (0.0,)
    assert drill["Top entities"].result_rows == [("Harbor Trust", "ORG", 1, 1, None)]  # only a neutral item names it


def panels_of_run(store: Store, uid: str, picks: dict[str, str] | None = None) -> dict[str, QueryResultCheck]:
    results = run_with(store, uid, board(uid), NOW, picks or {}, span=dt.timedelta(hours=24))
    # no alerts, dead letters or stories were planted: those panels may be empty, nothing may fail
    assert all(r.ok or (r.problem or "").startswith("no rows") for r in results), [r.describe() for r in results]
    return by_panel(results, "picked")


def test_drilldown_filters_select_exactly_the_matching_items(store: Store, planted: SyntheticSummary) -> None:
    results = check_dashboard(store, "drilldown", board("yuqing-drilldown"), NOW)
    assert all(r.ok for r in results), [r.describe() for r in results if not r.ok]
    week_ago = NOW - dt.timedelta(days=7)
    everything = [it for it in planted.items if it.published_at >= week_ago]
    assert by_panel(results, "default")["Matching items"].first_row == (len(everything),)

    filtered = by_panel(results, "filtered")
    rows = filtered["Items"].result_rows
    assert rows, "the filtered scenario picks a real item"
    _, source, lang, risk, category, _, _, first_title, _ = rows[0]
    sql = filtered["Items"].sql
    keyword = re.search(r"concat\(x\.title, ' ', x\.text\), decodeURLComponent\('([^']*)'\)", sql)
    assert keyword is not None
    from urllib.parse import unquote

    word = unquote(keyword.group(1))
    assert word and word.lower() in first_title.lower()
    expected = [it for it in everything if it.source == source and it.lang == lang and it.risk == risk
                and it.category == category and word.lower() in f"{it.title} {it.text}".lower()]
    assert filtered["Matching items"].first_row == (len(expected),)
    assert {row[8] for row in rows} == {it.url for it in expected}
    assert first(filtered["Negative share"])[0] == negative_share(expected)
    # the entities of exactly those items, counted in them, of the type picked (the first option: LOC)
    assert "decodeURLComponent('%7BLOC%7D')" in filtered["Top entities"].sql
    named = Counter(key for it in expected for key in {(e.normalized, e.type) for e in it.entities if e.type == "LOC"})
    top = filtered["Top entities"].result_rows
    assert len(top) == min(20, len(named))
    assert all(named[(normalize_entity(entity), kind)] == items for entity, kind, _, items, _ in top)
    assert [items for *_, items, _ in top] == sorted(named.values(), reverse=True)[:20]

    hostile = by_panel(results, "hostile")
    assert hostile["Matching items"].first_row == (0,)
    assert hostile["Items"].rows == 0 and hostile["Top entities"].rows == 0
    assert HOSTILE_KEYWORD not in hostile["Items"].sql  # it went in percent-encoded
    assert store.scalar(f"SELECT count() FROM {store.database}.scored") > 0  # and dropped nothing


def test_pipeline_panels_agree_with_the_stats(store: Store, planted: SyntheticSummary) -> None:
    results = check_dashboard(store, "pipeline", board("yuqing-pipeline"), NOW)
    assert all(r.ok for r in results), [r.describe() for r in results if not r.ok]
    panels = by_panel(results, "default")
    day_ago = NOW - dt.timedelta(hours=24)
    dead = store.scalar(f"SELECT count() FROM {store.database}.dead_letters FINAL "
                        "WHERE received_at >= {t:DateTime64(3)} AND received_at <= {n:DateTime64(3)}",
                        {"t": day_ago, "n": NOW})
    assert panels["Dead letters"].first_row == (dead,)
    assert sum(row[2] for row in panels["Dead letters by kind"].result_rows) == dead
    lag = store.scalar(f"SELECT sum(lag) FROM (SELECT argMax(lag, ts) AS lag FROM {store.database}.pipeline_stats "
                       "GROUP BY kafka_partition)")
    assert panels["Consumer lag"].first_row == (lag,)
    delay = first(panels["Delay p95"])[0]
    assert 0 < delay < 3600


def test_alert_rules_fire_on_the_planted_surge_only(store: Store, planted: SyntheticSummary) -> None:
    doc = yaml.safe_load(build.alert_rules_yaml("yuqing"))
    results = {r.panel: r for r in check_alert_rules(store, doc, "yuqing", NOW)}
    assert all(r.ok for r in results.values()), [r.describe() for r in results.values()]
    shares = dict(results["Negative surge (A)"].result_rows)
    hour = [it for it in planted.items if it.published_at >= NOW - dt.timedelta(hours=1) and it.risk == SURGE_RISK]
    assert shares[SURGE_RISK] == pytest.approx(negative_share(hour)) and shares[SURGE_RISK] > 0.5
    assert all(share <= 0.5 for risk, share in shares.items() if risk != SURGE_RISK)
    assert first(results["Volume spike (A)"])[0] > 3


def test_alert_rules_stay_quiet_without_a_surge(store: Store) -> None:
    spec = synthetic_spec(NOW)
    write_synthetic(store, type(spec)(**{**spec.__dict__, "surges": ()}))
    doc = yaml.safe_load(build.alert_rules_yaml("yuqing"))
    results = {r.panel: r for r in check_alert_rules(store, doc, "yuqing", NOW)}
    assert all(share <= 0.5 for _, share in results["Negative surge (A)"].result_rows)
    assert first(results["Volume spike (A)"])[0] < 3
