"""What the panels and alert rules show on synthetic data equals what was planted in it."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
import yaml

from dashboards import build
from dashboards.check import SURGE_TOPIC, synthetic_spec
from dashboards.sqlcheck import HOSTILE_KEYWORD, QueryResultCheck, check_alert_rules, check_dashboard
from dashboards.synthetic import SyntheticSummary, write_synthetic
from stream.core.store import Store

pytestmark = pytest.mark.integration

NOW = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)


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
    negative = sum(it.sentiment == "negative" for it in in_day)
    assert first(panels["Negative share"])[0] == pytest.approx(negative / len(in_day))
    # the variables defaulted to the most recent model versions
    assert "model_version = decodeURLComponent('sentiment-synth-2')" in panels["Items"].sql
    assert "model_version = decodeURLComponent('topic-synth-1')" in panels["Negative share by topic"].sql

    shares = {re.sub(r" \(\d+\)$", "", str(row[0])): row[1] for row in panels["Negative share by topic"].result_rows}
    for topic, share in shares.items():
        topic_items = [it for it in in_day if it.topic == topic]
        assert share == pytest.approx(sum(it.sentiment == "negative" for it in topic_items) / len(topic_items))
    assert max(shares, key=lambda t: shares[t]) == SURGE_TOPIC

    stacked = panels["Items by sentiment"].result_rows
    assert sum(row[2] for row in stacked) == len(in_day)
    latest = panels["Latest negative items"].result_rows
    times = [row[0] for row in latest]
    assert len(latest) == 100 and times == sorted(times, reverse=True)
    negative_ids = {it.url for it in in_day if it.sentiment == "negative"}
    assert {row[5] for row in latest} <= negative_ids
    assert panels["Fired alerts"].rows == 1 and "topic=public health" in first(panels["Fired alerts"])


def test_drilldown_filters_select_exactly_the_matching_items(store: Store, planted: SyntheticSummary) -> None:
    results = check_dashboard(store, "drilldown", board("yuqing-drilldown"), NOW)
    assert all(r.ok for r in results), [r.describe() for r in results if not r.ok]
    week_ago = NOW - dt.timedelta(days=7)
    everything = [it for it in planted.items if it.published_at >= week_ago]
    assert by_panel(results, "default")["Matching items"].first_row == (len(everything),)

    filtered = by_panel(results, "filtered")
    rows = filtered["Items"].result_rows
    assert rows, "the filtered scenario picks a real item"
    _, source, lang, topic, _, _, first_title, _ = rows[0]
    sql = filtered["Items"].sql
    keyword = re.search(r"concat\(title, ' ', text\), decodeURLComponent\('([^']*)'\)", sql)
    assert keyword is not None
    from urllib.parse import unquote

    word = unquote(keyword.group(1))
    assert word and word.lower() in first_title.lower()
    expected = [it for it in everything if it.source == source and it.lang == lang and it.topic == topic
                and word.lower() in f"{it.title} {it.text}".lower()]
    assert filtered["Matching items"].first_row == (len(expected),)
    assert {row[7] for row in rows} == {it.url for it in expected}

    hostile = by_panel(results, "hostile")
    assert hostile["Matching items"].first_row == (0,)
    assert hostile["Items"].rows == 0
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
    assert shares[SURGE_TOPIC] > 0.5
    assert all(share <= 0.5 for topic, share in shares.items() if topic != SURGE_TOPIC)
    assert first(results["Volume spike (A)"])[0] > 3


def test_alert_rules_stay_quiet_without_a_surge(store: Store) -> None:
    spec = synthetic_spec(NOW)
    write_synthetic(store, type(spec)(**{**spec.__dict__, "surges": ()}))
    doc = yaml.safe_load(build.alert_rules_yaml("yuqing"))
    results = {r.panel: r for r in check_alert_rules(store, doc, "yuqing", NOW)}
    assert all(share <= 0.5 for _, share in results["Negative surge (A)"].result_rows)
    assert first(results["Volume spike (A)"])[0] < 3
