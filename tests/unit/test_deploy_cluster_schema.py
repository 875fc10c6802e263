"""The ClickHouse cluster DDL derived from the single-node schema (stream/cluster_schema.py)."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner

from stream.core import cluster_schema
from stream.cli import cli
from stream.core.errors import ConfigError
from stream.core.schema import migrations

TABLES = ("scored", "scored_minute", "dead_letters", "alerts", "pipeline_stats")


def _by_name(statements: list[str]) -> dict[str, str]:
    out = {}
    for s in statements:
        match = re.match(r"CREATE (?:TABLE|MATERIALIZED VIEW) IF NOT EXISTS \w+\.(\w+)", s)
        if match:
            out[match[1]] = s
    return out


def test_every_create_is_on_the_cluster() -> None:
    statements = cluster_schema.cluster_ddl("yq", "prod")
    creates = [s for s in statements if s.startswith("CREATE")]
    assert creates and all(" ON CLUSTER prod " in s.splitlines()[0] + " " for s in creates)
    assert statements[0] == "CREATE DATABASE IF NOT EXISTS yq ON CLUSTER prod"


def test_each_table_is_local_replicated_plus_distributed_under_its_own_name() -> None:
    by_name = _by_name(cluster_schema.cluster_ddl("yq", "prod"))
    for table in TABLES:
        local = by_name[f"{table}_local"]
        assert "ENGINE = Replicated" in local
        assert "'/clickhouse/tables/{shard}/{database}/{table}', '{replica}'" in local
        dist = by_name[table]
        assert f"AS yq.{table}_local\nENGINE = Distributed(prod, yq, {table}_local" in dist
    assert "ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}', scored_at)" in (
        by_name["scored_local"]
    )
    assert "ReplicatedAggregatingMergeTree(" in by_name["scored_minute_local"]
    assert "ReplicatedMergeTree(" in by_name["pipeline_stats_local"]


def test_scored_is_sharded_by_id_so_replacing_dedup_stays_on_one_shard() -> None:
    by_name = _by_name(cluster_schema.cluster_ddl("yq", "prod"))
    assert by_name["scored"].endswith("Distributed(prod, yq, scored_local, cityHash64(id))")
    # Written only by the per-shard view: no sharding key, rows stay with their source rows.
    assert by_name["scored_minute"].endswith("Distributed(prod, yq, scored_minute_local)")


def test_view_reads_and_writes_local_tables() -> None:
    view = _by_name(cluster_schema.cluster_ddl("yq", "prod"))["scored_minute_mv"]
    assert "TO yq.scored_minute_local AS" in view
    assert "FROM yq.scored_local" in view
    assert "yq.scored\n" not in view and "FROM yq.scored " not in view


def test_migrations_table_is_replicated_to_every_node_and_marked_current() -> None:
    statements = cluster_schema.cluster_ddl("yq", "prod")
    table = _by_name(statements)["schema_migrations"]
    assert "'/clickhouse/tables/all/{database}/{table}'" in table and "{shard}" not in table
    inserts = [s for s in statements if s.startswith("INSERT")]
    assert len(inserts) == len(migrations("yq"))
    assert inserts[-1].startswith(f"INSERT INTO yq.schema_migrations (version, description, applied_at) "
                                  f"VALUES ({migrations('yq')[-1].version}, ")


def test_ttl_days_carry_over_to_the_local_tables() -> None:
    by_name = _by_name(cluster_schema.cluster_ddl("yq", "prod", ttl_days=30))
    assert "TTL toDateTime(published_at) + INTERVAL 30 DAY" in by_name["scored_local"]
    assert "TTL toDateTime(minute) + INTERVAL 30 DAY" in by_name["scored_minute_local"]
    assert "TTL" not in _by_name(cluster_schema.cluster_ddl("yq", "prod"))["scored_local"]


def test_cluster_names_that_are_not_identifiers_are_quoted() -> None:
    statements = cluster_schema.cluster_ddl("yq", "prod-eu.1")
    assert statements[0].endswith("ON CLUSTER `prod-eu.1`")
    assert "Distributed(`prod-eu.1`, yq, scored_local, cityHash64(id))" in _by_name(statements)["scored"]


@pytest.mark.parametrize(("database", "cluster"), [("yq; DROP", "c"), ("yq", "c d"), ("yq", ""), ("1yq", "c")])
def test_bad_names_are_config_errors(database: str, cluster: str) -> None:
    with pytest.raises(ConfigError):
        cluster_schema.cluster_ddl(database, cluster)


def test_a_new_table_without_a_sharding_key_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    keys = dict(cluster_schema.SHARDING_KEYS)
    del keys["alerts"]
    monkeypatch.setattr(cluster_schema, "SHARDING_KEYS", keys)
    with pytest.raises(cluster_schema.ClusterSchemaError, match="alerts has no sharding key"):
        cluster_schema.cluster_ddl("yq", "prod")


def test_every_single_node_table_has_a_sharding_decision() -> None:
    names = set()
    for migration in migrations("yq"):
        for statement in migration.statements:
            match = re.match(r"CREATE TABLE IF NOT EXISTS yq\.(\w+)", statement.strip())
            if match:
                names.add(match[1])
    assert names == set(cluster_schema.SHARDING_KEYS)


def test_db_init_cluster_prints_the_statements() -> None:
    result = CliRunner().invoke(cli, ["db", "init", "--cluster", "prod"], env={"YUQING_STORE__DATABASE": "yq"})
    assert result.exit_code == 0, result.output
    printed = [s.strip() for s in result.output.split(";\n") if s.strip()]
    assert printed == [s.strip() for s in cluster_schema.cluster_ddl("yq", "prod")]
