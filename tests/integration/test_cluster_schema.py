"""The cluster DDL checked by the real ClickHouse engine (chdb): parsed, dry-run on a node with
the macros and the cluster, and with the very columns of the single-node schema."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from stream.core.cluster_schema import cluster_ddl, local_name
from stream.core.schema import (
    ALERT_COLUMNS,
    ALERT_DELIVERY_COLUMNS,
    DEAD_LETTER_COLUMNS,
    ENTITY_COLUMNS,
    ITEM_COLUMNS,
    PIPELINE_STATS_COLUMNS,
    SCORED_COLUMNS,
    migrations,
    migrations_table,
)
from stream.core.store import Store

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
VALIDATE = ROOT / "deploy" / "validate.py"
YUQING = Path(sys.executable).with_name("yuqing")


def _columns_subtree(store: Store, statement: str) -> list[str]:
    """The `Columns definition` subtree of ClickHouse's AST for a CREATE TABLE."""
    lines = [r[0] for r in store.rows(f"EXPLAIN AST {statement}")]
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("Columns definition"))
    depth = len(lines[start]) - len(lines[start].lstrip())
    subtree = [lines[start]]
    for line in lines[start + 1 :]:
        if len(line) - len(line.lstrip()) <= depth:
            break
        subtree.append(line)
    return subtree


def _creates(statements: list[str]) -> dict[str, str]:
    """Table -> its CREATE as the statements leave it: a later rebuild (CREATE OR REPLACE)
    replaces an earlier one, a DROP removes it."""
    out = {}
    for s in statements:
        match = re.match(
            r"CREATE (?:OR REPLACE )?TABLE (?:IF NOT EXISTS )?\w+\.(\w+) (?:ON CLUSTER \S+ )?\(", s.strip()
        )
        if match:
            out[match[1]] = s
        elif dropped := re.match(r"DROP TABLE IF EXISTS \w+\.(\w+)$", s.strip()):
            out.pop(dropped[1], None)
    return out


def test_cluster_columns_equal_the_single_node_columns(store: Store) -> None:
    """Column by column and type by type, as ClickHouse parses them, so the two can never drift."""
    db = store.database
    # Copy statements move rows of an old store; they create nothing.
    single = _creates([s for m in migrations(db) for s in m.statements if isinstance(s, str)] + [migrations_table(db)])
    cluster = _creates(cluster_ddl(db, "prod"))
    assert single
    for table, statement in single.items():
        counterpart = cluster.get(local_name(table)) or cluster[table]
        assert _columns_subtree(store, counterpart) == _columns_subtree(store, statement), table
        declared = [
            line.split()[1] for line in _columns_subtree(store, counterpart) if "ColumnDeclaration" in line
        ]
        # ... and equal to what the real single-node table (created by the fixture) has.
        assert declared == [r[0] for r in store.rows(
            "SELECT name FROM system.columns WHERE database = {db:String} AND table = {t:String} "
            "ORDER BY position", {"db": db, "t": table})], table
    for table, names in (("scored", SCORED_COLUMNS), ("items", ITEM_COLUMNS), ("entities", ENTITY_COLUMNS),
                         ("dead_letters", DEAD_LETTER_COLUMNS),
                         ("alerts", ALERT_COLUMNS + ALERT_DELIVERY_COLUMNS),
                         ("pipeline_stats", PIPELINE_STATS_COLUMNS)):
        declared = [line.split()[1] for line in _columns_subtree(store, cluster[local_name(table)])
                    if "ColumnDeclaration" in line]
        assert tuple(declared) == names


def test_every_statement_parses_through_the_store(store: Store) -> None:
    for statement in cluster_ddl(store.database, "prod", ttl_days=90):
        formatted = store.scalar("SELECT formatQuery({q:String})", {"q": statement})
        if statement.startswith("CREATE"):
            assert " ON CLUSTER prod" in formatted


def _validate_ddl(text: str) -> subprocess.CompletedProcess[str]:
    # Its own process: it opens a chdb session configured with the cluster and the macros.
    return subprocess.run(
        [sys.executable, str(VALIDATE), "ddl", "--ddl-file", "-"], input=text, capture_output=True, text=True,
        timeout=300,
    )


def test_db_init_cluster_output_dry_runs_on_a_configured_node(tmp_path: Path) -> None:
    printed = subprocess.run(
        [str(YUQING), "db", "init", "--cluster", "yuqing_prod"], capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin", "YUQING_STORE__DSN": f"chdb://{tmp_path / 'unused'}",
             "YUQING_STORE__TTL_DAYS": "30", "HOME": str(tmp_path)},
    )
    assert printed.returncode == 0, printed.stderr
    checked = _validate_ddl(printed.stdout)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "ddl: ok" in checked.stdout
    assert not (tmp_path / "unused").exists()  # printing the DDL opens no store


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("cityHash64(id)", "cityHash64(doc_id)", "Missing columns: 'doc_id'"),
        ("ORDER BY (task, model_version, id)", "ORDER BY (task, model_version, toStartOfHour(published_at), id)",
         "two deliveries of one item stay apart in scored_local"),
        ("    probs Map(LowCardinality(String), Float32),\n", "",
         "does not have the columns of the single-node scored"),
        ("'{replica}', scored_at)", "'{replica}', scoredat)", "Version column scoredat does not exist"),
        ("ORDER BY version", "ORDER BY (version", "cannot parse"),
    ],
)
def test_the_dry_run_catches(old: str, new: str, expected: str) -> None:
    text = ";\n".join(cluster_ddl("yuqing", "c1"))
    assert old in text, old
    checked = _validate_ddl(text.replace(old, new, 1))
    assert checked.returncode == 1
    assert expected in checked.stdout, checked.stdout
