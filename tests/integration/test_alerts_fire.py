"""Planted incidents fire exactly once, with the right scope, across cycles and a restart; the same
traffic without the plants fires nothing.  Real chdb, real Kafka, a real HTTP receiver."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import pytest
from kafka import KafkaConsumer
from kafka.admin import KafkaAdminClient, NewTopic

from stream.alerts import LiveRunner, load_rules, parse_rules
from stream.core.schema import SCORED_COLUMNS
from stream.core.settings import KafkaSettings, StoreSettings
from stream.core.store import Store
from tests.integration.alerts_rows import (
    demo_traffic,
    insert,
    negative_surge_plant,
    volume_spike_plant,
)
from tests.webhook_receiver import webhook_receiver

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
T = dt.datetime(2025, 3, 10, 12, 0, tzinfo=dt.UTC)
MINUTE = dt.timedelta(minutes=1)

RULES = {
    "rule": [
        {
            "name": "surge-risk",
            "kind": "negative_surge",
            "by": "risk",
            "threshold": 0.5,
            "min_items": 30,
            "window": "1h",
            "cooldown": "6h",
        },
        {
            "name": "spike-source",
            "kind": "volume_spike",
            "by": "source",
            "method": "zscore",
            "threshold": 4,
            "min_items": 30,
            "window": "1h",
            "baseline": "24h",
            "cooldown": "6h",
            "severity": "critical",
        },
    ]
}


def _fired(store: Store) -> list[tuple[str, str, int]]:
    return [
        (str(rule), str(scope), int(n))
        for rule, scope, n in store.rows(
            f"SELECT rule, scope, count() FROM {store.database}.alerts FINAL GROUP BY rule, scope ORDER BY rule"
        )
    ]


def test_planted_surge_and_spike_fire_once_across_cycles_and_a_restart(
    store: Store, store_settings: StoreSettings
) -> None:
    insert(store, demo_traffic(T))
    insert(store, negative_surge_plant(T, risk="社会"))
    insert(store, volume_spike_plant(T, source="zhihu"))

    with webhook_receiver() as receiver:
        hooked = parse_rules({**RULES, "webhook": [{"name": "ops", "url": receiver.url}]})
        with LiveRunner(store, hooked) as runner:
            first = runner.cycle(T)
            second = runner.cycle(T + MINUTE)
        # A restart: a new connection and a new evaluator with nothing in memory.
        with Store(store_settings) as again, LiveRunner(again, hooked) as runner:
            third = runner.cycle(T + 2 * MINUTE)
            fourth = runner.cycle(T + 30 * MINUTE)

    assert sorted((d.alert.rule, d.alert.scope) for d in first) == [
        ("spike-source", "source=zhihu"),
        ("surge-risk", "risk=社会"),
    ]
    assert second == [] and third == [] and fourth == []
    assert _fired(store) == [("spike-source", "source=zhihu", 1), ("surge-risk", "risk=社会", 1)]

    rows = store.rows(
        f"SELECT rule, kind, severity, window_start, window_end, value, threshold, item_count, sample_ids "
        f"FROM {store.database}.alerts FINAL ORDER BY rule"
    )
    spike, surge = rows
    assert spike[1:3] == ("volume_spike", "critical") and surge[1:3] == ("negative_surge", "warning")
    for row in rows:
        assert row[3].replace(tzinfo=dt.UTC) == T - dt.timedelta(hours=1)
        assert row[4].replace(tzinfo=dt.UTC) == T
    assert surge[5] >= 0.5 and surge[6] == 0.5 and surge[7] >= 50
    assert spike[5] >= 4 and spike[6] == 4 and spike[7] >= 70
    # Samples come from the scope: the surge's most negative items of 社会, the spike's from zhihu.
    assert surge[8] and all(i.startswith("surge-") for i in surge[8])
    sources = store.rows(
        f"SELECT DISTINCT source FROM {store.database}.scored FINAL WHERE has({{ids:Array(String)}}, id)",
        {"ids": list(spike[8])},
    )
    assert spike[8] and sources == [("zhihu",)]

    # Each alert was posted once, with the stored alert id.
    posted = sorted(r.json()["rule"] for r in receiver.received)
    assert posted == ["spike-source", "surge-risk"]
    stored_ids = {str(r[0]) for r in store.rows(f"SELECT alert_id FROM {store.database}.alerts FINAL")}
    assert {r.json()["alert_id"] for r in receiver.received} == stored_ids


def test_cooldown_expiry_fires_a_still_running_incident_again(store: Store) -> None:
    insert(store, demo_traffic(T))
    insert(store, negative_surge_plant(T, risk="社会"))
    short = parse_rules({"rule": [{**RULES["rule"][0], "cooldown": "10m"}]})
    with LiveRunner(store, short) as runner:
        assert len(runner.cycle(T - 5 * MINUTE)) == 1
        assert runner.cycle(T) == []  # 5 minutes later: cooling down
        again = runner.cycle(T + 5 * MINUTE)  # 10 minutes later, the surge still in the window
    assert [(d.alert.rule, d.alert.scope) for d in again] == [("surge-risk", "risk=社会")]
    assert _fired(store) == [("surge-risk", "risk=社会", 2)]


def test_nothing_fires_on_the_same_traffic_without_plants(store: Store) -> None:
    insert(store, demo_traffic(T))
    shipped = load_rules(ROOT / "alerts.toml")
    for config in (parse_rules(RULES), shipped):
        with LiveRunner(store, config) as runner:
            for minutes in (0, 1, 20, 45):
                assert runner.cycle(T - dt.timedelta(minutes=minutes)) == [], config
    assert _fired(store) == []


def test_a_new_model_version_scoring_only_the_last_hour(store: Store) -> None:
    insert(store, demo_traffic(T))
    insert(store, negative_surge_plant(T, risk="社会"))
    # A newer sentiment model re-scored the last hour and finds nothing negative there.
    version_at, label_at, probs_at, scored_at = (
        SCORED_COLUMNS.index(c) for c in ("model_version", "label", "probs", "scored_at")
    )
    newer = []
    for row in store.rows(
        f"SELECT * FROM {store.database}.scored FINAL WHERE task = 'sentiment' "
        "AND published_at >= {start:DateTime64(3,'UTC')}",
        {"start": T - dt.timedelta(hours=1)},
    ):
        values = list(row)
        values[version_at], values[label_at] = "sent-v2", "positive"
        values[probs_at] = {"negative": 0.1, "positive": 0.9}
        values[scored_at] = T + dt.timedelta(days=1)
        newer.append(values)
    store.insert("scored", newer, SCORED_COLUMNS)

    surge, spike = RULES["rule"]
    # By default the latest version (sent-v2) is read: no surge, and its empty past is no baseline.
    with LiveRunner(store, parse_rules({"rule": [surge, spike]})) as runner:
        assert runner.cycle(T) == []
    pinned = parse_rules({"rule": [{**surge, "name": "pinned", "sentiment_version": "sent-v1"}]})
    with LiveRunner(store, pinned) as runner:
        assert [(d.alert.rule, d.alert.scope) for d in runner.cycle(T)] == [("pinned", "risk=社会")]


def test_alerts_are_published_to_the_kafka_alerts_topic(store: Store, kafka_bootstrap: str, topic_name: str) -> None:
    insert(store, demo_traffic(T))
    insert(store, negative_surge_plant(T, risk="社会"))
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        admin.create_topics([NewTopic(topic_name, num_partitions=1, replication_factor=1)])
    finally:
        admin.close()
    kafka = KafkaSettings(bootstrap_servers=[kafka_bootstrap], alerts_topic=topic_name)
    with LiveRunner(store, parse_rules(RULES), kafka) as runner:
        fired = runner.cycle(T)
        assert runner.cycle(T + MINUTE) == []
    assert len(fired) == 1

    consumer = KafkaConsumer(
        topic_name, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    messages = []
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not messages:
            for batch in consumer.poll(timeout_ms=500).values():
                messages.extend(batch)
        for batch in consumer.poll(timeout_ms=1000).values():  # and nothing after it
            messages.extend(batch)
    finally:
        consumer.close()
    assert len(messages) == 1
    body = json.loads(messages[0].value.decode("utf-8"))
    assert messages[0].key.decode() == body["alert_id"] == fired[0].alert.alert_id
    assert body["rule"] == "surge-risk" and body["scope"] == "risk=社会"
    assert body["window"] == "1h" and body["sample_ids"]
