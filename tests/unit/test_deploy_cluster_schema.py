"""The ClickHouse cluster DDL derived from the single-node schema (stream/cluster_schema.py)."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner

from stream.cli import cli
from stream.core import cluster_schema
from stream.core.errors import ConfigError
from stream.core.schema import Migration, migrations

TABLES = ("scored", "dead_letters", "alerts", "pipeline_stats")


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
    assert "ReplicatedMergeTree(" in by_name["pipeline_stats_local"]


def test_scored_is_sharded_by_id_so_replacing_dedup_stays_on_one_shard() -> None:
    by_name = _by_name(cluster_schema.cluster_ddl("yq", "prod"))
    assert by_name["scored"].endswith("Distributed(prod, yq, scored_local, cityHash64(id))")


def test_the_cluster_gets_the_schema_the_migrations_leave() -> None:
    statements = cluster_schema.cluster_ddl("yq", "prod")
    by_name = _by_name(statements)
    # scored in its last form: keyed and partitioned by what two deliveries of an item share
    local = by_name["scored_local"]
    assert "ORDER BY (task, model_version, id)" in local and "PARTITION BY (task, model_version)" in local
    assert "INDEX idx_published published_at TYPE minmax" in local
    assert "toYYYYMM(published_at)" not in local and "AS SELECT" not in local
    # dropped objects are not created, and nothing drops or copies on a new cluster
    assert not any(name.startswith("scored_minute") for name in by_name)
    assert not any(s.startswith(("DROP", "CREATE OR REPLACE")) or "AS SELECT" in s for s in statements)
    assert [s for s in statements if "scored_local ON CLUSTER" in s] == [local]


def test_a_statement_without_a_cluster_form_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    real = cluster_schema.migrations

    def with_alter(db: str, ttl_days: int = 0) -> list[Migration]:
        return [*real(db, ttl_days), Migration(99, "alter", (f"ALTER TABLE {db}.scored DELETE WHERE 1",))]

    monkeypatch.setattr(cluster_schema, "migrations", with_alter)
    with pytest.raises(cluster_schema.ClusterSchemaError, match="no cluster form"):
        cluster_schema.cluster_ddl("yq", "prod")


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
            # Copies move rows; a plain view holds none and is created on every node as it is.
            if not isinstance(statement, str) or statement.startswith("CREATE VIEW"):
                continue
            match = re.match(r"(CREATE|DROP) (?:TABLE|VIEW|OR REPLACE TABLE) (?:IF (?:NOT )?EXISTS )?yq\.(\w+)",
                             statement.strip())
            if match:
                (names.add if match[1] == "CREATE" else names.discard)(match[2])
    assert names == set(cluster_schema.SHARDING_KEYS)


def test_db_init_cluster_prints_the_statements() -> None:
    result = CliRunner().invoke(cli, ["db", "init", "--cluster", "prod"], env={"YUQING_STORE__DATABASE": "yq"})
    assert result.exit_code == 0, result.output
    printed = [s.strip() for s in result.output.split(";\n") if s.strip()]
    assert printed == [s.strip() for s in cluster_schema.cluster_ddl("yq", "prod")]
