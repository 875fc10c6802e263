"""Watch-list matching (Chinese and English) and scope filters in real ClickHouse, and rule values
that try SQL injection."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from stream.alerts import Evaluator, LiveRunner, MemoryState, parse_rules
from stream.core.store import Store
from tests.integration.alerts_rows import insert, item_rows
from tests.webhook_receiver import fail_first, webhook_receiver

pytestmark = pytest.mark.integration

T = dt.datetime(2025, 3, 10, 12, 0, tzinfo=dt.UTC)
INJECTION = "'; DROP TABLE x; --"


def _items(store: Store, specs: list[dict[str, Any]]) -> None:
    rows: list[list[Any]] = []
    for n, spec in enumerate(specs):
        spec = dict(spec)
        item_id = spec.pop("id")
        rows += item_rows(item_id, T - dt.timedelta(minutes=30) + dt.timedelta(seconds=n), **spec)
    insert(store, rows)


def _watch(**extra: Any) -> dict[str, Any]:
    return {"rule": [{"name": "watch", "kind": "watch_list", "window": "1h", **extra}]}


def _scopes(deliveries: list[Any]) -> dict[str, list[str]]:
    return {d.alert.scope: sorted(d.alert.sample_ids) for d in deliveries}


def test_watch_list_matches_chinese_and_english_terms(store: Store) -> None:
    _items(
        store,
        [
            {"id": "zh1", "title": "某地发生食品安全事件", "source": "weibo"},
            {"id": "zh2", "title": "市场平稳", "text": "专家称食品 安全无虞"},  # not the phrase
            {"id": "en1", "title": "Acme reports a DATA  BREACH", "source": "reuters", "lang": "en"},
            {"id": "en2", "title": "Databreach startup raises money", "lang": "en"},  # not a word match
            {"id": "en3", "title": "Carmaker announces recall", "lang": "en", "negative": True},
            {"id": "en4", "title": "Recalled toys return", "lang": "en"},  # 'recall' is not 'recalled'
            {"id": "mix", "title": "特斯拉Tesla降价", "text": "Tesla cuts prices"},
        ],
    )
    config = parse_rules(_watch(terms=["食品安全", "data breach", "recall", "Tesla降价", "无关词"]))
    with LiveRunner(store, config) as runner:
        fired = runner.cycle(T)
        assert runner.cycle(T + dt.timedelta(minutes=1)) == []
    assert _scopes(fired) == {
        "term=食品安全": ["zh1"],
        "term=data breach": ["en1"],
        "term=recall": ["en3"],
        "term=Tesla降价": ["mix"],
    }
    recall = next(d.alert for d in fired if d.alert.scope == "term=recall")
    assert recall.samples[0].title == "Carmaker announces recall"
    assert recall.samples[0].url.startswith("https://")


def test_watch_list_reports_only_new_items_across_a_restart(store: Store) -> None:
    _items(store, [{"id": "a1", "title": "化工厂爆炸"}])
    config = parse_rules(_watch(terms=["爆炸"]))
    with LiveRunner(store, config) as runner:
        assert _scopes(runner.cycle(T)) == {"term=爆炸": ["a1"]}
    insert(store, item_rows("a2", T + dt.timedelta(seconds=30), title="又一起爆炸"))
    with LiveRunner(store, config) as runner:  # restarted: what was reported comes from the store
        assert _scopes(runner.cycle(T + dt.timedelta(minutes=1))) == {"term=爆炸": ["a2"]}
        assert runner.cycle(T + dt.timedelta(minutes=2)) == []


def test_watch_list_negative_only(store: Store) -> None:
    _items(
        store,
        [
            {"id": "n1", "title": "裁员潮来袭", "negative": True},
            {"id": "p1", "title": "公司否认裁员传闻", "negative": False},
        ],
    )
    with LiveRunner(store, parse_rules(_watch(terms=["裁员"], negative_only=True))) as runner:
        assert _scopes(runner.cycle(T)) == {"term=裁员": ["n1"]}


def test_scope_filters_source_risk_lang_keyword(store: Store) -> None:
    _items(
        store,
        [
            {"id": "k1", "title": "暴雨预警", "source": "weibo", "risk": "社会", "lang": "zh"},
            {"id": "k2", "title": "暴雨预警", "source": "xinhua", "risk": "社会", "lang": "zh"},
            {"id": "k3", "title": "暴雨预警", "source": "weibo", "risk": "财经", "lang": "zh"},
            {"id": "k4", "title": "暴雨预警 storm", "source": "weibo", "risk": "社会", "lang": "en"},
        ],
    )
    scope = {"source": ["weibo"], "risk": ["社会"], "lang": ["zh"], "keyword": ["预警"]}
    with LiveRunner(store, parse_rules(_watch(terms=["暴雨"], scope=scope))) as runner:
        assert _scopes(runner.cycle(T)) == {"term=暴雨": ["k1"]}


def test_sql_injection_in_terms_and_scopes_is_just_text(store: Store) -> None:
    _items(
        store,
        [
            {"id": "inj", "title": f"payload {INJECTION} here", "source": "x'; DROP TABLE scored; --"},
            {"id": "benign", "title": "DROP TABLE x", "source": "weibo"},
        ],
    )
    tables_before = sorted(r[0] for r in store.rows(f"SHOW TABLES FROM {store.database}"))
    config = parse_rules(
        {
            "rule": [
                {
                    "name": "watch",
                    "kind": "watch_list",
                    "terms": [INJECTION, "' OR 1=1 --", "{x:String}", "\\' OR '1'='1"],
                },
                {
                    "name": "scoped",
                    "kind": "watch_list",
                    "terms": ["payload"],
                    "scope": {
                        "source": ["x'; DROP TABLE scored; --"],
                        "keyword": [INJECTION],
                    },
                },
                {
                    "name": "surge",
                    "kind": "negative_surge",
                    "by": "keyword",
                    "threshold": 0.1,
                    "min_items": 1,
                    "scope": {
                        "keyword": [INJECTION, "') OR 1=1 --"],
                        "lang": ["zh' OR '1'='1"],
                        "risk": ["社会') OR ('1'='1"],
                    },
                },
            ]
        }
    )
    state = MemoryState()
    fired = Evaluator(store, config.rules, state).evaluate(T)
    assert {(a.rule, a.scope, a.sample_ids) for a in fired} == {
        ("watch", f"term={INJECTION}", ("inj",)),
        ("scoped", "term=payload", ("inj",)),
    }
    assert sorted(r[0] for r in store.rows(f"SHOW TABLES FROM {store.database}")) == tables_before
    assert store.scalar(f"SELECT count() FROM {store.database}.scored FINAL") == 4


def test_keyword_grouped_surge(store: Store) -> None:
    specs = [{"id": f"l{n}", "title": f"公司裁员 {n}", "negative": n < 4} for n in range(5)]
    specs += [{"id": f"h{n}", "title": f"Big layoffs? No, layoff rumours {n}", "lang": "en"} for n in range(5)]
    _items(store, specs)
    config = parse_rules(
        {
            "rule": [
                {
                    "name": "kw",
                    "kind": "negative_surge",
                    "by": "keyword",
                    "threshold": 0.6,
                    "min_items": 5,
                    "scope": {"keyword": ["裁员", "layoff"]},
                }
            ]
        }
    )
    fired = Evaluator(store, config.rules, MemoryState()).evaluate(T)
    assert [(a.scope, a.item_count, round(a.value, 2)) for a in fired] == [("keyword=裁员", 5, 0.8)]


def test_no_rule_or_item_value_reaches_the_sql_text(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every statement of a live cycle (late windows, cool-downs, records, delivery retries) carries
    rule values and item ids only as parameters."""
    hostile = [INJECTION, "{x:String}", "' OR 1=1 --", "社会') OR ('1'='1"]
    specs = [{"id": f"id-{INJECTION}", "title": f"{INJECTION} {{x:String}} 社会') OR ('1'='1 ' OR 1=1 --"}]
    _items(store, specs)
    # ... and one scored late, so the past-window path runs too.
    insert(store, item_rows(f"late-{INJECTION}", T - dt.timedelta(hours=3), title=INJECTION, scored_at=T))
    config = parse_rules(
        {
            "rule": [
                {"name": "watch", "kind": "watch_list", "terms": hostile, "scope": {"keyword": hostile}},
                {
                    "name": "surge",
                    "kind": "negative_surge",
                    "by": "keyword",
                    "threshold": 0.01,
                    "min_items": 1,
                    "scope": {"keyword": hostile, "source": hostile, "risk": hostile, "category": hostile,
                              "lang": hostile},
                },
            ],
        }
    )
    sent: list[str] = []
    real_query = store.query

    def recording(sql: str, parameters: dict[str, Any] | None = None) -> Any:
        sent.append(sql)
        return real_query(sql, parameters)

    monkeypatch.setattr(store, "query", recording)
    with webhook_receiver(fail_first(1)) as receiver:
        hooked = parse_rules({**config.model_dump(by_alias=True), "webhook": [{"name": "h", "url": receiver.url,
                                                                                "retries": 0, "backoff": 0}]})
        with LiveRunner(store, hooked) as runner:
            fired = runner.cycle(T)
            runner.cycle(T + dt.timedelta(minutes=1))  # the delivery retry reads the alert back
    # The late item and the current one both name the injection term; the first post was retried.
    assert [d.alert.scope for d in fired].count(f"term={INJECTION}") == 2
    assert len(receiver.received) == len(fired) + 1
    assert store.rows(f"SELECT DISTINCT delivery FROM {store.database}.alerts FINAL") == [("delivered",)]
    for sql in sent:
        for value in hostile:
            assert value not in sql, (value, sql)
