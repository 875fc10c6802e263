"""`yuqing report`: the daily brief (舆情日报) as one self-contained HTML page."""

from __future__ import annotations

from pathlib import Path

import click

from stream.core.cli import settings_from
from stream.core.commands import store_option
from stream.core.errors import ConfigError
from stream.core.store import open_store
from stream.core.times import parse_time, utcnow


@click.command("report")
@store_option
@click.option("--since", default="24h", show_default=True, help="Start: a duration ago (24h, 7d) or RFC 3339 time.")
@click.option("--until", default="now", show_default=True, help="End: 'now', a duration ago or RFC 3339 time.")
@click.option(
    "--out",
    type=click.Path(path_type=Path, dir_okay=False),
    default=Path("brief.html"),
    show_default=True,
    help="Where to write the HTML brief.",
)
@click.option("--title", default="舆情日报 Daily brief", show_default=True, help="Page title.")
@click.pass_context
def report_command(ctx: click.Context, dsn: str | None, since: str, until: str, out: Path, title: str) -> None:
    """Write the daily brief: a self-contained HTML page (charts inline, works offline)."""
    from stream.brief.report import gather, render

    settings = settings_from(ctx, {"store": {"dsn": dsn}})
    now = utcnow()
    start, end = parse_time(since, now), parse_time(until, now)
    if end <= start:
        raise ConfigError("--until must be after --since")
    with open_store(settings.store) as store:
        data = gather(store, start, end)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(data, title=title), encoding="utf-8")
    click.echo(
        f"wrote {out} ({data.total} items, {len(data.alerts)} alert(s), "
        f"{start:%Y-%m-%d %H:%M} – {end:%Y-%m-%d %H:%M} UTC)"
    )
