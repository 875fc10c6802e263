"""`yuqing ingest`: poll RSS/Atom feeds into a Kafka topic (see stream/feeds/)."""

from __future__ import annotations

import logging
import re
from contextlib import ExitStack
from pathlib import Path

import click

from stream.core.cli import settings_from
from stream.core.signals import stop_on_signals

log = logging.getLogger(__name__)

DEFAULT_STATE = Path("yuqing-data/ingest-state.sqlite")
_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


def _topic(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not _TOPIC.match(value):
        raise click.BadParameter(f"{value!r} is not a valid Kafka topic name")
    return value


@click.command("ingest")
@click.option(
    "--feeds", "feeds_path", required=True, type=click.Path(path_type=Path, dir_okay=False),
    help="feeds.toml: the feeds to poll (see deploy/feeds.example.toml).",
)
@click.option("--bootstrap", help="Kafka bootstrap servers, HOST:PORT[,HOST:PORT] (default: settings).")
@click.option("--topic", callback=_topic, help="Topic to produce to (default: the first of kafka.topics).")
@click.option(
    "--interval", type=click.FloatRange(min=0, min_open=True),
    help="Seconds between polls of a feed without its own `interval` [default: the file's, else 300].",
)
@click.option("--once", is_flag=True, help="Poll every feed once and exit.")
@click.option(
    "--state", "state_path", type=click.Path(path_type=Path, dir_okay=False), default=DEFAULT_STATE,
    show_default=True, help="SQLite file of produced ids and HTTP validators (survives restarts).",
)
@click.option("--metrics-port", type=click.IntRange(1, 65535), help="Serve Prometheus metrics on this port.")
@click.pass_context
def ingest_command(
    ctx: click.Context,
    feeds_path: Path,
    bootstrap: str | None,
    topic: str | None,
    interval: float | None,
    once: bool,
    state_path: Path,
    metrics_port: int | None,
) -> None:
    """Poll RSS 2.0 / Atom 1.0 feeds and produce new entries as JSON items keyed by id.

    SIGTERM or Ctrl-C finishes the poll in progress, flushes and exits 0 (a second one aborts).
    """
    # Imported here so `yuqing --help` stays light.
    from prometheus_client import REGISTRY, start_http_server

    from stream.feeds.config import load_feeds
    from stream.feeds.ingest import Ingester, IngestMetrics
    from stream.feeds.produce import ItemProducer
    from stream.feeds.state import IngestState

    settings = settings_from(ctx, {"kafka": {"bootstrap_servers": bootstrap}, "metrics": {"port": metrics_port}})
    if logging.getLogger().level > logging.DEBUG:  # the clients' per-request lines only with -vv
        for name in ("kafka", "httpx", "httpcore"):
            logging.getLogger(name).setLevel(logging.WARNING)
    feeds = load_feeds(feeds_path, default_interval=interval)
    topic = topic or settings.kafka.topics[0]

    with ExitStack() as stack:
        state = stack.enter_context(IngestState(state_path))
        producer = ItemProducer(settings.kafka, topic)
        stack.callback(producer.close)  # runs after the loop: flush, then close
        metrics = IngestMetrics(REGISTRY)  # the default registry adds process metrics
        if settings.metrics.port is not None:
            start_http_server(settings.metrics.port, registry=metrics.registry)
            log.info("metrics on :%d/metrics", settings.metrics.port)
        ingester = Ingester(feeds, producer, state, metrics)
        stack.callback(ingester.close)
        stop = stack.enter_context(stop_on_signals("the current poll"))
        log.info("ingesting %d feed(s) into %s%s", len(feeds.feeds), topic, " once" if once else "")
        summary = ingester.run(stop, once=once)
    if once:
        click.echo(summary.line())
    else:
        click.echo("stopped: the last poll finished and every sent item was flushed", err=True)

