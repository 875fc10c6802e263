"""`yuqing dashboards build | check | push`."""

from __future__ import annotations

from pathlib import Path

import click

from dashboards import build as artifacts
from stream.core.cli import settings_from
from stream.core.errors import YuqingError


class CheckFailed(YuqingError):
    """`yuqing dashboards check` found a stale file, a schema violation or a failing query."""


@click.group("dashboards")
def dashboards_group() -> None:
    """Build, check and push the Grafana dashboards (ClickHouse datasource plugin)."""


@dashboards_group.command("build")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), default=artifacts.GENERATED_DIR,
              show_default=True, help="Folder for the dashboard JSON.")
@click.option("--database", help="ClickHouse database the dashboards read (default: store.database).")
@click.pass_context
def build_command(ctx: click.Context, out: Path, database: str | None) -> None:
    """Write the dashboard JSON (and, into the default folder, the Grafana alert rules)."""
    db = database or settings_from(ctx).store.database
    default_folder = out.resolve() == artifacts.GENERATED_DIR.resolve()
    # The alert rules belong to the repository's own build, not to a build into another folder.
    files = artifacts.artifacts(db, out_dir=out, alerts_file=artifacts.ALERTS_FILE if default_folder else None)
    written = artifacts.write(files)
    for path in files:
        click.echo(f"{'wrote    ' if path in written else 'unchanged'} {path}")


@dashboards_group.command("check")
@click.option("--dir", "directory", type=click.Path(path_type=Path, file_okay=False, exists=True),
              default=artifacts.GENERATED_DIR, show_default=True, help="Folder of dashboard JSON to check.")
@click.option("--alerts", "alerts_file", type=click.Path(path_type=Path, dir_okay=False),
              default=artifacts.ALERTS_FILE, show_default=True, help="Grafana alert-rule provisioning file.")
@click.option("--skip-typecheck", is_flag=True, help="Skip the @grafana/schema check (needs npm tools).")
@click.option("--skip-sql", is_flag=True, help="Skip running the SQL on chdb.")
@click.option("-q", "--quiet", is_flag=True, help="Report failing panels only.")
def check_command(directory: Path, alerts_file: Path | None, skip_typecheck: bool, skip_sql: bool, quiet: bool) -> None:
    """Check the dashboards: up to date, valid for Grafana's schema, and every query runs on ClickHouse."""
    from dashboards.check import run_check

    report = run_check(directory, schema=not skip_typecheck, sql=not skip_sql, alerts_file=alerts_file)
    for line in report.lines(verbose=not quiet):
        click.echo(line)
    if not report.ok:
        problems = len(report.stale) + len(report.type_issues) + sum(not r.ok for r in report.sql)
        raise CheckFailed(f"dashboard check failed ({problems} problem(s), listed above)")


@dashboards_group.command("push")
@click.option("--url", envvar="GRAFANA_URL", required=True, help="Grafana base URL (env GRAFANA_URL).")
@click.option("--token", envvar="GRAFANA_TOKEN", required=True,
              help="Service-account token (env GRAFANA_TOKEN; prefer it to the flag).")
@click.option("--folder", default="yuqing", show_default=True, help="Folder title (created if missing).")
@click.option("--dir", "directory", type=click.Path(path_type=Path, file_okay=False, exists=True),
              default=artifacts.GENERATED_DIR, show_default=True, help="Folder of dashboard JSON to upload.")
def push_command(url: str, token: str, folder: str, directory: Path) -> None:
    """Upload the dashboards (create or overwrite by uid; running it twice changes nothing)."""
    from dashboards.push import push

    for pushed in push(url, token, artifacts.load_dashboards(directory), folder):
        click.echo(f"{pushed.uid}  version {pushed.version}  {pushed.url or ''}".rstrip())
