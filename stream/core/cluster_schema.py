"""ClickHouse cluster DDL, derived from the single-node schema in ``stream/core/schema.py``.

Nothing here restates a column: every statement is a transformation of a migration statement,
so the cluster schema cannot drift from the single-node one.  The DDL creates a new cluster with
the schema as the migrations leave it: an object a later migration drops is not created, and a
table a later migration rebuilds (``CREATE OR REPLACE ... AS SELECT``) is created in its last
form, with nothing to copy.

* Each table ``T`` becomes ``T_local``: the same columns, indexes, partitioning, sorting key
  and TTL, on the ``Replicated`` variant of its engine, replicated within a shard under
  ``/clickhouse/tables/{shard}/{database}/{table}``.
* ``T`` itself becomes a ``Distributed`` table over ``T_local``, so consumers, alerts and
  dashboards keep the names they use on a single node.
* The sharding key sends all rows that a ReplacingMergeTree may collapse to one shard (for
  ``scored``: every row of one ``id``), so ``FINAL`` stays correct across shards, and so does a
  JOIN of two model versions on ``id`` (``distributed_product_mode`` aside, both sides of one id
  live on one shard).
* Materialized views run on each shard's local tables.
* ``schema_migrations`` is replicated to every node of the cluster (one Keeper path for all
  shards), so ``yuqing db init`` against any node sees the schema as current.

The servers need the ``{shard}`` and ``{replica}`` macros (``{replica}`` unique in the whole
cluster, e.g. the host name) and a Keeper; ``{database}`` and ``{table}`` are built in.
"""

from __future__ import annotations

import re

from stream.core.errors import ConfigError
from stream.core.schema import Copy, Migration, migrations, migrations_table

LOCAL_SUFFIX = "_local"
# Macros: ClickHouse expands them per server when the table is created.
SHARD_REPLICA_PATH = "/clickhouse/tables/{shard}/{database}/{table}"
CLUSTER_WIDE_REPLICA_PATH = "/clickhouse/tables/all/{database}/{table}"
REPLICA_NAME = "{replica}"

# Where a row goes when written through the Distributed table.  None: the table is written
# only by a materialized view on each shard, so rows stay on the shard of their source row.
SHARDING_KEYS: dict[str, str | None] = {
    "scored": "cityHash64(id)",
    "dead_letters": "cityHash64(kafka_topic, kafka_partition, kafka_offset)",
    "alerts": "cityHash64(alert_id)",
    "pipeline_stats": "cityHash64(group_id, kafka_topic, kafka_partition)",
    # A story's rows live on many shards (its items' ids); each row's versions on one.
    "item_stories": "cityHash64(id)",
    "items": "cityHash64(id)",
    "entities": "cityHash64(id)",
    "stories": "cityHash64(story_id)",
}
# Replicated to every node rather than sharded (tiny, read with FINAL on whichever node).
CLUSTER_WIDE_TABLES = frozenset({"schema_migrations"})

_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CLUSTER_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
_CREATE_NAMED = re.compile(
    r"^CREATE (?:DATABASE|TABLE|MATERIALIZED VIEW|VIEW) IF NOT EXISTS (?P<name>\w+(?:\.\w+)?)\b"
)
_CREATE_DATABASE = re.compile(r"^CREATE DATABASE IF NOT EXISTS (?P<db>\w+)$")
_CREATE_TABLE = re.compile(
    r"^CREATE TABLE IF NOT EXISTS (?P<db>\w+)\.(?P<table>\w+) (?P<columns>\(.*\))\s*"
    r"ENGINE = (?P<engine>\w+)(?:\((?P<args>[^()]*)\))?(?P<rest>.*)$",
    re.DOTALL,
)
_REPLACE_TABLE = re.compile(
    r"^CREATE OR REPLACE TABLE (?P<name>\w+\.\w+) (?P<definition>.*?)\nAS SELECT [^\n]*$", re.DOTALL
)
_DROP = re.compile(r"^DROP (?:TABLE|VIEW) IF EXISTS (?P<name>\w+\.\w+)$")
_CREATE_VIEW = re.compile(
    r"^CREATE MATERIALIZED VIEW IF NOT EXISTS (?P<db>\w+)\.(?P<view>\w+) "
    r"TO (?P<to_db>\w+)\.(?P<to>\w+) AS(?P<select>.*)$",
    re.DOTALL,
)
# A plain view reads the Distributed table by its usual name, so it is created on every node as is.
_CREATE_PLAIN_VIEW = re.compile(r"^CREATE VIEW IF NOT EXISTS (?P<name>\w+\.\w+) (?P<select>AS\s.*)$", re.DOTALL)


class ClusterSchemaError(ConfigError):
    """A single-node statement this module does not know how to distribute."""


