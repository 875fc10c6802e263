"""The consumer's commands: `yuqing run` (the main job), `yuqing status` (consumer-group lag) and
`yuqing replay` (re-score a time range from Kafka retention, e.g. with a new model version)."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path
from typing import Any

import click

from stream.consumer.app import open_scorers, run_pipeline, summary_line, wire_and_run
from stream.consumer.metrics import serve
from stream.consumer.pipeline import StoppedBeforeWrite
from stream.core.cli import DURATION, TIME, settings_from
from stream.core.errors import ConfigError, StoreError
from stream.core.signals import stop_on_signals
from stream.kafka.replay import ReplaySource


@click.command("run", context_settings={"allow_extra_args": True, "ignore_unknown_options": False})
@click.option("--bootstrap", help="Kafka bootstrap servers, HOST:PORT[,HOST:PORT].")
@click.option("--topic", "topics", multiple=True, help="Topic to consume (repeatable).")
@click.option("--group", help="Consumer group id.")
@click.option(
    "--models",
    "packages",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Model package directories: --models A B or --models A --models B.",
)
@click.option("--store", "dsn", help="Store DSN (chdb://PATH or http(s)://...).")
@click.option(
    "--source",
    "source_spec",
    default="kafka",
    show_default=True,
    help="kafka, or file:PATH (a JSONL file, a directory of them, or - for stdin).",
)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]))
@click.option("--variant", type=click.Choice(["auto", "fp32", "int8", "fp16"]))
@click.option("--batch-size", type=int, help="Most items per micro-batch.")
@click.option("--max-wait-ms", type=int, help="Longest wait to fill a micro-batch.")
@click.option("--max-message-bytes", type=int, help="Larger messages are dead-lettered.")
@click.option("--metrics-port", type=int, help="Serve Prometheus metrics on this port.")
@click.option(
    "--until-idle",
    type=float,
    default=None,
    help="Exit after this many seconds without new messages (batch jobs, tests).",
)
@click.pass_context
def run_command(
    ctx: click.Context,
    bootstrap: str | None,
    topics: tuple[str, ...],
    group: str | None,
    packages: tuple[Path, ...],
    dsn: str | None,
    source_spec: str,
    device: str | None,
    variant: str | None,
    batch_size: int | None,
    max_wait_ms: int | None,
    max_message_bytes: int | None,
    metrics_port: int | None,
    until_idle: float | None,
) -> None:
    """Consume news items, score them with every model package, write the store, commit."""
    extra = [Path(a) for a in ctx.args]
    for path in extra:
        if not path.is_dir():
            raise click.UsageError(f"unexpected argument {str(path)!r} (not a model package directory)")
    all_packages = [*packages, *extra]
    settings = settings_from(
        ctx,
        {
            "kafka": {
                "bootstrap_servers": bootstrap,
                "topics": list(topics),
                "group_id": group,
                "max_message_bytes": max_message_bytes,
            },
            "store": {"dsn": dsn},
            "models": {"packages": [str(p) for p in all_packages], "device": device, "variant": variant},
            "batch": {"max_items": batch_size, "max_wait_ms": max_wait_ms},
            "metrics": {"port": metrics_port},
        },
    )
    if not source_spec.startswith("file:") and source_spec != "kafka":
        raise click.BadParameter("use kafka or file:PATH", param_hint="--source")
    serve(settings.metrics.port)
    idle = until_idle if source_spec == "kafka" else None
    with stop_on_signals() as stop:
        try:
            counts = run_pipeline(settings, source_spec, idle_exit_s=idle, stop=stop)
        except StoppedBeforeWrite as exc:
            raise StoreError(
                f"stopped while the store was unavailable ({exc}); the last batch "
                "was not committed and will be read again"
            ) from None
    click.echo(summary_line(counts), err=True)


@click.command("status")
@click.option("--bootstrap", help="Kafka bootstrap servers.")
@click.option("--group", help="Consumer group id.")
@click.pass_context
def status_command(ctx: click.Context, bootstrap: str | None, group: str | None) -> None:
    """Committed offset, end offset and lag per partition for a consumer group."""
    from stream.kafka.admin import group_lag

    settings = settings_from(ctx, {"kafka": {"bootstrap_servers": bootstrap, "group_id": group}})
    rows = group_lag(settings.kafka, settings.kafka.group_id)
    if not rows:
        click.echo(f"group {settings.kafka.group_id!r} has no committed offsets")
        return
    click.echo(f"{'topic':<30} {'partition':>9} {'committed':>12} {'end':>12} {'lag':>10}")
    for topic, partition, committed, end in rows:
        lag = end - committed if committed >= 0 else end
        click.echo(f"{topic:<30} {partition:>9} {committed:>12} {end:>12} {lag:>10}")
    click.echo(f"total lag {sum((e - c if c >= 0 else e) for _, _, c, e in rows)}")


def _ms(when: dt.datetime) -> int:
    return int(when.timestamp() * 1000)


@click.command("replay")
@click.option("--bootstrap", help="Kafka bootstrap servers.")
@click.option("--topic", "topics", multiple=True, required=True, help="Topic to replay (repeatable).")
@click.option(
    "--from",
    "start",
    type=TIME,
    required=True,
    help="Start of the range (RFC 3339, YYYY-MM-DD, or a duration ago such as 7d), inclusive.",
)
@click.option("--to", "end", type=TIME, required=True, help="End of the range (same forms, or now), inclusive.")
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
@click.option(
    "--grace",
    type=DURATION,
    default=None,
    help="Timestamps may be this far out of order (e.g. 1h): scan from --from minus it to the first "
    "offset stamped after --to plus it (with --scan all: from --from minus it to the end).",
)
@click.option(
    "--scan",
    type=click.Choice(["bounded", "all"]),
    default=None,
    help="bounded (default): as --grace says; all: each partition up to its end offset as of the "
    "start (from its beginning unless --grace is given). Only messages stamped inside the range "
    "are scored either way.",
)
@click.option("--scan-to-end", is_flag=True, help="The same as --scan all.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@click.pass_context
def replay_command(
    ctx: click.Context,
    bootstrap: str | None,
    topics: tuple[str, ...],
    start: dt.datetime,
    end: dt.datetime,
    packages: tuple[Path, ...],
    dsn: str | None,
    group: str | None,
    device: str | None,
    batch_size: int | None,
    grace: dt.timedelta | None,
    scan: str | None,
    scan_to_end: bool,
    no_progress: bool,
) -> None:
    """Re-score TOPIC's messages between --from and --to under the given packages' model versions.

    Runs beside a live `yuqing run`: partitions are assigned, not subscribed, and progress is
    committed under the replay's own group, so the live group's offsets never move.  The summary
    says how far each partition was scanned and how many messages were inside the range.
    """
    if end < start:
        raise click.BadParameter("--to is before --from")
    if scan_to_end and scan == "bounded":
        raise click.UsageError("--scan-to-end contradicts --scan bounded")
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
        return ReplaySource(
            settings.kafka,
            list(topics),
            _ms(start),
            _ms(end),
            replay_group,
            progress=not no_progress,
            grace_ms=None if grace is None else int(grace.total_seconds() * 1000),
            to_end=scan_to_end or scan == "all",
        )

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
    for line in report.summary():
        click.echo(line, err=True)
    for warning in report.warnings():
        click.echo(f"warning: {warning}", err=True)
