"""Webhook delivery status in the `alerts` table: an alert counts as delivered only once the
webhook took it, failed rounds are retried on later cycles (and by a restarted evaluator) up to a
limit, and the incident stays one row under FINAL.  Real chdb, real local HTTP receivers."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from stream.alerts import LiveRunner, parse_rules
from stream.core.schema import ALERT_COLUMNS, ALERT_DELIVERY, migrations, migrations_table
from stream.core.settings import StoreSettings
from stream.core.store import Store
from tests.integration.alerts_rows import insert, negative_surge_plant
from tests.webhook_receiver import fail_first, webhook_receiver

pytestmark = pytest.mark.integration

T = dt.datetime(2025, 3, 10, 12, 0, tzinfo=dt.UTC)
MINUTE = dt.timedelta(minutes=1)
SURGE = {"name": "surge", "kind": "negative_surge", "by": "risk", "threshold": 0.5, "min_items": 30}


def _hook(name: str, url: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "url": url, "retries": 0, "backoff": 0, "timeout": 5, **extra}


def _status(store: Store) -> list[tuple[Any, ...]]:
    """(rule, delivery, attempts, delivered_to, last_error) per incident, under FINAL."""
    return store.rows(
        f"SELECT rule, delivery, attempts, delivered_to, last_error FROM {store.database}.alerts FINAL "
        "ORDER BY rule, alert_id"
    )


def test_a_failing_webhook_is_retried_on_later_cycles_and_after_a_restart(
    store: Store, store_settings: StoreSettings
) -> None:
    insert(store, negative_surge_plant(T))
    with webhook_receiver(fail_first(2)) as receiver:
        config = parse_rules({"rule": [SURGE], "webhook": [_hook("ops", receiver.url)]})
        with LiveRunner(store, config) as runner:
            fired = runner.cycle(T)
            assert [(d.status.delivery, d.status.attempts, d.failed) for d in fired] == [("pending", 1, ["ops"])]
            [(_, delivery, attempts, done, error)] = _status(store)
            assert (delivery, attempts, list(done)) == ("pending", 1, [])
            assert "HTTP 503" in error and "token" not in error  # the URL (its token) is never stored
            assert runner.cycle(T + MINUTE) == []  # round 2 fails too; nothing fires again
            assert _status(store)[0][1:3] == ("pending", 2)
        # A restarted evaluator finds the unfinished delivery in the store.
        with Store(store_settings) as again, LiveRunner(again, config) as runner:
            assert runner.cycle(T + 2 * MINUTE) == []
            assert runner.cycle(T + 3 * MINUTE) == []  # delivered: no round 4

    assert len(receiver.received) == 3
    bodies = [r.json() for r in receiver.received]
    assert len({b["alert_id"] for b in bodies}) == 1
    # The retried post is the same alert, samples (titles, links) read back from `scored`.
    assert bodies[2]["samples"] == bodies[0]["samples"] and bodies[0]["samples"]
    assert bodies[2]["message"] == bodies[0]["message"]
    [(rule, delivery, attempts, done, error)] = _status(store)
    assert (rule, delivery, attempts, list(done)) == ("surge", "delivered", 3, ["ops"])
    assert "HTTP 503" in error  # the last failure stays on record
    # One incident: the fire row and three rounds collapse to one row under FINAL, and stay so merged.
    db = store.database
    assert store.scalar(f"SELECT count() FROM {db}.alerts") == 4
    store.command(f"OPTIMIZE TABLE {db}.alerts FINAL")
    assert store.rows(f"SELECT delivery, attempts FROM {db}.alerts") == [("delivered", 3)]


def test_a_webhook_that_never_takes_it_ends_failed_after_max_attempts(store: Store) -> None:
    insert(store, negative_surge_plant(T))
    with webhook_receiver(fail_first(None, status=500)) as receiver:
        config = parse_rules({"rule": [SURGE], "webhook": [_hook("ops", receiver.url, retries=1)]})
        with LiveRunner(store, config, max_attempts=3) as runner:
            rounds = [runner.cycle(T + k * MINUTE) for k in range(6)]
    assert [len(r) for r in rounds] == [1, 0, 0, 0, 0, 0]
    # Three rounds of two posts (the webhook's own retry), then no more.
    assert len(receiver.received) == 6
    [(_, delivery, attempts, done, error)] = _status(store)
    assert (delivery, attempts, list(done)) == ("failed", 3, [])
    assert "gave up" in error and "HTTP 500" in error


def test_only_the_webhooks_that_did_not_take_it_are_tried_again(store: Store) -> None:
    insert(store, negative_surge_plant(T))
    watch = {"name": "watch", "kind": "watch_list", "terms": ["事故通报"], "severity": "info"}
    with webhook_receiver() as good, webhook_receiver(fail_first(1)) as flaky:
        config = parse_rules(
            {
                "rule": [SURGE, watch],
                "webhook": [_hook("good", good.url, rules=["surge"]), _hook("flaky", flaky.url, rules=["surge"])],
            }
        )
        with LiveRunner(store, config) as runner:
            fired = runner.cycle(T)
            runner.cycle(T + MINUTE)
            runner.cycle(T + 2 * MINUTE)
    assert sorted(d.alert.rule for d in fired) == ["surge", "watch"]
    assert len(good.received) == 1 and len(flaky.received) == 2
    assert good.received[0].json()["alert_id"] == flaky.received[1].json()["alert_id"]
    status = {row[0]: row[1:4] for row in _status(store)}
    assert status["surge"][:2] == ("delivered", 2) and sorted(status["surge"][2]) == ["flaky", "good"]
    # No webhook wants the watch-list alert: nothing to wait for.
    assert status["watch"] == ("delivered", 0, [])


def test_alerts_from_before_the_migration_read_as_delivered(tmp_path: Path) -> None:
    settings = StoreSettings(dsn=f"chdb://{tmp_path / 'store'}", database="yq_upgrade")
    with Store(settings) as store:
        for migration in migrations(store.database):
            if migration.version < ALERT_DELIVERY:
                for statement in migration.statements:
                    store.command(statement)
        legacy = ["old1", "surge", "negative_surge", "warning", "risk=社会", T - dt.timedelta(hours=1), T,
                  0.8, 0.5, 50, ["i1"], "legacy", T]
        store.insert("alerts", [legacy], ALERT_COLUMNS)
        store.command(migrations_table(store.database))
        store.insert(
            "schema_migrations",
            [[m.version, m.description, T] for m in migrations(store.database) if m.version < ALERT_DELIVERY],
            ["version", "description", "applied_at"],
        )
        assert store.init_schema() == [m.version for m in migrations(store.database) if m.version >= ALERT_DELIVERY]
        assert store.init_schema() == []
        rows = store.rows(
            f"SELECT alert_id, message, delivery, attempts, delivered_to, last_error, updated_at "
            f"FROM {store.database}.alerts FINAL"
        )
        assert [r[:6] for r in rows] == [("old1", "legacy", "delivered", 0, [], "")]
        assert rows[0][6].replace(tzinfo=dt.UTC) == T
        # Nothing legacy is re-sent: it is not pending.
        with webhook_receiver() as receiver:
            config = parse_rules({"rule": [SURGE], "webhook": [_hook("ops", receiver.url)]})
            with LiveRunner(store, config) as runner:
                assert runner.cycle(T + MINUTE) == []
        assert receiver.received == []
