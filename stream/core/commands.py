"""`yuqing config`, `yuqing db` and `yuqing sql`: settings, schema and a quick look at the store."""

from __future__ import annotations

import csv
import json
import sys
from typing import Any

import click

from stream.core.cli import echo_json, settings_from
from stream.core.store import Store, open_store

store_option = click.option("--store", "dsn", help="Store DSN: chdb://PATH or http(s)://user:pw@host:port.")


@click.group("config")
def config_group() -> None:
    """Inspect settings."""


@config_group.command("show")
@click.pass_context
def config_show(ctx: click.Context) -> None:
    """Print the effective settings as JSON, secrets masked."""
    echo_json(settings_from(ctx).masked())


@click.group("db")
def db_group() -> None:
    """Manage the ClickHouse schema."""


@db_group.command("init")
@store_option
@click.option("--cluster", default=None, help="Print the DDL for a ClickHouse cluster instead of applying it.")
@click.pass_context
def db_init(ctx: click.Context, dsn: str | None, cluster: str | None) -> None:
    """Create or migrate the schema (idempotent)."""
    settings = settings_from(ctx, {"store": {"dsn": dsn}})
    if cluster:
        from stream.core.cluster_schema import cluster_ddl

        for statement in cluster_ddl(settings.store.database, cluster, settings.store.ttl_days):
            click.echo(statement.strip() + ";\n")
        return
    with Store(settings.store) as store:
        applied = store.init_schema()
        version = store.schema_version()
    click.echo(
        f"schema at version {version}" + (f" (applied {applied})" if applied else " (already current)")
    )


@click.command("sql")
@click.argument("query")
@store_option
@click.option("--format", "fmt", type=click.Choice(["table", "tsv", "json"]), default="table")
@click.pass_context
def sql_command(ctx: click.Context, query: str, dsn: str | None, fmt: str) -> None:
    """Run QUERY on the store and print the result."""
    settings = settings_from(ctx, {"store": {"dsn": dsn}})
    with open_store(settings.store) as store:
        result = store.query(query)
        columns = list(result.column_names)
        rows = [list(r) for r in result.result_rows]
    _print_rows(columns, rows, fmt)


def _cell(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _print_rows(columns: list[str], rows: list[list[Any]], fmt: str) -> None:
    if fmt == "json":
        click.echo(
            json.dumps([dict(zip(columns, r, strict=True)) for r in rows], ensure_ascii=False, default=str)
        )
        return
    if fmt == "tsv":
        writer = csv.writer(sys.stdout, delimiter="\t", lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([[_cell(c) for c in r] for r in rows])
        return
    cells = [[_cell(c) for c in r] for r in rows]
    widths = [max([len(col)] + [len(r[i]) for r in cells]) for i, col in enumerate(columns)]
    click.echo("  ".join(col.ljust(w) for col, w in zip(columns, widths, strict=True)))
    click.echo("  ".join("-" * w for w in widths))
    for r in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
    click.echo(f"({len(rows)} row{'s' if len(rows) != 1 else ''})")
