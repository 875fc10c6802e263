"""Items scored long after they were published (a slow feed, a consumer catching up) still fire
their rule, once: across cycles, a restart and the cool-down on either side.  Real chdb."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stream.alerts import Evaluator, LiveRunner, MemoryState, parse_rules
from stream.alerts.queries import late_windows
from stream.core.settings import StoreSettings
from stream.core.store import Store
from tests.integration.alerts_rows import demo_traffic, insert, item_rows, negative_surge_plant

pytestmark = pytest.mark.integration

T = dt.datetime(2025, 3, 10, 12, 0, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)
MINUTE = dt.timedelta(minutes=1)
SURGE = {
    "name": "surge",
    "kind": "negative_surge",
    "by": "risk",
    "threshold": 0.5,
    "min_items": 30,
    "window": "1h",
    "cooldown": "6h",
}
WATCH = {"name": "watch", "kind": "watch_list", "terms": ["溃坝"], "window": "1h"}


def _late_plant(published_from: dt.datetime, scored_at: dt.datetime, prefix: str = "late") -> list[list[Any]]:
    """40 items of 社会 over 45 minutes from `published_from`, nearly all negative, all scored at
    `scored_at`; the first mentions a watched term."""
    rows: list[list[Any]] = []
    for n in range(40):
        rows += item_rows(
            f"{prefix}-{n:03d}",
            published_from + dt.timedelta(seconds=67 * n),
            source=("weibo", "xinhua", "zhihu")[n % 3],
            risk="社会",
            negative=n % 10 != 0,
            title="水库溃坝通报" if n == 0 else f"事故 {n}",
            scored_at=scored_at,
        )
    return rows


def _fired(store: Store) -> list[tuple[str, str, dt.datetime, int]]:
    return [
        (str(rule), str(scope), end.replace(tzinfo=dt.UTC), int(n))
        for rule, scope, end, n in store.rows(
            f"SELECT rule, scope, window_end, count() FROM {store.database}.alerts FINAL "
            "GROUP BY rule, scope, window_end ORDER BY rule, window_end"
        )
    ]


def test_items_scored_three_windows_late_fire_once_across_cycles_and_a_restart(
    store: Store, store_settings: StoreSettings
) -> None:
    insert(store, demo_traffic(T))
    config = parse_rules({"rule": [SURGE, WATCH]})
    with LiveRunner(store, config) as runner:
        assert runner.cycle(T - MINUTE) == []
        # Published 09:05-09:50, three windows ago; scored only now.
        insert(store, _late_plant(T - 3 * HOUR + 5 * MINUTE, scored_at=T - 20 * dt.timedelta(seconds=1)))
        # The current window alone never sees them.
        assert Evaluator(store, config.rules, MemoryState()).evaluate(T) == []
        fired = runner.cycle(T)
        assert runner.cycle(T + MINUTE) == []
    with Store(store_settings) as again, LiveRunner(again, config) as runner:
        assert runner.cycle(T + 2 * MINUTE) == []
        assert runner.cycle(T + 3 * MINUTE) == []

    assert sorted((d.alert.rule, d.alert.scope) for d in fired) == [("surge", "risk=社会"), ("watch", "term=溃坝")]
    surge = next(d.alert for d in fired if d.alert.rule == "surge")
    # The window aligned to the rule's window that holds them; fired now.
    assert (surge.window_start, surge.window_end, surge.fired_at) == (T - 3 * HOUR, T - 2 * HOUR, T)
    assert surge.item_count >= 40 and surge.value >= 0.5
    assert all(i.startswith("late-") for i in surge.sample_ids)
    watch = next(d.alert for d in fired if d.alert.rule == "watch")
    assert watch.sample_ids == ("late-000",) and watch.samples[0].title == "水库溃坝通报"
    assert _fired(store) == [
        ("surge", "risk=社会", T - 2 * HOUR, 1),
        ("watch", "term=溃坝", T - 2 * HOUR, 1),
    ]


def test_a_late_incident_within_a_cooldown_of_one_that_fired_stays_quiet(store: Store) -> None:
    insert(store, negative_surge_plant(T))  # a surge on 社会 in the current window
    quiet, short = parse_rules({"rule": [SURGE]}), parse_rules({"rule": [{**SURGE, "cooldown": "2h"}]})
    with LiveRunner(store, quiet) as runner:
        assert [d.alert.window_end for d in runner.cycle(T)] == [T]
        # Another surge on 社会, 3 hours earlier, arrives late: within the 6h cool-down.
        insert(store, _late_plant(T - 3 * HOUR + 5 * MINUTE, scored_at=T + 30 * dt.timedelta(seconds=1)))
        assert runner.cycle(T + MINUTE) == []
    # With a 2h cool-down the two are separate incidents.
    with LiveRunner(store, short) as runner:
        assert [d.alert.window_end for d in runner.cycle(T + 2 * MINUTE)] == [T - 2 * HOUR]
        assert runner.cycle(T + 3 * MINUTE) == []
    assert _fired(store) == [("surge", "risk=社会", T - 2 * HOUR, 1), ("surge", "risk=社会", T, 1)]


def test_a_new_late_item_in_a_reported_window_reports_only_itself(store: Store) -> None:
    config = parse_rules({"rule": [WATCH]})
    published = T - 2 * HOUR + 10 * MINUTE
    insert(store, item_rows("w1", published, title="溃坝一", scored_at=T - MINUTE))
    with LiveRunner(store, config) as runner:
        assert [d.alert.sample_ids for d in runner.cycle(T)] == [("w1",)]
        insert(store, item_rows("w2", published + MINUTE, title="溃坝二", scored_at=T + 30 * dt.timedelta(seconds=1)))
        assert [d.alert.sample_ids for d in runner.cycle(T + MINUTE)] == [("w2",)]
        assert runner.cycle(T + 2 * MINUTE) == []


def test_windows_older_than_the_late_horizon_are_left_alone(store: Store) -> None:
    insert(store, _late_plant(T - 30 * HOUR, scored_at=T - MINUTE))
    config = parse_rules({"rule": [SURGE]})
    with LiveRunner(store, config) as runner:
        assert runner.cycle(T) == []
    with LiveRunner(store, config, late_horizon=dt.timedelta(hours=48)) as runner:
        assert [d.alert.window_end for d in runner.cycle(T)] == [T - 29 * HOUR]


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    items=st.lists(
        st.tuples(st.integers(0, 10 * 3600 - 1), st.integers(-600, 600)),  # published, scored - since (s)
        max_size=12,
    ),
    window_s=st.sampled_from([60, 900, 3600, 5400]),
)
def test_late_windows_are_the_aligned_windows_of_the_items_scored_since(
    store: Store, items: list[tuple[int, int]], window_s: int
) -> None:
    store.command(f"TRUNCATE TABLE {store.database}.scored")
    start, since = T - 10 * HOUR, T
    end = T - dt.timedelta(seconds=window_s)
    rows: list[list[Any]] = []
    for n, (published_s, scored_s) in enumerate(items):
        published = start + dt.timedelta(seconds=published_s)
        rows += item_rows(f"p{n}", published, scored_at=since + dt.timedelta(seconds=scored_s))
    insert(store, rows)
    window = dt.timedelta(seconds=window_s)
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    expected = sorted(
        {
            epoch + ((start + dt.timedelta(seconds=p) - epoch) // window + 1) * window
            for p, s in items
            if s >= 0 and start + dt.timedelta(seconds=p) < end
        }
    )
    assert late_windows(store, window, since, start, end) == expected
