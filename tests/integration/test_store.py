from __future__ import annotations

import datetime as dt

import pytest

from stream.core.errors import StoreError
from stream.core.schema import ITEMS_ONCE, SCORED_BY_ID, SCORED_COLUMNS, Copy, migrations, migrations_table
from stream.core.settings import StoreSettings
from stream.core.store import Store
from stream.tools.bench.storage import V6_SCORED_COLUMNS

pytestmark = pytest.mark.integration

T0 = dt.datetime(2026, 11, 20, 8, 30, tzinfo=dt.UTC)


def scored_row(item_id: str, version: str = "sent-v1", label: str = "negative", minute: int = 0,
               scored: dt.timedelta = dt.timedelta(0), task: str = "sentiment") -> list[object]:
    ts = T0 + dt.timedelta(minutes=minute)
    return [item_id, "wire", "en", ts, ts, "news", 0, 1, task, "sentiment-test", version, label, 0.9,
            {"negative": 0.9, "positive": 0.1}, False, ts + scored]


def v6_row(item_id: str, text: str = "text", **kw: object) -> list[object]:
    """A `scored` row of the layout before ITEMS_ONCE: url, title and text on it."""
    row = scored_row(item_id, **kw)  # type: ignore[arg-type]
    return [*row[:2], f"https://e.x/{item_id}", f"title {item_id}", text, *row[2:]]


def apply_migrations_before(store: Store, version: int) -> None:
    store.command(f"CREATE DATABASE IF NOT EXISTS {store.database}")
    for migration in migrations(store.database):
        if migration.version < version:
            for statement in migration.statements:
                assert isinstance(statement, str)
                store.command(statement)


def tables_of(store: Store) -> set[str]:
    return {r[0] for r in store.rows("SELECT name FROM system.tables WHERE database = {db:String}",
                                     {"db": store.database})}


def test_init_is_idempotent(store: Store) -> None:
    assert store.init_schema() == []  # the fixture applied everything already
    assert store.schema_version() == max(m.version for m in migrations(store.database))
    assert {"scored", "dead_letters", "alerts", "pipeline_stats"} <= tables_of(store)
    assert not {"scored_minute", "scored_minute_mv"} & tables_of(store)
    keys = store.rows("SELECT sorting_key, partition_key FROM system.tables WHERE database = {db:String} "
                      "AND name = 'scored'", {"db": store.database})
    assert keys == [("task, model_version, id", "(task, model_version)")]


def test_every_delivery_of_an_item_collapses_to_one_row(store: Store) -> None:
    # a re-send with a new Kafka timestamp (published_at), a flipped label, a later scored_at
    first = scored_row("x", minute=0, label="negative")
    again = scored_row("x", minute=60 * 24 * 45, label="positive", scored=dt.timedelta(hours=1))
    store.insert("scored", [first], SCORED_COLUMNS)
    store.insert("scored", [again], SCORED_COLUMNS)
    db = store.database
    assert store.rows(f"SELECT id, label FROM {db}.scored FINAL") == [("x", "positive")]
    # a time-range read sees the latest delivery only, in its own range
    in_range = (f"SELECT count() FROM {db}.scored FINAL WHERE published_at >= {{a:DateTime64(3)}} "
                "AND published_at < {b:DateTime64(3)}")
    assert store.scalar(in_range, {"a": T0, "b": T0 + dt.timedelta(days=1)}) == 0
    assert store.scalar(in_range, {"a": T0 + dt.timedelta(days=45), "b": T0 + dt.timedelta(days=46)}) == 1


def test_a_backfill_spanning_years_is_one_insert(store: Store) -> None:
    # 150 months in one batch: the old monthly partitions refused more than 100 per insert
    rows = [scored_row(f"b{i}", minute=60 * 24 * 31 * i) for i in range(150)]
    store.insert("scored", rows, SCORED_COLUMNS)
    assert store.scalar(f"SELECT count() FROM {store.database}.scored FINAL") == 150


def test_the_migration_moves_an_old_layout_store(store_settings: StoreSettings) -> None:
    """A store created before the re-keying: its rows move, its duplicates collapse, init stays idempotent."""
    old = Store(store_settings)
    db = old.database
    try:
        apply_migrations_before(old, SCORED_BY_ID)
        # the same (id, version) twice under the old key: another published_at hour, another label
        old.insert("scored", [v6_row("a"), v6_row("b"), v6_row("c", version="sent-v2")], V6_SCORED_COLUMNS)
        old.insert("scored", [v6_row("a", minute=90, label="positive", scored=dt.timedelta(minutes=5))],
                   V6_SCORED_COLUMNS)
        assert old.scalar(f"SELECT count() FROM {db}.scored FINAL") == 4  # the defect: two rows for `a`
        applied = old.init_schema()
        assert SCORED_BY_ID in applied
        assert old.rows(f"SELECT id, model_version, label FROM {db}.scored FINAL ORDER BY id") == [
            ("a", "sent-v1", "positive"), ("b", "sent-v1", "negative"), ("c", "sent-v2", "negative")]
        assert not {"scored_minute", "scored_minute_mv"} & tables_of(old)
        assert old.init_schema() == []
        assert old.scalar(f"SELECT count() FROM {db}.scored FINAL") == 3
    finally:
        old.command(f"DROP DATABASE IF EXISTS {db}")
        old.close()