def cluster_ddl(database: str, cluster: str, ttl_days: int = 0) -> list[str]:
    """The ``ON CLUSTER`` statements that create the yuqing schema on ``cluster``, in order."""
    if not _PLAIN.match(database):
        raise ConfigError(f"store database name {database!r} is not a plain identifier")
    if not _CLUSTER_NAME.match(cluster):
        raise ConfigError(
            f"cluster name {cluster!r} is not a ClickHouse cluster name",
            hint="use the name under <remote_servers> in the server config",
        )
    on = f"ON CLUSTER {_quote(cluster)}"
    out: list[str] = []
    all_migrations = migrations(database, ttl_days)
    for statement in _final_schema(all_migrations):
        out.extend(_distribute(statement, cluster, on))
    out.extend(_distribute(_tidy(migrations_table(database)), cluster, on))
    for migration in all_migrations:
        description = migration.description.replace("\\", "\\\\").replace("'", "\\'")
        out.append(
            f"INSERT INTO {database}.schema_migrations (version, description, applied_at) "
            f"VALUES ({migration.version}, '{description}', now64(3, 'UTC'))"
        )
    return out


def _final_schema(all_migrations: list[Migration]) -> list[str]:
    """The CREATE statements of the objects the migrations leave, in the order they were created."""
    objects: dict[str, str] = {}  # database or db.table -> its CREATE
    for migration in all_migrations:
        for raw in migration.statements:
            if isinstance(raw, Copy):  # a new cluster has no rows to move
                continue
            statement = _tidy(raw)
            if match := _DROP.match(statement):
                objects.pop(match["name"], None)
            elif match := _REPLACE_TABLE.match(statement):
                objects[match["name"]] = f"CREATE TABLE IF NOT EXISTS {match['name']} {match['definition']}"
            elif match := _CREATE_NAMED.match(statement):
                objects.setdefault(match["name"], statement)  # IF NOT EXISTS: the first one stays
            else:
                raise ClusterSchemaError(f"no cluster form for the statement {statement.splitlines()[0]!r}")
    return list(objects.values())


def local_name(table: str) -> str:
    return table + LOCAL_SUFFIX


def _distribute(statement: str, cluster: str, on: str) -> list[str]:
    if match := _CREATE_DATABASE.match(statement):
        return [f"{statement} {on}"]
    if match := _CREATE_TABLE.match(statement):
        return _table(match, cluster, on)
    if match := _CREATE_VIEW.match(statement):
        return [_view(match, on)]
    if match := _CREATE_PLAIN_VIEW.match(statement):
        return [f"CREATE VIEW IF NOT EXISTS {match['name']} {on} {match['select']}"]
    raise ClusterSchemaError(f"no cluster form for the statement {statement.splitlines()[0]!r}")


def _table(match: re.Match[str], cluster: str, on: str) -> list[str]:
    db, table, engine = match["db"], match["table"], match["engine"]
    if not engine.endswith("MergeTree"):
        raise ClusterSchemaError(f"table {table}: no replicated form of engine {engine}")
    args = [a.strip() for a in (match["args"] or "").split(",") if a.strip()]
    head = f"CREATE TABLE IF NOT EXISTS {db}"
    if table in CLUSTER_WIDE_TABLES:
        engine_sql = _replicated(engine, CLUSTER_WIDE_REPLICA_PATH, args)
        return [f"{head}.{table} {on} {match['columns']}\nENGINE = {engine_sql}{match['rest']}"]
    if table not in SHARDING_KEYS:
        raise ClusterSchemaError(
            f"table {table} has no sharding key", hint="add it to SHARDING_KEYS in stream/core/cluster_schema.py"
        )
    local = local_name(table)
    engine_sql = _replicated(engine, SHARD_REPLICA_PATH, args)
    distributed_args = [_quote(cluster), db, local]
    key = SHARDING_KEYS[table]
    if key is not None:
        distributed_args.append(key)
    return [
        f"{head}.{local} {on} {match['columns']}\nENGINE = {engine_sql}{match['rest']}",
        f"{head}.{table} {on} AS {db}.{local}\nENGINE = Distributed({', '.join(distributed_args)})",
    ]


def _view(match: re.Match[str], on: str) -> str:
    db = match["db"]
    # The view reads the local source table on each shard and writes the local target there.
    select = re.sub(
        rf"\b{re.escape(db)}\.(\w+)\b",
        lambda m: f"{db}.{local_name(m[1])}" if m[1] in SHARDING_KEYS else m[0],
        match["select"],
    )
    return (
        f"CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.{match['view']} {on} "
        f"TO {match['to_db']}.{local_name(match['to'])} AS{select}"
    )


def _replicated(engine: str, path: str, args: list[str]) -> str:
    quoted = [f"'{path}'", f"'{REPLICA_NAME}'", *args]
    return f"Replicated{engine}({', '.join(quoted)})"


def _quote(name: str) -> str:
    return name if _PLAIN.match(name) else f"`{name}`"


def _tidy(statement: str) -> str:
    """Drop the indentation the Python source gave a statement's continuation lines."""
    lines = statement.strip().splitlines()
    rest = [line for line in lines[1:] if line.strip()]
    indent = min((len(line) - len(line.lstrip()) for line in rest), default=0)
    return "\n".join([lines[0], *(line[indent:].rstrip() for line in rest)])
