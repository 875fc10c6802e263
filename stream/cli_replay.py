"""`yuqing replay`: re-score a time range from Kafka retention, e.g. with a new model version."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path
from typing import Any

import click

from stream.cli import settings_from
from stream.cli_run import open_scorers, stop_on_signals, summary_line, wire_and_run
from stream.errors import ConfigError
from stream.items import parse_time
from stream.replay import ReplaySource


def parse_when(value: str) -> dt.datetime:
    """RFC 3339, a date (YYYY-MM-DD, midnight UTC), or 'now'."""
    if value == "now":
        return dt.datetime.now(dt.UTC)
    try:
        if len(value) == 10:
            return dt.datetime.fromisoformat(value).replace(tzinfo=dt.UTC)
        return parse_time(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an RFC 3339 time or YYYY-MM-DD date") from None


def _duration_ms(text: str) -> int:
    units = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
    for unit in sorted(units, key=len, reverse=True):
        if text.endswith(unit) and text[: -len(unit)].isdigit():
            return int(text[: -len(unit)]) * units[unit]
    raise click.BadParameter(f"{text!r} is not a duration like 30s, 15m, 1h", param_hint="--grace")


def _ms(when: dt.datetime) -> int:
    return int(when.timestamp() * 1000)


@click.command("replay")
@click.option("--bootstrap", help="Kafka bootstrap servers.")
@click.option("--topic", "topics", multiple=True, required=True, help="Topic to replay (repeatable).")
@click.option("--from", "from_", required=True, help="Start of the range (RFC 3339 or YYYY-MM-DD), inclusive.")
@click.option("--to", "to", required=True, help="End of the range (RFC 3339, YYYY-MM-DD or now), inclusive.")
@click.option(
    "--models",
    "packages",
    multiple=True,
    required=True,
    type=click.Path(path_type=Path),
    help="Model packages to score with (repeatable).",
)
@click.option("--store", "dsn", help="Store DSN.")
@click.option("--group", help="The replay's own consumer group (default: derived from topics, range, models).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]))
@click.option("--batch-size", type=int)
@click.option("--grace", default="0s", show_default=True,
              help="Also read messages up to this long after --to (e.g. 1h) for producers whose timestamps "
              "arrive out of order; only messages stamped inside the range are scored.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@click.pass_context
def replay_command(
    ctx: click.Context,
    bootstrap: str | None,
    topics: tuple[str, ...],
    from_: str,
    to: str,
    packages: tuple[Path, ...],
    dsn: str | None,
    group: str | None,
    device: str | None,
    batch_size: int | None,
    grace: str,
    no_progress: bool,
) -> None:
    """Re-score TOPIC's messages between --from and --to under the given packages' model versions.

    Runs beside a live `yuqing run`: partitions are assigned, not subscribed, and progress is
    committed under the replay's own group, so the live group's offsets never move.
    """
    start, end = parse_when(from_), parse_when(to)
    if end < start:
        raise click.BadParameter("--to is before --from")
    settings = settings_from(
        ctx,
        {
            "kafka": {"bootstrap_servers": bootstrap, "topics": list(topics)},
            "store": {"dsn": dsn},
            "models": {"packages": [str(p) for p in packages], "device": device},
            "batch": {"max_items": batch_size},
        },
    )
    scorers = open_scorers(settings)
    live_group = settings.kafka.group_id
    digest = hashlib.sha1(
        "|".join([*sorted(topics), start.isoformat(), end.isoformat(), *sorted(s.version for s in scorers)]).encode()
    ).hexdigest()[:10]
    replay_group = group or f"yuqing-replay-{digest}"
    if replay_group == live_group:
        raise ConfigError(f"--group {replay_group!r} is the live consumer group", hint="pick another name")

    holder: dict[str, Any] = {}

    def make_source() -> ReplaySource:
        return ReplaySource(settings.kafka, list(topics), _ms(start), _ms(end), replay_group, progress=not no_progress)

    with stop_on_signals() as stop:
        counts = wire_and_run(
            settings, make_source, scorers=scorers, stop=stop, on_source=lambda s: holder.setdefault("source", s)
        )
    source: ReplaySource = holder["source"]
    report = source.report
    click.echo(
        f"replay {start.isoformat()} .. {end.isoformat()} under group {replay_group} "
        f"with {', '.join(s.version for s in scorers)}",
        err=True,
    )
    click.echo(summary_line(counts), err=True)
    if report.outside:
        click.echo(f"skipped {report.outside} messages stamped outside the range", err=True)
    firsts, lasts = report.first_ts_ms.values(), report.last_ts_ms.values()
    if firsts:
        covered_from = dt.datetime.fromtimestamp(min(firsts) / 1000, dt.UTC).isoformat(timespec="seconds")
        covered_to = dt.datetime.fromtimestamp(max(lasts) / 1000, dt.UTC).isoformat(timespec="seconds")
        click.echo(f"messages covered {covered_from} .. {covered_to}", err=True)
    else:
        click.echo("no messages in the range", err=True)
    for gap in report.gaps(_ms(start)):
        click.echo(f"warning: {gap}", err=True)
