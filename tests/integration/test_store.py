from __future__ import annotations

import datetime as dt

import pytest

from stream.core.errors import StoreError
from stream.core.schema import SCORED_COLUMNS
from stream.core.settings import StoreSettings
from stream.core.store import Store

pytestmark = pytest.mark.integration

T0 = dt.datetime(2026, 11, 20, 8, 30, tzinfo=dt.UTC)


def scored_row(item_id: str, version: str = "sent-v1", label: str = "negative", minute: int = 0) -> list[object]:
    ts = T0 + dt.timedelta(minutes=minute)
    return [item_id, "wire", f"https://e.x/{item_id}", "title", "text", "en", ts, ts, "news", 0, 1,
            "sentiment", "sentiment-test", version, label, 0.9, {"negative": 0.9, "positive": 0.1}, False, ts]


def test_init_is_idempotent(store: Store) -> None:
    assert store.init_schema() == []  # the fixture applied everything already
    assert store.schema_version() == 1
    tables = {r[0] for r in store.rows("SELECT name FROM system.tables WHERE database = {db:String}",
                                       {"db": store.database})}
    assert {"scored", "scored_minute", "scored_minute_mv", "dead_letters", "alerts", "pipeline_stats"} <= tables


def test_round_trip_and_duplicates_collapse(store: Store) -> None:
    rows = [scored_row(f"id{i}", minute=i % 3) for i in range(50)]
    store.insert("scored", rows, SCORED_COLUMNS)
    store.insert("scored", rows[:20], SCORED_COLUMNS)  # a re-delivered batch
    store.insert("scored", [scored_row("id0", version="sent-v2", label="positive")], SCORED_COLUMNS)
    db = store.database
    assert store.scalar(f"SELECT count() FROM {db}.scored") == 71  # raw parts still hold the copies
    final = store.rows(f"SELECT model_version, count() FROM {db}.scored FINAL GROUP BY 1 ORDER BY 1")
    assert final == [("sent-v1", 50), ("sent-v2", 1)]
    # the per-minute aggregate counts distinct ids, so the re-delivery does not inflate it either
    per_minute = store.rows(
        f"SELECT minute, uniqExactMerge(items) FROM {db}.scored_minute "
        "WHERE model_version = 'sent-v1' GROUP BY minute ORDER BY minute"
    )
    assert [n for _, n in per_minute] == [17, 17, 16]
    row = store.rows(f"SELECT probs['negative'], published_at FROM {db}.scored FINAL WHERE id = 'id1' "
                     "AND model_version = 'sent-v1'")[0]
    assert abs(row[0] - 0.9) < 1e-6
    assert row[1].replace(tzinfo=dt.UTC) == T0 + dt.timedelta(minutes=1)


def test_bad_query_is_a_store_error(store: Store) -> None:
    with pytest.raises(StoreError, match="query failed"):
        store.query("SELECT * FROM no_such_table_xyz")


def test_bad_database_name_rejected(store_settings: StoreSettings) -> None:
    from stream.core.errors import ConfigError

    with pytest.raises(ConfigError):
        Store(store_settings.model_copy(update={"database": "x; DROP"}))