def test_round_trip_and_duplicates_collapse(store: Store) -> None:
    rows = [scored_row(f"id{i}", minute=i % 3) for i in range(50)]
    store.insert("scored", rows, SCORED_COLUMNS)
    store.insert("scored", rows[:20], SCORED_COLUMNS)  # a re-delivered batch
    store.insert("scored", [scored_row("id0", version="sent-v2", label="positive")], SCORED_COLUMNS)
    db = store.database
    assert store.scalar(f"SELECT count() FROM {db}.scored") == 71  # raw parts still hold the copies
    final = store.rows(f"SELECT model_version, count() FROM {db}.scored FINAL GROUP BY 1 ORDER BY 1")
    assert final == [("sent-v1", 50), ("sent-v2", 1)]
    per_minute = store.rows(
        f"SELECT toStartOfMinute(published_at) AS m, count() FROM {db}.scored FINAL "
        "WHERE model_version = 'sent-v1' GROUP BY m ORDER BY m"
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


def _v6_store(store_settings: StoreSettings) -> Store:
    """A store at schema 6 holding texts on every row: two heads, the risk head under its old name
    `topic`, an item delivered twice with another text the second time."""
    old = Store(store_settings)
    apply_migrations_before(old, ITEMS_ONCE)
    old.command(migrations_table(old.database))
    old.insert("schema_migrations", [[m.version, m.description, T0] for m in migrations(old.database)
                                     if m.version < ITEMS_ONCE], ["version", "description", "applied_at"])
    rows = [v6_row(f"i{k}", text=f"body {k}", task=task, label=label)
            for k in range(20) for task, label in (("sentiment", "negative"), ("topic", "health"))]
    old.insert("scored", rows, V6_SCORED_COLUMNS)
    old.insert("scored", [v6_row("i0", text="body 0, corrected", scored=dt.timedelta(minutes=3))], V6_SCORED_COLUMNS)
    return old


def _assert_moved(store: Store) -> None:
    db = store.database
    assert store.scalar(f"SELECT count() FROM {db}.items FINAL") == 20
    assert store.rows(f"SELECT url, title, text FROM {db}.items FINAL WHERE id = 'i0'") == [
        ("https://e.x/i0", "title i0", "body 0, corrected")]  # the latest delivery's text
    assert store.rows(f"SELECT text FROM {db}.items FINAL WHERE id = 'i7'") == [("body 7",)]
    assert store.rows(f"SELECT task, count() FROM {db}.scored FINAL GROUP BY task ORDER BY task") == [
        ("risk", 20), ("sentiment", 20)]
    columns = [r[0] for r in store.rows("SELECT name FROM system.columns WHERE database = {db:String} "
                                        "AND table = 'scored' ORDER BY position", {"db": db})]
    assert columns == list(SCORED_COLUMNS)
    assert store.scalar(f"SELECT count() FROM {db}.entities") == 0


def test_items_once_moves_texts_out_of_scored_and_renames_topic(store_settings: StoreSettings) -> None:
    old = _v6_store(store_settings)
    try:
        assert old.init_schema() == [ITEMS_ONCE]
        _assert_moved(old)
        assert old.init_schema() == []
        _assert_moved(old)
    finally:
        old.command(f"DROP DATABASE IF EXISTS {old.database}")
        old.close()


@pytest.mark.parametrize("crashed_after", [1, 2, 3, 4])
def test_items_once_rerun_after_a_crash_mid_migration_is_harmless(
    store_settings: StoreSettings, crashed_after: int
) -> None:
    """The process died after the first `crashed_after` statements of the migration (before it was
    recorded): the next start runs them all again."""
    old = _v6_store(store_settings)
    try:
        [items_once] = [m for m in migrations(old.database) if m.version == ITEMS_ONCE]
        for statement in items_once.statements[:crashed_after]:
            if isinstance(statement, Copy):
                old.command(statement.sql)
            else:
                old.command(statement)
        assert old.init_schema() == [ITEMS_ONCE]
        _assert_moved(old)
    finally:
        old.command(f"DROP DATABASE IF EXISTS {old.database}")
        old.close()
