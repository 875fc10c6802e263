"""`yuqing run` (the main job) and `yuqing status` (consumer-group lag)."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import click

from stream.cli import settings_from
from stream.clickhouse_sink import ClickHouseSink, DeadLetterTopic
from stream.errors import ConfigError, KafkaUnavailable
from stream.interfaces import Scorer
from stream.kafka_clients import producer
from stream.metrics import RunCounts, serve
from stream.pipeline import Pipeline, StoppedBeforeWrite
from stream.settings import Settings
from stream.store import Store

log = logging.getLogger("yuqing.run")


def open_scorers(settings: Settings, packages: Sequence[Path] | None = None) -> list[Scorer]:
    from export.runtime import OnnxScorer

    paths = list(packages if packages is not None else settings.models.packages)
    if not paths:
        raise ConfigError(
            "no model packages given", hint="pass --models PKG (see `yuqing export`) or set YUQING_MODELS__PACKAGES"
        )
    scorers: list[Scorer] = []
    for path in paths:
        scorer = OnnxScorer.open(
            path,
            device=settings.models.device,
            variant=settings.models.variant,
            intra_op_threads=settings.models.intra_op_threads,
        )
        log.info("model %s (%s) version %s", scorer.name, scorer.task, scorer.version)
        scorers.append(scorer)
    return scorers


@contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """SIGTERM/SIGINT set an event: the loop finishes its batch, writes, commits, then leaves."""
    stop = threading.Event()
    previous = {}

    def handler(signum: int, _frame: Any) -> None:
        log.warning("received %s: finishing the current batch", signal.Signals(signum).name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        previous[sig] = signal.signal(sig, handler)
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run_pipeline(
    settings: Settings,
    source_spec: str,
    *,
    scorers: Sequence[Scorer] | None = None,
    idle_exit_s: float | None = None,
    stop: threading.Event | None = None,
    on_source: Callable[[Any], None] | None = None,
) -> RunCounts:
    """`yuqing run`: the live consumer group, or a file source, into the store.  `on_source` sees
    the source once it is open (the bench wraps its calls with timers)."""
    from stream.file_source import FileSource
    from stream.kafka_source import KafkaSource

    def make_source() -> Any:
        if source_spec.startswith("file:"):
            return FileSource(source_spec[len("file:") :], settings.kafka.max_message_bytes)
        return KafkaSource(settings.kafka, settings.kafka.topics, settings.kafka.group_id)

    return wire_and_run(
        settings,
        make_source,
        scorers=scorers,
        idle_exit_s=idle_exit_s,
        stop=stop,
        dead_letter_topic=not source_spec.startswith("file:"),
        on_source=on_source,
    )


def wire_and_run(
    settings: Settings,
    make_source: Callable[[], Any],
    *,
    scorers: Sequence[Scorer] | None = None,
    idle_exit_s: float | None = None,
    stop: threading.Event | None = None,
    dead_letter_topic: bool = True,
    on_source: Callable[[Any], None] | None = None,
) -> RunCounts:
    """Open store, models, source and sink; one ExitStack owns their shutdown (source first)."""
    consumer_name = f"{socket.gethostname()}-{os.getpid()}"
    with ExitStack() as stack:
        store = stack.enter_context(Store(settings.store))
        store.init_schema()
        active = list(scorers) if scorers is not None else open_scorers(settings)
        dlq = DeadLetterTopic(producer(settings.kafka), settings.kafka.dlq_suffix) if dead_letter_topic else None
        sink = ClickHouseSink(store, dlq)
        stack.callback(sink.close)
        source = make_source()
        stack.callback(source.close)
        if on_source is not None:
            on_source(source)
        pipeline = Pipeline(
            source,
            active,
            sink,
            settings.batch,
            stop,
            idle_exit_s=idle_exit_s,
            consumer_name=consumer_name,
            group_id=settings.kafka.group_id,
        )
        return pipeline.run()


def summary_line(counts: RunCounts) -> str:
    kinds = ", ".join(f"{k}={v}" for k, v in sorted(counts.by_kind.items()))
    return (
        f"read {counts.read}, scored {counts.scored_items} items ({counts.rows_written} rows), "
        f"dead-lettered {counts.dead_lettered}"
        + (f" ({kinds})" if kinds else "")
        + (f", store retries {counts.store_retries}" if counts.store_retries else "")
    )


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
            raise KafkaUnavailable(
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
    from stream.kafka_admin import group_lag

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
